"""How fast the input pipeline feeds training.

Two measurements, each against a reference taken in the same run:

* building the feature cache (`FeatureCache.build`, 2 worker processes, a fresh
  cache folder) vs a plain one-process loop of the same librosa log-mel over the
  same wavs (`kemdy_tf.data.audio.log_mel_file`, the function the workers run), so
  the ratio is what the cache's parallel build buys; a one-worker build separates
  the cache's own overhead from the parallel speed-up, and a build whose workers
  use one BLAS thread each shows what oversubscribed cores cost;
* iterating one epoch of the cached tf.data pipeline (`make_dataset`, training=True:
  shuffling, frequency masking, padding, batching, in-graph tokenization) vs the
  rate at which the training step consumes batches.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from kemdy_tf.config import RunConfig


def dataset_wavs(root) -> list[str]:
    """Every wav of a synthetic (KEMDy20-layout) dataset, sorted."""
    return sorted(glob.glob(os.path.join(str(root), "wav", "**", "*.wav"), recursive=True))


def warm_file_cache(paths) -> int:
    """Read every file once so neither timed pass pays for cold disk reads; returns bytes read."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += len(handle.read())
    return total


def plain_loop(paths, config: RunConfig) -> float:
    """Seconds for one process to compute every clip's log-mel (librosa), keeping nothing."""
    from kemdy_tf.data.audio import log_mel_file

    start = time.perf_counter()
    for path in paths:
        log_mel_file(path, config.features)
    return time.perf_counter() - start


def cache_build(paths, config: RunConfig, cache_root: Path, workers: int) -> float:
    """Seconds of `FeatureCache.build` into a fresh folder (worker start-up included)."""
    from kemdy_tf.data.features import FeatureCache

    shutil.rmtree(cache_root, ignore_errors=True)
    cache = FeatureCache(cache_root, config.features)
    table = pd.DataFrame({"wav_path": list(paths)})
    start = time.perf_counter()
    failures = cache.build(table, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"feature cache build failed for {len(failures)} wavs, e.g. {failures[0]}")
    return seconds


def measure_build(root, config: RunConfig, work: Path, workers: int = 2) -> dict:
    """Utterances/s of the cache build vs the plain loop, and what changes it.

    The loop runs warm (librosa's one-time start-up, a couple of seconds of lazy
    imports and first calls, is paid before timing it); worker processes pay that
    start-up themselves, which is part of what a build costs. Variants: workers
    limited to one BLAS thread each (numpy's OpenBLAS otherwise starts one thread
    per core in every worker, so 2 workers run 4 threads on 2 cores), and one worker
    (the build in this process: the cache's own bookkeeping).
    """
    paths = dataset_wavs(root)
    if not paths:
        raise RuntimeError(f"no wav files under {root}")
    warm_file_cache(paths)
    plain_loop(paths[:2], config)  # librosa's one-time start-up
    loop_s = plain_loop(paths, config)
    parallel_s = cache_build(paths, config, work / "cache_parallel", workers)
    with one_blas_thread_in_children():
        parallel_one_thread_s = cache_build(paths, config, work / "cache_parallel_1thread", workers)
    single_s = cache_build(paths, config, work / "cache_single", 1)
    n = len(paths)
    return {
        "utterances": n, "workers": workers, "audio_seconds": _audio_seconds(paths),
        "plain_loop_s": loop_s, "build_parallel_s": parallel_s, "build_parallel_one_blas_thread_s":
            parallel_one_thread_s, "build_single_s": single_s,
        "plain_loop_utt_per_s": n / loop_s, "build_parallel_utt_per_s": n / parallel_s,
        "build_parallel_one_blas_thread_utt_per_s": n / parallel_one_thread_s,
        "build_single_utt_per_s": n / single_s,
        "speedup_vs_loop": loop_s / parallel_s,
        "speedup_vs_loop_one_blas_thread": loop_s / parallel_one_thread_s,
        "single_worker_overhead": single_s / loop_s,
        # Seconds the workers spend on anything but the loop's work split in `workers` parts.
        "worker_overhead_s": parallel_s - loop_s / workers,
    }


@contextlib.contextmanager
def one_blas_thread_in_children():
    """Processes started inside get one BLAS/OpenMP thread (read once, at their start)."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _audio_seconds(paths) -> float:
    import soundfile

    return float(sum(soundfile.info(p).duration for p in paths))


def measure_cached_epoch(table: pd.DataFrame, cache, tokenizer, config: RunConfig, epochs: int = 5) -> dict:
    """Batches/s of iterating the training pipeline over cached features (no model).

    The first epoch warms tf.data (function tracing, file system cache); the best of
    the later ones is reported (an epoch takes well under a second, so one busy
    neighbour moment would otherwise decide the figure).
    """
    from kemdy_tf.data.features import make_dataset

    dataset = make_dataset(table, cache, tokenizer, config, training=True)
    rates, batches = [], 0
    for _ in range(max(epochs, 2)):
        batches = 0
        start = time.perf_counter()
        for _batch in dataset:
            batches += 1
        rates.append(batches / (time.perf_counter() - start))
    return {"utterances": len(table), "batch_size": config.train.batch_size, "batches": batches,
            "batches_per_s": max(rates[1:]), "first_epoch_batches_per_s": rates[0]}
