"""What a user waits for: `model.fit` samples/s on real-length clips, against the bare step.

    python bench/fit_speed.py                       # synthetic clips of 3-10 s, small preset
    python bench/fit_speed.py --manifest /data/ravdess_speech_16k/manifest.csv --set data.split_by=speaker \
        --set data.classes=neutral,calm,happy,sad,angry,fear,disgust,surprise

For each stage, one epoch of `model.fit` through the real pipeline (feature cache ->
tf.data with padding, masking, tokenising, class weights) is timed, then the very same
batches, materialised in memory, go through the compiled `train_function` alone. The
ratio is the share of the bare step's speed that the user actually gets
(target >= 0.70): what is lost is the input pipeline and Keras' per-step overhead.
Prints one table; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help="a CSV manifest of real clips (default: synthetic 3-10 s clips)")
    p.add_argument("--stages", default="audio_clf,fusion")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--sessions", type=int, default=4, help="synthetic sessions (two speakers each)")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    from kemdy_tf import run as run_lib
    from kemdy_tf import stages as stages_lib
    from kemdy_tf import class_balance, training
    from kemdy_tf.config import make_config
    from kemdy_tf.data import synthetic

    work = args.work or Path(tempfile.mkdtemp(prefix="fit_speed_"))
    config = make_config("small", ["train.epochs=1", *args.overrides])
    if args.manifest:
        source = {"manifest": args.manifest}
    else:
        root = synthetic.generate(work / "synthetic", seed=0, sessions=max(args.sessions, 3),
                                  utterances=(10, 12), duration=(3.0, 10.0))
        source = {"data": root}
    run = run_lib.prepare_run(work / "run", source, config, cache_dir=work / "cache")
    results = {}
    for stage in args.stages.split(","):
        spec = stages_lib.get(stage)
        keras.utils.set_random_seed(0)
        model = training.build_stage_model(run, stage, from_scratch=True)
        training.compile_stage_model(model, stage, config)
        weights = class_balance.class_weights(run) if spec.is_classifier else None
        ds = stages_lib.stage_dataset(run, spec, "train", training=True, class_weights=weights, model=model)
        batches = list(ds)  # warm: traces the pipeline once, and the materialised copy for the bare step
        samples = sum(int(tf.shape(tf.nest.flatten(b[1])[0])[0]) for b in batches)
        model.fit(ds.take(2), epochs=1, verbose=0, shuffle=False)  # traces the train function (not timed)
        fit_times = []
        for _ in range(2):
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
            fit_times.append(time.perf_counter() - start)
        model.make_train_function()
        for batch in batches:  # trace every padded length once, as fit's first epoch did
            float(model.train_function([batch])["loss"])
        step_times = []
        for _ in range(2):
            start = time.perf_counter()
            for batch in batches:
                float(model.train_function([batch])["loss"])
            step_times.append(time.perf_counter() - start)
        fit_s, step_s = statistics.median(fit_times), statistics.median(step_times)
        frames = [int(tf.shape(b[0]["log_mel"] if isinstance(b[0], dict) and "log_mel" in b[0] else
                               tf.zeros([1, 0]))[1]) for b in batches]
        results[stage] = {"samples": samples, "batches": len(batches), "fit_samples_per_s": samples / fit_s,
                          "step_samples_per_s": samples / step_s, "fit_share_of_step": step_s / fit_s,
                          "mean_padded_frames": statistics.mean(frames) if frames else 0}
    print(f"{'stage':12s}{'clips':>7s}{'frames':>8s}{'fit/s':>9s}{'step/s':>9s}{'fit/step':>10s}")
    for stage, r in results.items():
        print(f"{stage:12s}{r['samples']:7d}{r['mean_padded_frames']:8.0f}{r['fit_samples_per_s']:9.1f}"
              f"{r['step_samples_per_s']:9.1f}{r['fit_share_of_step']:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
