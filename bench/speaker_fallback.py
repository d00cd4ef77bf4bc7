"""What enrolment buys: test UA of a run's classifiers under each source of speaker statistics.

    PYTHONPATH=. python bench/speaker_fallback.py --workdir runs/rav_default [--stages audio_clf fusion]

For a trained run (or each fold of a `--folds` run) whose classifiers standardise their
utterance functionals per speaker (`kemdy_tf.speaker_statistics`), scores the test split
three ways, the models unchanged:

* `speaker, all clips`: each test speaker's statistics over all their test clips (what
  `evaluate.py` scores: the data pipeline's per-speaker statistics);
* `speaker, 5 clips`: over 5 of their clips drawn at random (seed 0), as `predict.py`
  would enrol a speaker from a handful of recordings;
* `training set (fallback)`: the run's pooled training-split statistics for every clip,
  what an export answers a clip of no enrolled speaker with.

Prints a Markdown table (fold means ± sd, and each fold). Minutes on CPU for RAVDESS's
six folds; needs the run's feature cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ENROLMENT_CLIPS = 5


def _ua(model, dataset) -> float:
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    from kemdy_tf.stages import inputs_for

    truth, predicted = [], []
    for features, targets in dataset:
        probs = model.predict_on_batch(inputs_for(model, features))["emotion"]
        predicted.append(np.argmax(probs, axis=-1))
        truth.append(np.asarray(targets["emotion"]))
    return float(balanced_accuracy_score(np.concatenate(truth), np.concatenate(predicted)))


def fold_scores(workdir: Path, stages) -> dict:
    """{stage: {source: UA}} for one run."""
    import keras
    import numpy as np

    import kemdy_tf.models  # noqa: F401  registers the layers load_model needs
    from kemdy_tf import run as run_lib, speaker_statistics
    from kemdy_tf.data.features import dataset_rows, make_dataset, speaker_group

    run = run_lib.open_run(workdir)
    cfg, tokenizer = run.config, run.tokenizer()
    # The rows make_dataset yields, in its order: the override statistics are gathered by row.
    test = dataset_rows(run.require_features(run.split("test"), "test split"), cfg)
    fallback = speaker_statistics.run_fallback(run)
    rng = np.random.default_rng(0)
    # 5 clips per speaker for enrolment: the statistics of those, given to all their clips.
    groups = speaker_group(test, run.cache)
    enrolled = {}
    for group in sorted(set(groups)):
        paths = sorted({p for p, g in zip(test["wav_path"], groups) if g == group})
        chosen = rng.choice(paths, size=min(ENROLMENT_CLIPS, len(paths)), replace=False)
        mels = [run.cache.read(p) for p in chosen]
        enrolled[group] = speaker_statistics.enrol(mels, cfg.fusion.functional_cepstra, cfg.features.max_frames,
                                                   fallback)[0]

    def dataset(table, override=None):
        ds = make_dataset(table, run.cache, tokenizer, cfg, training=False, with_ids=False,
                          speaker_fallback=fallback)
        if override is None:
            return ds
        import tensorflow as tf

        stats = tf.constant(np.stack([override(g) for g in speaker_group(table, run.cache)]), tf.float32)
        offsets = tf.data.Dataset.range(len(table)).batch(cfg.train.batch_size)
        return tf.data.Dataset.zip(ds, offsets).map(
            lambda batch, rows: ({**batch[0], "speaker_functionals": tf.gather(stats, rows)}, batch[1]))

    sources = {
        "speaker, all clips": dataset(test),
        f"speaker, {ENROLMENT_CLIPS} clips": dataset(test, lambda g: enrolled[g]),
        "training set (fallback)": dataset(test, lambda g: fallback),
    }
    scores = {}
    for stage in stages:
        path = run.model_path(stage)
        if not path.is_file():
            continue
        model = keras.saving.load_model(path, compile=False)
        if not speaker_statistics.reads_speaker_statistics(model):
            continue
        scores[stage] = {source: _ua(model, ds) for source, ds in sources.items()}
    return scores


def main(argv=None) -> int:
    import numpy as np

    from kemdy_tf import run as run_lib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a trained run, or a --folds run's workdir")
    parser.add_argument("--stages", nargs="+", default=["audio_clf", "fusion"])
    args = parser.parse_args(argv)
    folds_dir = args.workdir / run_lib.FOLDS_DIR
    workdirs = sorted(folds_dir.iterdir()) if folds_dir.is_dir() else [args.workdir]
    per_fold = [fold_scores(w, args.stages) for w in workdirs]
    print(f"| model | speaker statistics | mean ± sd over {len(workdirs)} | per run |\n|---|---|---|---|")
    for stage in args.stages:
        rows = [f[stage] for f in per_fold if stage in f]
        if not rows:
            continue
        for source in rows[0]:
            values = np.array([r[source] for r in rows])
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            print(f"| `{stage}` | {source} | {values.mean():.3f} ± {sd:.3f} | "
                  + " ".join(f"{v:.3f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    from kemdy_tf.logs import quiet_logs

    quiet_logs()
    sys.exit(main())
