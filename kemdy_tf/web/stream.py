"""Live emotion from the microphone: the WebSocket behind `/api/stream` (kemdy_tf.web.app wires it).

Protocol (one WebSocket per live session; `?session=<id>` optional, the page's tab id):
    server -> {"type": "ready", sample_rate, window_seconds, hop_seconds, classes, stt, limits}
    client -> binary frames: 16 kHz mono PCM, 16-bit little-endian samples, any length
    server -> {"type": "window", index, start, end, emotion, probabilities, arousal, valence,
               transcript, transcript_source, statistics, warnings, partial, final}
              every `hop_seconds` of audio received, over the last `window_seconds`
    client -> text {"type": "stop"}
    server -> {"type": "end", windows, seconds, final, csv}, then closes (1000)

Decisions:
* the windows are the offline timeline's (`timeline.sliding_spans`: one ends at every
  whole hop, over the window before it) and each is predicted as `inference.predict_timeline`
  predicts a span, so a session equals `predict_timeline(..., spans=sliding_spans(...))` over
  the same audio however the frames cut it. Audio after the last whole hop is in no window.
* memory per connection is bounded: a ring buffer of one window of samples, the timed
  final words of the last window, and the session's rows (not its audio; at most
  `max_session_seconds / hop` of them, for the CSV the "end" message carries).
* the model is the app's (shared with /api/predict); the synchronous work of a frame (Vosk,
  TensorFlow) runs on a small thread pool, one frame of a connection at a time, so the event
  loop keeps serving every other socket.
* speech recognition streams natively: each connection has its own Vosk `KaldiRecognizer`
  fed every frame; a window's message carries Vosk's current partial hypothesis and the
  text finalised since the previous message, and the model reads the final words that
  overlap the window (the words of an utterance are final once Vosk hears its pause).
* per-session speaker statistics (an export that reads them): the session's store of
  /api/predict (`SessionClips`, the same tab id) gets one clip per `window_seconds` of
  audio (windows that do not overlap) and the statistics are re-enrolled only then.
* limits close the socket with a code and a reason that says why (`CLOSE_*`): a connection
  beyond `max_connections`, a session longer than `max_session_seconds` of audio (after
  its "end" message), no frame for `idle_seconds`, a frame that is not whole 16-bit samples,
  larger than `max_frame_bytes`, or text other than the stop message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
from collections import deque

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from kemdy_tf import inference, timeline

SAMPLE_RATE = 16000  # what the client sends: the models' and Vosk's rate
SAMPLE_BYTES = 2  # 16-bit little-endian PCM
# Close codes (RFC 6455): why a socket was closed; the reason (at most 123 bytes) says more.
CLOSE_DONE = 1000  # the client stopped
CLOSE_UNSUPPORTED = 1003  # a text frame other than {"type": "stop"}
CLOSE_MALFORMED = 1007  # a binary frame that is not whole 16-bit samples
CLOSE_POLICY = 1008  # a limit: the session's length, idle, a bad session id
CLOSE_TOO_BIG = 1009  # a frame over max_frame_bytes
CLOSE_BUSY = 1013  # "try again later": max_connections live sessions already
# Who per-session statistics are of, in `statistics` ("this session (3 clips)") and warnings;
# /api/predict's label too (kemdy_tf.web.app).
SESSION_LABEL = "this session"


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    """What live sessions may do (serve.py's --live-* options).

    Attributes:
        max_connections: live sessions at once; one more is closed with 1013 at once.
        max_session_seconds: audio one session may send (10 minutes: 600 rows for its CSV).
        idle_seconds: a session that sends no frame for this long is closed.
        max_frame_bytes: largest binary frame (10 s of audio; the page sends 0.1 s).
        window_seconds: audio each window hears (the timeline's `WINDOW_SECONDS`).
        hop_seconds: audio between two windows (the timeline's `HOP_SECONDS`).
        workers: threads that run the frames' recognition and prediction.
    """

    max_connections: int = 20
    max_session_seconds: float = 600.0
    idle_seconds: float = 10.0
    max_frame_bytes: int = 10 * SAMPLE_RATE * SAMPLE_BYTES
    window_seconds: float = timeline.WINDOW_SECONDS
    hop_seconds: float = timeline.HOP_SECONDS
    workers: int = 2

    def __post_init__(self):
        for name in ("max_connections", "max_session_seconds", "idle_seconds", "max_frame_bytes",
                     "window_seconds", "hop_seconds", "workers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"StreamLimits.{name} must be positive, got {getattr(self, name)}")
        if not (self.hop_seconds * SAMPLE_RATE).is_integer() or not (self.window_seconds * SAMPLE_RATE).is_integer():
            raise ValueError("StreamLimits.window_seconds and hop_seconds must be whole numbers of 16 kHz samples")
        if self.hop_seconds > self.window_seconds:
            raise ValueError(f"StreamLimits.hop_seconds ({self.hop_seconds:g}) must not exceed window_seconds "
                             f"({self.window_seconds:g}): audio between windows would be heard by none")


class SessionEnded(Exception):
    """The socket must close: `code` and a `reason` of at most 123 bytes (RFC 6455)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class RingBuffer:
    """The latest `capacity` samples of a stream, in a fixed array (no growth, no copies on append)."""

    def __init__(self, capacity: int):
        self.samples = np.zeros(capacity, np.float32)
        self.total = 0  # samples ever appended

    def extend(self, new: np.ndarray) -> None:
        capacity, count = len(self.samples), len(new)
        new = new[-capacity:]  # older samples would be overwritten at once
        at = (self.total + count - len(new)) % capacity
        first = min(len(new), capacity - at)
        self.samples[at : at + first] = new[:first]
        self.samples[: len(new) - first] = new[first:]
        self.total += count

    def latest(self, count: int) -> np.ndarray:
        """The last `count` samples (at most the capacity and what was appended), oldest first."""
        count = min(count, len(self.samples), self.total)
        end = self.total % len(self.samples)
        if count <= end:
            return self.samples[end - count : end].copy()
        return np.concatenate([self.samples[len(self.samples) - (count - end) :], self.samples[:end]])


class LiveTranscriber:
    """Vosk's streaming recogniser for one session: partial text, final text and timed final words.

    Args:
        recognizer: the app's `kemdy_tf.stt.Recognizer` (its Vosk model is shared).
    """

    def __init__(self, recognizer):
        import vosk

        # The shared Vosk model, with this session's own recogniser (transcribe's suits whole clips).
        self._vosk = vosk.KaldiRecognizer(recognizer.model(), SAMPLE_RATE)
        self._vosk.SetWords(True)
        self.words: deque = deque()  # final stt.Word's not yet behind every future window
        self.partial = ""
        self._final: list[str] = []  # final text since `take_final`

    def accept(self, pcm: bytes) -> None:
        from kemdy_tf.stt import NOT_A_WORD

        if self._vosk.AcceptWaveform(pcm):
            self._finalised(self._vosk.Result())
        else:
            partial = json.loads(self._vosk.PartialResult()).get("partial", "")
            self.partial = " ".join(w for w in partial.split() if not NOT_A_WORD.match(w))

    def finish(self) -> None:
        """The last utterance made final (the client stopped)."""
        self._finalised(self._vosk.FinalResult())

    def _finalised(self, result_json: str) -> None:
        from kemdy_tf.stt import words_of

        words = words_of(result_json)
        self.words.extend(words)
        if words:
            self._final.append(" ".join(w.word for w in words))
        self.partial = ""

    def take_final(self) -> str:
        """The text made final since the previous call."""
        text, self._final = " ".join(self._final), []
        return text

    def text_within(self, span: timeline.Span) -> str | None:
        """The final words that overlap `span`, joined (None: none); forgets those before it."""
        while self.words and self.words[0].end <= span.start:
            self.words.popleft()  # windows only move forward
        inside = [w.word for w in self.words if w.start < span.end and w.end > span.start]
        return " ".join(inside) or None


class LiveSession:
    """One connection's audio and answers; its methods run on a worker thread, one at a time.

    Args:
        model: the app's `inference.ExportedModel`.
        limits: the `StreamLimits`.
        recognizer: a `kemdy_tf.stt.Recognizer`, or None (audio-only windows).
        sessions: the app's `SessionClips` store, or None.
        session: the browser tab's id (per-session speaker statistics), or None.
    """

    def __init__(self, model, limits: StreamLimits, recognizer=None, sessions=None, session: str | None = None):
        self.model, self.limits = model, limits
        self.window_samples = round(limits.window_seconds * SAMPLE_RATE)
        self.hop_samples = round(limits.hop_seconds * SAMPLE_RATE)
        self.max_samples = int(limits.max_session_seconds * SAMPLE_RATE)
        self.ring = RingBuffer(self.window_samples)
        self.rows: list[inference.Prediction] = []  # at most max_session_seconds / hop
        self.transcriber = LiveTranscriber(recognizer) if recognizer is not None else None
        self.sessions, self.session = sessions, session
        self.statistics, self.statistics_label, self.statistics_warnings = None, None, []
        if self._reads_statistics:
            self._enrol(sessions.clips(session))  # the tab's /api/predict clips count too

    @property
    def received(self) -> int:
        return self.ring.total

    @property
    def full(self) -> bool:
        return self.received >= self.max_samples

    @property
    def _reads_statistics(self) -> bool:
        return self.model.reads_speaker_statistics and self.sessions is not None and self.session is not None

    def check_frame(self, data: bytes) -> None:
        """Raise `SessionEnded` for a frame that is not whole samples or is too large."""
        if len(data) > self.limits.max_frame_bytes:
            raise SessionEnded(CLOSE_TOO_BIG, f"frame of {len(data)} bytes; at most {self.limits.max_frame_bytes} "
                               "(send audio in smaller pieces)")
        if len(data) % SAMPLE_BYTES:
            raise SessionEnded(CLOSE_MALFORMED, f"frame of {len(data)} bytes: not whole 16-bit samples (send "
                               "16 kHz mono 16-bit little-endian PCM)")

    def feed(self, data: bytes) -> list[dict]:
        """Take a frame (checked by `check_frame`; beyond the session's length it is cut) and
        answer the windows whose hop it completes."""
        pcm = np.frombuffer(data, "<i2")[: self.max_samples - self.received]
        messages = []
        at = 0
        while at < len(pcm):  # piece by piece, each ending at the next hop boundary or the frame's end
            piece = pcm[at : at + self.hop_samples - self.received % self.hop_samples]
            at += len(piece)
            self.ring.extend(piece.astype(np.float32) / 32768.0)  # as soundfile reads 16-bit PCM
            if self.transcriber is not None:
                self.transcriber.accept(piece.tobytes())
            if self.received % self.hop_samples == 0:
                messages.append(self._window())
        return messages

    def _window(self) -> dict:
        """The window ending now, predicted as `inference.predict_timeline` predicts a span."""
        model, end = self.model, self.received
        if self._reads_statistics and end % self.window_samples == 0:
            clip = self.ring.latest(self.window_samples)[: model.window_samples]
            self._enrol(self.sessions.add(self.session, clip))
        wave = self.ring.latest(self.window_samples)[: model.window_samples]
        span = timeline.Span(round((end - len(wave)) / SAMPLE_RATE, 6), round(end / SAMPLE_RATE, 6))
        result = inference.segment_prediction("live", span, wave, model, self.statistics_label)
        result.warnings += self.statistics_warnings
        partial = final = None
        if self.transcriber is not None:
            inference.set_transcript(result, self.transcriber.text_within(span))
            result.transcript_source = "stt" if result.transcript is not None else None
            partial, final = self.transcriber.partial, self.transcriber.take_final()
        inference.predict_ready([(result, wave)], model, 1, self.statistics)
        self.rows.append(result)
        return {"type": "window", "index": len(self.rows) - 1, **_row(result), "partial": partial, "final": final}

    def _enrol(self, clips: list) -> None:
        """The session's statistics from its clips (`inference.enrol_speaker`'s label and warnings)."""
        probe = inference.Prediction(file="live")
        self.statistics = inference.enrol_speaker(self.model, clips, SESSION_LABEL, [(probe, None)]) if clips \
            else None
        self.statistics_label = probe.statistics or "training set"
        self.statistics_warnings = probe.warnings

    def finish(self) -> dict:
        """The session's end: Vosk's last final text and the whole timeline as CSV."""
        final = None
        if self.transcriber is not None:
            self.transcriber.finish()
            final = self.transcriber.take_final()
        return {"type": "end", "windows": len(self.rows), "seconds": round(self.received / SAMPLE_RATE, 3),
                "final": final, "csv": timeline.csv_text(self.rows, self.model.classes)}


def _row(result: inference.Prediction) -> dict:
    fields = ("start", "end", "emotion", "probabilities", "arousal", "valence", "transcript", "transcript_source",
              "statistics", "warnings")
    return {name: getattr(result, name) for name in fields}


class LiveStreams:
    """The live sessions of one app: admits connections, runs each one's loop, enforces the limits.

    Args:
        model: the app's `inference.ExportedModel` (shared with /api/predict).
        limits: the `StreamLimits`.
        recognizer: a `kemdy_tf.stt.Recognizer`, or None (no transcripts).
        sessions: the app's `SessionClips` store (per-session speaker statistics), or None.
    """

    def __init__(self, model, limits: StreamLimits, recognizer=None, sessions=None):
        self.model, self.limits, self.recognizer, self.sessions = model, limits, recognizer, sessions
        self.active = 0  # used on the event loop only
        self.workers = concurrent.futures.ThreadPoolExecutor(limits.workers, thread_name_prefix="kemdy-live")

    def describe(self) -> dict:
        """What the "ready" message and /api/health say about live sessions."""
        return {"sample_rate": SAMPLE_RATE, "window_seconds": self.limits.window_seconds,
                "hop_seconds": self.limits.hop_seconds, "classes": list(self.model.classes),
                "stt": self.recognizer is not None,
                "limits": {name: float(getattr(self.limits, name)) for name in
                           ("max_connections", "max_session_seconds", "idle_seconds", "max_frame_bytes")}}

    async def serve(self, websocket: WebSocket, session: str | None) -> None:
        """Run one live session on an accepted `websocket` until it stops, breaks a limit or goes."""
        if self.active >= self.limits.max_connections:
            await websocket.close(CLOSE_BUSY, f"busy: {self.active} live sessions already (the maximum); "
                                  "try again later")
            return
        self.active += 1
        try:
            await self._run(websocket, session)
        except SessionEnded as ended:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # unless the client went meanwhile
                await websocket.close(ended.code, ended.reason)
        except WebSocketDisconnect:
            pass  # the client went: nothing to answer
        finally:
            self.active -= 1

    async def _run(self, websocket: WebSocket, session: str | None) -> None:
        loop = asyncio.get_running_loop()

        def work(function, *args):
            return loop.run_in_executor(self.workers, function, *args)

        live = await work(LiveSession, self.model, self.limits, self.recognizer, self.sessions, session)
        await websocket.send_json({"type": "ready", **self.describe()})
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), self.limits.idle_seconds)
            except asyncio.TimeoutError:
                raise SessionEnded(CLOSE_POLICY, f"idle: no audio for {self.limits.idle_seconds:g} s") from None
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                live.check_frame(message["bytes"])
                for answer in await work(live.feed, message["bytes"]):
                    await websocket.send_json(answer)
                if live.full:
                    await websocket.send_json(await work(live.finish))
                    raise SessionEnded(CLOSE_POLICY, f"session limit: {self.limits.max_session_seconds:g} s of "
                                       "audio (start a new one)")
            elif _is_stop(message.get("text")):
                await websocket.send_json(await work(live.finish))
                raise SessionEnded(CLOSE_DONE, "stopped")
            else:
                raise SessionEnded(CLOSE_UNSUPPORTED, 'text frames: only {"type": "stop"}; audio goes in binary '
                                   "frames")


def _is_stop(text: str | None) -> bool:
    try:
        return json.loads(text or "") == {"type": "stop"}
    except ValueError:
        return False
