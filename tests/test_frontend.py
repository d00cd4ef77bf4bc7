"""The in-graph log-mel (kemdy_tf.frontend) against the training features (librosa)."""

from __future__ import annotations

import numpy as np
import pytest

from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import audio
from kemdy_tf.frontend import bucketed_log_mel, check_recipe, frame_count, waveform_to_log_mel

# A short window keeps the test fast and lets a clip run past it.
FEATURES = FeatureConfig(max_frames=40)
RATE = FEATURES.sample_rate


def _clip(n: int, seed: int, loud_tail: bool = False) -> np.ndarray:
    """A decaying tone in noise; `loud_tail` puts a loud burst past the model's window."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (180 + 90 * seed) * t) * np.exp(-2 * t) + 0.003 * rng.standard_normal(n)
    if loud_tail:
        wave[audio.samples_for_frames(FEATURES.max_frames, FEATURES) + 2000 :] *= 300
    return wave.astype(np.float32)


@pytest.mark.parametrize("bucket", [None, 16, 64], ids=["graph", "xla-16", "xla-64"])
def test_matches_librosa_on_a_ragged_batch_with_garbage_padding(bucket):
    """Graph mode, and XLA on frames padded to a bucket (16: 40 is no multiple of it, 64: past max_frames)."""
    window = audio.samples_for_frames(FEATURES.max_frames, FEATURES)
    clips = [
        _clip(RATE, 0),  # 1 s
        _clip(700, 1),  # shorter than n_fft
        _clip(window + 9000, 2, loud_tail=True),  # past the window, loudest part unseen
        _clip(5000, 3) * 1e-4,  # quiet: the top_db floor is per clip, not per batch
        _clip(1, 4),  # a single sample
    ]
    width = max(len(c) for c in clips) + 3000
    rng = np.random.default_rng(9)
    batch = rng.uniform(-20, 20, (len(clips), width)).astype(np.float32)  # garbage everywhere
    for row, clip in zip(batch, clips):
        row[: len(clip)] = clip
    lengths = np.array([len(c) for c in clips], np.int32)

    if bucket is None:
        log_mel, frames = waveform_to_log_mel(batch, lengths, FEATURES)
    else:
        log_mel, frames = bucketed_log_mel(batch, lengths, FEATURES, bucket)
    log_mel, frames = log_mel.numpy(), frames.numpy()

    expected = [audio.log_mel(c, FEATURES) for c in clips]
    assert list(frames) == [len(e) for e in expected]
    assert log_mel.shape == (len(clips), max(frames), FEATURES.n_mels)
    for i, reference in enumerate(expected):
        assert np.abs(log_mel[i, : len(reference)] - reference).max() < 0.01, f"clip {i}"
        assert np.all(log_mel[i, len(reference) :] == 0.0), f"clip {i}: padding frames not zero"
    # The quiet clip really is clipped relative to itself (its floor is far below the others').
    assert expected[3].min() < expected[0].min() - 30


def test_frame_count_agrees_with_log_mel_for_ints_arrays_and_lengths_past_the_window():
    lengths = [1, 511, 512, 513, 2048, 16000, audio.samples_for_frames(FEATURES.max_frames, FEATURES) + 5000]
    expected = [len(audio.log_mel(np.ones(n, np.float32), FEATURES)) for n in lengths]
    assert [frame_count(n, FEATURES) for n in lengths] == expected
    assert list(frame_count(np.array(lengths), FEATURES)) == expected
    assert max(expected) == FEATURES.max_frames


def test_refuses_a_recipe_it_does_not_implement(monkeypatch):
    assert check_recipe(FEATURES)["top_db"] == audio.TOP_DB
    monkeypatch.setattr(audio, "PAD_MODE", "reflect")
    with pytest.raises(ValueError, match="pad_mode"):
        waveform_to_log_mel(np.zeros((1, 100), np.float32), np.array([100], np.int32), FEATURES)
