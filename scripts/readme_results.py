"""Write the README's results tables from an evaluation report, never by hand.

    python train.py --stage all && python evaluate.py
    python scripts/readme_results.py --from runs/synthetic/eval_test/report.json
    python scripts/readme_results.py --check     # exit 1 when README.md is out of date
    python scripts/readme_results.py --check --from runs/synthetic/eval_test/report.json
                                                 # exit 1 when README.md is not what this run printed

`--from REPORT` (without `--check`) stores the report as docs/results/synthetic_report.json (the numbers'
committed source; machine paths dropped) and then renders it. Without `--from`, the
stored file is rendered again. The tables go between the README's markers
`<!-- results:begin ... -->` and `<!-- results:end -->`; everything outside them is
left as it is. tests/test_readme_results.py fails when README.md and the stored report
disagree; CI (`.ci/run`) runs the main job on a clean clone and fails when README.md is not
what that run's `evaluate.py` printed (`--check --from`), so a change that moves a default
cannot land without the table regenerated.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
STORED = REPO / "docs" / "results" / "synthetic_report.json"
BEGIN = "<!-- results:begin (written by `python scripts/readme_results.py`; do not edit by hand) -->"
END = "<!-- results:end -->"
# Keys of report.json that name this machine's folders, not results.
MACHINE_KEYS = ("paths", "workdir")


def fragment(report: dict) -> str:
    """The Markdown between the markers."""
    from kemdy_tf.evaluation.report import results_markdown

    return results_markdown(report)


def replace_fragment(text: str, body: str) -> str:
    """`text` with the part between BEGIN and END replaced by `body`."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def current_fragment(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def store(report_path: Path, stored: Path = STORED) -> dict:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for key in MACHINE_KEYS:
        report.pop(key, None)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, help="a report.json written by evaluate.py")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md differs")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    if args.source and args.check:  # compare with a fresh run's report; store nothing
        report = json.loads(args.source.read_text(encoding="utf-8"))
        against = args.source
    elif args.source:
        report, against = store(args.source), STORED
    else:
        against = STORED
        report = json.loads(STORED.read_text(encoding="utf-8"))
    text = args.readme.read_text(encoding="utf-8")
    body = fragment(report)
    if args.check:
        if current_fragment(text) != body:
            diff = difflib.unified_diff(current_fragment(text).splitlines(), body.splitlines(),
                                        f"{args.readme.name} (written)", f"{against} (this report)", lineterm="")
            print(f"{args.readme} results differ from {against}; regenerate them with "
                  f"python train.py --stage all && python evaluate.py && python scripts/readme_results.py "
                  f"--from runs/synthetic/eval_test/report.json\n" + "\n".join(diff), file=sys.stderr)
            return 1
        print(f"{args.readme}'s results are those of {against}")
        return 0
    args.readme.write_text(replace_fragment(text, body), encoding="utf-8")
    print(f"wrote the results of {STORED.relative_to(REPO)} into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
