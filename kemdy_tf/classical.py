"""The classical baseline: what a practitioner reaches for first, beside every deep score.

    audio   openSMILE eGeMAPS v02 functionals (88 utterance-level acoustic features:
            pitch, loudness, spectral balance, jitter/shimmer, rates), standardised per
            speaker when speakers are known, then a class-balanced logistic regression.
    text    TF-IDF over character n-grams (1-4 within word boundaries: robust to the
            unreliable eojeol spacing of Korean transcripts), sublinear tf, then a
            class-balanced logistic regression.
    fusion  the mean of the two models' log-probabilities (late fusion).

It is trained on exactly the training split the deep models see (augmented copies
left out) and scored with the same metric code, so a user sees on their own data
whether a deep model earns its keep. Per-speaker standardisation uses no label: a
test speaker is normalised by statistics of their own clips, exactly like the deep
models' `features.speaker_norm`.

Example:
    >>> features = acoustic_features(table["wav_path"])           # [n, 88]
    >>> model = ClassicalBaseline(classes).fit(train_table, features_of_train)
    >>> model.predict_proba(test_table, features_of_test, modalities=("audio", "text"))
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from kemdy_tf import run as run_lib

AUDIO_FEATURE_SET = "eGeMAPSv02"
N_ACOUSTIC = 88  # eGeMAPS v02 functionals
TEXT_NGRAMS = (1, 4)


def acoustic_features(wav_paths: typing.Iterable[str], sample_rate: int = 16000,
                      workers: int = 2, cache_root=None) -> np.ndarray:
    """eGeMAPS v02 functionals of each file, `[n, 88]` float32 (NaN row where decoding fails).

    Runs in spawned worker processes: openSMILE's native library crashes a process
    that loaded TensorFlow before it, and the workers use both cores. With `cache_root`
    (a feature cache's root folder, `--cache-dir`) each file's row is kept there under
    its content key, as the log-mels are, so folds, sweeps, refits and other runs over
    the same clips compute it once; a file that fails to decode is tried again next time.
    """
    import concurrent.futures
    import multiprocessing

    paths = [str(p) for p in wav_paths]
    out = np.full((len(paths), N_ACOUSTIC), np.nan, np.float32)
    cache = _AcousticCache(cache_root, sample_rate) if cache_root else None
    todo = sorted({p for i, p in enumerate(paths) if cache is None or not cache.fill(p, out, i)})
    if not todo:
        return out
    workers = max(1, min(workers, os.cpu_count() or 1, len(todo)))
    chunks = [todo[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = list(pool.map(_egemaps_of, chunks, [sample_rate] * workers))
    computed = {path: row for chunk, part in zip(chunks, parts) for path, row in zip(chunk, part)}
    for i, path in enumerate(paths):
        if path in computed:
            out[i] = computed[path]
    if cache is not None:
        for path, row in computed.items():
            cache.store(path, row)
    return out


class _AcousticCache:
    """eGeMAPS rows in `ROOT/egemaps-v02-<rate>/<content key>.npy` (the log-mel cache's
    keys: resolved path, size and modification time), each written atomically."""

    def __init__(self, root, sample_rate: int):
        self.folder = Path(root) / f"egemaps-v02-{sample_rate}"

    @staticmethod
    def _key(path: str) -> str | None:
        from kemdy_tf.data.features import FeatureCache

        try:
            return FeatureCache.key(path)
        except OSError:
            return None

    def fill(self, path: str, out: np.ndarray, i: int) -> bool:
        """Put the cached row of `path` into `out[i]`; False when it is not cached."""
        key = self._key(path)
        if key is None or not (self.folder / f"{key}.npy").is_file():
            return False
        try:
            out[i] = np.load(self.folder / f"{key}.npy")
        except (OSError, ValueError):  # a damaged entry: computed again
            return False
        return True

    def store(self, path: str, row: np.ndarray) -> None:
        key = self._key(path)
        if key is None or not np.isfinite(row).all():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.partial.npy"
        np.save(tmp, np.asarray(row, np.float32))
        os.replace(tmp, self.folder / f"{key}.npy")


def _egemaps_of(paths: list[str], sample_rate: int) -> np.ndarray:
    """Worker: decode with the project's loader (any format it reads, resampled), so
    openSMILE sees the same samples as the deep models."""
    import opensmile

    from kemdy_tf.data.audio import load_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for path in paths:
        try:
            wave = load_audio(path, sample_rate)
            rows.append(smile.process_signal(wave, sample_rate).to_numpy(np.float32)[0])
        except Exception:  # the deep pipeline reports undecodable files; here a NaN row
            rows.append(np.full(N_ACOUSTIC, np.nan, np.float32))
    return np.stack(rows)


def speaker_standardise(features: np.ndarray, groups: typing.Sequence[str]) -> np.ndarray:
    """Each speaker's features minus that speaker's mean, over that speaker's std.

    Rows whose group is "" (speaker unknown) are left as they are; a speaker with a
    single clip only gets centred (std 1).
    """
    out = np.array(features, np.float64, copy=True)
    groups = np.asarray([str(g) for g in groups])
    for group in np.unique(groups):
        if not group:
            continue
        rows = groups == group
        block = out[rows]
        if not np.isfinite(block).any():
            continue
        with np.errstate(invalid="ignore"):  # NaN rows (undecodable clips) stay NaN
            std = np.nanstd(block, axis=0) if rows.sum() > 1 else np.ones(block.shape[1])
            std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
            out[rows] = (block - np.nan_to_num(np.nanmean(block, axis=0))) / std
    return out


class ClassicalBaseline:
    """Audio and text classical classifiers over one list of classes.

    Args:
        classes: the emotion classes, in the models' order.
        speaker_norm: standardise acoustic features per speaker (when speakers are known).
        seed: for the solvers that use one.
    """

    def __init__(self, classes: typing.Sequence[str], speaker_norm: bool = True, seed: int = 0):
        self.classes = list(classes)
        self.speaker_norm = speaker_norm
        self.seed = seed
        self.models: dict[str, object] = {}

    # --- fitting ---

    def fit(self, table: pd.DataFrame, audio_features: np.ndarray | None = None) -> "ClassicalBaseline":
        """Fit on the rows of `table` (their `emotion` must be one of `classes`).

        `audio_features`: `acoustic_features` of the same rows, or None for text only.
        A modality with nothing to learn from (no transcripts, no audio) is left out.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = self._labels(table)
        if len(np.unique(y)) < 2:
            raise ValueError(f"the classical baseline needs at least 2 classes in training, got {np.unique(y)}")
        if audio_features is not None:
            X = self._audio_matrix(table, audio_features)
            ok = np.isfinite(X).all(axis=1)
            self.models["audio"] = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced", random_state=self.seed),
            ).fit(X[ok], y[ok])
        texts = _texts(table)
        if sum(bool(t.strip()) for t in texts) >= 2:
            self.models["text"] = make_pipeline(
                TfidfVectorizer(analyzer="char_wb", ngram_range=TEXT_NGRAMS, sublinear_tf=True,
                                min_df=2 if len(texts) >= 1000 else 1),
                LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced", random_state=self.seed),
            ).fit(texts, y)
        return self

    # --- predicting ---

    def predict_proba(self, table: pd.DataFrame, audio_features: np.ndarray | None = None,
                      modalities: typing.Sequence[str] = ("audio", "text")) -> np.ndarray:
        """`[n, len(classes)]` probabilities from the chosen modalities (late fusion of both)."""
        log_probs = []
        for modality in modalities:
            if modality not in self.models:
                continue
            if modality == "audio":
                if audio_features is None:
                    continue
                X = self._audio_matrix(table, audio_features)
                X = np.where(np.isfinite(X), X, 0.0)  # an undecodable clip: the speaker's mean
                log_probs.append(self._full(self.models["audio"], self.models["audio"].predict_proba(X)))
            else:
                log_probs.append(self._full(self.models["text"], self.models["text"].predict_proba(_texts(table))))
        if not log_probs:
            raise ValueError(f"the classical baseline has no model for {tuple(modalities)} "
                             f"(fitted: {sorted(self.models)})")
        mean = np.mean([np.log(np.clip(p, 1e-9, 1.0)) for p in log_probs], axis=0)
        probs = np.exp(mean - mean.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)

    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("audio", "text") if m in self.models)

    # --- helpers ---

    def _labels(self, table: pd.DataFrame) -> np.ndarray:
        unknown = sorted(set(table["emotion"]) - set(self.classes))
        if unknown:
            raise ValueError(f"rows with emotions outside the classes: {unknown}")
        return table["emotion"].map(self.classes.index).to_numpy()

    def _audio_matrix(self, table: pd.DataFrame, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float64)
        if len(features) != len(table):
            raise ValueError(f"{len(features)} feature rows for {len(table)} table rows")
        if not self.speaker_norm or "speaker" not in table.columns:
            return features
        return speaker_standardise(features, table["speaker"].fillna("").astype(str).tolist())

    def _full(self, model, probs: np.ndarray) -> np.ndarray:
        """Probabilities over every class (a class absent from training gets ~0)."""
        out = np.full((len(probs), len(self.classes)), 1e-9)
        out[:, model.classes_.astype(int)] = probs
        return out / out.sum(axis=1, keepdims=True)


def _texts(table: pd.DataFrame) -> list[str]:
    return table["text"].fillna("").astype(str).tolist() if "text" in table.columns else [""] * len(table)


# === The baseline of a run (WORKDIR/classical/) ===

FOLDER = run_lib.CLASSICAL_DIR
_MODEL, _FEATURES, _FITTED_ON = "model.joblib", "acoustic_features.npz", "fitted_on.json"
# The baseline's rows in reports and predictions.csv: name -> (modalities, description).
REPORT_MODELS = {
    "classical_audio": (("audio",), "classical baseline, audio: eGeMAPS + per-speaker z + LR"),
    "classical_text": (("text",), "classical baseline, text: TF-IDF char 1-4 + LR"),
    "classical_fusion": (("audio", "text"), "classical baseline, audio + text (late fusion)"),
}


def labelled_rows(table: pd.DataFrame, classes: typing.Sequence[str], split: str | None = None) -> pd.DataFrame:
    """Original (not augmented) rows with a target class, of one split or of all."""
    rows = table[table["emotion"].isin(list(classes))]
    if "augmented_from" in rows.columns:
        rows = rows[rows["augmented_from"].fillna("").astype(str) == ""]
    if split is not None:
        rows = rows[rows["split"] == split]
    return rows


def fit_for_run(run) -> Path:
    """Fit the run's classical baseline on its training split once (later calls reuse it).

    Writes `WORKDIR/classical/acoustic_features.npz` (eGeMAPS of every labelled clip of
    every split, keyed by segment id), `model.joblib` and `fitted_on.json` (how many
    training rows it saw), each atomically; returns the folder. A model fitted on other
    training rows (`run` is a `train.refit` view: validation moved into training, or the
    other way round) is fitted again from the stored features.
    """
    import joblib

    from kemdy_tf.run import atomic_write

    folder = Path(run.workdir) / FOLDER
    classes = list(run.config.data.classes)
    rows = labelled_rows(run.table, classes)
    rows = rows[rows["split"].isin(("train", "val", "test"))]
    train = (rows["split"] == "train").to_numpy()
    fitted_on = {"train_rows": int(train.sum())}
    if (folder / _MODEL).is_file() and (folder / _FEATURES).is_file():
        recorded = json.loads((folder / _FITTED_ON).read_text()) if (folder / _FITTED_ON).is_file() else None
        if recorded is None or recorded == fitted_on:  # no record: fitted before records, on train
            return folder
        stored = _stored_features(folder)
        features = np.stack([stored[str(k)] for k in rows["segment_id"]])
    else:
        folder.mkdir(parents=True, exist_ok=True)
        cache_root = Path(run.cache.folder).parent if run.cache is not None else None
        features = acoustic_features(rows["wav_path"], run.config.features.sample_rate, cache_root=cache_root)
        atomic_write(folder / _FEATURES, lambda tmp: np.savez(
            open(tmp, "wb"), segment_id=rows["segment_id"].astype(str).to_numpy().astype("U"), features=features))
    model = ClassicalBaseline(classes, seed=run.config.train.seed).fit(rows[train], features[train])
    atomic_write(folder / _MODEL, lambda tmp: joblib.dump(model, tmp))
    atomic_write(folder / _FITTED_ON, lambda tmp: Path(tmp).write_text(json.dumps(fitted_on)))
    return folder


def _stored_features(folder: Path) -> dict[str, np.ndarray]:
    """`{segment_id: acoustic features}` of the folder's acoustic_features.npz."""
    # allow_pickle: files written before ids were stored as unicode hold an object array;
    # the model beside it is a joblib pickle anyway, so the folder is trusted as a whole.
    with np.load(folder / _FEATURES, allow_pickle=True) as stored:
        return {str(k): f for k, f in zip(stored["segment_id"].tolist(), stored["features"])}


def load_for_run(workdir) -> tuple[ClassicalBaseline, dict[str, np.ndarray]] | None:
    """The run's fitted baseline and `{segment_id: acoustic features}`, or None (never fitted)."""
    import joblib

    folder = Path(workdir) / FOLDER
    if not (folder / _MODEL).is_file() or not (folder / _FEATURES).is_file():
        return None
    return joblib.load(folder / _MODEL), _stored_features(folder)


def predict_for_run(workdir, rows: pd.DataFrame, modalities: typing.Sequence[str]) -> np.ndarray | None:
    """The run's classical baseline on `rows` (read-only), or None when it was never fitted.

    Raises ValueError when the baseline has no model for one of `modalities`.
    """
    loaded = load_for_run(workdir)
    if loaded is None:
        return None
    model, features = loaded
    missing = [m for m in modalities if m not in model.modalities()]
    if missing:
        raise ValueError(f"the classical baseline of {workdir} has no {missing} model")
    return _predict(model, features, rows, modalities)


def _predict(model: ClassicalBaseline, features: dict[str, np.ndarray], rows: pd.DataFrame,
             modalities: typing.Sequence[str]) -> np.ndarray:
    X = np.stack([features.get(str(sid), np.full(N_ACOUSTIC, np.nan)) for sid in rows["segment_id"]]) \
        if len(rows) else np.zeros((0, N_ACOUSTIC))
    return model.predict_proba(rows, X, modalities=modalities)


def prediction_frames(workdir, reference: pd.DataFrame, table: pd.DataFrame,
                      classes: typing.Sequence[str]) -> list[pd.DataFrame]:
    """`predictions.csv`-shaped frames of the run's classical baseline on the utterances of
    `reference` (one deep model's predictions, whose truth columns are reused); [] when
    the run has no fitted baseline."""
    loaded = load_for_run(workdir)
    if loaded is None:
        return []
    model, features = loaded
    unique = table.drop_duplicates("segment_id")
    rows = unique.set_index(unique["segment_id"].astype(str)).loc[reference["segment_id"].astype(str)]
    rows = rows.reset_index(drop=True)
    frames = []
    for name, (modalities, _) in REPORT_MODELS.items():
        if not set(modalities) <= set(model.modalities()):  # e.g. no transcripts: no text model
            continue
        probs = _predict(model, features, rows, modalities)
        frame = reference.copy()
        frame["model"] = name
        frame["emotion_pred"] = [classes[i] for i in probs.argmax(axis=1)]
        for i, cls in enumerate(classes):
            if f"prob_{cls}" in frame:
                frame[f"prob_{cls}"] = probs[:, i]
        for column in ("arousal_pred", "valence_pred"):
            if column in frame:
                frame[column] = np.nan
        frames.append(frame)
    return frames
