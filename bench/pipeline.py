"""How fast the input pipeline feeds training.

Two measurements, each against a reference taken in the same run:

* building the feature cache (`FeatureCache.build`, 2 worker processes, a fresh
  cache folder) vs a plain one-process loop of the same librosa log-mel over the
  same wavs (`kemdy_tf.data.audio.log_mel_file`, the function the workers run), so
  the ratio is what the cache's parallel build buys; a one-worker build separates
  the cache's own overhead from the parallel speed-up;
* iterating one epoch of the cached tf.data pipeline (`make_dataset`, training=True:
  shuffling, frequency masking, padding, batching, in-graph tokenization) vs the
  rate at which the training step consumes batches.
"""

from __future__ import annotations

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
    """Utterances/s of the cache build (workers and one worker) vs the plain loop."""
    paths = dataset_wavs(root)
    if not paths:
        raise RuntimeError(f"no wav files under {root}")
    warm_file_cache(paths)
    loop_s = plain_loop(paths, config)
    parallel_s = cache_build(paths, config, work / "cache_parallel", workers)
    single_s = cache_build(paths, config, work / "cache_single", 1)
    n = len(paths)
    return {
        "utterances": n, "workers": workers,
        "audio_seconds": _audio_seconds(paths),
        "plain_loop_s": loop_s, "build_parallel_s": parallel_s, "build_single_s": single_s,
        "plain_loop_utt_per_s": n / loop_s, "build_parallel_utt_per_s": n / parallel_s,
        "build_single_utt_per_s": n / single_s,
        "speedup_vs_loop": loop_s / parallel_s,
        "single_worker_overhead": single_s / loop_s,
    }


def _audio_seconds(paths) -> float:
    import soundfile

    return float(sum(soundfile.info(p).duration for p in paths))


def measure_cached_epoch(table: pd.DataFrame, cache, tokenizer, config: RunConfig, epochs: int = 2) -> dict:
    """Batches/s of iterating the training pipeline over cached features (no model).

    The first epoch warms tf.data (function tracing, file system cache); the best of
    the later ones is reported.
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
