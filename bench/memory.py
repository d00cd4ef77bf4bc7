"""Peak memory of one training epoch at N and at 4N utterances: do features stream?

Each epoch runs in its own process (`python bench/memory.py --workdir ...`), the
real path `training.prepare_run` + `training.train_stage(..., epochs=1)`, on a
synthetic set whose feature cache the parent has already filled (so only training
is measured). The child reports its own peak resident memory (VmHWM from
/proc/self/status; `ru_maxrss` where /proc is missing). If the pipeline held every
clip's features in memory the 4N run would need about 3 x the features' size more
than the N run; streaming from the cache keeps the two equal.
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


def start_epoch(data: Path, workdir: Path, cache: Path, preset: str, overrides, stage: str = "audio"):
    """Start the child process for one epoch; returns the `subprocess.Popen`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--workdir", str(workdir),
               "--cache", str(cache), "--preset", preset, "--stage", stage]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_epoch(process, timeout: float = 900) -> dict:
    """The child's result dict, or a RuntimeError with the end of its stderr."""
    stdout, stderr = process.communicate(timeout=timeout)
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"memory benchmark child failed (exit {process.returncode}):\n{stderr[-3000:]}")


def measure(small_set: Path, large_set: Path, work: Path, preset: str, overrides, feature_bytes: dict) -> dict:
    """Both epochs (run side by side: memory does not depend on the neighbour) and their ratio.

    Args:
        feature_bytes: {"small": bytes, "large": bytes} of each set's cached features,
            to show how big the gap would be if features were held in memory.
    """
    children = {name: start_epoch(data, work / f"memory_{name}", work / f"memory_cache_{name}", preset, overrides)
                for name, data in (("small", small_set), ("large", large_set))}
    results = {name: finish_epoch(child) for name, child in children.items()}
    small, large = results["small"], results["large"]
    base = small["peak_rss_bytes"]
    return {
        "preset": preset, "stage": small["stage"],
        "n_utterances": small["train_utterances"], "n4_utterances": large["train_utterances"],
        "peak_rss_mb_n": base / 2**20, "peak_rss_mb_4n": large["peak_rss_bytes"] / 2**20,
        "ratio": large["peak_rss_bytes"] / base,
        "features_mb_n": feature_bytes["small"] / 2**20, "features_mb_4n": feature_bytes["large"] / 2**20,
        # What the ratio would be if the pipeline kept every feature in memory.
        "ratio_if_features_in_memory": (base + feature_bytes["large"] - feature_bytes["small"]) / base,
        "epoch_s_n": small["epoch_s"], "epoch_s_4n": large["epoch_s"],
    }


# === The child: one epoch ===

def _child(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one training epoch, reporting its peak memory")
    parser.add_argument("--data", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stage", default="audio")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)

    from kemdy_tf import training
    from kemdy_tf.config import make_config

    config = make_config(args.preset, args.set)
    run = training.prepare_run(args.workdir, {"data": args.data}, config, cache_dir=args.cache)
    start = time.perf_counter()
    training.train_stage(run, args.stage, epochs=1, verbose=0, retrain=True)
    epoch_s = time.perf_counter() - start
    result = {"stage": args.stage, "train_utterances": int((run.table["split"] == "train").sum()),
              "epoch_s": epoch_s, "peak_rss_bytes": peak_rss_bytes()}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
