"""Running an exported SavedModel on audio files and their transcripts.

The core shared by `predict.py` (the command line) and `kemdy_tf.web` (the page):
load an export once with `load_model`, then `predict_files(wavs, texts, model)`
returns one `Prediction` per file; `write_csv` writes them as a table.

Decisions:
* no transcript: the audio-only path (empty text = all-zero token ids, the fusion
  model with the text blanked, as trained by modality dropout); valence is not
  reported then, because it is read from the transcript alone.
* audio longer than the model's window (max_frames frames, ~16.4 s): truncated to
  the window, with a warning; training truncated long clips the same way.
* silence (peak below -60 dBFS): a warning; the prediction is still made.
* shorter than MIN_SECONDS (0.5 s: about 16 log-mel frames, a syllable or two; the
  KEMDy20 utterances the model learns from last 1-15 s): a warning, the emotion of
  such a clip is mostly a guess. A WAV whose header promises more audio than the
  file holds (an interrupted copy) is flagged as truncated.
* samples beyond full scale (|x| > 1, e.g. a float WAV at +-50) or clipped (more
  than CLIPPED_SHARE of the samples at full scale): a warning, since training audio
  lies in -1..1 and the log-mel is absolute dB, so loudness shifts every feature.
* a file that cannot be used (missing, unreadable, empty): its `Prediction` carries
  `error`, and the other files are still predicted.
* transcripts are cleaned of KEMDy noise tags, as in training.
* no transcript given and a speech recogniser passed (`stt=kemdy_tf.stt.recognizer()`):
  the clip's window is transcribed and that transcript is used; `transcript_source`
  says "given", "stt" or None (audio-only). An empty string given on purpose stays
  audio-only: only None (not given) is transcribed.
* a recording longer than the window: `predict_timeline` cuts it at pauses
  (kemdy_tf.timeline, streamed) and predicts every segment; each Prediction carries
  the segment's `start` and `end` in seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
from pathlib import Path

import numpy as np

SILENCE_DBFS = -60.0  # peak level below which a clip is called silent
MIN_SECONDS = 0.5  # shorter clips are predicted with a warning (see the module docstring)
FULL_SCALE = 1.0  # audio is -1..1; a peak above this is out of scale
CLIPPED_LEVEL, CLIPPED_SHARE = 0.999, 0.001  # clipped: over 0.1% of samples at |x| >= 0.999
BATCH_SIZE = 8
# A speaker (or a recording) is enrolled from at most this many of its clips (segments).
MAX_ENROL_CLIPS = 32


class PredictError(Exception):
    """A bad input or model: the message is the one line the user sees."""


@dataclasses.dataclass
class Prediction:
    """The model's answer for one clip (or why there is none).

    Attributes:
        file: the audio file.
        emotion: most probable class, None on error.
        probabilities: {class: probability}.
        arousal: 1 (relaxed) .. 5 (aroused).
        valence: 1 (negative) .. 5 (positive); None when the transcript is missing.
        transcript: the cleaned transcript used; None when missing.
        transcript_source: "given", "stt" (speech recognition), or None (audio-only).
        start, end: the segment's place in the recording (seconds); None for a whole clip.
        warnings: silent, too short, truncated file, beyond full scale or clipped,
            longer than the model's window.
        error: why the file could not be predicted (then every number is None).
        statistics: the speaker statistics the model standardised with, for an export that
            reads them (kemdy_tf.speaker_statistics): "speaker NAME (N clips)", "recording
            (N segments)" or "training set" (not enrolled); None for one that reads none.
    """

    file: str
    emotion: str | None = None
    probabilities: dict[str, float] = dataclasses.field(default_factory=dict)
    arousal: float | None = None
    valence: float | None = None
    transcript: str | None = None
    transcript_source: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    start: float | None = None
    end: float | None = None
    statistics: str | None = None

    @property
    def transcript_missing(self) -> bool:
        return self.transcript is None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["transcript_missing"] = self.transcript_missing
        if self.start is None:  # a whole clip: no place in a recording
            del out["start"], out["end"]
        return out


# === The model ===


class ExportedModel:
    """A loaded export: its `serving_default` signature and its metadata (assets/kemdy_tf.json).

    Attributes:
        path: the version folder.
        metadata: the export's metadata dict.
        classes: emotion class names, in output order.
        sample_rate: the rate waveforms are fed at.
        window_samples: samples the model hears; longer clips are truncated.
    """

    def __init__(self, path):
        from kemdy_tf import export
        from kemdy_tf.config import FeatureConfig
        from kemdy_tf.data.audio import samples_for_frames

        try:
            self.path = export.find_export(path)
            self.metadata = export.read_metadata(self.path)
        except export.ExportError as error:
            raise PredictError(str(error)) from None
        try:
            known = {f.name for f in dataclasses.fields(FeatureConfig)}
            self.features = FeatureConfig(**{k: v for k, v in self.metadata["features"].items() if k in known})
            self.classes = [str(c) for c in self.metadata["classes"]]
        except (KeyError, TypeError) as error:
            raise PredictError(f"{self.path}: assets/{export.METADATA_ASSET} lacks {error}") from None
        self.sample_rate = self.features.sample_rate
        self.window_samples = samples_for_frames(self.features.max_frames, self.features)
        self._serve = self._load_signature()
        # Exports whose models standardise per speaker (kemdy_tf.speaker_statistics).
        speaker = self.metadata.get("speaker_statistics") or {}
        self.reads_speaker_statistics = bool(speaker.get("reads"))
        self._serve_speaker = self._saved.signatures.get(export.SERVING_SPEAKER_SIGNATURE)
        self._enrol = self._saved.signatures.get(export.ENROL_SIGNATURE)

    def _load_signature(self):
        from kemdy_tf.export import SERVING_SIGNATURE

        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  registers the SentencePiece ops of serving_default
        except ImportError as error:
            raise PredictError(f"the export's waveform signature needs TF Text: pip install "
                               f"tensorflow-text ({first_line(error)})") from None
        try:
            saved = tf.saved_model.load(str(self.path))
        except Exception as error:  # a damaged or foreign SavedModel: one line, not a traceback
            raise PredictError(f"cannot load the SavedModel in {self.path}: {first_line(error)}") from None
        if SERVING_SIGNATURE not in saved.signatures:
            raise PredictError(f"{self.path} has no {SERVING_SIGNATURE!r} signature (a features-only "
                               "export?); predict.py needs the waveform signature")
        self._saved = saved  # keeps the variables alive
        return saved.signatures[SERVING_SIGNATURE]

    def predict(self, waves: list[np.ndarray], texts: list[str], speaker: np.ndarray | None = None) -> list[dict]:
        """Raw outputs for mono waveforms at `sample_rate` and their (possibly empty) texts,
        standardised with `speaker`'s statistics [2, F] (`enrol`) where the export reads them
        (None: the run's training-set statistics).

        Returns:
            One dict per clip: `probabilities` [classes], `emotion`, `arousal`, `valence`.
        """
        import tensorflow as tf

        batch, lengths = self._padded(waves)
        inputs = dict(waveform=tf.constant(batch), waveform_length=tf.constant(lengths),
                      text=tf.constant([t.encode("utf-8") for t in texts]))
        if speaker is not None and self._serve_speaker is not None:
            stats = np.repeat(np.asarray(speaker, np.float32)[np.newaxis], len(waves), axis=0)
            out = self._serve_speaker(**inputs, speaker_functionals=tf.constant(stats))
        else:
            out = self._serve(**inputs)
        out = {k: v.numpy() for k, v in out.items()}
        return [
            {"probabilities": out["emotion_probs"][i], "emotion": out["emotion"][i].decode("utf-8"),
             "arousal": float(out["arousal"][i]), "valence": float(out["valence"][i])}
            for i in range(len(waves))
        ]


    def enrol(self, waves: list[np.ndarray]) -> tuple[np.ndarray | None, int]:
        """`(statistics [2, F], clips used)` of one speaker's clips (at most `MAX_ENROL_CLIPS`,
        each cut to the window); `(None, n)` below 2 clips or for an export that reads none."""
        import tensorflow as tf

        waves = list(waves)[:MAX_ENROL_CLIPS]
        if self._enrol is None or len(waves) < 2:
            return None, len(waves)
        batch, lengths = self._padded(waves)
        out = self._enrol(waveform=tf.constant(batch), waveform_length=tf.constant(lengths))
        return out["speaker_functionals"].numpy(), len(waves)

    def _padded(self, waves) -> tuple[np.ndarray, np.ndarray]:
        """Clips cut to the window, zero padded to the longest: ([clips, samples], lengths)."""
        waves = [np.asarray(w, np.float32)[: self.window_samples] for w in waves]
        lengths = np.array([len(w) for w in waves], np.int32)
        batch = np.zeros((len(waves), max(lengths)), np.float32)
        for row, wave in zip(batch, waves):
            row[: len(wave)] = wave
        return batch, lengths


def load_model(path="saved_models/kemdy") -> ExportedModel:
    """The export at `path` (base folder: its highest version), loaded once per version folder.

    Raises:
        PredictError: not an export, or it cannot be loaded.
    """
    from kemdy_tf.export import ExportError, find_export

    try:
        version = find_export(path)
    except ExportError as error:
        raise PredictError(str(error)) from None
    return _load_version(str(version.resolve()))


@functools.lru_cache(maxsize=4)
def _load_version(path: str) -> ExportedModel:
    return ExportedModel(path)


# === Predicting files ===


def predict_files(wavs, texts=None, model="saved_models/kemdy", batch_size: int = BATCH_SIZE,
                  stt=None, speakers=None) -> list[Prediction]:
    """Predict every audio file; a file that cannot be used gets a Prediction with `error`.

    Args:
        wavs: audio file paths.
        texts: one transcript per file (None = not given, "" = none on purpose), or None
            for none at all.
        model: an `ExportedModel` (load it once with `load_model`), or an export path.
        batch_size: clips per call of the SavedModel.
        stt: a `kemdy_tf.stt.Recognizer` that transcribes the files given no transcript
            (None: those are predicted audio-only).
        speakers: one speaker name per file ("" or None: unknown), or None. For an export
            that standardises per speaker, each named speaker is enrolled from their files
            here (at most `MAX_ENROL_CLIPS`); the others get the training set's statistics.

    Returns:
        One `Prediction` per file, in order.

    Raises:
        PredictError: the model cannot be loaded, a transcript is not valid UTF-8, or
            speech recognition fails.
    """
    from kemdy_tf.data.audio import AudioError

    model = model if isinstance(model, ExportedModel) else load_model(model)
    wavs = [str(w) for w in wavs]
    texts = [None] * len(wavs) if texts is None else list(texts)
    if len(texts) != len(wavs):
        raise PredictError(f"{len(wavs)} audio files but {len(texts)} transcripts")
    speakers = [None] * len(wavs) if speakers is None else [str(s or "") or None for s in speakers]
    if len(speakers) != len(wavs):
        raise PredictError(f"{len(wavs)} audio files but {len(speakers)} speakers")

    results = [Prediction(file=w) for w in wavs]
    ready, speaker_of = [], {}  # (result, wave); id(result) -> speaker
    for result, text, speaker in zip(results, texts, speakers):
        speaker_of[id(result)] = speaker
        set_transcript(result, text)
        try:
            wave, warnings = load_clip(result.file, model)
        except AudioError as error:
            result.error = error.reason
            continue
        result.warnings += warnings
        if text is None and stt is not None:
            transcribe_into(result, wave[: model.window_samples], model.sample_rate, stt)
        ready.append((result, wave))
    groups: dict = {}
    for pair in ready:  # each named speaker's clips, enrolled together
        groups.setdefault(speaker_of[id(pair[0])], []).append(pair)
    for speaker, pairs in groups.items():
        statistics = enrol_speaker(model, [wave for _, wave in pairs], speaker, pairs) if speaker else None
        predict_ready(pairs, model, batch_size, statistics)
    return results


def enrol_speaker(model: ExportedModel, waves: list, who: str, pairs: list, unit: str = "clips"):
    """`who`'s statistics from `waves` (None: not enrolled); labels each pair's Prediction with
    the statistics it gets and warns below `speaker_statistics.MIN_CLIPS`."""
    from kemdy_tf.speaker_statistics import MIN_CLIPS

    if not model.reads_speaker_statistics:
        return None
    statistics, used = model.enrol(waves)
    label = f"{who} ({used} {unit})" if statistics is not None else "training set"
    warning = (f"{who}: {used} {unit[:-1] if used == 1 else unit}, fewer than 2: not enrolled, the training "
               "set's statistics are used" if statistics is None
               else f"{who}: enrolled from {used} {unit}, fewer than {MIN_CLIPS}: noisy statistics"
               if used < MIN_CLIPS else None)
    for result, _ in pairs:
        result.statistics = label
        if warning:
            result.warnings.append(warning)
    return statistics


def predict_wave(wave: np.ndarray, text, model: ExportedModel, file: str, warnings=(),
                 speaker_clips: list | None = None, speaker: str = "speaker") -> Prediction:
    """The prediction for one clip already decoded by `load_clip` (the web page decodes once).

    Args:
        wave: mono float32 samples at `model.sample_rate`.
        text: its transcript (None or "" = missing; bytes must be UTF-8).
        model: the loaded export.
        file: the name the Prediction carries.
        warnings: `load_clip`'s warnings for this clip.
        speaker_clips: for an export that reads speaker statistics, its speaker's clips
            (this one included) to enrol them from, as `predict_files` does for a named
            speaker; None: the training set's statistics.
        speaker: how `Prediction.statistics` and the warnings name that speaker.

    Raises:
        PredictError: the transcript is not valid UTF-8.
    """
    result = Prediction(file=file, warnings=list(warnings))
    set_transcript(result, text)
    pairs = [(result, wave)]
    statistics = enrol_speaker(model, speaker_clips, speaker, pairs) if speaker_clips else None
    predict_ready(pairs, model, 1, statistics)
    return result


def set_transcript(result: Prediction, text) -> None:
    result.transcript = _clean(_transcript(text, result.file))
    result.transcript_source = None if result.transcript is None else "given"


def transcribe_into(result: Prediction, wave: np.ndarray, sample_rate: int, stt) -> None:
    """Fill `result.transcript` from speech recognition of `wave` (a warning when it hears no word).

    Raises:
        PredictError: speech recognition is not installed or fails.
    """
    from kemdy_tf.stt import SttUnavailable

    try:
        heard = stt.transcribe(wave, sample_rate).text
    except SttUnavailable as error:
        raise PredictError(str(error)) from None
    result.transcript = _clean(heard)
    if result.transcript is None:
        result.warnings.append("speech recognition heard no words: audio-only")
    else:
        result.transcript_source = "stt"


# === Long recordings ===


def predict_timeline(path, model: ExportedModel, stt=None, batch_size: int = BATCH_SIZE,
                     audio=None, spans=None) -> list[Prediction]:
    """One Prediction per speech segment of a recording of any length (kemdy_tf.timeline).

    The file is streamed: its loudness is read in blocks, then each batch of segments
    is read, (transcribed,) predicted and dropped, so memory does not grow with the
    recording's length (bench/stt.py measures it).

    Args:
        path: the recording.
        model: the loaded export.
        stt: a `kemdy_tf.stt.Recognizer` for each segment's transcript, or None (audio-only).
        batch_size: segments per call of the SavedModel.
        audio: the recording already opened (`timeline.open_audio` or `timeline.DecodedAudio`);
            default: open `path`.
        spans: the `timeline.Span`s to predict; default: cut at pauses (`timeline.find_spans`).
            `timeline.sliding_spans` gives the live stream's windows (kemdy_tf.web.stream).

    Returns:
        The segments' predictions in time order, `start` and `end` set (seconds); []
        when the recording holds no speech.

    Raises:
        kemdy_tf.data.audio.AudioError: the file cannot be read.
        PredictError: speech recognition fails.
    """
    from kemdy_tf import timeline

    audio = audio if audio is not None else timeline.open_audio(path, model.sample_rate)
    window = model.window_samples / model.sample_rate
    spans = timeline.find_spans(audio, window) if spans is None else list(spans)
    # A recording is one speaker's (or one conversation's) voice: its own statistics, from
    # its first MAX_ENROL_CLIPS segments, standardise every segment.
    statistics, label = None, None
    if model.reads_speaker_statistics:
        statistics, used = model.enrol([audio.read(span, model.sample_rate) for span in spans[:MAX_ENROL_CLIPS]])
        label = f"recording ({used} segments)" if statistics is not None else "training set"
    rows = []
    for first in range(0, len(spans), batch_size):
        ready = []
        for span in spans[first : first + batch_size]:
            wave = audio.read(span, model.sample_rate)[: model.window_samples]
            result = segment_prediction(str(path), span, wave, model, label)
            if stt is not None:
                transcribe_into(result, wave, model.sample_rate, stt)
            ready.append((result, wave))
        predict_ready(ready, model, batch_size, statistics)
        rows += [result for result, _ in ready]
    return rows


def segment_prediction(file: str, span, wave: np.ndarray, model: ExportedModel, statistics: str | None) -> Prediction:
    """A timeline row for `span` of a recording (its `wave`), with its audio warnings, not yet predicted."""
    result = Prediction(file=file, start=span.start, end=span.end, statistics=statistics)
    result.warnings += [w for w in audio_warnings(wave, model.sample_rate, model.window_samples)
                        if not w.startswith("very short")]  # a short segment is a short phrase
    return result


def load_clip(path, model: ExportedModel) -> tuple[np.ndarray, list[str]]:
    """The file decoded for `model` (mono, its rate) and the warnings about it.

    Raises:
        AudioError: the file cannot be used (missing, empty, undecodable); the reason
            says what the file looks like.
    """
    from kemdy_tf.data.audio import AudioError, load_audio, truncation

    path = str(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    wave = load_audio(path, model.sample_rate)
    warnings = [w for w in [truncation(path)] if w]
    return wave, warnings + audio_warnings(wave, model.sample_rate, model.window_samples)


def _clean(transcript: str | None) -> str | None:
    from kemdy_tf.data.transcripts import clean_transcript

    return None if transcript is None else clean_transcript(transcript) or None  # tags only = missing


def predict_ready(ready: list, model: ExportedModel, batch_size: int, statistics=None) -> None:
    """Fill each (Prediction, wave) pair's numbers, batch_size clips per call of the model,
    standardised with one speaker's `statistics` (None: the training set's, where read)."""
    for start in range(0, len(ready), batch_size):
        chunk = ready[start : start + batch_size]
        outputs = model.predict([wave for _, wave in chunk], [result.transcript or "" for result, _ in chunk],
                                statistics)
        for (result, _), out in zip(chunk, outputs):
            if model.reads_speaker_statistics and result.statistics is None:
                result.statistics = "training set"
            result.emotion = out["emotion"]
            result.probabilities = {c: round(float(p), 6) for c, p in zip(model.classes, out["probabilities"])}
            # NaN: the model was trained on a corpus without that rating (export metadata).
            result.arousal = None if math.isnan(out["arousal"]) else round(out["arousal"], 4)
            result.valence = (None if result.transcript_missing or math.isnan(out["valence"])
                              else round(out["valence"], 4))


def _transcript(text, wav: str) -> str | None:
    """`text` as str (None when missing); bytes must be UTF-8."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PredictError(f"the transcript of {wav} is not valid UTF-8 ({error.reason} at byte "
                               f"{error.start}); KEMDy20 .txt files are cp949: convert them first") from None
    try:
        str(text).encode("utf-8")  # undecodable command-line bytes arrive as lone surrogates
    except UnicodeEncodeError:
        raise PredictError(f"the transcript of {wav} is not valid UTF-8") from None
    return str(text) if str(text).strip() else None


def audio_warnings(wave: np.ndarray, sample_rate: int, window_samples: int) -> list[str]:
    """What a listener should know before trusting a prediction on this decoded clip.

    Silent, shorter than MIN_SECONDS, beyond full scale or clipped, longer than the
    model's window (truncated). The file-level check (a truncated WAV) is `load_clip`'s.
    """
    warnings = []
    seconds = len(wave) / sample_rate
    if seconds < MIN_SECONDS:
        warnings.append(f"very short audio ({seconds:.3f} s, {len(wave)} samples; under {MIN_SECONDS:g} s): "
                        "too little speech for a reliable emotion")
    peak = float(np.max(np.abs(wave)))
    if peak == 0:
        warnings.append("silent audio (every sample is 0): the prediction describes silence")
    elif 20 * math.log10(peak) < SILENCE_DBFS:
        warnings.append(f"silent audio (peak {20 * math.log10(peak):.0f} dBFS): the prediction describes silence")
    if peak > FULL_SCALE:
        warnings.append(f"samples reach {peak:.3g}, beyond full scale (-1..1): a float file not scaled to "
                        "-1..1? The model heard only -1..1 audio, so this prediction is unreliable")
    else:
        clipped = float(np.mean(np.abs(wave) >= CLIPPED_LEVEL))
        if clipped > CLIPPED_SHARE:
            warnings.append(f"clipped audio: {clipped:.1%} of the samples are at full scale (distorted)")
    if len(wave) > window_samples:
        warnings.append(
            f"audio is {seconds:.1f} s; the model hears only the first "
            f"{window_samples / sample_rate:.1f} s (truncated, as in training)")
    return warnings


# === Writing predictions ===


def write_csv(predictions: list[Prediction], classes: list[str], path) -> None:
    """One row per file: emotion, prob_<class>..., arousal, valence, transcript, warnings, error."""
    columns = ["file", "emotion", *[f"prob_{c}" for c in classes], "arousal", "valence",
               "transcript_missing", "transcript", "transcript_source", "statistics", "warnings", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for p in predictions:
        writer.writerow({
            "file": p.file, "emotion": p.emotion or "",
            **{f"prob_{c}": p.probabilities.get(c, "") for c in classes},
            "arousal": "" if p.arousal is None else p.arousal,
            "valence": "" if p.valence is None else p.valence,
            "transcript_missing": p.transcript_missing if not p.error else "",
            "transcript": p.transcript or "", "transcript_source": p.transcript_source or "",
            "statistics": p.statistics or "", "warnings": "; ".join(p.warnings), "error": p.error or "",
        })
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`: what a one-line error shows of a library's exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
