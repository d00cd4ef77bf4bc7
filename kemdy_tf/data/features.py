"""The log-mel feature cache and the tf.data pipeline that feeds every model.

Cache layout (one folder per feature recipe)::

    ROOT/logmel-<hash of audio.log_mel_settings>/   (features-<hash> for a pretrained audio
                                                      backbone's converter, see FeatureCache)
      settings.json     the recipe, for people
      index.csv         key, file, frames, wav_path, size, mtime_ns (one row per entry)
      shard-0000/       <= 256 files, each <key>.f32: raw little-endian float32 [frames, n_mels]
      shard-0001/ ...

An entry's key hashes (resolved wav path, size, mtime_ns): editing or replacing a
wav makes a new entry; changing any log-mel setting makes a new folder. Only the
settings that change the stored log-mel are hashed (sample rate, STFT, mel bins,
max_frames and the fixed dB recipe), not max_tokens, vocab_size or speaker_norm,
which act later. Raw float32 files need neither TensorFlow in the worker processes
(spawned workers import only numpy and librosa) nor a parser in the graph
(`tf.io.decode_raw`). One process builds a cache folder at a time.

Pipeline element (batched; see docs/architecture.md)::

    features: log_mel [B, T<=max_frames, n_mels] float32 (0-padded), frame_mask [B, T] bool,
              token_ids [B, max_tokens] int32 (0-padded), segment_id [B] string (with_ids);
              with fusion.functionals: speaker_functionals [B, 2, F] (functionals_speaker_norm),
              pitch_statistics [B, 12] (fusion.pitch; prosody.PITCH_STATISTICS)
    targets:  arousal [B, 1], valence [B, 1] float32, emotion [B] int32
"""

from __future__ import annotations

import concurrent.futures
import collections
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from kemdy_tf.config import FeatureConfig, RunConfig
from kemdy_tf.data import audio, prosody, splits

FORMAT_VERSION = 1  # bump when the file format or the log-mel recipe changes
SHARD_SIZE = 256
_INDEX_FIELDS = ("key", "file", "frames", "wav_path", "size", "mtime_ns")


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    file: Path
    frames: int


# === Feature cache ===

# Below this many missing clips, a worker pool costs more (spawn + importing librosa,
# ~5 s per worker) than it saves: bench/run.py measured 2 workers at 0.23x of one
# process on 329 short clips.
MIN_CLIPS_PER_PROCESS_POOL = 1000


class FeatureCache:
    """Log-mels of wav files, computed once per recipe and read back by tf.data.

    Args:
        root: folder holding one sub-folder per feature recipe.
        cfg: feature settings.

    Example:
        cache = FeatureCache("work/features", cfg.features)
        failures = cache.build(table, workers=2)   # [(wav_path, reason), ...]
        train = make_dataset(table, cache, tokenizer, cfg, training=True, split="train")
    """

    def __init__(self, root: str | os.PathLike, cfg: FeatureConfig, front_end=None):
        self.cfg = cfg
        # A pretrained audio backbone's converter (models.backbones.ConverterFeatures) replaces
        # the log-mel recipe: its settings name the folder, its compute_file fills it.
        self.front_end = front_end
        self.n_mels = cfg.n_mels if front_end is None else front_end.n_mels
        recipe = audio.log_mel_settings(cfg) if front_end is None else front_end.settings
        self.settings = dict(recipe, format=FORMAT_VERSION)
        digest = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()
        prefix = "logmel" if front_end is None else "features"
        self.folder = Path(root) / f"{prefix}-{digest[:16]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.folder / "settings.json"
        if not settings_file.exists():
            settings_file.write_text(json.dumps(self.settings, indent=2) + "\n")
        self._index_path = self.folder / "index.csv"
        self._entries = self._read_index()

    def __len__(self) -> int:
        return len(self._entries)

    # --- keys and look-ups ---

    @staticmethod
    def key(wav_path: str | os.PathLike) -> str:
        """Content key of a wav: hash of (resolved path, size, mtime_ns). Raises OSError if missing."""
        resolved = Path(wav_path).resolve()
        stat = resolved.stat()
        return hashlib.sha1(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()

    def entry(self, wav_path: str | os.PathLike) -> CacheEntry | None:
        """The cached entry of a wav, or None when missing or not cached."""
        try:
            return self._entries.get(self.key(wav_path))
        except OSError:
            return None

    def has(self, table: pd.DataFrame) -> np.ndarray:
        """Boolean mask over the table's rows: True where the wav's features are cached."""
        return np.array([self.entry(p) is not None for p in table["wav_path"]], dtype=bool)

    def missing(self, table: pd.DataFrame) -> list[str]:
        """Distinct wav paths of the table whose features are not cached."""
        return sorted({p for p, ok in zip(table["wav_path"], self.has(table)) if not ok})

    def read(self, wav_path: str | os.PathLike) -> np.ndarray:
        """The cached log-mel [frames, n_mels] of one wav (numpy)."""
        found = self.entry(wav_path)
        if found is None:
            raise KeyError(f"{wav_path} is not in the feature cache {self.folder}; run build()")
        return np.fromfile(found.file, dtype="<f4").reshape(found.frames, self.n_mels)

    # --- building ---

    def build(self, table: pd.DataFrame, workers: int = 2, progress: bool = True) -> list[tuple[str, str]]:
        """Compute and store the log-mels the cache lacks for the table's wavs.

        Cached entries are not touched (their wavs are not even opened). Work runs in
        `workers` spawned processes (<= 1: in this process; a script that builds
        with workers > 1 needs the `if __name__ == "__main__":` guard); results are written as
        they arrive and the index grows line by line, so an interrupted build keeps
        what it finished and memory stays flat.

        Args:
            table: utterance table (column `wav_path`; repeated wavs count once).
            workers: worker processes.
            progress: print progress lines to stderr.

        Returns:
            [(wav_path, reason)] for every wav that could not become features; those
            rows stay uncached (see `has`) and are retried by the next build.
        """
        failures: list[tuple[str, str]] = []
        todo: dict[str, str] = {}  # key -> wav path
        for path in dict.fromkeys(str(p) for p in table["wav_path"]):
            try:
                key = self.key(path)
            except OSError as error:
                failures.append((path, f"cannot open ({error.strerror or error})"))
                continue
            if key not in self._entries:
                todo.setdefault(key, path)
        reporter = _Progress(len(todo), progress)
        for key, path, result in _compute(todo, self.cfg, workers, self.front_end):
            if isinstance(result, Exception):
                reason = result.reason if isinstance(result, audio.AudioError) else repr(result)
                failures.append((path, reason))
            else:
                self._store(key, path, result)
            reporter.step(failed=len(failures))
        reporter.done(failed=len(failures))
        return failures

    def _store(self, key: str, wav_path: str, log_mel: np.ndarray) -> None:
        relative = Path(f"shard-{len(self._entries) // SHARD_SIZE:04d}") / f"{key}.f32"
        target = self.folder / relative
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp")  # two builds of one cache never share it
        np.ascontiguousarray(log_mel, dtype="<f4").tofile(tmp)
        os.replace(tmp, target)
        stat = Path(wav_path).resolve().stat()
        # The entry's file is complete (renamed) before its index line exists, and the line
        # goes out in one write: a kill leaves either no line or the whole line.
        lines = io.StringIO()
        writer = csv.writer(lines)
        size = self._index_path.stat().st_size if self._index_path.exists() else 0
        if not size:
            writer.writerow(_INDEX_FIELDS)
        elif not _ends_with_newline(self._index_path):
            lines.write("\n")  # a line cut by a crash stays its own (unreadable) line
        writer.writerow([key, relative.as_posix(), log_mel.shape[0], wav_path,
                         stat.st_size, stat.st_mtime_ns])
        with open(self._index_path, "a", newline="", encoding="utf-8") as handle:
            handle.write(lines.getvalue())
        self._entries[key] = CacheEntry(target, int(log_mel.shape[0]))

    def _read_index(self) -> dict[str, CacheEntry]:
        entries: dict[str, CacheEntry] = {}
        if not self._index_path.exists():
            return entries
        with open(self._index_path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    file = self.folder / row["file"]
                    frames = int(row["frames"])
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut by an interrupted write: recomputed on demand
                if file.exists():
                    entries[row["key"]] = CacheEntry(file, frames)
        return entries

    # --- pitch statistics (fusion.pitch) ---

    def pitch_statistics(self, wav_path: str | os.PathLike) -> np.ndarray:
        """`prosody.clip_pitch_statistics` of one wav, computed once and kept beside its log-mel.

        Stored as `pitch-<prosody.PITCH_VERSION>/<key>.f32` in this recipe's folder (the
        track uses the same sample rate, window, hop and max_frames), written by rename
        so a kill leaves no half file.

        Raises:
            AudioError: the wav cannot be read or tracked.
        """
        target = self._pitch_file(wav_path)
        if target.exists():
            return np.fromfile(target, dtype="<f4")
        stats = prosody.clip_pitch_statistics(wav_path, self.cfg)
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        np.ascontiguousarray(stats, dtype="<f4").tofile(tmp)
        os.replace(tmp, target)
        return stats

    def pitch_table(self, table: pd.DataFrame, progress: bool = True) -> np.ndarray:
        """[rows, len(PITCH_STATISTICS)] float32: `pitch_statistics` of each row's wav (tracked once)."""
        paths = list(dict.fromkeys(str(p) for p in table["wav_path"]))
        missing = {p for p in paths if not self._pitch_file(p).exists()}
        reporter = _Progress(len(missing), progress, "pitch tracks")
        by_path = {}
        for path in paths:
            by_path[path] = self.pitch_statistics(path)
            if path in missing:
                reporter.step(failed=0)
        reporter.done(failed=0)
        return np.stack([by_path[str(p)] for p in table["wav_path"]]).astype(np.float32)

    def _pitch_file(self, wav_path: str | os.PathLike) -> Path:
        return self.folder / f"pitch-{prosody.PITCH_VERSION}" / f"{self.key(wav_path)}.f32"

    # --- speaker statistics ---

    def speaker_stats(self, table: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`audio.speaker_stats` over the table's cached wavs, grouped by `speaker_group`.

        Each wav counts once (augmented copies share their original's audio).
        """
        return audio.speaker_stats((group, self.read(path)) for path, group in self.wav_groups(table).items())

    def functional_stats(
        self, table: pd.DataFrame, max_frames: int,
        frame_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, cepstra: int = 0,
        pitch: typing.Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`audio.functional_stats` over the table's cached wavs, grouped by `speaker_group`.

        Each wav counts once; its functionals are those the model computes from the
        clip it is fed (the first `max_frames` frames, normalised with `frame_stats`
        when given, no augmentation), followed by `pitch[wav_path]` when `pitch` is given
        (its `pitch_statistics`: the model's wide features in the same order).
        """
        def functionals(path, group):
            log_mel = self.read(path)[:max_frames]
            if frame_stats is not None:
                log_mel = audio.normalise(log_mel, *frame_stats[group])
            values = audio.utterance_functionals(log_mel, cepstra)
            return values if pitch is None else np.concatenate([values, pitch[path]])

        return audio.functional_stats((group, functionals(path, group))
                                      for path, group in self.wav_groups(table).items())

    def wav_groups(self, table: pd.DataFrame) -> dict[str, str]:
        """{wav path: speaker group} of the table, each wav once."""
        groups: dict[str, str] = {}
        for path, group in zip(table["wav_path"], speaker_group(table, self)):
            groups.setdefault(str(path), group)
        return groups


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def speaker_group(table: pd.DataFrame, cache: FeatureCache) -> list[str]:
    """Speaker-normalisation group of each row: the speaker, or the wav itself when unknown."""
    speakers = table["speaker"].fillna("").astype(str) if "speaker" in table.columns else [""] * len(table)
    groups = []
    for speaker, path in zip(speakers, table["wav_path"]):
        groups.append(speaker if speaker else f"wav:{Path(path).resolve()}")
    return groups


def _compute(todo: dict[str, str], cfg: FeatureConfig, workers: int, front_end=None):
    """Yield (key, path, log_mel or exception) for each wav, in completion order."""
    if not todo:
        return
    if len(todo) < MIN_CLIPS_PER_PROCESS_POOL or front_end is not None:
        workers = 1  # starting workers costs seconds each; a converter runs TensorFlow, kept in-process
    compute = audio.log_mel_file if front_end is None else (lambda path, _: front_end.compute_file(path))
    if workers <= 1:
        for key, path in todo.items():
            try:
                yield key, path, compute(path, cfg)
            except Exception as error:  # reported, never fatal
                yield key, path, error
        return
    context = multiprocessing.get_context("spawn")  # fork after TensorFlow starts is unsafe
    items = iter(todo.items())
    broken = concurrent.futures.process.BrokenProcessPool
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                initializer=audio.single_threaded_blas) as pool:
        pending: dict = {}

        def refill():
            # A bounded window keeps finished-but-unwritten results few.
            for key, path in items:
                pending[pool.submit(audio.log_mel_file, path, cfg)] = (key, path)
                if len(pending) >= 4 * workers:
                    break

        try:
            refill()
            while pending:
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    key, path = pending.pop(future)
                    try:
                        result = future.result()
                    except broken:
                        raise
                    except Exception as error:
                        result = error
                    yield key, path, result
                refill()
        except broken as error:
            raise RuntimeError(
                "feature worker processes died. Spawned workers re-import the calling "
                "script, so it needs the `if __name__ == \"__main__\":` guard; or a worker "
                "ran out of memory. Retry, or build with workers=1 (finished entries are kept)"
            ) from error


class _Progress:
    def __init__(self, total: int, enabled: bool, what: str = "features"):
        self.total, self.enabled, self.count, self.what = total, enabled and total > 0, 0, what
        self.start = self.last = time.monotonic()

    def step(self, failed: int) -> None:
        self.count += 1
        now = time.monotonic()
        if self.enabled and now - self.last >= 10:
            self.last = now
            print(f"{self.what}: {self.count}/{self.total} computed, {failed} failed", file=sys.stderr)

    def done(self, failed: int) -> None:
        if self.enabled:
            print(f"{self.what}: {self.count}/{self.total} computed in {time.monotonic() - self.start:.1f} s, "
                  f"{failed} failed", file=sys.stderr)


# === tf.data pipeline ===

def dataset_rows(table: pd.DataFrame, cfg: RunConfig, split: str | None = None) -> pd.DataFrame:
    """The rows `make_dataset` yields: the split's rows (all when None) that have a target class."""
    rows = table
    if split is not None:
        if "split" not in table.columns:
            raise ValueError(f"cannot select split {split!r}: the table has no 'split' column")
        rows = rows[rows["split"] == split]
    if "split" in rows.columns:
        rows = rows[rows["split"] != splits.EXCLUDED]
    emotion = splits.target_emotion(rows, cfg.data.classes)
    return rows.assign(emotion=emotion)[(emotion != "").to_numpy()]


def dataset_size(table: pd.DataFrame, cfg: RunConfig, split: str | None = None) -> int:
    """Number of examples (not batches) `make_dataset` yields for `split`."""
    return len(dataset_rows(table, cfg, split))


def make_dataset(
    table: pd.DataFrame,
    cache: FeatureCache,
    tokenizer,
    cfg: RunConfig,
    training: bool,
    with_ids: bool = False,
    shuffle: bool | None = None,
    split: str | None = None,
    stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    speaker_fallback: np.ndarray | None = None,
    optional_inputs: typing.Sequence[str] | None = None,
) -> tf.data.Dataset:
    """Batched `(features, targets)` dicts for Keras, from cached log-mels and transcripts.

    Args:
        table: utterance table; its cached wavs are read (build the cache first).
        cache: the feature cache.
        tokenizer: `models.tokenizer.load_run_tokenizer(path, cfg.features.max_tokens)`: the
            run's SentencePiece model or a pretrained backbone's own tokenizer (pad id 0).
        cfg: run config (features, data.classes, masking, train.batch_size, train.seed).
        training: frequency masking on (and shuffling unless `shuffle` says otherwise).
            The table (after `split`) may then hold only train rows: a training
            dataset can never see a val/test utterance or a copy of one.
        with_ids: add `segment_id` to the features (for predictions files).
        shuffle: reshuffle every epoch (default: `training`), seeded by cfg.train.seed.
        split: keep only rows of this split (None: every row of the table).
        stats: speaker statistics for `cfg.features.speaker_norm` (default: computed
            from the rows' own audio, see `FeatureCache.speaker_stats`).
        speaker_fallback: with `fusion.functionals_speaker_norm`, the `[2, F]` statistics of
            a clip whose speaker is unknown or has no other clip in the split (the run's
            training split pooled, `kemdy_tf.speaker_statistics`: what an export answers
            an unenrolled clip with). None: such a clip's functionals are left as they are.
        optional_inputs: which of `speaker_functionals` and `pitch_statistics` to compute
            (None: those the config turns on); a stage whose model reads neither asks for none.

    Returns:
        A `tf.data.Dataset`; rows that are `excluded` or have no target class are left out.

    Raises:
        ValueError: val/test or leaking augmented rows in a training dataset, rows
            whose features are not cached, a tokenizer of the wrong length, no rows.
    """
    fcfg, dcfg = cfg.features, cfg.data
    shuffle = training if shuffle is None else shuffle
    rows = dataset_rows(table, cfg, split)
    if training:
        _refuse_non_train(table, rows)
    if rows.empty:
        raise ValueError(f"no rows to make a dataset from (split={split!r}, classes={dcfg.classes})")
    if getattr(tokenizer, "sequence_length", None) != fcfg.max_tokens:
        raise ValueError(
            f"tokenizer emits {getattr(tokenizer, 'sequence_length', None)} ids per text; "
            f"features.max_tokens is {fcfg.max_tokens} (use load_run_tokenizer(path, max_tokens))")

    entries = [cache.entry(p) for p in rows["wav_path"]]
    uncached = [p for p, e in zip(rows["wav_path"], entries) if e is None]
    if uncached:
        raise ValueError(
            f"{len(uncached)} wav(s) have no cached features in {cache.folder} (first: "
            f"{uncached[0]}); run cache.build(table) and drop the rows it reports "
            "(cache.has(table) selects the rest)")

    columns = {
        "file": [str(e.file) for e in entries],
        "text": rows["text"].fillna("").astype(str).tolist() if "text" in rows else [""] * len(rows),
        "segment_id": rows["segment_id"].astype(str).tolist(),
        "arousal": _float_column(rows, "arousal"),
        "valence": _float_column(rows, "valence"),
        "emotion": np.array([dcfg.classes.index(e) for e in rows["emotion"]], np.int32),
    }
    normalise = None
    if fcfg.speaker_norm:
        groups = speaker_group(rows, cache)
        stats = stats if stats is not None else cache.speaker_stats(rows)
        names = sorted(set(groups))
        absent = [g for g in names if g not in stats]
        if absent:
            raise ValueError(f"speaker statistics lack group(s) {absent[:5]}")
        columns["group"] = np.array([names.index(g) for g in groups], np.int32)
        normalise = (tf.constant(np.stack([stats[g][0] for g in names])),
                     tf.constant(np.stack([stats[g][1] for g in names])))
    wanted = ({"speaker_functionals", "pitch_statistics"} if optional_inputs is None else set(optional_inputs))
    if cfg.fusion.functionals and cfg.fusion.pitch and ("pitch_statistics" in wanted or (
            "speaker_functionals" in wanted and cfg.fusion.functionals_speaker_norm)):
        # Each clip's pitch and energy statistics (prosody.PITCH_STATISTICS), read beside the functionals
        # (the speaker statistics below reuse them).
        columns["pitch_statistics"] = cache.pitch_table(rows)
    if cfg.fusion.functionals and cfg.fusion.functionals_speaker_norm and "speaker_functionals" in wanted:
        # Each clip's speaker's mean and std of the utterance functionals, [2, 5 (n_mels + cepstra)]
        # (the model standardises its functionals with them; fusion.functionals_speaker_norm).
        groups = speaker_group(rows, cache)
        pitch = (dict(zip(rows["wav_path"].astype(str), columns["pitch_statistics"]))
                 if "pitch_statistics" in columns else None)
        by_group = cache.functional_stats(rows, fcfg.max_frames, stats if fcfg.speaker_norm else None,
                                          cfg.fusion.functional_cepstra, pitch=pitch)
        if speaker_fallback is not None:  # unknown or single-clip speakers: as an unenrolled served clip
            clips = collections.Counter(cache.wav_groups(rows).values())
            fallback = tuple(np.asarray(speaker_fallback, np.float32))
            by_group = {g: (fallback if clips[g] < 2 else value) for g, value in by_group.items()}
        columns["speaker_functionals"] = np.stack([np.stack(by_group[g]) for g in groups]).astype(np.float32)

    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        # Elements are file names, so a full shuffle costs nothing.
        ds = ds.shuffle(len(rows), seed=cfg.train.seed, reshuffle_each_iteration=True)
    mask = training and dcfg.freq_mask_param > 0 and dcfg.freq_mask_prob > 0
    warp = training and dcfg.freq_warp > 0
    if mask or warp:
        # One stateless seed pair per element, new every epoch, reproducible from train.seed.
        seeds = tf.data.Dataset.random(seed=cfg.train.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds)
    else:
        ds = ds.map(lambda example: (example, tf.zeros([2], tf.int64)))

    n_mels = cache.n_mels

    def load(example, seed):
        log_mel = tf.reshape(tf.io.decode_raw(tf.io.read_file(example["file"]), tf.float32), [-1, n_mels])
        log_mel = log_mel[: fcfg.max_frames]
        if normalise is not None:
            log_mel = (log_mel - tf.gather(normalise[0], example["group"])) / tf.gather(
                normalise[1], example["group"])
        if warp:  # its own seed, folded from the element's: the mask's draws stay as they were
            log_mel = audio.tf_frequency_warp(
                log_mel, dcfg.freq_warp, tf.random.experimental.stateless_fold_in(seed, 1))
        if mask:
            log_mel = audio.tf_frequency_mask(
                log_mel, dcfg.freq_mask_param, seed=seed, probability=dcfg.freq_mask_prob)
        features = {"log_mel": log_mel, "frame_mask": tf.ones(tf.shape(log_mel)[:1], tf.bool),
                    "text": example["text"]}
        for name in ("speaker_functionals", "pitch_statistics"):  # optional model inputs
            if name in example:
                features[name] = example[name]
        if with_ids:
            features["segment_id"] = example["segment_id"]
        targets = {"arousal": example["arousal"][tf.newaxis], "valence": example["valence"][tf.newaxis],
                   "emotion": example["emotion"]}
        return features, targets

    def tokenize(features, targets):
        features = dict(features)
        features["token_ids"] = tokenizer(features.pop("text"))
        return features, targets

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    # padded_batch pads log_mel with 0.0 and frame_mask with False to the batch's longest clip.
    ds = ds.padded_batch(cfg.train.batch_size)
    # Tokenizing whole batches: one TF Text call per batch; output is [batch, max_tokens].
    ds = ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _float_column(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A target column as float32; NaN where absent (manifests may omit it): mask it in the loss."""
    if name not in rows.columns:
        return np.full(len(rows), np.nan, np.float32)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(np.float32)


def _refuse_non_train(table: pd.DataFrame, rows: pd.DataFrame) -> None:
    if "split" not in rows.columns:
        return
    leaked = rows[rows["split"] != "train"]
    if len(leaked):
        raise ValueError(
            f"a training dataset got {len(leaked)} row(s) outside the training split "
            f"(e.g. {leaked['segment_id'].iloc[0]} in {leaked['split'].iloc[0]!r}); pass split='train'")
    splits.assert_augmented_in_train(table)
