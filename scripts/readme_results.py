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

Identical figures need the same kind of CPU: oneDNN picks its kernels by instruction set
(AVX2, AVX-512, AMX), and a kernel of another set rounds differently, which twelve epochs of
training amplify (docs/benchmarks.md, "Reproducibility across CPUs"). The stored report
records the CPU it was made on (`made_on`); on the same kind of CPU the check is exact, on
another it prints the differences and fails only when a UA or macro-F1 moved by more
than CROSS_CPU_TOLERANCE.
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
# The instruction sets that decide which oneDNN kernels run (and so the last bits of every sum).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
# On another kind of CPU: the largest change of a headline UA or macro-F1 still taken as rounding.
CROSS_CPU_TOLERANCE = 0.15


def made_on() -> dict:
    """The CPU kind (model name and number, the ISA_FLAGS it has) and the TensorFlow version."""
    import platform
    from importlib import metadata

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    try:
        tensorflow = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tensorflow = None
    return {"cpu": info.get("model name", platform.processor()), "cpu_model": info.get("model"),
            "isa": [f for f in ISA_FLAGS if f in flags], "machine": platform.machine(), "tensorflow": tensorflow}


def headline_figures(report: dict) -> dict:
    """`{(model, metric): value}` of the UA and macro-F1 rows of the results table."""
    return {(model, metric): float(scores["emotion"][metric])
            for model, scores in report.get("models", {}).items()
            for metric in ("balanced_accuracy", "macro_f1")
            if isinstance(scores, dict) and isinstance(scores.get("emotion"), dict) and metric in scores["emotion"]}


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
    report["made_on"] = made_on()
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
        if current_fragment(text) == body:
            print(f"{args.readme}'s results are those of {against}")
            return 0
        diff = "\n".join(difflib.unified_diff(current_fragment(text).splitlines(), body.splitlines(),
                                              f"{args.readme.name} (written)", f"{against} (this report)",
                                              lineterm=""))
        regenerate = ("regenerate them with python train.py --stage all && python evaluate.py && "
                      "python scripts/readme_results.py --from runs/synthetic/eval_test/report.json")
        written = json.loads(STORED.read_text(encoding="utf-8"))
        here, there = made_on(), written.get("made_on")
        if args.source and there and _kind(here) != _kind(there):
            new = headline_figures(report)
            moved = {f"{model} {metric}": (old, new.get((model, metric)))
                     for (model, metric), old in headline_figures(written).items()
                     if not abs(old - new.get((model, metric), float("inf"))) <= CROSS_CPU_TOLERANCE}
            print(f"{args.readme}'s results were made on {there}; this run on {here}: another kind of CPU, "
                  f"whose oneDNN kernels round differently, so exact figures are not expected.\n{diff}")
            if moved:
                print(f"these moved by more than {CROSS_CPU_TOLERANCE} (more than rounding): {moved}; {regenerate}",
                      file=sys.stderr)
                return 1
            print(f"every UA and macro-F1 within {CROSS_CPU_TOLERANCE} of the README's")
            return 0
        print(f"{args.readme} results differ from {against}; {regenerate}\n{diff}", file=sys.stderr)
        return 1
    args.readme.write_text(replace_fragment(text, body), encoding="utf-8")
    print(f"wrote the results of {STORED.relative_to(REPO)} into {args.readme}")
    return 0


def _kind(machine: dict) -> tuple:
    """What decides the kernels: the CPU model, its instruction sets, TensorFlow's version."""
    return machine.get("cpu"), machine.get("cpu_model"), tuple(machine.get("isa", ())), machine.get("tensorflow")


if __name__ == "__main__":
    sys.exit(main())
