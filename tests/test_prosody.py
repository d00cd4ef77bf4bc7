"""Pitch and energy statistics of a clip (`data.prosody`, read by the classifiers under fusion.pitch)."""

import numpy as np
import pytest
import soundfile as sf

from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import audio, prosody
from kemdy_tf.models import fusion

SR = 16000
CFG = FeatureConfig()
STAT = {name: i for i, name in enumerate(prosody.PITCH_STATISTICS)}


def tone(hz_start, hz_end=None, seconds=1.5, amplitude=0.3):
    """A sine whose frequency glides linearly from hz_start to hz_end."""
    t = np.arange(int(SR * seconds)) / SR
    hz = np.linspace(hz_start, hz_end or hz_start, t.size)
    return (amplitude * np.sin(2 * np.pi * np.cumsum(hz) / SR)).astype(np.float32)


@pytest.mark.parametrize("hz", [110.0, 220.0, 330.0])
def test_a_steady_tone_gives_its_frequency_and_no_movement(hz):
    stats = prosody.pitch_statistics(prosody.pitch_track(tone(hz), CFG))
    assert stats.shape == (len(prosody.PITCH_STATISTICS),) == (fusion.N_PITCH_STATISTICS,)
    assert stats.dtype == np.float32
    assert np.exp(stats[STAT["log_f0_p50"]]) == pytest.approx(hz, rel=0.02)
    assert np.exp(stats[STAT["log_f0_mean"]]) == pytest.approx(hz, rel=0.02)
    assert stats[STAT["log_f0_range_10_90"]] < 0.02 and stats[STAT["log_f0_abs_delta_mean"]] < 0.01
    assert stats[STAT["loud_share"]] == pytest.approx(1.0, abs=0.05)


def test_a_gliding_tone_has_a_range_and_movement():
    stats = prosody.pitch_statistics(prosody.pitch_track(tone(120.0, 240.0), CFG))
    # From 120 to 240 Hz: the 10th-90th percentile range is ~0.8 of log(2).
    assert stats[STAT["log_f0_range_10_90"]] == pytest.approx(0.8 * np.log(2), rel=0.15)
    assert stats[STAT["log_f0_abs_delta_mean"]] > 0.005
    assert np.exp(stats[STAT["log_f0_p10"]]) < 140 < 220 < np.exp(stats[STAT["log_f0_p90"]])


def test_silent_frames_are_left_out_of_the_pitch_and_counted_in_the_loud_share():
    wave = np.concatenate([tone(200.0, seconds=1.0), np.zeros(SR, np.float32)])
    stats = prosody.pitch_statistics(prosody.pitch_track(wave, CFG))
    assert stats[STAT["loud_share"]] == pytest.approx(0.5, abs=0.08)
    assert np.exp(stats[STAT["log_f0_p90"]]) == pytest.approx(200.0, rel=0.03)  # the silence's YIN noise is out
    assert stats[STAT["log_rms_range_10_90"]] > 5  # loud against silent frames


@pytest.mark.parametrize("wave", [np.zeros(100, np.float32), np.zeros(SR, np.float32), tone(200.0, seconds=0.05)])
def test_tiny_and_silent_clips_give_finite_statistics(wave):
    assert np.isfinite(prosody.pitch_statistics(prosody.pitch_track(wave, CFG))).all()


def test_the_track_covers_the_frames_the_log_mel_keeps():
    short = FeatureConfig(max_frames=20)
    wave = tone(200.0, seconds=3.0)
    track = prosody.pitch_track(wave, short)
    assert track.shape == (20, 2)
    assert len(audio.log_mel(wave, short)) == 20


def test_unreadable_files_raise_an_audio_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(audio.AudioError, match="bad.wav"):
        prosody.clip_pitch_statistics(bad, CFG)
    good = tmp_path / "good.wav"
    sf.write(good, tone(150.0), SR)
    np.testing.assert_allclose(prosody.clip_pitch_statistics(good, CFG),  # 16-bit wav: rounded samples
                               prosody.pitch_statistics(prosody.pitch_track(tone(150.0), CFG)), rtol=1e-3, atol=1e-4)
