"""Long recordings cut at pauses (kemdy_tf.timeline), streamed, and the 30-minute timeline."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kemdy_tf import timeline
from test_stt import needs_espeak, speak

WINDOW = 16.4  # the default model window, seconds


def burst(seconds, rate=16000, freq=200.0, seed=0):
    """Speech-like sound: a harmonic tone with a syllable-rate wobble and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def join(pieces, gaps, rate=16000, lead=0.5):
    """pieces separated by silences of `gaps` seconds; returns (wave, true (start, end) of each piece)."""
    parts, truth, now = [np.zeros(int(lead * rate), np.float32)], [], lead
    for piece, gap in zip(pieces, gaps):
        truth.append((now, now + len(piece) / rate))
        parts += [piece, np.zeros(int(gap * rate), np.float32)]
        now += len(piece) / rate + int(gap * rate) / rate
    return np.concatenate(parts), truth


@needs_espeak
def test_korean_sentences_separated_by_silences_are_cut_within_0_3_s(tmp_path):
    sentences = ["오늘 날씨가 정말 좋네요", "저는 학교에 갑니다", "지금 너무 화가 나요", "감사합니다", "내일 다시 만나요"]
    wave, truth = join([speak(s, trim=True) for s in sentences], [0.6, 1.0, 0.8, 1.5, 0.7])
    sf.write(tmp_path / "talk.wav", wave, 16000)
    spans = timeline.find_spans(timeline.open_audio(tmp_path / "talk.wav"), WINDOW)
    assert len(spans) == len(sentences)
    for span, (start, end) in zip(spans, truth):
        assert abs(span.start - start) < 0.3 and abs(span.end - end) < 0.3, (span, start, end)


def test_streamed_levels_equal_the_decoded_ones_across_block_edges(tmp_path):
    """A 22.05 kHz stereo file over two blocks long: the streamed read sees what a whole read sees."""
    wave, _ = join([burst(9.0, 22050), burst(7.0, 22050, 300.0)], [2.0, 5.0], rate=22050)
    stereo = np.stack([wave, 0.5 * wave], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    streamed = timeline.open_audio(tmp_path / "s.wav")
    assert isinstance(streamed, timeline.StreamedAudio) and streamed.duration > 2 * timeline.BLOCK_SECONDS
    decoded = timeline.DecodedAudio(stereo.mean(axis=1), 22050)
    np.testing.assert_allclose(timeline.frame_levels(streamed), timeline.frame_levels(decoded), atol=1e-3)
    assert timeline.find_spans(streamed, WINDOW) == timeline.find_spans(decoded, WINDOW)
    span = timeline.find_spans(streamed, WINDOW)[1]
    np.testing.assert_allclose(streamed.read(span, 16000), decoded.read(span, 16000), atol=1e-5)


def test_speech_longer_than_the_window_is_cut_into_pieces_that_fit():
    # 40 s without a pause, then 3 s after one: every piece fits, and together they cover the speech.
    wave, truth = join([burst(40.0), burst(3.0, freq=320.0)], [1.0, 0.5])
    spans = timeline.find_spans(timeline.DecodedAudio(wave, 16000), WINDOW)
    assert all(s.seconds <= WINDOW for s in spans)
    *long, last = spans
    assert 3 <= len(long) <= 5  # cut in the second half of each window: pieces of 8.2-16.4 s, then the rest
    assert all(s.seconds >= WINDOW / 2 - 0.2 for s in long[:-1])
    assert long[0].start == pytest.approx(truth[0][0], abs=0.3) and long[-1].end == pytest.approx(truth[0][1], abs=0.3)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))  # in order, never overlapping
    assert last.start == pytest.approx(truth[1][0], abs=0.3) and last.end == pytest.approx(truth[1][1], abs=0.3)


def test_silence_clicks_and_short_pauses():
    rate = 16000
    assert timeline.find_spans(timeline.DecodedAudio(np.zeros(10 * rate), rate), WINDOW) == []
    # A 50 ms click is not speech; a 0.15 s pause inside a phrase does not cut it.
    wave, _ = join([burst(0.05), burst(1.0), burst(1.0)], [2.0, 0.15, 1.0])
    spans = timeline.find_spans(timeline.DecodedAudio(wave, rate), WINDOW)
    assert len(spans) == 1 and spans[0].seconds == pytest.approx(2.15, abs=0.25)


def test_missing_and_empty_files_are_audio_errors(tmp_path):
    from kemdy_tf.data.audio import AudioError

    (tmp_path / "empty.wav").write_bytes(b"")
    for name, reason in (("absent.wav", "file not found"), ("empty.wav", "empty file")):
        with pytest.raises(AudioError, match=reason):
            timeline.open_audio(tmp_path / name)


@pytest.mark.slow
def test_a_30_minute_recording_becomes_a_timeline(tmp_path):
    """Written in blocks and read streamed; audio-only (STT on 30 min takes longer than the test budget)."""
    from kemdy_tf import export, inference
    from test_export import build_tiny_run, tiny_trained

    rate, rng = 16000, np.random.default_rng(0)
    truth = []
    with sf.SoundFile(tmp_path / "long.wav", "w", rate, 1, subtype="PCM_16") as out:
        now = 0.0
        while now < 30 * 60 - 10:
            speech, pause = rng.uniform(1.0, 8.0), rng.uniform(0.6, 2.0)
            out.write(burst(speech, freq=rng.uniform(150, 350), seed=len(truth)))
            out.write(np.zeros(int(pause * rate), np.float32))
            truth.append((now, now + speech))
            now += speech + pause
    config, models, _ = build_tiny_run(tmp_path / "run")
    export.export_models(tiny_trained(tmp_path / "run", config, models), tmp_path / "saved")
    model = inference.load_model(tmp_path / "saved")
    rows = inference.predict_timeline(tmp_path / "long.wav", model)
    assert len(rows) == len(truth)
    assert all(r.emotion in config.data.classes and r.transcript is None for r in rows)
    starts = np.array([r.start for r in rows])
    assert np.max(np.abs(starts - np.array([t[0] for t in truth]))) < 0.3
    timeline.write_csv(rows, model.classes, tmp_path / "timeline.csv")
    timeline.plot(rows, model.classes, tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
