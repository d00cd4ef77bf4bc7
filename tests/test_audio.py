"""Audio loading, the log-mel recipe, frequency masking and speaker statistics."""

import pickle

import librosa
import numpy as np
import pytest
import soundfile as sf

from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import audio


def _noise(seconds, rate=16000, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)


def _reference(wave, sr=16000):
    """The seed's recipe, written with librosa's own calls."""
    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    return librosa.power_to_db(mel, ref=1.0)


# === log-mel ===

def test_log_mel_equals_librosa_reference_exactly():
    wave = _noise(2.0)
    got = audio.log_mel(wave, FeatureConfig())
    expected = _reference(wave).T
    assert got.dtype == np.float32
    assert got.shape == (1 + len(wave) // 512, 128)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_log_mel_truncates_to_max_frames_with_the_same_frames():
    wave = _noise(3.0) * np.linspace(0.2, 1.0, 48000, dtype=np.float32)  # loudest at the end
    cfg = FeatureConfig(max_frames=40)
    got = audio.log_mel(wave, cfg)
    power = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=2048, hop_length=512, n_mels=128)
    expected = librosa.power_to_db(power[:, :40], ref=1.0).T  # top_db relative to the kept frames
    assert got.shape == (40, 128)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_log_mel_is_absolute_db_and_does_not_depend_on_other_clips():
    quiet, loud = _noise(1.0) * 0.01, _noise(1.0, seed=1)
    cfg = FeatureConfig()
    # ref=1.0: a 40 dB quieter clip gives 40 dB lower values (bins above the -100 dB floor).
    difference = audio.log_mel(_noise(1.0), cfg) - audio.log_mel(quiet, cfg)
    assert np.median(difference) == pytest.approx(40.0, abs=0.01)
    np.testing.assert_array_equal(audio.log_mel(loud, cfg), audio.log_mel(loud.copy(), cfg))


def test_log_mel_of_a_clip_shorter_than_one_window():
    got = audio.log_mel(_noise(0.01), FeatureConfig())
    assert got.shape == (1, 128)
    assert np.all(np.isfinite(got))


def test_log_mel_settings_name_librosa_default_padding():
    settings = audio.log_mel_settings(FeatureConfig())
    assert settings["center"] is True and settings["pad_mode"] == "constant"
    import inspect
    default = inspect.signature(librosa.feature.melspectrogram).parameters["pad_mode"].default
    assert default == settings["pad_mode"], "librosa's default padding changed: update audio.PAD_MODE"


# === loading ===

def test_load_resamples_44k_stereo_to_16k_mono(tmp_path):
    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([0.2 * tone, 0.6 * tone], axis=1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, rate)

    wave = audio.load_audio(path, 16000)

    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(16000 * seconds, abs=2)
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * 16000 / len(wave) == pytest.approx(440, abs=2)
    # mono = mean of the channels: amplitude (0.2 + 0.6) / 2
    assert np.max(np.abs(wave[1000:-1000])) == pytest.approx(0.4, abs=0.01)


def test_load_gives_librosas_samples_whether_read_as_is_or_decoded(tmp_path, monkeypatch):
    """A mono file at the asked rate is read by soundfile alone; its samples are librosa.load's,
    and so are a stereo file's and a resampled one's (which librosa still decodes)."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "mono.flac", rng.uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    sf.write(tmp_path / "stereo.wav", rng.uniform(-0.5, 0.5, (16000, 2)).astype(np.float32), 16000)
    sf.write(tmp_path / "rate.wav", rng.uniform(-0.5, 0.5, 22050).astype(np.float32), 22050)
    for name in ("mono.flac", "stereo.wav", "rate.wav"):
        expected, _ = librosa.load(tmp_path / name, sr=16000, mono=True, dtype=np.float32)
        np.testing.assert_array_equal(audio.load_audio(tmp_path / name, 16000), expected)
    calls = []
    monkeypatch.setattr(audio.librosa, "load", lambda *a, **k: calls.append(a) or (np.ones(4, np.float32), 16000))
    audio.load_audio(tmp_path / "mono.flac", 16000)
    assert not calls  # read as it is
    audio.load_audio(tmp_path / "rate.wav", 16000)
    assert len(calls) == 1  # another rate: librosa resamples


def test_load_reads_flac(tmp_path):
    path = tmp_path / "clip.flac"
    sf.write(path, _noise(0.5), 16000)
    assert len(audio.load_audio(path)) == 8000


@pytest.mark.parametrize("name, content, reason", [
    ("missing.wav", None, "not found"),
    ("garbage.wav", b"this is not audio at all" * 10, "cannot decode"),
    ("empty.wav", "empty", "no samples"),
])
def test_unreadable_audio_raises_audio_error_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    if content == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(audio.AudioError) as caught:
        audio.load_audio(path)
    assert caught.value.path == str(path)
    assert reason in caught.value.reason
    assert str(path) in str(caught.value)


def _wav_bytes(seconds=0.5, rate=16000):
    import io

    buffer = io.BytesIO()
    sf.write(buffer, np.full(int(seconds * rate), 0.1, np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize("content, words", [
    (b"", ["empty file (0 bytes)"]),
    (b"this is not audio at all" * 10, ["not audio", "240 bytes", "b'this is not '", "RIFF"]),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", ["truncated WAV header", "16 bytes", "needs 44"]),
    (b"RIFF\x24\x00\x00\x00WAVE" + b"junk" + b"\x00" * 40, ["damaged or truncated"]),
    (b"fLaC" + b"\x00" * 100, ["looks like FLAC"]),
])
def test_decoder_errors_say_what_the_file_looks_like_and_what_is_read(tmp_path, content, words):
    path = tmp_path / "clip.wav"
    path.write_bytes(content)
    with pytest.raises(audio.AudioError) as caught:
        audio.load_audio(path)
    reason = caught.value.reason
    assert reason.startswith("cannot decode audio: ")
    for word in words:
        assert word in reason
    assert "WAV, FLAC" in reason and "readable formats" in reason
    assert "Error: )" not in reason  # never an empty "(NoBackendError: )"


def test_truncated_wav_is_flagged_and_complete_or_streamed_ones_are_not(tmp_path):
    whole = _wav_bytes(2.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + 1000])  # 500 samples = 31 ms of a promised 2 s
    assert audio.truncation(cut) == ("truncated file: its header promises 2.00 s of audio but it holds 0.031 s "
                                     "(an interrupted copy or recording?)")
    assert len(audio.load_audio(cut)) == 500  # still decodes: the warning is what tells
    complete = tmp_path / "whole.wav"
    complete.write_bytes(whole)
    assert audio.truncation(complete) is None
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(whole[:40] + b"\xff\xff\xff\xff" + whole[44:2044])
    assert audio.truncation(streamed) is None
    flac = tmp_path / "a.flac"
    sf.write(flac, np.zeros(800, np.float32), 16000)
    assert audio.truncation(flac) is None


def test_audio_error_survives_pickling_out_of_a_worker():
    error = pickle.loads(pickle.dumps(audio.AudioError("/x.wav", "broken")))
    assert (error.path, error.reason) == ("/x.wav", "broken")


# === frequency masking ===

def _masked_bins(original, masked):
    changed = np.any(original != masked, axis=0)
    return np.flatnonzero(changed)


def test_frequency_mask_masks_one_band_of_bins_on_every_frame():
    features = np.random.default_rng(0).normal(-30, 10, (50, 128)).astype(np.float32)
    rng = np.random.default_rng(1)
    widths = []
    for _ in range(200):
        masked = audio.frequency_mask(features, 15, rng)
        assert masked.shape == features.shape and masked.dtype == np.float32
        bins = _masked_bins(features, masked)
        widths.append(len(bins))
        if len(bins):
            assert np.all(np.diff(bins) == 1), "the mask is one contiguous band"
            np.testing.assert_allclose(masked[:, bins], features.mean(), rtol=1e-6)
            keep = np.setdiff1d(np.arange(128), bins)
            np.testing.assert_array_equal(masked[:, keep], features[:, keep])
    assert max(widths) <= 15 and min(widths) == 0 and len(set(widths)) > 8


def test_frequency_mask_of_width_zero_changes_nothing():
    features = np.random.default_rng(0).normal(size=(10, 128)).astype(np.float32)
    np.testing.assert_array_equal(audio.frequency_mask(features, 0, np.random.default_rng(0)), features)


def test_tf_frequency_mask_same_rule_seeded_and_probability():
    import tensorflow as tf

    features = np.random.default_rng(0).normal(-30, 10, (40, 128)).astype(np.float32)
    widths, results = [], []
    for i in range(60):
        masked = audio.tf_frequency_mask(tf.constant(features), 15, seed=tf.constant([i, 7])).numpy()
        bins = _masked_bins(features, masked)
        widths.append(len(bins))
        results.append(masked)
        if len(bins):
            assert np.all(np.diff(bins) == 1)
            np.testing.assert_allclose(masked[:, bins], features.mean(), rtol=1e-5)
    assert max(widths) <= 15 and len(set(widths)) > 5
    again = audio.tf_frequency_mask(tf.constant(features), 15, seed=tf.constant([3, 7])).numpy()
    np.testing.assert_array_equal(again, results[3])
    never = audio.tf_frequency_mask(tf.constant(features), 15, seed=tf.constant([3, 7]), probability=0.0)
    np.testing.assert_array_equal(never.numpy(), features)



def test_tf_frequency_warp_moves_a_band_by_its_factor_and_keeps_the_shape():
    import tensorflow as tf

    line = np.zeros((5, 128), np.float32)
    line[:, 60] = 1.0
    peaks = set()
    for i in range(40):
        warped = audio.tf_frequency_warp(tf.constant(line), 0.1, tf.constant([i, 7])).numpy()
        assert warped.shape == line.shape
        peak = int(np.argmax(warped[0]))
        assert 54 <= peak <= 66  # 60 x [0.9, 1.1]
        np.testing.assert_allclose(warped, np.broadcast_to(warped[0], warped.shape))  # every frame alike
        peaks.add(peak)
    assert len(peaks) > 4  # the factor is drawn per seed
    again = audio.tf_frequency_warp(tf.constant(line), 0.1, tf.constant([3, 7])).numpy()
    np.testing.assert_array_equal(again, audio.tf_frequency_warp(tf.constant(line), 0.1, tf.constant([3, 7])))
    flat = np.full((5, 128), -40.0, np.float32)  # interpolation adds no energy
    np.testing.assert_allclose(audio.tf_frequency_warp(tf.constant(flat), 0.2, tf.constant([1, 2])), flat)
    np.testing.assert_allclose(audio.tf_frequency_warp(tf.constant(line), 0.0, tf.constant([1, 2])), line)


# === speaker normalisation ===

def test_speaker_stats_use_only_that_speakers_utterances():
    rng = np.random.default_rng(0)
    a1, a2 = rng.normal(-20, 5, (30, 128)), rng.normal(-25, 3, (12, 128))
    b1 = rng.normal(10, 1, (20, 128))
    stats = audio.speaker_stats([("A", a1), ("B", b1), ("A", a2)])

    frames_a = np.concatenate([a1, a2])
    np.testing.assert_allclose(stats["A"][0], frames_a.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["A"][1], frames_a.std(axis=0), rtol=1e-4)
    # B's audio changes nothing for A.
    other = audio.speaker_stats([("A", a1), ("B", b1 * 100), ("A", a2)])
    np.testing.assert_array_equal(other["A"][0], stats["A"][0])
    np.testing.assert_allclose(stats["B"][0], b1.mean(axis=0), rtol=1e-5)

    normalised = np.concatenate([audio.normalise(x, *stats["A"]) for x in (a1, a2)])
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-3)


def test_speaker_stats_floor_the_std_of_constant_bins():
    stats = audio.speaker_stats([("A", np.full((5, 128), -80.0))])
    assert np.all(stats["A"][1] == np.float32(audio.MIN_STD))
    assert np.all(audio.normalise(np.full((2, 128), -80.0), *stats["A"]) == 0)
