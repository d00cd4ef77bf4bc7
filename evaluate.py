"""Evaluate a trained run on its test (or validation) split.

    python evaluate.py                                   # the README's main run (runs/synthetic)
    python evaluate.py --workdir runs/kemdy20 --split val
    python evaluate.py --workdir runs/kemdy20 --out reports/kemdy20

Writes into OUT (default WORKDIR/eval_<split>): report.md (tables first, then
figures), report.json (everything as data), predictions.csv (one row per model and
utterance) and PNG figures: confusion matrices, per-class recall, training curves,
sweeps (WORKDIR/sweeps/) and a per-fold report with mean ± std (WORKDIR/folds/).
Metric definitions: docs/metrics.md.

When speech-to-text is installed (requirements-stt.txt) and the run has a fusion
model, the report also has the deployment row `fusion_stt`: the fusion model fed
Vosk's transcripts of the split's audio instead of the reference ones, with their
character error rate (docs/stt.md). Transcripts are cached in
WORKDIR/stt_transcripts.jsonl, so only the first evaluation of a clip pays for it
(about real time); --no-stt leaves the row out.
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
    stt = p.add_mutually_exclusive_group()
    stt.add_argument("--no-stt", action="store_true",
                     help="leave out the deployment row (fusion_stt: the fusion model fed Vosk transcripts), "
                          "which is added by default when speech-to-text is installed")
    stt.add_argument("--stt", action="store_true",
                     help="require the deployment row: fail when speech-to-text is not installed "
                          "(without it the row is skipped with a note)")
    return p.parse_args(argv)


def stt_transcriber(args):
    """The transcriber for the deployment row, or None (`--no-stt`, or STT missing: a note says why).

    Raises:
        kemdy_tf.stt.SttUnavailable: `--stt` and speech-to-text is not installed.
    """
    if args.no_stt:
        return None
    from kemdy_tf import stt
    from kemdy_tf.evaluation.transcribed import CACHE_NAME, vosk_transcriber

    reason = stt.unavailable_reason()
    if reason is None:
        return vosk_transcriber(cache=args.workdir / CACHE_NAME)
    if args.stt:
        raise stt.SttUnavailable(f"--stt: {reason}")
    print(f"note: the speech-to-text row (fusion_stt) is skipped: {reason}", file=sys.stderr)
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_logs()
    from kemdy_tf.evaluation import EvaluationError, evaluate_workdir
    from kemdy_tf.evaluation.report import headline_markdown

    from kemdy_tf.stt import SttUnavailable

    try:
        transcribe = stt_transcriber(args)
        report = evaluate_workdir(args.workdir, args.split, args.out, args.cache_dir,
                                  with_sweeps=not args.no_sweeps, with_folds=not args.no_folds,
                                  transcribe=transcribe)
    except (EvaluationError, ValueError, FileNotFoundError, SttUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(headline_markdown(report))
    summary = report.get("stt") or {}
    if summary.get("models"):
        cache = getattr(transcribe, "path", None)
        kept = (f" ({transcribe.transcribed} transcribed now, {transcribe.reused} from {cache})" if cache else "")
        print(f"speech-to-text: {', '.join(summary['models'])} read Vosk's transcripts, character error rate "
              f"{summary['cer']:.3f} over {summary['clips']} clips{kept}")
    for kind, path in report["paths"].items():
        print(f"{kind:12s}{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
