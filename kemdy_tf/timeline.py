"""Long recordings as a timeline: cut at pauses into clips the model hears whole.

    audio = open_audio("long.wav")                      # streamed: nothing decoded yet
    spans = find_spans(audio, max_seconds=16.4)         # [Span(start, end)] in seconds
    wave = audio.read(spans[0], 16000)                   # one segment, mono, resampled

`kemdy_tf.inference.predict_timeline` runs the model (and STT) on each span;
`write_csv` and `plot` write its rows.

Decisions:
* streamed: a file libsndfile reads (WAV, FLAC, Ogg, MP3) is read twice in blocks,
  never whole: once for a loudness level every 10 ms (an hour is 360,000 floats),
  then segment by segment. Other formats (m4a, ...) are decoded whole by librosa
  (`DecodedAudio`), which bounds nothing: convert long ones to WAV/FLAC first.
* pauses: 10 ms frames quieter than the recording's loud level (its 99th percentile,
  robust to a click) minus TOP_DB are silent; a silence of at least MIN_PAUSE
  seconds ends a segment. Energy, not Vosk's word times: it needs no STT, and a
  pause between words inside a sentence is shorter than MIN_PAUSE.
* a stretch of speech longer than the model's window is cut at its quietest 10 ms
  within the second half of the window, so no segment is truncated by the model.
* speech shorter than MIN_SPEECH (a click, a breath) is dropped; each segment keeps
  PAD seconds of its surrounding silence where there is room (the model was trained on
  clips with a little silence around the speech).
* sliding windows (`sliding_spans`, the live stream's timeline, kemdy_tf.web.stream):
  one window ends at every whole HOP_SECONDS and hears the WINDOW_SECONDS before its
  end (less at the very start), whatever the audio holds: a live answer cannot wait
  for a pause.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np

FRAME_SECONDS = 0.01  # one loudness value per 10 ms
TOP_DB = 35.0  # frames this far below the loud level are silent
FLOOR_DBFS = -70.0  # ... and always those below this (a near-silent file has no speech)
LOUD_PERCENTILE = 99.0  # the loud level: robust to a few clicks
MIN_PAUSE = 0.3  # seconds of silence that end a segment
MIN_SPEECH = 0.2  # shorter bursts are dropped
PAD = 0.1  # seconds of context kept on each side where there is room
BLOCK_SECONDS = 10.0  # streamed reading: block length
WINDOW_SECONDS = 4.0  # sliding windows: the audio each one hears (a phrase or two) ...
HOP_SECONDS = 1.0  # ... and one ends every hop (a live answer each second)


@dataclasses.dataclass(frozen=True)
class Span:
    """A segment of a recording, in seconds from its start."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


# === Reading audio in pieces ===


class StreamedAudio:
    """A file libsndfile reads, read in blocks or by span, never decoded whole.

    Attributes:
        path: the file.
        sample_rate: its own rate.
        duration: seconds.
    """

    def __init__(self, path):
        import soundfile

        self.path = str(path)
        info = soundfile.info(self.path)  # raises on a format libsndfile does not read
        self.sample_rate, self.frames = int(info.samplerate), int(info.frames)
        if self.frames <= 0:  # e.g. an MP3 whose length libsndfile cannot tell without decoding
            raise ValueError(f"{self.path}: unknown length")
        self.duration = self.frames / self.sample_rate

    def blocks(self, block_frames: int):
        """Mono float32 blocks of `block_frames` samples (the last may be shorter), in order."""
        import soundfile

        for block in soundfile.blocks(self.path, blocksize=block_frames, dtype="float32", always_2d=True):
            yield block.mean(axis=1)

    def read(self, span: Span, sample_rate: int) -> np.ndarray:
        """The span, mono float32 at `sample_rate`."""
        import soundfile

        start, stop = round(span.start * self.sample_rate), round(span.end * self.sample_rate)
        wave, _ = soundfile.read(self.path, start=start, stop=min(stop, self.frames), dtype="float32",
                                 always_2d=True)
        return _resampled(wave.mean(axis=1), self.sample_rate, sample_rate)


class DecodedAudio:
    """Audio already in memory (a format libsndfile does not read, or the web page's upload).

    Args:
        wave: mono float samples.
        sample_rate: their rate.
        path: the name it came from.
    """

    def __init__(self, wave: np.ndarray, sample_rate: int, path: str = "<memory>"):
        self.wave, self.sample_rate, self.path = np.asarray(wave, np.float32), int(sample_rate), str(path)
        self.frames = len(self.wave)
        self.duration = self.frames / self.sample_rate

    def blocks(self, block_frames: int):
        for start in range(0, self.frames, block_frames):
            yield self.wave[start : start + block_frames]

    def read(self, span: Span, sample_rate: int) -> np.ndarray:
        start, stop = round(span.start * self.sample_rate), round(span.end * self.sample_rate)
        return _resampled(self.wave[start:stop], self.sample_rate, sample_rate)


def open_audio(path, sample_rate: int = 16000) -> StreamedAudio | DecodedAudio:
    """The file streamed when libsndfile reads it, else decoded whole at `sample_rate`.

    Raises:
        kemdy_tf.data.audio.AudioError: missing, empty or undecodable (the reason says which).
    """
    from kemdy_tf.data.audio import AudioError, load_audio

    if not os.path.isfile(path):
        raise AudioError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        audio = StreamedAudio(path)
    except Exception:  # not a libsndfile format (or no length in its header): librosa decodes it
        return DecodedAudio(load_audio(path, sample_rate), sample_rate, str(path))
    if audio.frames == 0:
        raise AudioError(path, "no samples (empty audio)")
    return audio


def _resampled(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or len(wave) == 0:
        return np.asarray(wave, np.float32)
    import librosa

    return librosa.resample(wave, orig_sr=rate, target_sr=target).astype(np.float32)  # soxr, as load_audio


# === Finding pauses ===


def frame_levels(audio: StreamedAudio | DecodedAudio) -> np.ndarray:
    """RMS level (dBFS) of every FRAME_SECONDS of the audio, read block by block."""
    hop = max(1, round(audio.sample_rate * FRAME_SECONDS))
    block = hop * max(1, round(BLOCK_SECONDS / FRAME_SECONDS))
    levels, carry = [], np.zeros(0, np.float32)
    for samples in audio.blocks(block):
        samples = np.concatenate([carry, samples]) if len(carry) else samples
        whole = len(samples) // hop * hop
        power = np.mean(np.square(samples[:whole].reshape(-1, hop), dtype=np.float64), axis=1)
        levels.append(10 * np.log10(np.maximum(power, 1e-12)))
        carry = samples[whole:]
    if len(carry):
        levels.append([10 * np.log10(max(float(np.mean(np.square(carry, dtype=np.float64))), 1e-12))])
    return np.concatenate(levels).astype(np.float32) if levels else np.zeros(0, np.float32)


def find_spans(audio: StreamedAudio | DecodedAudio, max_seconds: float) -> list[Span]:
    """The speech segments of `audio`, cut at pauses, each at most `max_seconds` long.

    Args:
        audio: from `open_audio` (or `DecodedAudio`).
        max_seconds: the model's window.

    Returns:
        Spans in time order, not overlapping; [] when the audio holds no speech.
    """
    return spans_from_levels(frame_levels(audio), max_seconds, audio.duration)


def spans_from_levels(levels: np.ndarray, max_seconds: float, duration: float) -> list[Span]:
    """`find_spans` on precomputed 10 ms levels (see the module docstring for the rules)."""
    if len(levels) == 0:
        return []
    loud = float(np.percentile(levels, LOUD_PERCENTILE))
    voiced = levels > max(loud - TOP_DB, FLOOR_DBFS)
    runs = _runs(voiced)
    runs = _merge_short_gaps(runs, round(MIN_PAUSE / FRAME_SECONDS))
    runs = [r for r in runs if (r[1] - r[0]) >= round(MIN_SPEECH / FRAME_SECONDS)]
    limit = max(1, int(max_seconds / FRAME_SECONDS) - 1)
    runs = [piece for run in runs for piece in _split_long(run, levels, limit)]
    return _padded(runs, limit, duration)


def sliding_spans(duration: float, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS) -> list[Span]:
    """Windows ending at every whole `hop` up to `duration`, each the `window` seconds before its
    end (from 0 for the first ones): the live stream's timeline, computed offline.

    Args:
        duration: the audio's length, seconds; the audio after its last whole hop is in no window.
        window: seconds each window hears.
        hop: seconds between window ends.
    """
    count = int(duration / hop + 1e-9)
    return [Span(round(max(0.0, k * hop - window), 6), round(k * hop, 6)) for k in range(1, count + 1)]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame indices of the True stretches of `mask`."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _merge_short_gaps(runs, min_gap: int) -> list[tuple[int, int]]:
    merged = []
    for start, end in runs:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _split_long(run, levels: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """`run` cut at its quietest frame in the second half of each window, until every piece fits."""
    pieces = []
    start, end = run
    while end - start > limit:
        low = start + limit // 2
        cut = low + int(np.argmin(levels[low : start + limit]))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _padded(runs, limit: int, duration: float) -> list[Span]:
    """Runs widened by PAD on each side where the neighbours, the file and the window allow."""
    pad = round(PAD / FRAME_SECONDS)
    spans = []
    for i, (start, end) in enumerate(runs):
        room = max(0, limit - (end - start))
        gap_before = (start - runs[i - 1][1]) // 2 if i else start  # neighbours share a gap
        gap_after = (runs[i + 1][0] - end) // 2 if i + 1 < len(runs) else pad
        before = min(pad, room, gap_before)
        after = min(pad, room - before, gap_after)
        spans.append(Span(round((start - before) * FRAME_SECONDS, 3),
                          round(min((end + after) * FRAME_SECONDS, duration), 3)))
    return spans


# === Writing a timeline ===


def write_csv(rows, classes, path) -> None:
    """One row per segment: start, end (seconds), transcript, emotion, prob_<class>..., arousal, valence.

    Args:
        rows: `kemdy_tf.inference.Prediction`s with `start` and `end` set.
        classes: the model's classes (column order).
        path: the CSV to write (atomically).
    """
    from kemdy_tf.run import atomic_write

    text = csv_text(rows, classes)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def csv_text(rows, classes) -> str:
    """`write_csv`'s table as text (the live stream hands it to the browser)."""
    import csv

    columns = ["start", "end", "transcript", "transcript_source", "emotion", *[f"prob_{c}" for c in classes],
               "arousal", "valence", "statistics", "warnings"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({
            "start": row.start, "end": row.end, "transcript": row.transcript or "",
            "transcript_source": row.transcript_source or "", "emotion": row.emotion or "",
            **{f"prob_{c}": row.probabilities.get(c, "") for c in classes},
            "arousal": "" if row.arousal is None else row.arousal,
            "valence": "" if row.valence is None else row.valence,
            "statistics": row.statistics or "", "warnings": "; ".join(row.warnings),
        })
    return buffer.getvalue()


def plot(rows, classes, path, title: str = "") -> None:
    """The timeline as a PNG: emotion bands over time, arousal and valence curves below.

    Args:
        rows: `Prediction`s with `start` and `end` set.
        classes: the model's classes (one colour each).
        path: the PNG to write (atomically).
        title: drawn above the bands (e.g. the file name).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from kemdy_tf.run import atomic_write

    colours = {c: f"C{i}" for i, c in enumerate(classes)}
    end = max((r.end for r in rows), default=1.0)
    minutes = end > 120  # label long recordings in minutes
    scale = 60.0 if minutes else 1.0
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    bands, curves = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    for row in rows:
        if row.emotion:
            bands.axvspan(row.start / scale, row.end / scale, color=colours[row.emotion], alpha=0.85, linewidth=0)
    bands.set_yticks([])
    bands.set_title(title or "emotion timeline", loc="left")
    bands.legend(handles=[Patch(color=colours[c], label=c) for c in classes], ncols=len(classes),
                 loc="upper left", bbox_to_anchor=(0, -0.05), frameon=False, fontsize="small")
    for name, colour in (("arousal", "C3"), ("valence", "C0")):
        points = [((r.start + r.end) / 2 / scale, getattr(r, name)) for r in rows if getattr(r, name) is not None]
        if points:
            x, y = zip(*points)
            curves.plot(x, y, marker=".", color=colour, label=name)
    curves.set_ylim(1, 5)
    curves.set_ylabel("rating (1..5)")
    curves.set_xlim(0, end / scale)
    curves.set_xlabel("minutes" if minutes else "seconds")
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(loc="upper right", fontsize="small")
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100))
