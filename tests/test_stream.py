"""The live stream /api/stream (kemdy_tf.web.stream): windows equal to the offline timeline's
wherever the frames cut the audio, every limit and malformed frame refused with its close
reason, per-session speaker statistics shared with /api/predict, speech recognition, and 20
concurrent sessions on loopback with bounded memory.

One tiny untrained export (test_web's `make_export`) that reads speaker statistics serves
every test; the numbers are compared with `inference.predict_timeline` over the same audio,
never with fixed values.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from bench.web_memory import LoopbackServer, rss_bytes
from kemdy_tf import inference, timeline
from kemdy_tf.web import stream
from kemdy_tf.web.app import Limits, create_app
from kemdy_tf.web.stream import RingBuffer, StreamLimits
from test_stt import needs_espeak, needs_stt, speak
from test_web import encode, make_export

RATE = 16000
STOP = json.dumps({"type": "stop"})
CONCURRENT = 20
RSS_GROWTH_LIMIT = 60 * 2**20


def pcm16(seconds: float, seed: int = 0) -> np.ndarray:
    """A modulated tone with noise, quantised to 16-bit samples (what a browser sends)."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave += 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return np.round(wave * 32767).astype("<i2")


def frames_of(pcm: np.ndarray, sizes) -> list[bytes]:
    """`pcm` cut into frames of `sizes` samples, cycled until it is all sent."""
    data, out, at, k = pcm.tobytes(), [], 0, 0
    while at < len(data):
        step = 2 * sizes[k % len(sizes)]
        out.append(data[at : at + step])
        at, k = at + step, k + 1
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    base = make_export(root, ["fusion.functionals_in_fusion=true"])  # reads speaker statistics
    app = create_app(base, Limits(max_sessions=4), speech_recognition=False,
                     stream_limits=StreamLimits(max_connections=CONCURRENT, max_session_seconds=30, idle_seconds=5))
    return {"root": root, "base": base, "app": app, "model": app.state.model}


@pytest.fixture(scope="module")
def client(setup):
    from fastapi.testclient import TestClient

    with TestClient(setup["app"]) as client:
        yield client


def session_messages(client, frames, query: str = "", stop: bool = True) -> tuple[dict, list[dict], dict | None]:
    """Send `frames` (then the stop message): the ready message, the windows, the end message."""
    with client.websocket_connect("/api/stream" + query) as socket:
        ready = socket.receive_json()
        for frame in frames:
            socket.send_bytes(frame)
        if not stop:
            return ready, [], None
        socket.send_text(STOP)
        messages = []
        while not messages or messages[-1]["type"] != "end":
            messages.append(socket.receive_json())
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert (closed.value.code, closed.value.reason) == (stream.CLOSE_DONE, "stopped")
    return ready, messages[:-1], messages[-1]


def closed_with(client, send, query: str = "") -> tuple[int, str]:
    """The close code and reason after `send(socket)` on a new live session."""
    with client.websocket_connect("/api/stream" + query) as socket:
        first = socket.receive_json()
        assert first["type"] == "ready"
        send(socket)
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                socket.receive_json()
    return closed.value.code, closed.value.reason


# === The windows ===


def test_sliding_spans_end_at_every_whole_hop_over_the_window_before():
    spans = timeline.sliding_spans(6.5, window=4.0, hop=1.0)
    assert [(s.start, s.end) for s in spans] == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 6)]
    assert timeline.sliding_spans(0.99) == [] and len(timeline.sliding_spans(3.0, 2.0, 0.5)) == 6


def test_the_ring_buffer_keeps_the_latest_samples_across_wrap_around():
    ring, seen = RingBuffer(1000), np.zeros(0, np.float32)
    rng = np.random.default_rng(1)
    for size in [1, 999, 1000, 1, 2500, 0, 37, 480]:
        piece = rng.standard_normal(size).astype(np.float32)
        ring.extend(piece)
        seen = np.concatenate([seen, piece])
        for count in (1, 333, 1000, 5000):
            np.testing.assert_array_equal(ring.latest(count), seen[-min(count, 1000, len(seen)):])
    assert ring.total == len(seen)


@pytest.mark.parametrize("sizes", [
    [96_000],  # the whole recording in one frame
    [16_000],  # one frame per hop, on the hop boundaries
    [1, 7, 3_333, 15_999, 16_001, 2, 8_191],  # boundaries anywhere, odd sample counts
], ids=["one-frame", "hop-aligned", "anywhere"])
def test_chunk_boundaries_anywhere_give_the_offline_timelines_windows(client, setup, sizes, monkeypatch):
    # No session: the live windows use the export's fallback statistics; predict_timeline would
    # enrol the recording's own, so here the export is read as one without speaker statistics.
    model = setup["model"]
    monkeypatch.setattr(model, "reads_speaker_statistics", False)
    pcm = pcm16(6.5)
    ready, windows, end = session_messages(client, frames_of(pcm, sizes))
    assert (ready["sample_rate"], ready["window_seconds"], ready["hop_seconds"]) == (RATE, 4.0, 1.0)

    audio = timeline.DecodedAudio(pcm.astype(np.float32) / 32768, RATE)  # soundfile's 16-bit scaling
    offline = inference.predict_timeline("live", model, audio=audio, batch_size=1,
                                         spans=timeline.sliding_spans(audio.duration))
    assert [(w["start"], w["end"]) for w in windows] == [(r.start, r.end) for r in offline] == [
        (0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 6)]
    assert [w["index"] for w in windows] == list(range(6))
    for live, row in zip(windows, offline):
        assert live["emotion"] == row.emotion and live["warnings"] == row.warnings
        assert list(live["probabilities"]) == list(model.classes)
        np.testing.assert_allclose([live["probabilities"][c] for c in model.classes],
                                   [row.probabilities[c] for c in model.classes], atol=1e-4)
        assert live["arousal"] == pytest.approx(row.arousal, abs=1e-4)
        assert live["valence"] is None and live["transcript"] is None and live["partial"] is None

    table = list(csv.DictReader(io.StringIO(end["csv"])))  # the session as the timeline CSV
    assert end["windows"] == 6 and end["seconds"] == 6.5
    assert end["csv"].splitlines()[0] == timeline.csv_text([], model.classes).strip()  # write_csv's columns
    assert [float(row["start"]) for row in table] == [0, 0, 0, 0, 1, 2]
    assert [float(row[f"prob_{model.classes[0]}"]) for row in table] == pytest.approx(
        [w["probabilities"][model.classes[0]] for w in windows], abs=1e-6)


def test_a_session_reads_the_tabs_speaker_statistics_and_adds_a_clip_every_window(client, setup):
    """The store of /api/predict: a tab with two predicted clips starts enrolled, and every
    4 s of live audio adds a clip (the windows that do not overlap)."""
    session = "live-tab-1"
    for seed in (1, 2):
        response = client.post("/api/predict", files={"audio": ("c.wav", encode(pcm16(2.0, seed) / 32768), "audio/wav")},
                               data={"session": session})
        assert response.status_code == 200, response.text
    assert response.json()["statistics"] == "this session (2 clips)"
    _, windows, _ = session_messages(client, frames_of(pcm16(8.0), [4_000]), f"?session={session}")
    labels = [w["statistics"] for w in windows]
    assert labels == ["this session (2 clips)"] * 3 + ["this session (3 clips)"] * 4 + ["this session (4 clips)"]
    assert len(setup["app"].state.predictor.sessions.clips(session)) == 4

    _, fresh, _ = session_messages(client, frames_of(pcm16(8.0), [16_000]), "?session=live-tab-2")
    assert [w["statistics"] for w in fresh] == ["training set"] * 7 + ["this session (2 clips)"]
    assert any("fewer than 2: not enrolled" in warning for warning in fresh[3]["warnings"])


# === Limits and malformed frames ===


@pytest.mark.parametrize("send, code, words", [
    (lambda s: s.send_bytes(b"\x01\x02\x03"), stream.CLOSE_MALFORMED, "not whole 16-bit samples"),
    (lambda s: s.send_bytes(bytes(StreamLimits().max_frame_bytes + 2)), stream.CLOSE_TOO_BIG, "at most 320000"),
    (lambda s: s.send_text("hello"), stream.CLOSE_UNSUPPORTED, 'only {"type": "stop"}'),
    (lambda s: s.send_text(json.dumps({"type": "start"})), stream.CLOSE_UNSUPPORTED, "binary frames"),
], ids=["odd-bytes", "too-big", "text", "unknown-message"])
def test_malformed_frames_close_the_socket_saying_why(client, send, code, words):
    got, reason = closed_with(client, send)
    assert got == code and words in reason and len(reason.encode()) <= 123


def test_a_bad_session_id_is_refused_with_a_reason(client):
    with client.websocket_connect("/api/stream?session=not%20an%20id") as socket:
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == stream.CLOSE_POLICY and "not a session id" in closed.value.reason


def test_the_session_length_limit_ends_with_the_csv_then_closes(setup):
    from fastapi.testclient import TestClient

    app = create_app(setup["base"], speech_recognition=False, stream_limits=StreamLimits(max_session_seconds=2.5))
    with TestClient(app) as client, client.websocket_connect("/api/stream") as socket:
        socket.receive_json()
        socket.send_bytes(pcm16(4.0).tobytes())  # 1.5 s beyond the limit: cut
        messages = [socket.receive_json() for _ in range(3)]
        assert [m["type"] for m in messages] == ["window", "window", "end"]
        assert messages[-1]["seconds"] == 2.5 and messages[-1]["windows"] == 2
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == stream.CLOSE_POLICY and closed.value.reason.startswith("session limit: 2.5 s")


def test_an_idle_session_is_closed(setup):
    from fastapi.testclient import TestClient

    app = create_app(setup["base"], speech_recognition=False, stream_limits=StreamLimits(idle_seconds=0.3))
    with TestClient(app) as client, client.websocket_connect("/api/stream") as socket:
        socket.receive_json()
        socket.send_bytes(pcm16(0.5).tobytes())
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == stream.CLOSE_POLICY and closed.value.reason == "idle: no audio for 0.3 s"


def test_one_connection_beyond_the_maximum_is_refused_as_busy(setup):
    from fastapi.testclient import TestClient

    app = create_app(setup["base"], speech_recognition=False, stream_limits=StreamLimits(max_connections=2))
    with TestClient(app) as client, client.websocket_connect("/api/stream") as first, \
            client.websocket_connect("/api/stream") as second:
        assert first.receive_json()["type"] == second.receive_json()["type"] == "ready"
        with client.websocket_connect("/api/stream") as third, pytest.raises(WebSocketDisconnect) as closed:
            third.receive_json()
        assert closed.value.code == stream.CLOSE_BUSY and "2 live sessions already" in closed.value.reason
        first.send_text(STOP)
        assert first.receive_json()["type"] == "end"
    # the refused and stopped connections are counted out
    assert app.state.streams.active == 0


def test_health_describes_the_live_stream(client):
    live = client.get("/api/health").json()["live"]
    assert live["window_seconds"] == 4.0 and live["hop_seconds"] == 1.0 and live["stt"] is False
    assert live["limits"]["max_connections"] == CONCURRENT


def test_stream_limits_refuse_impossible_settings():
    with pytest.raises(ValueError, match="hop_seconds"):
        StreamLimits(window_seconds=1.0, hop_seconds=2.0)
    with pytest.raises(ValueError, match="whole numbers"):
        StreamLimits(hop_seconds=1 / 3)
    with pytest.raises(ValueError, match="max_connections"):
        StreamLimits(max_connections=0)


# === Speech recognition ===


@needs_stt
@needs_espeak
def test_vosk_streams_partial_and_final_text_and_the_model_reads_the_final_words(setup):
    from fastapi.testclient import TestClient

    # Two utterances, each followed by 3.5 s of silence: Kaldi's endpoint rules make an utterance
    # final at most 2 s into the pause after it (a 2 s pause was a coin toss), so the windows that
    # end after that read its words.
    speech = np.concatenate([np.zeros(RATE // 2), speak("지금 너무 화가 나요", trim=True), np.zeros(7 * RATE // 2)])
    speech = np.concatenate([speech, speech])
    pcm = np.round(np.clip(speech, -1, 1) * 32767).astype("<i2")
    app = create_app(setup["base"], speech_recognition=True)
    with TestClient(app) as client:
        ready, windows, end = session_messages(client, frames_of(pcm, [1_600]))
    assert ready["stt"] is True
    heard = " ".join(w["final"] for w in windows if w["final"]) + " " + (end["final"] or "")
    assert heard.strip(), "Vosk made no text final"
    read = [w for w in windows if w["transcript"]]
    assert read and all(w["transcript_source"] == "stt" and w["valence"] is not None for w in read)
    assert all(w["partial"] is not None for w in windows)
    table = list(csv.DictReader(io.StringIO(end["csv"])))
    assert any(row["transcript_source"] == "stt" for row in table)


# === Load ===


async def live_session(url: str, pcm: np.ndarray, frame_samples: int) -> list[dict]:
    """One live session over a real socket: every frame sent, then stop; the windows received."""
    from websockets.asyncio.client import connect

    async with connect(url.replace("http", "ws") + "/api/stream", max_size=2**22) as socket:
        assert json.loads(await socket.recv())["type"] == "ready"
        for frame in frames_of(pcm, [frame_samples]):
            await socket.send(frame)
            await asyncio.sleep(0)
        await socket.send(STOP)
        messages = [json.loads(message) async for message in socket]
    assert messages[-1]["type"] == "end"
    return messages[:-1]


async def concurrent_sessions(url: str, count: int, pcm: np.ndarray) -> list[list[dict]]:
    return await asyncio.gather(*(live_session(url, pcm, 1_600 + 37 * k) for k in range(count)))


def test_twenty_concurrent_sessions_on_loopback_all_get_their_windows_and_memory_stays_bounded(setup):
    pcm = pcm16(5.0)
    with LoopbackServer(setup["app"]) as server:
        asyncio.run(concurrent_sessions(server.url, CONCURRENT, pcm))  # first round: threads, arenas, Vosk-free
        before = rss_bytes(os.getpid())  # the server runs in a thread of this process
        for _ in range(2):
            results = asyncio.run(concurrent_sessions(server.url, CONCURRENT, pcm))
            assert [len(windows) for windows in results] == [5] * CONCURRENT
            first = [w["probabilities"] for w in results[0]]
            assert all([w["probabilities"] for w in windows] == first for windows in results)  # same audio, same answers
        after = rss_bytes(os.getpid())
    assert setup["app"].state.streams.active == 0
    assert after - before < RSS_GROWTH_LIMIT, f"RSS grew {(after - before) / 2**20:.0f} MB over 40 sessions"
