"""Pitch and energy statistics of a clip: the prosody that 128 mel bands barely resolve.

A 128 ms STFT window and mel bands 25+ Hz wide blur the fundamental frequency, yet
pitch level, range and movement are among the strongest cues to emotion in speech
(eGeMAPS is built around them). `clip_pitch_statistics` tracks F0 with librosa's
YIN and summarises it, with the frame energy, in `PITCH_STATISTICS` numbers per clip.
The classifiers read them beside the utterance functionals (`fusion.pitch`); the data
pipeline computes them (`FeatureCache.pitch_statistics`), so a run that uses them
cannot be exported (the SavedModel's in-graph front end has no pitch tracker).

Example:
    >>> stats = clip_pitch_statistics("clip.wav", cfg.features)   # [12] float32
"""

from __future__ import annotations

import os
import warnings

import librosa
import numpy as np

from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import audio

# What `pitch_statistics` returns, in order. F0 over the louder frames (YIN reports a
# value for every frame; in near-silence it is noise), log Hz.
PITCH_STATISTICS = (
    "log_f0_mean", "log_f0_std", "log_f0_p10", "log_f0_p50", "log_f0_p90", "log_f0_range_10_90",
    "log_f0_abs_delta_mean", "log_f0_delta_std", "loud_share",
    "log_rms_mean", "log_rms_std", "log_rms_range_10_90",
)
PITCH_VERSION = 1  # bump when the statistics change: cached values are then recomputed
F0_MIN_HZ, F0_MAX_HZ = 60.0, 500.0  # speaking voices, low male to high female/child
LOUD_SHARE_OF_MEDIAN = 0.3  # frames above 0.3 x the median RMS count as voiced-ish


def pitch_track(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """[frames, 2]: YIN F0 (Hz) and RMS of each frame, on the log-mel's frame grid.

    The clip is cut to the samples the first `max_frames` log-mel frames need, like
    `audio.log_mel`, so the statistics describe the part of the clip the model reads.
    """
    wave = np.asarray(wave, np.float32)[: audio.samples_for_frames(cfg.max_frames, cfg)]
    if wave.size < cfg.n_fft:  # YIN needs one whole window; silence past the end changes no F0
        wave = np.pad(wave, (0, cfg.n_fft - wave.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's "n_fft too large" on short clips
        f0 = librosa.yin(wave, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=cfg.sample_rate,
                         frame_length=cfg.n_fft, hop_length=cfg.hop_length)
        rms = librosa.feature.rms(y=wave, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0]
    n = min(len(f0), len(rms), cfg.max_frames)
    return np.stack([f0[:n], rms[:n]], axis=1).astype(np.float32)


def pitch_statistics(track: np.ndarray) -> np.ndarray:
    """`PITCH_STATISTICS` of a `pitch_track` [frames, 2], float32."""
    track = np.asarray(track, np.float64)
    f0, rms = track[:, 0], track[:, 1]
    positive = rms > 0
    loud = rms > LOUD_SHARE_OF_MEDIAN * np.median(rms[positive]) if positive.any() else np.ones_like(rms, bool)
    log_f0 = np.log(f0[loud] if loud.sum() > 2 else f0)
    delta = np.diff(log_f0) if len(log_f0) > 1 else np.zeros(1)
    low, mid, high = np.percentile(log_f0, [10, 50, 90])
    log_rms = np.log(rms + 1e-5)
    rms_low, rms_high = np.percentile(log_rms, [10, 90])
    return np.array([log_f0.mean(), log_f0.std(), low, mid, high, high - low, np.abs(delta).mean(), delta.std(),
                     loud.mean(), log_rms.mean(), log_rms.std(), rms_high - rms_low], np.float32)


def clip_pitch_statistics(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """`pitch_statistics` of one audio file; every failure is an AudioError naming the file."""
    wave = audio.load_audio(path, cfg.sample_rate)
    try:
        return pitch_statistics(pitch_track(wave, cfg))
    except Exception as error:
        raise audio.AudioError(path, f"pitch tracking failed ({type(error).__name__}: {error})") from error
