"""Evaluate a trained run on its test (or validation) split.

    python evaluate.py                                   # the README's main run (runs/synthetic)
    python evaluate.py --workdir runs/kemdy20 --split val
    python evaluate.py --workdir runs/kemdy20 --out reports/kemdy20

Writes into OUT (default WORKDIR/eval_<split>): report.md (tables first, then
figures), report.json (everything as data), predictions.csv (one row per model and
utterance) and PNG figures: confusion matrices, per-class recall, training curves,
sweeps (WORKDIR/sweeps/) and a per-fold report with mean ± std (WORKDIR/folds/).
Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kemdy_tf.logs import quiet_logs

DEFAULT_WORKDIR = Path("runs/synthetic")  # where `python train.py --stage all` trains


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"the run folder train.py wrote (default {DEFAULT_WORKDIR})")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", type=Path, default=None, help="report folder (default WORKDIR/eval_SPLIT)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the feature cache, if training used --cache-dir (default WORKDIR/../cache)")
    p.add_argument("--no-sweeps", action="store_true", help="leave WORKDIR/sweeps/ out")
    p.add_argument("--no-folds", action="store_true", help="leave WORKDIR/folds/ out")
    p.add_argument("--stt", action="store_true",
                   help="add the deployment row: the fusion model fed Vosk transcripts of the split's audio, "
                        "with their character error rate (needs requirements-stt.txt; minutes: about real time)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_logs()
    from kemdy_tf.evaluation import EvaluationError, evaluate_workdir
    from kemdy_tf.evaluation.report import headline_markdown

    from kemdy_tf.stt import SttUnavailable

    try:
        transcribe = None
        if args.stt:
            from kemdy_tf.evaluation.transcribed import vosk_transcriber

            transcribe = vosk_transcriber()
        report = evaluate_workdir(args.workdir, args.split, args.out, args.cache_dir,
                                  with_sweeps=not args.no_sweeps, with_folds=not args.no_folds,
                                  transcribe=transcribe)
    except (EvaluationError, ValueError, FileNotFoundError, SttUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(headline_markdown(report))
    for kind, path in report["paths"].items():
        print(f"{kind:12s}{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
