"""Peak memory of one training epoch at N and at 4N utterances: do features stream?

Each epoch runs in its own process (`python bench/memory.py --data ...`) on a
synthetic set whose feature cache the parent has already filled, so only training
is measured: `run.prepare_run`, then one `fit` epoch of the fusion model trained
from scratch (the stage that reads every input: log-mels, frame masks and token ids)
on `stages.stage_dataset`, as `train_stage` runs it, without the validation pass
and checkpointing around it. The child reports its own peak resident memory (VmHWM
from /proc/self/status; `ru_maxrss` where /proc is missing), read right after the
epoch, and (with --score) the macro-F1 of its one-epoch model on the test split.

If the pipeline held every clip's features in memory, the 4N epoch would need about
the features' extra size more than the N epoch; streaming from the cache keeps the
two equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_MEMORY "
STAGE = "fusion"


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def start(sets: dict, work: Path, cache: Path, preset: str, overrides, score: tuple = ()) -> dict:
    """Start one child per set ({"n": dir, "4n": dir}), side by side: memory does not depend on the neighbour.

    The children named in `score` also report their model's test macro-F1.
    """
    return {name: _start_child(data, work / f"memory_{name}", cache, preset, overrides, name in score)
            for name, data in sets.items()}


def collect(children: dict, feature_bytes: dict, timeout: float = 1800) -> dict:
    """Wait for the children of `start`; their peaks and the 4N/N ratio.

    Args:
        children: what `start` returned.
        feature_bytes: {"n": bytes, "4n": bytes} of each set's cached features, to show
            how big the gap would be if features were held in memory.
    """
    results = {name: _finish_child(child, timeout) for name, child in children.items()}
    small, large = results["n"], results["4n"]
    base = small["peak_rss_bytes"]
    return {
        "stage": f"{small['stage']} (from scratch)", "preset": small["preset"],
        "n_utterances": small["train_utterances"], "n4_utterances": large["train_utterances"],
        "peak_rss_mb_n": base / 2**20, "peak_rss_mb_4n": large["peak_rss_bytes"] / 2**20,
        "ratio": large["peak_rss_bytes"] / base,
        "features_mb_n": feature_bytes["n"] / 2**20, "features_mb_4n": feature_bytes["4n"] / 2**20,
        # What the ratio would be if the pipeline kept every feature in memory.
        "ratio_if_features_in_memory": (base + feature_bytes["4n"] - feature_bytes["n"]) / base,
        "epoch_s_n": small["epoch_s"], "epoch_s_4n": large["epoch_s"],
        **({"one_epoch_test_macro_f1_n": small["test_macro_f1"], "test_n": small["test_n"]}
           if "test_macro_f1" in small else {}),
    }


def _start_child(data: Path, workdir: Path, cache: Path, preset: str, overrides, score: bool):
    command = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--workdir", str(workdir),
               "--cache", str(cache), "--preset", preset] + (["--score"] if score else [])
    for item in overrides:
        command += ["--set", item]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish_child(process, timeout: float) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"memory benchmark child failed (exit {process.returncode}):\n{stderr[-3000:]}")


# === The child: one epoch ===

def _child(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one training epoch, reporting its peak memory")
    parser.add_argument("--data", required=True, help="synthetic KEMDy20 folder")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cache", required=True, help="feature cache root (already built)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", action="append", default=[], help="config override section.field=value")
    parser.add_argument("--score", action="store_true", help="also report the test macro-F1 after the epoch")
    args = parser.parse_args(argv)

    import numpy as np

    from kemdy_tf import class_balance, run as run_lib, stages, training
    from kemdy_tf.config import make_config
    from kemdy_tf.scoring import classification_metrics

    config = make_config(args.preset, args.set)
    run = run_lib.prepare_run(args.workdir, {"data": args.data}, config, cache_dir=args.cache)
    model = training.build_stage_model(run, STAGE, from_scratch=True)
    dataset = stages.stage_dataset(run, STAGE, "train", training=True, class_weights=class_balance.class_weights(run),
                                   model=model)
    training.compile_stage_model(model, STAGE, config)
    start_time = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    epoch_s = time.perf_counter() - start_time
    result = {"stage": STAGE, "preset": args.preset, "train_utterances": int((run.table["split"] == "train").sum()),
              "epoch_s": epoch_s, "peak_rss_bytes": peak_rss_bytes()}
    if args.score:
        test = stages.stage_dataset(run, STAGE, "test", training=False, model=model)
        y_true = np.concatenate([y["emotion"].numpy().reshape(-1) for _, y in test]).astype(int)
        y_pred = np.argmax(model.predict(test.map(lambda x, y: x), verbose=0)["emotion"], axis=-1)
        scores = classification_metrics(y_true, y_pred, list(config.data.classes))
        result.update(test_macro_f1=float(scores["macro_f1"]), test_n=int(len(y_true)))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
