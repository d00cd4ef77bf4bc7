"""Command line: the dataset analysis report and the bio-signal study.

    python -m kemdy_tf.analysis --data DIR [--out reports/analysis] [--speaker ID] [--max-k N]

Reads a KEMDy20 folder (or `--manifest CSV`), writes `report.md`, `stats.json` and the
PNG figures to `--out`, and prints progress on stderr. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import typing

from kemdy_tf.analysis import bio_study
from kemdy_tf.analysis.progress import ProgressLine
from kemdy_tf.config import FeatureConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kemdy_tf.analysis",
        description="Dataset statistics and the E4 bio-signal clustering study, as a markdown report.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="KEMDy20 root (holds annotation/, wav/, EDA/ ...)")
    source.add_argument("--manifest", metavar="CSV", help="a CSV manifest instead (no bio study without E4 paths)")
    parser.add_argument("--out", default="reports/analysis", help="output folder (default reports/analysis)")
    parser.add_argument("--sessions", nargs="*", help="only these sessions, e.g. 1 2 or Sess17")
    parser.add_argument("--speaker", help="speaker whose session the bio figure shows (default: the first)")
    parser.add_argument("--max-k", type=int, default=6, help="try k = 2..N clusters (default 6)")
    parser.add_argument("--max-series", type=int, default=bio_study.MAX_SERIES,
                        help=f"series DTW k-means is fitted on (seeded subsample; default {bio_study.MAX_SERIES})")
    parser.add_argument("--series-length", type=int, default=bio_study.SERIES_LENGTH,
                        help=f"samples per resampled series (default {bio_study.SERIES_LENGTH})")
    parser.add_argument("--tokenizer", metavar="MODEL",
                        help="SentencePiece model to count tokens with (e.g. a run's tokenizer.model); "
                             "default: train one on the transcripts")
    parser.add_argument("--vocab-size", type=int, default=FeatureConfig.vocab_size,
                        help=f"vocabulary of the trained counting tokenizer (default {FeatureConfig.vocab_size})")
    parser.add_argument("--permutations", type=int, default=bio_study.N_PERMUTATIONS,
                        help=f"label shuffles of the MI baseline (default {bio_study.N_PERMUTATIONS})")
    parser.add_argument("--seed", type=int, default=0, help="subsample, k-means and permutation seed")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: typing.Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_k < 2:
        print("error: --max-k must be at least 2", file=sys.stderr)
        return 2
    if args.max_series < 3 or args.series_length < 2:
        print("error: --max-series must be >= 3 and --series-length >= 2", file=sys.stderr)
        return 2
    progress = ProgressLine(enabled=not args.quiet)
    started = time.perf_counter()
    # Imported here so `--help` answers without loading pandas / tslearn / matplotlib.
    from kemdy_tf.analysis.report import analyse

    try:
        if args.data:
            from kemdy_tf.data import synthetic
            from kemdy_tf.data.kemdy20 import find_root, read_kemdy20

            progress.note(f"reading {args.data}")
            table, skips = read_kemdy20(args.data, args.sessions)
            root = find_root(args.data)
            source = root
            if os.path.exists(os.path.join(root, synthetic.MARKER)):
                source += " (synthetic set written by kemdy_tf.data.synthetic: its numbers say nothing about KEMDy20)"
        else:
            from kemdy_tf.data.manifest import read_manifest

            progress.note(f"reading {args.manifest}")
            table, skips = read_manifest(args.manifest)
            source = os.path.abspath(args.manifest)
        stats = analyse(table, skips, args.out, speaker=args.speaker, max_k=args.max_k,
                        max_series=args.max_series, series_length=args.series_length,
                        tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                        n_permutations=args.permutations, seed=args.seed, source=source,
                        progress=progress, note=progress.note)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{stats['utterances']} utterances analysed in {time.perf_counter() - started:.0f} s")
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
