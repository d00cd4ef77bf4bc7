"""Speaker statistics: what the classifiers standardise their utterance functionals with.

With `fusion.functionals_speaker_norm` (on by default) each clip's functionals (per-band
and cepstral statistics of its log-mel, `layers.UtteranceFunctionals`) are standardised
by its speaker's mean and standard deviation of them, `[2, F]`: the classical per-speaker
z-normalisation, worth ~.05 UA on RAVDESS (docs/real_speech.md). The data pipeline
computes them over each speaker's clips of a split (`data.audio.functional_stats`); a
served clip gets them

* from enrolment: a few clips of the speaker (`enrol`, `python -m kemdy_tf.enrol`, the
  SavedModel's `speaker_statistics` signature), at least `MIN_CLIPS`;
* else from the run's *fallback*: the same statistics pooled over every clip of the
  training split (`fallback`, stored in the run as `speaker_fallback.npy` and baked into
  the export's signatures without speaker statistics). It standardises as if the
  speaker were the average training voice, so what it costs against enrolment is the
  speaker variation the per-speaker statistics remove (docs/serving.md measures it).
"""

from __future__ import annotations

import logging
import os
import typing
from pathlib import Path

import numpy as np

log = logging.getLogger("kemdy_tf.speaker_statistics")

# Written beside run.json by the first stage whose model reads speaker statistics (run.py
# names it `SPEAKER_FALLBACK`; this module imports nothing of the project's, so the run
# layout, the stage registry and the exports can all import it).
FALLBACK_FILE = "speaker_fallback.npy"
# Fewer clips than this enrol with a warning (two are the least a deviation needs; below
# that the fallback is used).
MIN_CLIPS = 5
# The floor of a deviation (as `data.audio.functional_stats`).
MIN_STD = 1e-2


class SpeakerStatisticsError(ValueError):
    """Speaker statistics of the wrong shape, or a run without its fallback."""


def reads_speaker_statistics(model) -> bool:
    """Whether a Keras model takes the `speaker_functionals` input."""
    from kemdy_tf.models.fusion import SPEAKER_FUNCTIONALS

    return SPEAKER_FUNCTIONALS in {t.name for t in model.inputs}


def from_functionals(functionals: np.ndarray, min_std: float = MIN_STD) -> np.ndarray:
    """`[clips, F]` functionals of one speaker -> `[2, F]` (mean, floored std), float32,
    the statistics the data pipeline computes for a speaker (`data.audio.functional_stats`)."""
    rows = np.asarray(functionals, np.float64)
    if rows.ndim != 2 or len(rows) < 2:
        raise SpeakerStatisticsError(f"speaker statistics need the functionals of at least 2 clips as "
                                     f"[clips, F]; got shape {rows.shape}")
    return np.stack([rows.mean(axis=0), np.maximum(rows.std(axis=0), min_std)]).astype(np.float32)


def enrol(log_mels: typing.Sequence[np.ndarray], cepstra: int, max_frames: int,
          fallback: np.ndarray | None = None, who: str = "the speaker") -> tuple[np.ndarray, list[str]]:
    """A speaker's statistics from their clips' log-mels (`data.audio.log_mel`, as the run's
    features): `([2, F], warnings)`.

    Fewer than 2 clips give `fallback` (with a warning; an error without one); fewer than
    `MIN_CLIPS` are enrolled with a warning (the deviations are noisy).
    """
    from kemdy_tf.data.audio import utterance_functionals

    warnings = []
    if len(log_mels) < 2:
        if fallback is None:
            raise SpeakerStatisticsError(f"{who}: {len(log_mels)} clip(s); enrolment needs at least 2")
        warnings.append(f"{who}: {len(log_mels)} clip(s), fewer than 2: the run's training-set "
                        "statistics are used instead")
        return np.asarray(fallback, np.float32), warnings
    if len(log_mels) < MIN_CLIPS:
        warnings.append(f"{who}: enrolled from {len(log_mels)} clips, fewer than {MIN_CLIPS}: "
                        "the statistics are noisy")
    rows = np.stack([utterance_functionals(np.asarray(m)[:max_frames], cepstra) for m in log_mels])
    return from_functionals(rows), warnings


def check_shape(statistics, width: int, what: str = "speaker statistics") -> np.ndarray:
    """`statistics` as float32 `[2, width]` (mean, std > 0); SpeakerStatisticsError otherwise."""
    array = np.asarray(statistics, np.float32)
    if array.shape != (2, width):
        raise SpeakerStatisticsError(f"{what} must have shape [2, {width}] (mean, std of the utterance "
                                     f"functionals); got {list(array.shape)}")
    if not np.all(np.isfinite(array)) or np.any(array[1] <= 0):
        raise SpeakerStatisticsError(f"{what}: every value must be finite and every deviation (row 1) > 0")
    return array


# === The run's fallback ===


def fallback_of(run) -> np.ndarray:
    """The fallback of an opened run with its feature cache: the functional statistics pooled
    over the training split's clips (each wav once, as the model computes them)."""
    cfg = run.config
    train = run.require_features(run.split("train"), "training split")
    pooled = train.assign(speaker="__training_split__")
    stats = run.cache.functional_stats(pooled, cfg.features.max_frames, None, cfg.fusion.functional_cepstra)
    if len(stats) != 1:
        raise SpeakerStatisticsError(f"{run.workdir}: no training clip to pool speaker statistics over")
    mean, std = next(iter(stats.values()))
    return np.stack([mean, std]).astype(np.float32)


def ensure_fallback(run) -> Path:
    """Write the run's fallback (`FALLBACK_FILE` in the workdir) unless it is there; its path."""
    path = Path(run.workdir) / FALLBACK_FILE
    if not path.is_file():
        statistics = fallback_of(run)

        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:  # a handle: np.save would add ".npy" to the name
            np.save(handle, statistics)
        os.replace(tmp, path)  # readers never see half a file
        log.info("pooled training-split speaker statistics written to %s", path)
    return path


def run_fallback(run) -> np.ndarray:
    """The fallback of an opened run: its stored file, else computed from its training split."""
    path = Path(run.workdir) / FALLBACK_FILE
    return read_fallback(run.workdir, None) if path.is_file() else fallback_of(run)


def read_fallback(workdir, width: int | None) -> np.ndarray:
    """The run's stored fallback `[2, width]` (width None: any); SpeakerStatisticsError naming
    the file when it is missing or of another shape."""
    path = Path(workdir) / FALLBACK_FILE
    try:
        array = np.load(path)
    except FileNotFoundError:
        raise SpeakerStatisticsError(f"{path} is missing: the run's models read speaker statistics and "
                                     "its training-split fallback was never written (train a stage of the "
                                     "run again, e.g. `python train.py --workdir RUN --stage fusion`)") from None
    except (OSError, ValueError) as error:
        raise SpeakerStatisticsError(f"cannot read {path}: {error}") from None
    return check_shape(array, array.shape[-1] if width is None and array.ndim == 2 else width, str(path))


def for_export(trained) -> np.ndarray | None:
    """The `[2, F]` statistics an export answers a clip of no enrolled speaker with, or None when
    the fusion model reads none (`trained`: a `trained_run.TrainedRun`).

    Raises:
        ExportError: the models read them and the run has no fallback, or one of another width.
    """
    from kemdy_tf.export_folders import ExportError
    from kemdy_tf.models.fusion import SPEAKER_FUNCTIONALS

    if not reads_speaker_statistics(trained.fusion):
        return None
    width = int(trained.fusion.input[SPEAKER_FUNCTIONALS].shape[-1])
    if trained.speaker_fallback is None:
        raise ExportError(f"{trained.source or 'the run'}: its fusion model reads speaker statistics and "
                          f"the run has no {FALLBACK_FILE} (the training split's pooled statistics, for "
                          "clips of no enrolled speaker); train a stage of the run again to write it")
    try:
        return check_shape(trained.speaker_fallback, width, "the run's speaker fallback")
    except SpeakerStatisticsError as error:
        raise ExportError(str(error)) from None
