"""The web API of serve.py (kemdy_tf.web.app): answers, every refusal, the schema, the page, load,
per-session speaker statistics.

One tiny untrained export (build_tiny_run from test_export) serves every test; its
predictions are meaningless, so the tests compare the API with `kemdy_tf.inference.predict_files`
(what `predict.py --json` prints) on the same clip instead of with fixed numbers. Its fusion
model standardises the voice per speaker (`fusion.functionals_in_fusion=true`, as in
tests/test_predict.py), so the same export also serves the per-session statistics tests.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.web_memory import LoopbackServer, long_clip, post_many, rss_bytes, rss_rounds
from kemdy_tf import export, inference
from kemdy_tf.data import synthetic
from kemdy_tf.data.audio import load_audio, log_mel
from kemdy_tf.web.app import STATIC_DIR, Limits, SessionClips, create_app
from test_export import build_tiny_run, tiny_trained
from test_stt import needs_espeak, needs_stt, speak
from test_timeline import join

ROOT = Path(__file__).resolve().parents[1]
MAX_FRAMES = 128  # a ~4 s window keeps the tiny model fast
# Small limits, so that breaking each one costs little.
LOAD_REQUESTS = 50
LIMITS = Limits(max_bytes=400_000, max_seconds=8.0, max_text_chars=40, max_concurrent=2, max_queue=LOAD_REQUESTS,
                max_sessions=3)
KOREAN_TEXT = "n/ 정말 화가 나요 l/"  # KEMDy noise tags are cleaned, as by predict.py
RSS_GROWTH_LIMIT = 100 * 2**20


def tone(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


def encode(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def make_export(root: Path, overrides=()) -> Path:
    """A tiny untrained export under root/saved/kemdy (random weights, real SavedModel)."""
    config, models, _ = build_tiny_run(root / "run", [f"features.max_frames={MAX_FRAMES}", *overrides])
    base = root / "saved" / "kemdy"
    export.export_models(tiny_trained(root / "run", config, models), base)
    return base


def synthetic_clip(root: Path) -> tuple[Path, str]:
    """One synthetic KEMDy20 utterance: its wav and its Korean transcript (cp949 on disk)."""
    data = synthetic.generate(root / "KEMDy20", seed=0, sessions=1, scripts=1, utterances=(1, 1))
    wav = sorted((data / "wav").glob("*/*.wav"))[0]
    return wav, wav.with_suffix(".txt").read_bytes().decode("cp949").strip()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    base = make_export(root, ["fusion.functionals_in_fusion=true"])  # reads speaker statistics
    wav, transcript = synthetic_clip(root)
    app = create_app(base, LIMITS, speech_recognition=False)  # on in the STT tests below only
    return {"root": root, "base": base, "app": app, "wav": wav, "transcript": transcript,
            "predict": inference}


@pytest.fixture(scope="module")
def client(setup):
    from fastapi.testclient import TestClient

    with TestClient(setup["app"]) as client:
        yield client


def post(client, name: str, content: bytes, content_type: str = "audio/wav", text: str | None = None):
    return client.post("/api/predict", files={"audio": (name, content, content_type)},
                       data={} if text is None else {"text": text})


# === Answers ===


def test_health_reports_the_model_and_the_limits(client, setup):
    body = client.get("/api/health").json()
    model = setup["app"].state.model
    assert body["status"] == "ok"
    assert body["classes"] == list(model.classes) and len(body["classes"]) == 5
    assert body["model"] == f"kemdy/{model.path.name}"
    assert body["sample_rate"] == 16000
    assert body["window_seconds"] == pytest.approx(model.window_samples / 16000, abs=1e-3)
    assert body["limits"] == {"max_bytes": 400_000, "max_seconds": 8.0, "max_text_chars": 40, "max_concurrent": 2,
                              "max_queue": LOAD_REQUESTS, "max_sessions": 3}
    assert body["speaker_statistics"] is model.reads_speaker_statistics is True


def test_predict_gives_the_fields_and_numbers_of_predict_py_json(client, setup):
    wav, transcript = setup["wav"], setup["transcript"]
    response = post(client, "세션01_발화.wav", wav.read_bytes(), text=transcript)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()

    predict = setup["predict"]
    [reference] = predict.predict_files([wav], [transcript], setup["app"].state.model)
    expected = reference.to_dict()
    assert set(body) == set(expected) | {"duration_seconds", "spectrogram", "segments"}
    assert body["segments"] is None and body["transcript_source"] == "given"  # fits the window: no timeline
    assert body["file"] == "세션01_발화.wav"  # the upload's name, Korean intact
    assert body["transcript"] == transcript and not body["transcript_missing"]
    assert body["emotion"] == expected["emotion"] and body["error"] is None
    assert list(body["probabilities"]) == list(setup["app"].state.model.classes)
    for name, p in expected["probabilities"].items():
        assert body["probabilities"][name] == pytest.approx(p, abs=1e-5)
    assert body["arousal"] == pytest.approx(expected["arousal"], abs=1e-4)
    assert body["valence"] == pytest.approx(expected["valence"], abs=1e-4)
    assert body["duration_seconds"] == pytest.approx(sf.info(wav).duration, abs=1e-3)


def test_spectrogram_is_the_log_mel_the_model_hears(client, setup):
    from matplotlib.image import imread

    body = post(client, "clip.wav", setup["wav"].read_bytes()).json()
    spectrogram = body["spectrogram"]
    features = setup["app"].state.model.features
    mel = log_mel(load_audio(setup["wav"], 16000), features)
    assert (spectrogram["frames"], spectrogram["n_mels"]) == mel.shape
    assert spectrogram["db_max"] == pytest.approx(float(mel.max()), abs=0.01)
    assert spectrogram["db_min"] == pytest.approx(float(mel.min()), abs=0.01)
    assert spectrogram["max_hz"] == 8000
    prefix = "data:image/png;base64,"
    assert spectrogram["png"].startswith(prefix)
    image = imread(io.BytesIO(base64.b64decode(spectrogram["png"][len(prefix):])), format="png")
    assert image.shape[:2] == (mel.shape[1], mel.shape[0])  # rows = mel bins, columns = frames
    assert image[..., :3].std() > 0.05  # a picture of the clip, not one flat colour


def test_without_text_the_prediction_is_audio_only(client):
    body = post(client, "clip.wav", encode(tone(1.0)), text="   ").json()
    assert body["transcript_missing"] and body["transcript"] is None and body["valence"] is None
    assert body["emotion"] in body["probabilities"] and 1 <= body["arousal"] <= 5


def test_octet_stream_stereo_flac_at_44k_is_sniffed_and_resampled(client, setup):
    content = encode(tone(1.5, 44100, channels=2), 44100, "FLAC")
    body = post(client, "stereo.flac", content, "application/octet-stream", "그냥 그래요").json()
    assert body["duration_seconds"] == pytest.approx(1.5, abs=0.01)
    assert body["spectrogram"]["frames"] == 1 + int(1.5 * 16000) // setup["app"].state.model.features.hop_length


def test_a_clip_longer_than_the_window_is_truncated_with_a_warning(client, setup):
    body = post(client, "long.wav", encode(tone(6.0))).json()  # 6 s < max_seconds, > the ~4 s window
    assert any("truncated" in w for w in body["warnings"])
    assert body["spectrogram"]["frames"] == MAX_FRAMES
    assert body["duration_seconds"] == pytest.approx(6.0, abs=1e-3)
    # ... and its timeline: pieces that fit the window, the first predicted as the top-level answer.
    segments = body["segments"]
    window = setup["app"].state.model.window_samples / 16000
    assert len(segments) >= 2 and all(0 < s["end"] - s["start"] <= window for s in segments)
    assert segments[0]["start"] == pytest.approx(0, abs=0.1) and segments[-1]["end"] == pytest.approx(6.0, abs=0.1)
    assert all(s["transcript"] is None and s["valence"] is None for s in segments)  # no STT on this server
    assert set(segments[0]["probabilities"]) == set(body["probabilities"])


def test_transcribe_without_speech_recognition_is_a_503_saying_so(client):
    response = client.post("/api/transcribe", files={"audio": ("clip.wav", encode(tone(1.0)), "audio/wav")})
    assert response.status_code == 503
    assert response.json()["error"] == "stt_unavailable" and "off" in response.json()["detail"]
    assert client.get("/api/health").json()["stt"] is False


@needs_stt
@needs_espeak
def test_transcribe_and_a_long_upload_use_speech_recognition(setup):
    from fastapi.testclient import TestClient

    app = create_app(setup["base"], LIMITS)  # speech recognition on: it is installed
    wave, truth = join([speak("지금 너무 화가 나요", trim=True), speak("감사합니다", trim=True)], [1.5, 1.5])
    with TestClient(app) as stt_client:
        assert stt_client.get("/api/health").json()["stt"] is True
        response = stt_client.post("/api/transcribe", files={"audio": ("talk.wav", encode(wave), "audio/wav")})
        assert response.status_code == 200, response.text
        heard = response.json()
        assert heard["transcript"] and heard["words"] and heard["file"] == "talk.wav"
        assert all(0 <= w["start"] <= w["end"] <= len(wave) / 16000 for w in heard["words"])
        segments = post(stt_client, "talk.wav", encode(wave)).json()["segments"]
    assert [s["start"] for s in segments] == pytest.approx([start for start, _ in truth], abs=0.3)
    assert all(s["transcript_source"] == "stt" and s["transcript"] and s["valence"] is not None for s in segments)


def test_silence_is_predicted_with_a_warning(client):
    body = post(client, "silence.wav", encode(np.zeros(8000))).json()
    assert body["emotion"] in body["probabilities"]
    assert any("silent" in w for w in body["warnings"])
    assert body["spectrogram"]["db_min"] == body["spectrogram"]["db_max"]  # a flat image, drawn without error


def test_text_at_the_limit_is_accepted(client):
    text = "가" * LIMITS.max_text_chars  # characters, not bytes: 40 Hangul are 120 UTF-8 bytes
    response = post(client, "clip.wav", encode(tone(0.5)), text=text)
    assert response.status_code == 200 and response.json()["transcript"] == text


def test_short_truncated_and_out_of_scale_uploads_are_predicted_with_warnings(client):
    whole = encode(tone(2.0))
    cut = post(client, "cut.wav", whole[: 44 + 1000]).json()  # the header promises 2 s; 31 ms are left
    assert any("truncated file: its header promises 2.00 s" in w for w in cut["warnings"])
    assert any("very short audio" in w for w in cut["warnings"]) and cut["emotion"]
    one = post(client, "one.wav", encode(np.array([0.2]))).json()
    assert any("very short audio (0.000 s, 1 samples" in w for w in one["warnings"])
    buffer = io.BytesIO()
    sf.write(buffer, (50 * tone(1.0) / 0.45).astype(np.float32), 16000, format="WAV", subtype="FLOAT")
    loud = post(client, "loud.wav", buffer.getvalue()).json()
    assert any("beyond full scale" in w for w in loud["warnings"]) and loud["emotion"]
    assert post(client, "fine.wav", encode(tone(1.0))).json()["warnings"] == []


def test_each_upload_is_decoded_once(client, monkeypatch):
    from kemdy_tf.data import audio

    calls = []
    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert post(client, "clip.wav", encode(tone(1.0)), text="좋아요").status_code == 200
    assert len(calls) == 1


@pytest.mark.parametrize("encoding", ["cp949", "latin-1"])
def test_a_transcript_that_is_not_utf8_is_refused_naming_the_encoding(client, encoding):
    text = ("정말 화가 나요" if encoding == "cp949" else "café").encode(encoding)
    response = client.post("/api/predict", files={"audio": ("clip.wav", _WAV, "audio/wav"), "text": (None, text)})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "text_not_utf8"
    assert "not valid UTF-8" in body["detail"] and "cp949" in body["detail"]


def test_utf8_latin_text_is_accepted(client):
    response = post(client, "clip.wav", _WAV, text="café au lait")
    assert response.status_code == 200 and response.json()["transcript"] == "café au lait"


def test_a_full_queue_answers_503_with_retry_after(client, setup):
    admission = setup["app"].state.admission
    saved = admission.admitted
    admission.admitted = admission.capacity  # every slot running and the queue full
    try:
        response = post(client, "clip.wav", _WAV)
    finally:
        admission.admitted = saved
    assert response.status_code == 503
    assert response.json()["error"] == "busy" and "retry in about" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert post(client, "clip.wav", _WAV).status_code == 200  # and it serves again once there is room


def test_beyond_the_queue_bound_requests_are_refused_not_queued(setup):
    app = create_app(setup["base"], Limits(max_bytes=400_000, max_seconds=8.0, max_concurrent=1, max_queue=1))
    with LoopbackServer(app) as server:
        responses = asyncio.run(post_many(server.url, 12, encode(tone(4.0)), "좋아요"))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)


# === Refusals: a 4xx status, a code, and a sentence naming the problem ===

_WAV = encode(tone(0.5))


@pytest.mark.parametrize("name, content, content_type, text, status, code, words", [
    ("notes.txt", b"hello", "text/plain", None, 415, "unsupported_type", ["notes.txt", "text/plain"]),
    ("rec.webm", b"\x1aE\xdf\xa3", "audio/webm", None, 415, "unsupported_type", ["audio/webm", "WAV"]),
    ("empty.wav", b"", "audio/wav", None, 400, "empty_file", ["empty.wav", "0 bytes"]),
    ("fake.wav", "이것은 소리가 아닙니다".encode() * 20, "audio/wav", None, 422, "not_audio", ["fake.wav", "RIFF"]),
    ("blob.bin", b"\x00\x01" * 500, "application/octet-stream", None, 422, "not_audio", ["blob.bin"]),
    ("broken.wav", _WAV[:12] + b"\x00" * 200, "audio/wav", None, 422, "not_audio", ["broken.wav", "cannot"]),
    ("clip.wav", _WAV, "audio/wav", "가" * 41, 422, "text_too_long", ["41 characters", "40"]),
    ("long.wav", encode(tone(9.0)), "audio/wav", None, 413, "audio_too_long", ["long.wav", "9.0 s", "8 s"]),
    ("long.flac", encode(tone(30.0, 8000), 8000, "FLAC"), "application/octet-stream", None,
     413, "audio_too_long", ["long.flac", "30.0 s"]),
    # Just over the file cap (the body cap leaves room for the form) and far over it.
    ("big.wav", b"RIFF" + b"\x00" * 400_000, "audio/wav", None, 413, "file_too_large",
     ["big.wav", "400,004 bytes", "400,000 bytes"]),
    ("huge.wav", b"RIFF" + b"\x00" * 2_000_000, "audio/wav", None, 413, "file_too_large", ["400,000 bytes"]),
])
def test_bad_uploads_get_a_clear_4xx_json_error(client, name, content, content_type, text, status, code, words):
    response = post(client, name, content, content_type, text)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    for word in words:
        assert word in body["detail"]


def test_a_missing_audio_field_is_a_422_naming_it(client):
    response = client.post("/api/predict", data={"text": "안녕하세요"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and "audio" in response.json()["detail"]


def test_serve_py_exits_with_one_line_for_a_missing_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("serve", ROOT / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    assert serve.main(["--model", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "does not exist" in err and "\n" not in err


# === Schema and page ===


def test_openapi_schema_describes_the_api_and_docs_pages_are_off(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/health", "/api/session/reset"} <= set(schema["paths"])
    operation = schema["paths"]["/api/predict"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    body = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[-1]]
    assert body["required"] == ["audio"] and set(body["properties"]) == {"audio", "text", "session"}
    assert {"200", "400", "413", "415", "422"} <= set(operation["responses"])
    response_schema = schema["components"]["schemas"]["PredictResponse"]["properties"]
    assert {"emotion", "probabilities", "arousal", "valence", "transcript_missing", "spectrogram"} <= set(response_schema)
    # Swagger UI and ReDoc would load their scripts from a CDN.
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_page_is_utf8_korean_and_loads_nothing_from_other_hosts(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert '<html lang="ko">' in html and '<meta charset="utf-8">' in html and "음성 감정 인식" in html
    for asset in ("/static/app.js", "/static/style.css", "/static/recorder-worklet.js"):
        assert client.get(asset).status_code == 200
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, f"{path.name} refers to another host: {urls}"


# === Per-session speaker statistics (an export that reads them) ===

SESSION_TEXT = "정말 화가 나요"


def voice(seconds: float, freq: float, seed: int) -> np.ndarray:
    """A voiced tone with a little noise: clips of one 'speaker' that differ from each other."""
    t = np.arange(int(seconds * 16000)) / 16000
    noise = 0.02 * np.random.default_rng(seed).standard_normal(t.size)
    return 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + noise


@pytest.fixture(scope="module")
def voices(setup):
    """Two clips of one voice: (the uploaded bytes, the wave the server decodes from them)."""
    out = []
    for k, (seconds, freq) in enumerate([(1.0, 170), (1.4, 260)]):
        path = setup["root"] / f"voice{k}.wav"
        path.write_bytes(encode(voice(seconds, freq, k)))
        out.append((path.read_bytes(), inference.load_clip(path, setup["app"].state.model)[0]))
    return out


def post_in(client, content: bytes, session: str | None) -> dict:
    """The answer for one clip with SESSION_TEXT, sent in `session` (None: no session field)."""
    data = {"text": SESSION_TEXT} | ({} if session is None else {"session": session})
    response = client.post("/api/predict", files={"audio": ("clip.wav", content, "audio/wav")}, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def _probabilities(body: dict, model) -> np.ndarray:
    return np.array([body["probabilities"][c] for c in model.classes])


def test_a_session_is_standardised_with_its_own_clips_and_says_so(client, setup, voices):
    model, [(bytes1, wave1), (bytes2, wave2)] = setup["app"].state.model, voices
    first = post_in(client, bytes1, "tab-one")
    # One clip is too few to enrol: the export's fallback, labelled and warned about as predict.py does.
    assert first["statistics"] == "training set"
    assert any(w.startswith("this session: 1 clip, fewer than 2: not enrolled") for w in first["warnings"])
    np.testing.assert_allclose(_probabilities(first, model),
                               model.predict([wave1], [SESSION_TEXT])[0]["probabilities"], atol=1e-5)

    second = post_in(client, bytes2, "tab-one")
    assert second["statistics"] == "this session (2 clips)"
    assert any(w.startswith("this session: enrolled from 2 clips, fewer than 5") for w in second["warnings"])
    statistics, used = model.enrol([wave1, wave2])
    expected = model.predict([wave2], [SESSION_TEXT], speaker=statistics)[0]["probabilities"]
    np.testing.assert_allclose(_probabilities(second, model), expected, atol=1e-5)
    fallback = model.predict([wave2], [SESSION_TEXT])[0]["probabilities"]
    assert used == 2 and np.abs(expected - fallback).max() > 1e-6  # the statistics do change the answer

    # Another tab's session holds none of these clips: the fallback again.
    other = post_in(client, bytes2, "tab-two")
    assert other["statistics"] == "training set"
    np.testing.assert_allclose(_probabilities(other, model), fallback, atol=1e-5)
    # No session field: as before (the training set's statistics, no session warning, nothing kept).
    alone = post_in(client, bytes2, None)
    assert alone["statistics"] == "training set" and not any("session" in w for w in alone["warnings"])
    np.testing.assert_allclose(_probabilities(alone, model), fallback, atol=1e-5)
    sessions = setup["app"].state.predictor.sessions
    assert len(sessions.clips("tab-one")) == 2 and len(sessions.clips("tab-two")) == 1


def test_reset_forgets_a_sessions_clips(client, voices):
    [(bytes1, _), (bytes2, _)] = voices
    post_in(client, bytes1, "to-reset")
    post_in(client, bytes2, "to-reset")
    assert post_in(client, bytes1, "to-reset")["statistics"] == "this session (3 clips)"
    response = client.post("/api/session/reset", data={"session": "to-reset"})  # a form
    assert response.status_code == 200 and response.json() == {"session": "to-reset", "dropped": 3}
    assert post_in(client, bytes2, "to-reset")["statistics"] == "training set"  # enrolment starts again
    response = client.post("/api/session/reset", json={"session": "to-reset"})  # JSON
    assert response.status_code == 200 and response.json()["dropped"] == 1
    assert client.post("/api/session/reset", json={"session": "never-seen"}).json()["dropped"] == 0


@pytest.mark.parametrize("session", ["has space", "x" * 65, "세션", "a/b"])
def test_a_malformed_session_id_is_a_422_saying_what_one_looks_like(client, session):
    response = client.post("/api/predict", files={"audio": ("clip.wav", _WAV, "audio/wav")}, data={"session": session})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["detail"].startswith("session: ") and "1-64 characters of A-Z, a-z, 0-9, _ and -" in body["detail"]
    reset = client.post("/api/session/reset", json={"session": session})
    assert reset.status_code == 422 and reset.json()["detail"] == body["detail"]


def test_reset_without_a_session_id_is_a_422(client):
    for response in (client.post("/api/session/reset", data={}), client.post("/api/session/reset", json={}),
                     client.post("/api/session/reset", json={"session": 5}),
                     client.post("/api/session/reset", json=["tab-one"])):
        assert response.status_code == 422 and response.json()["error"] == "invalid_request", response.text
        assert response.json()["detail"].startswith("session: ")
    broken = client.post("/api/session/reset", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"] == "bad_request"


def test_the_store_keeps_the_newest_clips_of_the_most_recent_sessions(client, setup, voices):
    """At most MAX_ENROL_CLIPS clips a session (the oldest dropped) and max_sessions sessions
    (the least recently used dropped), through the API and in `SessionClips` itself."""
    sessions = setup["app"].state.predictor.sessions
    assert sessions.max_clips == inference.MAX_ENROL_CLIPS and sessions.max_sessions == LIMITS.max_sessions == 3
    content = voices[0][0]
    for session in ("s1", "s2", "s3", "s1", "s4"):  # s1 used again: s2 is the least recently used
        post_in(client, content, session)
    assert len(sessions) == 3 and sessions.clips("s2") == [] and len(sessions.clips("s1")) == 2
    assert post_in(client, content, "s2")["statistics"] == "training set"  # dropped: enrolment starts again

    store = SessionClips(max_sessions=2)
    waves = [np.full(3, k, np.float32) for k in range(inference.MAX_ENROL_CLIPS + 8)]
    for wave in waves:
        kept = store.add("a", wave)
    assert len(kept) == inference.MAX_ENROL_CLIPS and kept[0] is waves[8] and kept[-1] is waves[-1]
    for session in ("b", "a", "c"):  # "b" is the least recently used
        store.add(session, waves[0])
    assert [len(store.clips(s)) for s in "abc"] == [inference.MAX_ENROL_CLIPS, 0, 1]
    assert store.reset("a") == inference.MAX_ENROL_CLIPS and store.reset("a") == 0 and len(store) == 1


def test_a_long_upload_keeps_only_its_first_window_as_a_copy(setup):
    predictor, model = setup["app"].state.predictor, setup["app"].state.model
    body = predictor("long.wav", "audio/wav", io.BytesIO(encode(tone(6.0))), None, "long-upload")
    assert body["statistics"] == "training set" and body["segments"]  # its timeline, as before
    [kept] = predictor.sessions.clips("long-upload")
    assert len(kept) == model.window_samples and kept.base is None  # not a view of the whole recording


def test_sessions_are_safe_to_share_between_threads():
    store = SessionClips(max_sessions=4, max_clips=5)
    errors = []

    def work(k):
        try:
            for i in range(300):
                store.add(f"s{(k + i) % 6}", np.zeros(2, np.float32))
                store.reset(f"s{(k * i) % 6}")
        except Exception as error:  # any error fails the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(store) <= 4 and all(len(store.clips(f"s{k}")) <= 5 for k in range(6))


def test_a_session_on_an_export_that_reads_no_statistics_changes_nothing(client, setup, voices, monkeypatch):
    model = setup["app"].state.model
    monkeypatch.setattr(model, "reads_speaker_statistics", False)
    body = post_in(client, voices[0][0], "reads-none")
    assert body["statistics"] is None and not any("session" in w for w in body["warnings"])
    assert setup["app"].state.predictor.sessions.clips("reads-none") == []
    assert client.get("/api/health").json()["speaker_statistics"] is False


# === Load: a real server on loopback ===


def test_an_oversized_body_is_refused_with_or_without_a_content_length(setup):
    import httpx

    boundary = "kemdy-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="stream.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\nRIFF").encode()

    def streamed():  # no Content-Length: sent chunked, counted as it arrives
        yield head
        for _ in range(100):
            yield b"\x00" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    with LoopbackServer(setup["app"]) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        chunked = http.post("/api/predict", content=streamed(),
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        declared = http.post("/api/predict", files={"audio": ("big.wav", b"RIFF" + bytes(3_000_000), "audio/wav")})
        after = http.post("/api/predict", files={"audio": ("ok.wav", encode(tone(0.5)), "audio/wav")})
    for response in (chunked, declared):
        assert response.status_code == 413 and response.json()["error"] == "file_too_large"
        assert "400,000 bytes" in response.json()["detail"]
    assert "content-length" not in chunked.request.headers  # it really was streamed
    assert after.status_code == 200  # the server is still fine


def test_fifty_concurrent_requests_all_answer_and_memory_stays_steady(setup):
    content, text = setup["wav"].read_bytes(), setup["transcript"]
    [reference] = setup["predict"].predict_files([setup["wav"]], [text], setup["app"].state.model)
    with LoopbackServer(setup["app"]) as server:
        warm = asyncio.run(post_many(server.url, 10, content, text))
        assert [r.status_code for r in warm] == [200] * 10
        before = rss_bytes(os.getpid())  # the server runs in a thread of this process
        start = time.monotonic()
        responses = asyncio.run(post_many(server.url, LOAD_REQUESTS, content, text))
        seconds = time.monotonic() - start
        after = rss_bytes(os.getpid())
    assert [r.status_code for r in responses] == [200] * LOAD_REQUESTS
    # Concurrent calls of the shared model give each request its own, correct answer.
    assert sorted(r.json()["file"] for r in responses) == sorted(f"clip{i}.wav" for i in range(LOAD_REQUESTS))
    for response in responses:
        probabilities = response.json()["probabilities"]
        assert probabilities == pytest.approx(reference.probabilities, abs=1e-5)
    assert after - before < RSS_GROWTH_LIMIT, f"RSS grew {(after - before) / 2**20:.0f} MB under load"
    print(f"{LOAD_REQUESTS} concurrent requests in {seconds:.1f} s; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB")


@pytest.mark.slow
def test_memory_is_bounded_over_rounds_of_long_clips(setup):
    """bench/web_memory.py's loop at test sizes: later rounds must not keep adding memory."""
    limits = Limits(max_bytes=400_000, max_seconds=8.0, max_concurrent=2, max_queue=8)
    app = create_app(setup["base"], limits)
    sizes = rss_rounds(app, rounds=12, concurrent=8, content=long_clip(7.5))
    mb = [size / 2**20 for size in sizes]
    late = mb[-1] - mb[6]  # rounds 7-12, after the allocator has warmed up
    print("RSS per round (MB):", " ".join(f"{v:.0f}" for v in mb))
    assert late < 40, f"RSS still grows: {late:.0f} MB over the last 6 rounds ({mb})"
