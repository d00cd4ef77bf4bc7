"""The FastAPI application behind `python serve.py`: one page and a small JSON API.

Routes:
    GET  /               the page (static/index.html; its script, style and recorder
                         worklet under /static, nothing from a CDN)
    POST /api/predict    multipart `audio` (a file) + optional `text` -> the fields of
                         `predict.py --json`, plus `duration_seconds`, `spectrogram` and,
                         for audio longer than the model's window, `segments` (the timeline)
                         (optional `session`: the browser session's id, see below)
    POST /api/transcribe multipart `audio` -> `transcript` and timed `words` (speech
                         recognition, kemdy_tf.stt; 503 `stt_unavailable` when not installed)
    POST /api/session/reset  form or JSON `session` -> how many of its clips were dropped
    WS   /api/stream     live emotion from the microphone (optional `?session=`): 16 kHz 16-bit
                         PCM frames in, a JSON window every hop out (kemdy_tf.web.stream)
    GET  /api/health     model and limits, for the page and for monitoring
    GET  /openapi.json   the schema FastAPI generates (/docs and /redoc are off: their
                         Swagger/ReDoc assets come from a CDN)

Every rejected request gets a JSON body `{"error": <code>, "detail": <sentence>}`
with a 4xx status; the codes are listed in `ERROR_CODES`.

Design notes:
* The model is loaded once, by `create_app`, and shared by every request. A bad
  `--model` therefore fails at start-up, not on the first request.
* `/api/predict` admits a request (or answers 503 `busy` with Retry-After, see
  `Admission`) on the event loop, then runs the work on a pool of exactly
  `Limits.max_concurrent` threads, so the loop stays free and at most that many clips
  are decoded and predicted at once; at most `Limits.max_queue` more wait. The
  SavedModel signature is thread-safe: the bound is for memory, not correctness. A
  dedicated pool (not Starlette's 40 threads) also keeps the number of threads that
  ever hold a decoded clip, and so of malloc arenas, at max_concurrent: RSS settles
  after the first round of long clips (bench/web_memory.py).
* The upload is decoded once (`inference.load_clip`: librosa, 16 kHz mono), and the
  decoded wave is both the spectrogram's source and what `inference.predict_wave`
  predicts.
* The `text` field must be UTF-8: its bytes are checked before anything decodes them
  (Starlette would silently fall back to Latin-1 and predict on mojibake).
* Long uploads (up to `Limits.max_seconds`, 5 minutes by default): the top-level
  fields describe the first window, as before, and `segments` holds the timeline
  (`inference.predict_timeline` on the decoded upload: cut at pauses, every segment
  predicted). Segments are transcribed by speech recognition when the server has it
  and no text was sent (one text cannot be shared out among segments). A clip that
  fits the window is never transcribed behind the user's back: the page's
  "transcribe" button (/api/transcribe) fills the text box, which the user can correct.
* Per-session speaker statistics: for an export that standardises the voice per
  speaker (kemdy_tf.speaker_statistics), a request with a `session` id (the page makes
  one per browser tab) is standardised with statistics enrolled, by the export's own
  `enrol`, from that session's clips so far, this one included (`SessionClips`: the
  most recent `inference.MAX_ENROL_CLIPS` clips of at most `Limits.max_sessions`
  sessions, least recently used dropped first); below 2 clips the export's fallback
  (the training set's statistics), as `predict.py --manifest` labels and warns. The
  response's `statistics` says which were used. /api/session/reset forgets a session.
* Live sessions (/api/stream, `stream.LiveStreams`) share the model, the speech recogniser
  and the `SessionClips` store, on their own small thread pool, so a long upload on the
  predict pool does not hold up a live window; their limits are `stream.StreamLimits`.
* Size is capped twice: the whole body before it is parsed (the file cap plus room
  for the form: a declared Content-Length is checked first, a streamed body is
  stopped by FastAPI's per-route `max_body_size`), then the file itself.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from kemdy_tf import inference
from kemdy_tf.data.audio import sniff_format as sniff_audio
from kemdy_tf.web.stream import CLOSE_POLICY, SESSION_LABEL, LiveStreams, StreamLimits

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Declared upload types that are accepted; the bytes must still look like audio.
ALLOWED_CONTENT_TYPES = frozenset({
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/x-pn-wav",
    "audio/flac", "audio/x-flac", "audio/ogg", "application/ogg", "audio/mpeg", "audio/mp3",
    "application/octet-stream",
})
# Multipart boundaries, headers and the text field on top of the audio file.
FORM_OVERHEAD_BYTES = 64 * 1024
# A clip's spectrogram shows this many dB below its loudest bin (log_mel's top_db).
SPECTROGRAM_RANGE_DB = 80.0
# A browser session's id (the `session` form field): what crypto.randomUUID or 32 hex digits look like.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What the page may load: its own files, and data:/blob: URLs it makes itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
ERROR_CODES = {
    "empty_file": "400: the audio file has no bytes",
    "text_not_utf8": "400: the text field's bytes are not UTF-8 (e.g. cp949 from a KEMDy20 .txt file)",
    "file_too_large": "413: the request or the audio file is larger than max_bytes",
    "audio_too_long": "413: the audio lasts longer than max_seconds",
    "unsupported_type": "415: the declared content type is not an accepted audio type",
    "not_audio": "422: the bytes are not audio the server can decode",
    "text_too_long": "422: the transcript has more than max_text_chars characters",
    "stt_unavailable": "503: speech recognition is not installed on the server (pip install -r requirements-stt.txt)",
    "invalid_request": "422: a form field is missing or malformed (e.g. a session id that is not 1-64 "
                       "characters of A-Z a-z 0-9 _ -)",
    "bad_request": "400: the body could not be parsed (other 4xx: the HTTP status, e.g. not_found)",
    "busy": "503: more than max_queue requests are already waiting; retry after the Retry-After seconds",
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may send.

    Attributes:
        max_bytes: largest audio file, in bytes (32 MB: five minutes of a browser's 48 kHz
            16-bit mono recording is 28.8 MB).
        max_seconds: longest audio, in seconds (after decoding); 5 minutes, so that an
            upload's timeline and speech recognition (real-time factor ~1 on 2 cores)
            answer within minutes. Longer recordings: `predict.py --wav long.wav`.
        max_text_chars: longest transcript, in characters (Unicode code points).
        max_concurrent: clips decoded and predicted at the same time; further
            requests wait their turn (bounds memory under load).
        max_queue: requests that may wait for a turn; one more is answered 503
            `busy` with a Retry-After header at once instead of queueing (16 waiting
            behind 2 running clips of a few seconds is a wait of seconds, not of a
            quarter of a minute).
        max_sessions: browser sessions whose clips are kept for per-session speaker
            statistics (an export that reads them); one more drops the least recently
            used. Each keeps its most recent `inference.MAX_ENROL_CLIPS` (32) clips, cut
            to the model's window: at most 32 x 16.4 s x 4 bytes = 34 MB a session (a
            page's 3 s recordings: 6 MB), so 16 sessions hold at most ~540 MB.
    """

    max_bytes: int = 32 * 1024 * 1024
    max_seconds: float = 300.0
    max_text_chars: int = 500
    max_concurrent: int = 2
    max_queue: int = 16
    max_sessions: int = 16

    def __post_init__(self):
        if not self.max_queue >= 0:
            raise ValueError(f"Limits.max_queue must be 0 or more, got {self.max_queue}")
        for name in ("max_bytes", "max_seconds", "max_text_chars", "max_concurrent", "max_sessions"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")


class WebError(Exception):
    """A request the API refuses: HTTP status, machine-readable code, one sentence for people."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


# === Response schemas (they make /openapi.json describe the API) ===


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable code: " + "; ".join(f"{k} ({v})" for k, v in ERROR_CODES.items()))
    detail: str = Field(description="what is wrong, in one sentence")


class Spectrogram(BaseModel):
    png: str = Field(description="data:image/png;base64 URL; x = time (left to right), y = mel bin (low at the bottom)")
    frames: int
    n_mels: int
    seconds: float = Field(description="time the image spans: the part of the clip the model hears")
    max_hz: float = Field(description="top of the mel scale (half the sample rate)")
    db_min: float
    db_max: float


class Segment(BaseModel):
    start: float = Field(description="seconds from the upload's start")
    end: float
    emotion: str | None
    probabilities: dict[str, float]
    arousal: float | None
    valence: float | None = Field(description="null without a transcript")
    transcript: str | None
    transcript_source: str | None = Field(description='"stt" (speech recognition) or null (audio-only)')
    statistics: str | None = None
    warnings: list[str]


class PredictResponse(BaseModel):
    file: str = Field(description="the uploaded file's name")
    emotion: str | None
    probabilities: dict[str, float] = Field(description="{class: probability}, in the model's class order")
    arousal: float | None = Field(description="1 (relaxed) .. 5 (aroused)")
    valence: float | None = Field(description="1 (negative) .. 5 (positive); null without a transcript")
    transcript: str | None = Field(description="the cleaned transcript used; null when missing")
    transcript_source: str | None = Field(description='"given" or null (audio-only)')
    transcript_missing: bool
    statistics: str | None = Field(
        default=None, description='the speaker statistics the voice was standardised with: "training set" (the '
                                  'fallback), "this session (N clips)" (a request with a `session`), or "recording '
                                  '(N segments)" for a timeline\'s segments; null for a model that reads none')
    warnings: list[str]
    error: str | None
    duration_seconds: float
    spectrogram: Spectrogram
    segments: list[Segment] | None = Field(
        description="the timeline (audio longer than the model's window, cut at pauses); null for a clip "
                    "that fits the window")


class Word(BaseModel):
    word: str
    start: float = Field(description="seconds from the upload's start")
    end: float
    confidence: float


class TranscribeResponse(BaseModel):
    file: str
    transcript: str = Field(description="the words heard, joined by spaces (\"\" when none)")
    words: list[Word]
    duration_seconds: float


class SessionResetResponse(BaseModel):
    session: str
    dropped: int = Field(description="the session's clips forgotten (0: none were kept)")


class HealthResponse(BaseModel):
    status: str
    model: str = Field(description="export base folder name / version")
    classes: list[str]
    sample_rate: int
    window_seconds: float = Field(description="audio the model hears at once; longer uploads get a timeline")
    limits: dict[str, float]
    stt: bool = Field(description="whether /api/transcribe works (speech recognition is installed)")
    stt_detail: str | None = Field(description="why speech recognition is not available; null when it is")
    speaker_statistics: bool = Field(description="whether the model standardises the voice per speaker, so that "
                                                 "a `session` gets its own statistics (/api/session/reset)")
    live: dict = Field(description="the live stream (/api/stream): sample_rate, window_seconds, hop_seconds, "
                                   "classes, stt and its limits")


# === The work behind /api/predict ===


class SessionClips:
    """The most recent decoded clips of each browser session, for its speaker statistics.

    Bounded twice: at most `max_clips` clips a session (the oldest dropped first) and at
    most `max_sessions` sessions (the least recently used dropped first). The predictor's
    worker threads share it, so every access holds a lock.

    Args:
        max_sessions: sessions kept.
        max_clips: clips kept per session (`inference.MAX_ENROL_CLIPS`: what `enrol` reads).
    """

    def __init__(self, max_sessions: int, max_clips: int = inference.MAX_ENROL_CLIPS):
        self.max_sessions, self.max_clips = max_sessions, max_clips
        self._lock = threading.Lock()
        self._clips: OrderedDict[str, deque] = OrderedDict()  # least recently used first

    def add(self, session: str, wave: np.ndarray) -> list[np.ndarray]:
        """Keep `wave` as `session`'s newest clip; the session's clips, oldest first, this one last."""
        with self._lock:
            clips = self._clips.pop(session, None) or deque(maxlen=self.max_clips)
            clips.append(wave)
            self._clips[session] = clips
            while len(self._clips) > self.max_sessions:
                self._clips.popitem(last=False)
            return list(clips)

    def reset(self, session: str) -> int:
        """Forget `session`'s clips; how many there were."""
        with self._lock:
            return len(self._clips.pop(session, ()))

    def clips(self, session: str) -> list[np.ndarray]:
        """`session`'s clips, oldest first ([] when none are kept)."""
        with self._lock:
            return list(self._clips.get(session, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._clips)


def check_session(session: str | None) -> str | None:
    """A `session` field as given (None or "": none); a 422 WebError when it is not a session id."""
    if session is None or session == "":
        return None
    if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
        shown = repr(session[:70] + ("…" if len(session) > 70 else "")) if isinstance(session, str) else \
            type(session).__name__
        raise WebError(422, "invalid_request", f"session: {shown} is not a session id; send 1-64 characters "
                       "of A-Z, a-z, 0-9, _ and - (e.g. a UUID, made once per browser tab)")
    return session


class Predictor:
    """Checks an upload against the limits and predicts it with the shared model.

    Args:
        model: an `inference.ExportedModel` (from `inference.load_model`).
        limits: the request limits.
        stt: a `kemdy_tf.stt.Recognizer` (transcribe, long uploads' segments), or None.
    """

    def __init__(self, model: inference.ExportedModel, limits: Limits, stt=None):
        self.model, self.limits, self.stt = model, limits, stt
        self._slots = threading.BoundedSemaphore(limits.max_concurrent)
        self.sessions = SessionClips(limits.max_sessions)

    def __call__(self, filename: str, content_type: str | None, fileobj, text: str | None,
                 session: str | None = None) -> dict:
        """The prediction for one upload, as the JSON object /api/predict returns.

        With a `session` id (checked by `check_session`) and an export that reads speaker
        statistics, the clip joins the session's clips and is standardised with their
        statistics (`predict_in_session`).

        Raises:
            WebError: the upload breaks a limit or is not audio.
        """
        from kemdy_tf.timeline import DecodedAudio

        limits = self.limits
        if text is not None and len(text) > limits.max_text_chars:
            raise WebError(422, "text_too_long", f"the transcript has {len(text)} characters; "
                           f"at most {limits.max_text_chars} are accepted")
        with self._decoded(filename, content_type, fileobj) as (wave, warnings):
            try:
                if session is not None and self.model.reads_speaker_statistics:
                    prediction = self.predict_in_session(wave, text, filename, warnings, session)
                else:
                    prediction = inference.predict_wave(wave, text, self.model, filename, warnings)
                segments = None
                if len(wave) > self.model.window_samples:
                    given = text is not None and text.strip()
                    rows = inference.predict_timeline(filename, self.model, stt=None if given else self.stt,
                                                      audio=DecodedAudio(wave, self.model.sample_rate, filename))
                    segments = [_segment(row) for row in rows]
            except inference.PredictError as error:
                raise WebError(422, "invalid_request", f"{filename}: {error}") from None
            spectrogram = self.spectrogram(wave)
        result = prediction.to_dict()
        result.update(file=filename, duration_seconds=round(len(wave) / self.model.sample_rate, 3),
                      spectrogram=spectrogram, segments=segments)
        return result

    def predict_in_session(self, wave: np.ndarray, text, filename: str, warnings, session: str):
        """`inference.predict_wave`, standardised with the statistics the export enrols from
        `session`'s clips so far, this one included (its first window, as `enrol` reads it):
        labelled "this session (N clips)", or the fallback's "training set" below 2 clips, and
        warned about below `speaker_statistics.MIN_CLIPS`, as `inference.predict_files` does
        for a named speaker."""
        model = self.model
        clips = self.sessions.add(session, np.array(wave[: model.window_samples], np.float32))  # a copy
        return inference.predict_wave(wave, text, model, filename, warnings, speaker_clips=clips,
                                      speaker=SESSION_LABEL)

    def transcribe(self, filename: str, content_type: str | None, fileobj) -> dict:
        """The transcript of one upload, as the JSON object /api/transcribe returns.

        Raises:
            WebError: speech recognition is not installed, or the upload breaks a limit or is not audio.
        """
        from kemdy_tf import stt

        if self.stt is None:
            raise WebError(503, "stt_unavailable", stt.unavailable_reason() or "speech recognition is off on this "
                           "server (create_app(..., speech_recognition=False))")
        with self._decoded(filename, content_type, fileobj) as (wave, _):
            try:
                heard = self.stt.transcribe(wave, self.model.sample_rate)
            except stt.SttUnavailable as error:
                raise WebError(503, "stt_unavailable", str(error)) from None
        return {"file": filename, **heard.to_dict(), "transcript": heard.text,
                "duration_seconds": round(len(wave) / self.model.sample_rate, 3)}

    @contextlib.contextmanager
    def _decoded(self, filename: str, content_type: str | None, fileobj):
        """(wave, warnings) of a checked upload, inside one of the `max_concurrent` slots.

        Raises:
            WebError: the upload breaks a limit or is not audio.
        """
        limits = self.limits
        declared = (content_type or "application/octet-stream").split(";")[0].strip().lower()
        if declared not in ALLOWED_CONTENT_TYPES:
            raise WebError(415, "unsupported_type", f"{filename}: content type {declared!r} is not accepted; "
                           f"send WAV, FLAC, Ogg or MP3 ({', '.join(sorted(ALLOWED_CONTENT_TYPES))})")
        fileobj.seek(0, os.SEEK_END)
        size = fileobj.tell()
        fileobj.seek(0)
        if size == 0:
            raise WebError(400, "empty_file", f"{filename} is empty (0 bytes)")
        if size > limits.max_bytes:
            raise WebError(413, "file_too_large", f"{filename} has {_bytes(size)}; "
                           f"at most {_bytes(limits.max_bytes)} are accepted")
        kind = sniff_audio(fileobj.read(16))
        fileobj.seek(0)
        if kind is None:
            raise WebError(422, "not_audio", f"{filename} is not audio the server reads: its first bytes "
                           "are not a WAV (RIFF), FLAC (fLaC), Ogg (OggS) or MP3 header")

        with tempfile.TemporaryDirectory(prefix="kemdy_web_") as folder:
            upload = Path(folder) / f"upload.{kind}"
            with open(upload, "wb") as out:
                shutil.copyfileobj(fileobj, out)
            self._check_declared_duration(upload, filename)
            with self._slots:
                yield self._decode(upload, filename)

    def _check_declared_duration(self, path: Path, filename: str) -> None:
        """Refuse a clip whose header announces too long a duration, before decoding it."""
        import soundfile

        try:
            seconds = soundfile.info(str(path)).duration
        except Exception:  # unreadable header: decoding says what is wrong
            return
        self._check_duration(seconds, filename)

    def _check_duration(self, seconds: float, filename: str) -> None:
        if seconds > self.limits.max_seconds:
            raise WebError(413, "audio_too_long", f"{filename} lasts {seconds:.1f} s; at most "
                           f"{self.limits.max_seconds:g} s are accepted")

    def _decode(self, path: Path, filename: str) -> tuple[np.ndarray, list[str]]:
        """The upload decoded once, and `inference.load_clip`'s warnings about it."""
        from kemdy_tf.data.audio import AudioError

        try:
            wave, warnings = inference.load_clip(path, self.model)
        except AudioError as error:
            reason = error.reason.replace(str(path), filename)  # never show the temporary path
            raise WebError(422, "not_audio", f"{filename} cannot be used as audio: {reason}") from None
        self._check_duration(len(wave) / self.model.sample_rate, filename)
        return wave, warnings

    def spectrogram(self, wave: np.ndarray) -> dict:
        """The log-mel the model hears (kemdy_tf.data.audio.log_mel), as a PNG data URL and its axes."""
        from matplotlib.image import imsave

        from kemdy_tf.data.audio import log_mel

        features = self.model.features
        mel = log_mel(wave, features)  # [frames, n_mels], at most max_frames
        top = float(mel.max())
        buffer = io.BytesIO()
        imsave(buffer, mel.T, cmap="magma", vmin=top - SPECTROGRAM_RANGE_DB, vmax=top, origin="lower", format="png")
        return {
            "png": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            "frames": int(mel.shape[0]), "n_mels": int(mel.shape[1]),
            "seconds": round(min(len(wave), self.model.window_samples) / features.sample_rate, 3),
            "max_hz": features.sample_rate / 2,
            "db_min": round(float(mel.min()), 2), "db_max": round(top, 2),
        }


def _segment(row: inference.Prediction) -> dict:
    """One timeline row as the API's `Segment`."""
    return {key: value for key, value in row.to_dict().items() if key in Segment.model_fields}


def _bytes(count: int) -> str:
    """A size in words people read: "10.5 MB (11,010,048 bytes)"."""
    return f"{count / 2**20:.1f} MB ({count:,} bytes)"


class Admission:
    """Counts requests running or waiting; refuses one beyond `max_concurrent + max_queue`.

    Used on the event loop only (one thread), so plain counters suffice.

    Args:
        limits: `max_concurrent` and `max_queue`.
    """

    def __init__(self, limits: Limits):
        self.capacity = limits.max_concurrent + limits.max_queue
        self.max_concurrent = limits.max_concurrent
        self.admitted = 0
        self.mean_seconds = 1.0  # running mean of one request's time, for Retry-After

    def enter(self) -> None:
        """Admit one request, or raise the 503 `busy` WebError with a Retry-After header."""
        if self.admitted >= self.capacity:
            waiting = self.admitted - self.max_concurrent
            retry = max(1, math.ceil((waiting + 1) / self.max_concurrent * self.mean_seconds))
            raise WebError(503, "busy", f"the server is busy: {self.max_concurrent} clip(s) running and "
                           f"{waiting} waiting (at most {self.capacity - self.max_concurrent}); retry in "
                           f"about {retry} s", headers={"Retry-After": str(retry)})
        self.admitted += 1

    def leave(self, seconds: float) -> None:
        self.admitted -= 1
        self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds


class StrictFormRequest(Request):
    """A request whose multipart text fields must be valid in their charset (UTF-8 by default).

    Starlette decodes a field it cannot decode as Latin-1, so cp949 bytes would reach
    the model as mojibake ("ÇÑ±Û"). Here such a field is replaced by "" and its name
    is listed in `scope["kemdy_undecodable"]` for the route to refuse.
    """

    async def _get_form(self, *, max_files=1000, max_fields=1000, max_part_size=1024 * 1024):
        if self._form is None and self.headers.get("content-type", "").startswith("multipart/form-data"):
            parser = _StrictMultiPartParser(self.headers, self.stream(), max_files=max_files,
                                            max_fields=max_fields, max_part_size=max_part_size)
            try:
                self._form = await parser.parse()
            finally:
                self.scope["kemdy_undecodable"] = parser.undecodable
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class _StrictMultiPartParser(MultiPartParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.undecodable: dict[str, UnicodeDecodeError] = {}

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset or "utf-8")
            except (UnicodeDecodeError, LookupError) as error:
                self.undecodable[part.field_name] = error
                part.data = bytearray()
        super().on_part_end()


class StrictFormRoute(APIRoute):
    """An APIRoute that parses forms with `StrictFormRequest`."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_handler(request: Request):
            return await handler(StrictFormRequest(request.scope, request.receive))

        return strict_handler


def _check_text_encoding(request: Request) -> None:
    undecodable = request.scope.get("kemdy_undecodable") or {}
    if "session" in undecodable:
        raise WebError(422, "invalid_request", "session: the field's bytes are not UTF-8, so it is not a session "
                       "id; send 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if "text" in undecodable:
        error = undecodable["text"]
        raise WebError(400, "text_not_utf8", f"the text field is not valid UTF-8 ({error.reason} at byte "
                       f"{error.start}: {bytes(error.object[error.start:error.start + 4])!r}); send the transcript "
                       "as UTF-8 (KEMDy20 .txt files are cp949: convert them first, e.g. iconv -f cp949 -t utf-8)")


class DeclaredSizeLimit:
    """Answers a POST whose declared Content-Length is over `max_body` with the JSON 413, unread.

    The route's `max_body_size` (Starlette's RequestBodyLimitMiddleware) also stops a
    body streamed without a length, through the app's exception handlers (JSON), but it
    answers an over-long declared length in plain text; this check comes first.
    """

    def __init__(self, app, max_body: int, make_error):
        self.app, self.max_body, self.make_error = app, max_body, make_error

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body:
                await _error_response(self.make_error())(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_response(error: WebError) -> JSONResponse:
    return JSONResponse({"error": error.code, "detail": error.detail}, status_code=error.status,
                        headers=error.headers)


# === The application ===


def create_app(model_path: str | os.PathLike = "saved_models/kemdy", limits: Limits | None = None,
               speech_recognition: bool | None = None, stream_limits: StreamLimits | None = None) -> FastAPI:
    """The web application, with the export at `model_path` loaded (once, now).

    Args:
        model_path: an export's base folder (its highest version) or one version folder.
        limits: request limits; default `Limits()` (32 MB, 300 s, 500 characters).
        speech_recognition: /api/transcribe and the transcripts of long uploads' segments
            (kemdy_tf.stt); None: on when installed. Its model loads on the first use.
        stream_limits: the live stream's limits; default `StreamLimits()` (20 sessions, 10 minutes).

    Returns:
        A FastAPI app; serve it with uvicorn (serve.py) or test it with TestClient.

    Raises:
        inference.PredictError: `model_path` is not a loadable kemdy_tf export.
    """
    from kemdy_tf import stt as stt_lib

    limits = limits or Limits()
    model = inference.load_model(model_path)
    stt_off = "speech recognition is off on this server" if speech_recognition is False else None
    stt_detail = stt_off or stt_lib.unavailable_reason()
    if speech_recognition and stt_detail:
        raise inference.PredictError(stt_detail)
    recognizer = None if stt_detail else stt_lib.recognizer()
    model.predict([np.zeros(model.sample_rate // 2, np.float32)], [""])  # warm-up: the first request is not slower
    predictor = Predictor(model, limits, recognizer)
    admission = Admission(limits)
    streams = LiveStreams(model, stream_limits or StreamLimits(), recognizer, predictor.sessions)
    workers = concurrent.futures.ThreadPoolExecutor(limits.max_concurrent, thread_name_prefix="kemdy-predict")

    app = FastAPI(
        title="kemdy_tf emotion recognition",
        description="Emotion, arousal and valence of a Korean speech clip and its (optional) transcript.",
        version="1",
        docs_url=None, redoc_url=None,  # both load their assets from a CDN; the schema stays at /openapi.json
    )
    app.state.model, app.state.limits, app.state.predictor = model, limits, predictor
    app.state.admission, app.state.streams = admission, streams
    # Refused before the form is parsed (Starlette's RequestBodyLimitMiddleware, per route):
    # a declared Content-Length over the cap at once, a streamed body once it runs past it.
    max_body = limits.max_bytes + 4 * limits.max_text_chars + FORM_OVERHEAD_BYTES

    def body_too_large() -> WebError:
        return WebError(413, "file_too_large", f"the request body is over the {_bytes(max_body)} cap; "
                        f"the audio file may have at most {_bytes(limits.max_bytes)}")

    app.add_middleware(DeclaredSizeLimit, max_body=max_body, make_error=body_too_large)

    @app.exception_handler(WebError)
    async def _web_error(request, error: WebError):
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        return _error_response(WebError(422, "invalid_request", problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, error: StarletteHTTPException):
        if error.status_code == 413 and request.url.path == "/api/session/reset":
            return _error_response(WebError(413, "file_too_large", f"the request body is over the "
                                            f"{_bytes(FORM_OVERHEAD_BYTES)} cap; send only the session field"))
        if error.status_code == 413:  # the route's max_body_size, hit before the form is parsed
            return _error_response(body_too_large())
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(error.detail)}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    error_responses = {status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503)}

    async def admitted(work):
        """`work()` on the worker pool, once admitted (or the 503 `busy`)."""
        admission.enter()
        start = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(workers, work)
        finally:
            admission.leave(time.monotonic() - start)

    strict = APIRouter(route_class=StrictFormRoute)  # the text field's bytes are checked (see StrictFormRequest)

    @strict.post("/api/predict", response_model=PredictResponse, responses=error_responses, max_body_size=max_body,
                 summary="Predict emotion, arousal and valence of one clip")
    async def predict_clip(
        request: Request,
        audio: UploadFile = File(description=f"WAV, FLAC, Ogg or MP3; at most {limits.max_bytes / 2**20:g} MB "
                                             f"and {limits.max_seconds:g} s"),
        text: str | None = Form(None, description=f"the transcript (UTF-8, at most {limits.max_text_chars} "
                                                  "characters); omit for the audio-only prediction"),
        session: str | None = Form(None, description="the browser session's id (1-64 characters of A-Z a-z 0-9 _ "
                                                     "-, made once per tab): for a model that reads speaker "
                                                     "statistics, the clip is standardised with those of this "
                                                     "session's clips so far; omit for the training set's"),
    ):
        _check_text_encoding(request)
        session = check_session(session)
        filename = os.path.basename(audio.filename or "") or "upload"
        return await admitted(functools.partial(predictor, filename, audio.content_type, audio.file, text, session))

    app.include_router(strict)

    @app.post("/api/transcribe", response_model=TranscribeResponse, responses=error_responses, max_body_size=max_body,
              summary="Transcribe one clip (speech recognition)")
    async def transcribe_clip(
        audio: UploadFile = File(description=f"WAV, FLAC, Ogg or MP3; at most {limits.max_bytes / 2**20:g} MB "
                                             f"and {limits.max_seconds:g} s"),
    ):
        filename = os.path.basename(audio.filename or "") or "upload"
        return await admitted(functools.partial(predictor.transcribe, filename, audio.content_type, audio.file))

    @app.post("/api/session/reset", response_model=SessionResetResponse, max_body_size=FORM_OVERHEAD_BYTES,
              responses={status: {"model": ErrorResponse} for status in (400, 413, 422)},
              summary="Forget a browser session's clips (its speaker statistics start again)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  media: {"schema": {"type": "object", "required": ["session"], "properties": {"session": {
                      "type": "string", "pattern": SESSION_ID.pattern, "maxLength": 64}}}}
                  for media in ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")}}})
    async def reset_session(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            try:
                body = await request.json()
            except ValueError as error:
                raise WebError(400, "bad_request", f"the body is not valid JSON ({error})") from None
            session = body.get("session") if isinstance(body, dict) else None
        else:
            session = (await request.form()).get("session")
        session = check_session(session)
        if session is None:
            raise WebError(422, "invalid_request", "session: the field is missing; send the session id whose "
                           "clips to forget, as a form field or in a JSON object")
        return {"session": session, "dropped": predictor.sessions.reset(session)}

    @app.get("/api/health", response_model=HealthResponse, summary="Model and limits")
    def health():
        return {
            "status": "ok", "model": f"{model.path.parent.name}/{model.path.name}",
            "classes": list(model.classes), "sample_rate": model.sample_rate,
            "window_seconds": round(model.window_samples / model.sample_rate, 3),
            "limits": {k: float(v) for k, v in dataclasses.asdict(limits).items()},
            "stt": recognizer is not None, "stt_detail": stt_detail,
            "speaker_statistics": model.reads_speaker_statistics, "live": streams.describe(),
        }

    @app.websocket("/api/stream")
    async def live_stream(websocket: WebSocket):
        await websocket.accept()  # before any refusal: a close before accept reaches the browser as a bare 403
        try:
            session = check_session(websocket.query_params.get("session"))
        except WebError:
            await websocket.close(CLOSE_POLICY, "session: not a session id (1-64 of A-Z a-z 0-9 _ -)")
            return
        await streams.serve(websocket, session)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                     "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
