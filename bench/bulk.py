"""Bulk inference throughput: the Beam pipeline (kemdy_tf.bulk) against predict.py, in one run.

    nice -n 10 python bench/bulk.py                          # 500 clips of 1-3 s, saved_models/kemdy
    python bench/bulk.py --clips 100 --small 20 --lengths 8 16   # longer clips (docs/bulk.md's cost)
    python bench/bulk.py --mode multi_processing --repeats 2  # a process per worker; each command twice

Writes --clips speech-like clips (the synthetic set's voice model, --lengths seconds, 16 kHz
WAV) and a second set of --small clips into a temporary folder, and times on each set, as
whole commands (start-up, model loading and writing included, as a user runs them):

* `predict.py --wav DIR --no-stt --out X.csv`: one process looping over the files, batches of 8;
* `python -m kemdy_tf.bulk --input DIR ...` on the DirectRunner with --workers workers
  (`--direct_running_mode multi_threading`: threads of one process, which imports TensorFlow
  and loads the export once; or --mode multi_processing), its own --batch-size: CSV + Parquet shards.

Prints, for each command: wall and CPU seconds (its processes and their children) and how
many cores other processes kept busy meanwhile (on a shared machine a second worker only
helps where a second core is free); the end-to-end ratio on --clips; the steady state, from
the difference between the two sets (start-up cancels): clips/s, and clips and seconds of
audio per CPU second (the figure docs/bulk.md scales to 1,000 hours of audio); and the
largest probability difference between the two outputs (the same model on the same files:
~1e-6, rounding). With --repeats the commands alternate and each keeps its fastest run.

--model is an export (default saved_models/kemdy; without one an untrained small-preset
export is built in the temporary folder: speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RATE = 16000


def write_clips(folder: Path, count: int, lengths=(1.0, 3.0), seed: int = 0) -> float:
    """`count` speech-like clips of `lengths` (min, max) seconds; returns their total seconds."""
    import soundfile as sf

    from bench.serving import clip

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(count):
        wave = clip(float(rng.uniform(*lengths)), RATE, seed=seed + i)
        sf.write(folder / f"clip_{i:05d}.wav", wave, RATE, subtype="PCM_16")
        total += len(wave) / RATE
    return total


@dataclasses.dataclass
class Timing:
    """One command's run: wall and CPU seconds (its processes and their children), and how many
    cores other processes kept busy meanwhile (bench.machine.LoadMonitor; None off Linux)."""

    wall: float
    cpu: float
    others: float | None


def timed(command: list[str]) -> Timing:
    """Runs a command (its output kept for an error) and times it."""
    from bench.machine import LoadMonitor

    monitor, before = LoadMonitor(), _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Timing(wall, _children_cpu() - before, monitor.report().get("others_busy_cores"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # Beam's workers are its launcher's children
    return usage.ru_utime + usage.ru_stime


def probabilities(paths) -> dict:
    """file -> [prob_<class>...] of predict.py's CSV or the pipeline's shards."""
    out = {}
    for path in paths:
        for row in csv.DictReader(open(path, encoding="utf-8")):
            out[row["file"]] = np.array([float(v) for k, v in sorted(row.items()) if k.startswith("prob_")])
    return out


def commands(clips: Path, out: Path, model: str, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return {
        "predict": [sys.executable, "predict.py", "--wav", str(clips), "--model", model, "--no-stt",
                    "--out", str(out / "predict.csv")],
        "bulk": [sys.executable, "-m", "kemdy_tf.bulk", "--model", model, "--input", str(clips),
                 "--output", str(out / "bulk" / "out"),
                 *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                 f"--direct_num_workers={args.workers}", f"--direct_running_mode={args.mode}"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=500, help="short clips to predict (default %(default)s)")
    parser.add_argument("--small", type=int, default=50,
                        help="clips of the start-up run (default %(default)s; 0: none, no steady-state figure)")
    parser.add_argument("--model", help="an export (default saved_models/kemdy, else an untrained small one)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner workers (default %(default)s)")
    parser.add_argument("--mode", default="multi_threading", choices=["multi_threading", "multi_processing"],
                        help="--direct_running_mode (default %(default)s)")
    parser.add_argument("--batch-size", type=int, help="the pipeline's --batch-size (default: its own, "
                                                        "kemdy_tf.bulk.BATCH_SIZE)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command, alternating (best kept)")
    parser.add_argument("--lengths", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX"),
                        help="clip lengths in seconds (default 1 3)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="bench_bulk_") as folder:
        folder = Path(folder)
        model = args.model or ("saved_models/kemdy" if (ROOT / "saved_models" / "kemdy").is_dir() else None)
        if model is None:
            from bench.stt import build_export

            model = str(build_export(folder))
        seconds = write_clips(folder / "clips", args.clips, args.lengths)
        sizes = {args.clips: commands(folder / "clips", folder / "big", model, args)}
        if args.small:
            small_seconds = write_clips(folder / "small", args.small, args.lengths)
            sizes[args.small] = commands(folder / "small", folder / "little", model, args)
        runs = {(size, name): [] for size in sizes for name in ("predict", "bulk")}
        for _ in range(args.repeats):
            for size, named in sizes.items():
                for name, command in named.items():
                    runs[(size, name)].append(timed(command))
        best = {key: min(timings, key=lambda t: t.wall) for key, timings in runs.items()}
        ours = probabilities(sorted(glob.glob(str(folder / "big" / "bulk" / "out-*-of-*.csv"))))
        theirs = probabilities([folder / "big" / "predict.csv"])
        if set(ours) != set(theirs):
            raise SystemExit(f"the pipeline wrote {len(ours)} files, predict.py {len(theirs)}")
        difference = max(float(np.max(np.abs(ours[f] - theirs[f]))) for f in theirs)

    n = args.clips
    print(f"{n} clips of {args.lengths[0]:g}-{args.lengths[1]:g} s ({seconds:.0f} s of audio), model {model}, "
          f"{cores} cores")
    labels = {"predict": "predict.py --wav DIR (one process)",
              "bulk": f"kemdy_tf.bulk, DirectRunner, {args.workers} workers ({args.mode})"}
    for name, label in labels.items():
        for size in sizes:
            t = best[(size, name)]
            others = "" if t.others is None else f", other processes kept {t.others:.2f} cores busy"
            print(f"  {label}, {size} clips: {t.wall:6.1f} s wall ({size / t.wall:5.1f} clips/s), "
                  f"{t.cpu:5.1f} CPU s{others}")
    whole = best[(n, "predict")].wall / best[(n, "bulk")].wall
    print(f"end to end ({n} clips, start-up included): {n / best[(n, 'predict')].wall:.1f} vs "
          f"{n / best[(n, 'bulk')].wall:.1f} clips/s: bulk / predict.py = {whole:.2f}x")
    more = n - args.small
    if args.small and not all(best[(n, name)].wall > best[(args.small, name)].wall for name in labels):
        print(f"steady state: --clips {n} took no longer than --small {args.small}: too few clips to tell "
              "the work from the start-up")
    elif args.small:
        # What the clips beyond the small run's cost: start-up (imports, model loading, warm-up) cancels.
        audio = seconds - small_seconds
        for name, label in labels.items():
            big, little = best[(n, name)], best[(args.small, name)]
            wall, cpu = big.wall - little.wall, big.cpu - little.cpu
            start_up = little.wall - args.small * wall / more  # the small run less its clips' share
            print(f"  steady state, {label}: {more / wall:6.1f} clips/s wall; {more / cpu:6.1f} clips and "
                  f"{audio / cpu:6.1f} s of audio per CPU second; start-up {start_up:.1f} s")
        rate = {name: more / (best[(n, name)].wall - best[(args.small, name)].wall) for name in labels}
        print(f"steady state: bulk / predict.py = {rate['bulk'] / rate['predict']:.2f}x (wall)")
    print(f"largest probability difference between the two outputs: {difference:.1e}")
    print("commands (the temporary folder differs from run to run):")
    for command in sizes[n].values():
        print("  " + " ".join(command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
