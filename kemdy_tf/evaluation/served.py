"""The export against the evaluation: does the served model answer what `evaluate.py` scored?

    python -m kemdy_tf.evaluation.served --workdir runs/synthetic --export saved_models/kemdy

For every utterance of a split, the probabilities the evaluation wrote for the fusion model
(`WORKDIR/eval_<split>/predictions.csv`) are compared with what the SavedModel answers from
the same wav file and transcript, the way `predict.py` calls it (`inference.load_model`:
decoding, log-mel and tokenization inside the graph). Where the model standardises per
speaker, the export is given the very statistics the evaluation fed the Keras model (each
test speaker's own clips, or the run's fallback for a speaker with one clip: read from the
evaluation's own dataset, `runs.split_dataset`), through its `serving_speaker` signature.

Prints one line per model and exits 1 when any probability differs by more than the
tolerance (default 1e-4), so CI can run it after the main job.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import pandas as pd

TOLERANCE = 1e-4
# Clips per call of the export (one speaker's statistics per call).
BATCH = 16


def served_differences(workdir, export, split: str = "test", model: str = "fusion", predictions=None,
                       cache_dir=None) -> pd.DataFrame:
    """`[segment_id, speaker_statistics, max_abs_diff]`: per utterance of `split`, the largest
    difference between the export's emotion probabilities and the evaluation's.

    Args:
        workdir: the trained and evaluated run.
        export: the export of that run (a version folder or its base folder).
        split: the evaluated split.
        model: the evaluation's row name to compare (the export serves the fusion model).
        predictions: the evaluation's predictions.csv (default `WORKDIR/eval_<split>/predictions.csv`).
        cache_dir: the feature cache, when training used `--cache-dir`.
    """
    from kemdy_tf import inference
    from kemdy_tf.evaluation.runs import EvaluationError, load_trained, split_dataset

    workdir = pathlib.Path(workdir)
    predictions = pathlib.Path(predictions or workdir / f"eval_{split}" / "predictions.csv")
    if not predictions.is_file():
        raise EvaluationError(f"{predictions}: no predictions (run evaluate.py --workdir {workdir} first)")
    scored = pd.read_csv(predictions)
    scored = scored[scored["model"] == model].set_index("segment_id")
    if scored.empty:
        raise EvaluationError(f"{predictions} has no rows of model {model!r}")
    trained = load_trained(workdir, cache_dir)
    run = trained.run
    classes = list(run.config.data.classes)
    table = run.split(split)
    table = table[table["segment_id"].astype(str).isin(scored.index.astype(str))]
    reads_statistics = "speaker_functionals" in {t.name for t in trained.models[model].inputs}
    statistics: dict[str, np.ndarray] = {}
    if reads_statistics:  # what the evaluation fed each utterance
        for features, _ in split_dataset(run, run.require_features(table, f"{split} split")):
            for segment, value in zip(features["segment_id"].numpy(), features["speaker_functionals"].numpy()):
                statistics[segment.decode("utf-8")] = value

    served = inference.load_model(export)
    if served.classes != classes:
        raise EvaluationError(f"{export} serves classes {served.classes}, the run has {classes}")
    groups: dict[bytes, list] = {}
    for row in table.itertuples(index=False):
        segment = str(row.segment_id)
        key = statistics[segment].tobytes() if reads_statistics else b""
        groups.setdefault(key, []).append((segment, str(row.wav_path), "" if pd.isna(row.text) else str(row.text)))
    rows = []
    for key, members in groups.items():
        speaker = statistics[members[0][0]] if reads_statistics else None
        for start in range(0, len(members), BATCH):
            chunk = members[start: start + BATCH]
            waves = [inference.load_clip(path, served)[0] for _, path, _ in chunk]
            answers = served.predict(waves, [text for _, _, text in chunk], speaker=speaker)
            for (segment, _, _), answer in zip(chunk, answers):
                expected = scored.loc[segment, [f"prob_{c}" for c in classes]].to_numpy(np.float64)
                rows.append({"segment_id": segment, "speaker_statistics": reads_statistics,
                             "max_abs_diff": float(np.abs(np.asarray(answer["probabilities"]) - expected).max())})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kemdy_tf.evaluation.served", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/synthetic", help="the trained, evaluated run")
    parser.add_argument("--export", default="saved_models/kemdy", help="its export (default saved_models/kemdy)")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--predictions", default=None,
                        help="the evaluation's predictions.csv (default WORKDIR/eval_SPLIT/predictions.csv; "
                             "a fold's: WORKDIR/eval_SPLIT/folds/foldK/predictions.csv of the parent)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    from kemdy_tf.evaluation.runs import EvaluationError
    from kemdy_tf.inference import PredictError

    try:
        frame = served_differences(args.workdir, args.export, args.split, predictions=args.predictions,
                                   cache_dir=args.cache_dir)
    except (EvaluationError, PredictError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    worst = float(frame["max_abs_diff"].max())
    with_statistics = " (given the evaluation's speaker statistics)" if frame["speaker_statistics"].any() else ""
    verdict = "equal" if worst <= args.tolerance else "DIFFERENT"
    print(f"{args.export} vs {args.workdir} {args.split} split, {len(frame)} utterances{with_statistics}: "
          f"largest probability difference {worst:.2e} -> {verdict} within {args.tolerance:g}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
