"""Bulk inference on Apache Beam: an export over many audio files, on any Beam runner.

    python -m kemdy_tf.bulk --model saved_models/kemdy/1 --input clips/ --output out/emotions
    python -m kemdy_tf.bulk --model saved_models/kemdy/1 --input 'calls/*.wav' --output out/calls --timeline
    python -m kemdy_tf.bulk --model saved_models/kemdy/1 --input clips.csv --output out/c --transcribe \\
        --direct_num_workers=2 --direct_running_mode=multi_processing

--input is a folder (its audio files, as `predict.py --wav DIR`), a glob (every file it
matches) or a CSV manifest (`path`, optional `text` and `speaker`, as `predict.py
--manifest`). Writes OUT-SSSSS-of-NNNNN.csv and .parquet, one row per clip or timeline
segment (file, start, end, emotion, prob_<class>..., arousal, valence, transcript,
transcript_source, statistics, warnings), and OUT-dead-letters-00000-of-00001.csv (file,
reason). Every flag this parser does not know goes to Beam (--runner, --project, ...);
docs/bulk.md has the commands for Dataflow, Flink and Spark. Needs `pip install -r
requirements-bulk.txt`.

Decisions:
* the numbers are predict.py's: a clip is decoded by `inference.load_clip`, a long recording
  cut by `timeline.find_spans`, and the answers filled by `inference.predict_ready` (its
  rounding, NaN ratings, valence only with a transcript); tests/test_bulk.py compares with
  predict.py at 1e-5. Only the batching differs (mixed files, padded to the batch's longest).
* the model: `ExportHandler`, a RunInference ModelHandler. Its `load_model` loads the export
  once per worker process and warms it up with one call (`open_export`; `inference.load_model`
  caches it, so the decoding steps and the threads of the same process share that copy).
* batching (where the speed comes from, bench/bulk.py): `LengthBatches` groups up to
  --batch-size (32) clips of about the same length (within LENGTH_RATIO) and the same speaker
  statistics, so a batch is one call of the model padded little; RunInference's own
  BatchElements, which mixes lengths, is skipped.
* speakers: for an export that reads speaker statistics, a manifest's named speakers are
  grouped (GroupByKey) and each is enrolled from their first MAX_ENROL_CLIPS decodable clips
  in manifest order, with predict.py's labels and warnings; other clips get the training set's.
* --timeline: a file longer than the model's window and given no transcript is cut at pauses
  into segments (`start`, `end` set) standardised by the recording's own statistics, as
  `predict.py --wav LONG` does; it is not part of its speaker's enrolment. Otherwise (and for
  a file given a transcript, which one text cannot cover segment by segment) a long file is
  truncated to the window with a warning, as predict.py does for a folder. A recording with
  no speech gets one row without an emotion, saying so.
* --transcribe: clips given no transcript (a folder, a glob, a manifest without `text`) are
  transcribed by Vosk, one recogniser per worker process (`stt.recognizer()`, loaded on first
  use). Without Vosk this is said once and the clips are predicted audio-only.
* a file that cannot be decoded (missing, empty, not audio) becomes a dead-letter row with the
  reason; a batch whose inference fails puts each of its files there. The pipeline goes on.
* idempotent: fixed shard counts (--num-shards; 1 for the dead letters; empty shards are still
  written), so a rerun over the same input writes the same file names and replaces them. The
  order of rows within and across shards is not fixed.
* files are spread over the workers (a Reshuffle of the paths); decoding and the model run
  where the file was read. Only --transcribe moves the decoded clips once more (a Reshuffle
  before Vosk, which costs about a second per second of audio, 100 times the model), so a long
  recording's segments are transcribed on many workers; the model alone would not repay moving
  the waveforms (1,000 hours of float32 audio are 230 GB of shuffle).
* files on remote storage (gs://, s3://, hdfs://) are copied to a local temporary file to be
  decoded; a remote --model (a version folder) is copied once per worker process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import itertools
import logging
import math
import os
import shutil
import sys
import tempfile
import threading

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # also read by the worker processes Beam starts


class _BeamNoise(logging.Filter):
    """Two root-logger warnings Beam gives on every run that ask nothing of the user (no BigQuery
    client; its memory probe, whose optional import fails, on every model load)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("apitools not found", "Resource module is not available"))


logging.getLogger().addFilter(_BeamNoise())  # before Beam's import, which logs the first

import apache_beam as beam  # noqa: E402  (after the environment above)
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.ml.inference.base import ModelHandler, RunInference  # noqa: E402

from kemdy_tf import inference  # noqa: E402  (numpy only at import: TensorFlow loads with a model)
from kemdy_tf.inference import MAX_ENROL_CLIPS, PredictError, Prediction, first_line  # noqa: E402

logger = logging.getLogger(__name__)

# predict.py --wav DIR's list: a folder's other files (notes, transcripts) are not audio.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aif", ".aiff", ".au", ".wma")
NUM_SHARDS = 2
DEAD_LETTERS = "dead_letters"  # tagged outputs of the decoding steps
NO_SPEECH = "no_speech"
DEAD_LETTER_COLUMNS = ["file", "reason"]
NAMESPACE = "kemdy_tf.bulk"  # Beam metrics
BATCH_SIZE = 32  # clips per call of the model: bench/bulk.py, docs/bulk.md
LENGTH_RATIO = 1.25  # a batch's clips differ in length by less than this factor (LengthBatches)
HELD_BYTES = 256 * 2**20  # the most waveform bytes LengthBatches holds per bundle


class BulkError(Exception):
    """A bad command line, input or model: the message is the one line the user sees."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file: its path, transcript (None: not given, "": none on purpose), speaker, and
    its place in the manifest (which clips a speaker is enrolled from)."""

    path: str
    text: str | None = None
    speaker: str | None = None
    order: int = 0


@dataclasses.dataclass
class Clip:
    """A decoded clip or timeline segment on its way to the model.

    Attributes:
        prediction: its `Prediction`, filled by the model (file, start, end, transcript and
            warnings already set).
        wave: mono float32 at the export's rate.
        statistics: the speaker statistics [2, F] to standardise with (None: the training set's).
        transcribe: given no transcript, so speech recognition may supply one.
    """

    prediction: Prediction
    wave: np.ndarray
    statistics: np.ndarray | None = None
    transcribe: bool = False


# === The export on a worker ===


def is_remote(path: str) -> bool:
    """Whether `path` names a Beam file system other than the local disk (gs://, s3://, ...)."""
    return FileSystems.get_scheme(str(path)) not in (None, "file")


_OPENING = threading.Lock()


def open_export(path: str) -> inference.ExportedModel:
    """The export at `path`, loaded and warmed up once per process (a remote version folder copied
    first), whichever of the process's worker threads asks first."""
    from kemdy_tf.logs import import_tensorflow_quietly

    with _OPENING:  # one load, and one first call, not one per thread of a multi-threaded worker
        import_tensorflow_quietly()  # a worker process's first TensorFlow import: without its start-up lines
        return _warmed(inference.load_model(_local_export(path) if is_remote(path) else path))


@functools.lru_cache(maxsize=4)
def _warmed(model: inference.ExportedModel) -> inference.ExportedModel:
    """`model` after one call of its waveform signature: TensorFlow prepares a loaded function on
    its first call (about a CPU second here), and threads that make their first calls at once
    each prepare it."""
    model.predict([np.zeros(model.sample_rate // 10, np.float32)], [""])
    return model


@functools.lru_cache(maxsize=4)
def _local_export(path: str) -> str:
    """A remote version folder copied to a local temporary folder, once per process."""
    target = tempfile.mkdtemp(prefix="kemdy_export_")
    base = path.rstrip("/") + "/"
    for found in FileSystems.match([base + "**"])[0].metadata_list:
        local = os.path.join(target, found.path[len(base):])
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with FileSystems.open(found.path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
                open(local, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


@contextlib.contextmanager
def _local_copy(path: str):
    """`path` itself on the local disk, else a temporary local copy (the decoders read local files)."""
    if not is_remote(path):
        yield path
        return
    suffix = os.path.splitext(path)[1]
    handle, local = tempfile.mkstemp(suffix=suffix, prefix="kemdy_bulk_")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
                os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(src, out)
        yield local
    finally:
        os.unlink(local)


class ExportHandler(ModelHandler):
    """RunInference's handler for a kemdy_tf export's waveform signatures: a batch of `Clip`s
    (a list, made by `LengthBatches`: RunInference's own batching is skipped) in, their filled
    `Prediction`s out.

    Args:
        model_path: an export's version folder (local, or on a Beam file system).
    """

    def __init__(self, model_path: str):
        super().__init__()
        self.model_path = model_path

    def should_skip_batching(self) -> bool:
        return True  # each element is already a batch (LengthBatches)

    def load_model(self) -> inference.ExportedModel:
        return open_export(self.model_path)

    def run_inference(self, batch, model, inference_args=None):
        # One call per set of statistics: the speaker signature takes one speaker's per call
        # (ExportedModel.predict), and a batch may hold several speakers' clips.
        groups: dict = {}
        for clip in batch:
            groups.setdefault(None if clip.statistics is None else clip.statistics.tobytes(), []).append(clip)
        for clips in groups.values():
            inference.predict_ready([(c.prediction, c.wave) for c in clips], model, len(clips),
                                     clips[0].statistics)
        return [clip.prediction for clip in batch]

    def get_num_bytes(self, batch) -> int:
        return sum(clip.wave.nbytes for clip in batch)  # the default pickles the batch again

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class LengthBatches(beam.DoFn):
    """Clips -> lists of at most `batch_size` clips of about the same length and the same
    speaker statistics: one call of the model each, padded little (a batch is padded to its
    longest clip, and the model's cost grows with the padded length).

    Clips wait in buckets of lengths within a factor LENGTH_RATIO (cut to the window) until a
    bucket is full; at the end of a bundle the rest are sorted by length and cut into batches.
    At most HELD_BYTES of waveforms wait (beyond, the fullest bucket goes as it is). For the
    global window only (the pipeline has no other).

    Args:
        batch_size: the most clips per batch.
        window_samples: the samples the model hears (longer clips are cut to it).
    """

    def __init__(self, batch_size: int, window_samples: int):
        self.batch_size, self.window_samples = batch_size, window_samples
        self._buckets: dict = {}
        self._held = 0

    def start_bundle(self):
        self._buckets, self._held = {}, 0

    def _length(self, clip: Clip) -> int:
        return min(len(clip.wave), self.window_samples)

    def process(self, clip: Clip):
        statistics = None if clip.statistics is None else clip.statistics.tobytes()
        key = (statistics, int(math.log(max(self._length(clip), 1), LENGTH_RATIO)))
        bucket = self._buckets.setdefault(key, [])
        bucket.append(clip)
        self._held += clip.wave.nbytes
        if len(bucket) >= self.batch_size:
            yield self._take(key)
        elif self._held > HELD_BYTES:
            yield self._take(max(self._buckets, key=lambda k: len(self._buckets[k])))

    def _take(self, key) -> list:
        batch = self._buckets.pop(key)
        self._held -= sum(clip.wave.nbytes for clip in batch)
        return batch

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        by_statistics: dict = {}
        for (statistics, _), clips in self._buckets.items():
            by_statistics.setdefault(statistics, []).extend(clips)
        self._buckets, self._held = {}, 0
        for clips in by_statistics.values():
            clips.sort(key=self._length)
            for start in range(0, len(clips), self.batch_size):
                yield GlobalWindows.windowed_value_at_end_of_window(clips[start : start + self.batch_size])


# === Decoding (and enrolling) ===


class _Decode(beam.DoFn):
    """Source -> Clips (whole files, or timeline segments), dead letters for files that cannot be used.

    Args:
        model_path: the export (its rates and enrolment signature; loaded once per worker).
        timeline: cut files longer than the window at pauses.
    """

    def __init__(self, model_path: str, timeline: bool):
        self.model_path, self.timeline = model_path, timeline
        self.model = None
        self._counts = {name: beam.metrics.Metrics.counter(NAMESPACE, name)
                        for name in ("files", "clips", "segments", "dead_letters")}

    def setup(self):
        self.model = open_export(self.model_path)

    def process(self, source: Source):
        self._counts["files"].inc()
        yield from self._decoded(source)

    def _decoded(self, source: Source):
        """The file's Clips, or its dead letter (after the segments read before a failure)."""
        from kemdy_tf.data.audio import AudioError

        try:
            with _local_copy(source.path) as local:
                yield from self._clips(source, local)
        except AudioError as error:
            yield self._dead(source.path, error.reason)
        except PredictError as error:
            yield self._dead(source.path, str(error))
        except Exception as error:  # a decoder's own failure is the file's, not the pipeline's
            yield self._dead(source.path, first_line(error))

    def _dead(self, file: str, reason: str):
        self._counts["dead_letters"].inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, (file, reason))

    def _clips(self, source: Source, local: str):
        from kemdy_tf import timeline

        model = self.model
        given = source.text is not None and str(source.text).strip() != ""
        if self.timeline and not given:
            audio = timeline.open_audio(local, model.sample_rate)
            if audio.duration > model.window_samples / model.sample_rate:
                yield from self._segments(source, audio)
                return
        result = Prediction(file=source.path)
        inference.set_transcript(result, source.text)
        wave, warnings = inference.load_clip(local, model)
        result.warnings += warnings
        self._counts["clips"].inc()
        yield Clip(result, wave, transcribe=source.text is None)

    def _segments(self, source: Source, audio):
        """predict_timeline's segments, each a Clip, standardised by the recording's own statistics."""
        from kemdy_tf import timeline

        model = self.model
        spans = timeline.find_spans(audio, model.window_samples / model.sample_rate)
        if not spans:
            yield beam.pvalue.TaggedOutput(NO_SPEECH, Prediction(
                file=source.path, start=0.0, end=round(audio.duration, 3),
                warnings=["no speech found (every part is quieter than the pause threshold)"]))
            return
        statistics, label = None, None
        if model.reads_speaker_statistics:
            statistics, used = model.enrol([audio.read(span, model.sample_rate) for span in spans[:MAX_ENROL_CLIPS]])
            label = f"recording ({used} segments)" if statistics is not None else "training set"
        for span in spans:
            wave = audio.read(span, model.sample_rate)[: model.window_samples]
            result = inference.segment_prediction(source.path, span, wave, model, label)
            self._counts["segments"].inc()
            yield Clip(result, wave, statistics, transcribe=True)


class _DecodeAndEnrolSpeaker(_Decode):
    """(speaker, Sources) -> that speaker's Clips, standardised by statistics enrolled from their
    first MAX_ENROL_CLIPS decodable clips in manifest order (predict_files' rule and labels)."""

    def process(self, keyed):
        speaker, sources = keyed
        sources = sorted(sources, key=lambda s: (s.order, s.path))
        self._counts["files"].inc(len(sources))
        items = (item for source in sources for item in self._decoded(source))
        held = []
        for item in items:  # until MAX_ENROL_CLIPS whole clips are decoded
            if isinstance(item, Clip) and item.prediction.start is None:
                held.append(item)
                if len(held) == MAX_ENROL_CLIPS:
                    break
            else:
                yield item  # dead letters, and timeline segments (their recording's statistics)
        # enrol_speaker labels what it is given: one template Prediction, copied to every clip.
        template = Prediction(file="")
        statistics = inference.enrol_speaker(self.model, [clip.wave for clip in held], speaker, [(template, None)])
        for item in itertools.chain(held, items):  # the rest still streams
            if isinstance(item, Clip) and item.prediction.start is None:
                item.statistics = statistics
                item.prediction.statistics = template.statistics
                item.prediction.warnings += template.warnings
            yield item


class _Transcribe(_Decode):
    """Clips given no transcript get Vosk's (one recogniser per worker process); others pass."""

    def setup(self):
        from kemdy_tf import stt

        super().setup()
        self.reason = stt.unavailable_reason()
        self.stt = None if self.reason else stt.recognizer()
        if self.reason:
            logger.warning("--transcribe: %s; clips given no transcript are predicted audio-only", self.reason)

    def process(self, clip: Clip):
        if clip.transcribe and self.stt is not None:
            try:
                inference.transcribe_into(clip.prediction, clip.wave[: self.model.window_samples],
                                          self.model.sample_rate, self.stt)
            except PredictError as error:  # this clip's recognition failed: audio-only, and said so
                clip.prediction.warnings.append(f"speech recognition failed: {error}")
        yield clip


# === Inputs ===


def read_manifest(path: str) -> list[Source]:
    """predict.py --manifest's rows (`path` relative to the CSV's folder, optional `text`, `speaker`).

    Raises:
        BulkError: missing, not UTF-8, unparseable, no `path` column or no rows.
    """
    import pandas as pd

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            frame = pd.read_csv(handle, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise BulkError(f"manifest {path} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except Exception as error:  # missing (Beam's IOError), or pandas' parser errors
        raise BulkError(f"cannot read manifest {path}: {first_line(error)}") from None
    if "path" not in frame.columns:
        raise BulkError(f"manifest {path} has no 'path' column (columns: {', '.join(frame.columns)})")
    if frame.empty:
        raise BulkError(f"manifest {path} has no rows")
    folder = FileSystems.split(path)[0]

    def located(p: str) -> str:
        if is_remote(p) or os.path.isabs(p):
            return p
        return FileSystems.join(folder, p) if is_remote(path) else str(os.path.join(folder, p) if folder else p)

    texts = list(frame["text"]) if "text" in frame.columns else [None] * len(frame)
    speakers = list(frame["speaker"]) if "speaker" in frame.columns else [None] * len(frame)
    return [Source(located(p), text, speaker or None, order)
            for order, (p, text, speaker) in enumerate(zip(frame["path"], texts, speakers))]


def input_kind(value: str) -> str:
    """"manifest" (a .csv), "folder" (a local folder, or a remote path ending in /) or "glob"."""
    if value.lower().endswith(".csv"):
        return "manifest"
    if value.endswith("/") or (not is_remote(value) and os.path.isdir(value)):
        return "folder"
    return "glob"


def _folder_pattern(folder: str) -> str:
    return FileSystems.join(folder.rstrip("/"), "*") if is_remote(folder) else os.path.join(folder, "*")


def _check_matches(pattern: str, value: str) -> None:
    try:
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as error:
        raise BulkError(f"cannot list --input {value}: {first_line(error)}") from None
    if not found:
        raise BulkError(f"--input {value} matches no file")


def read_sources(pipeline, value: str):
    """The input's Sources: a manifest's rows, or the files a folder holds or a glob matches.

    Raises:
        BulkError: the manifest cannot be read, or nothing matches.
    """
    from apache_beam.io import fileio

    kind = input_kind(value)
    if kind == "manifest":
        read_manifest(value)  # on the launcher: a bad manifest is one line now, not a failed job
        # ...and again on a worker: a million rows would not fit in the job's graph (beam.Create of them).
        sources = (pipeline | "manifest" >> beam.Create([value])
                   | "manifest rows" >> beam.FlatMap(read_manifest))
    else:
        pattern = _folder_pattern(value) if kind == "folder" else value
        _check_matches(pattern, value)
        sources = (pipeline | "match files" >> fileio.MatchFiles(pattern)
                   | "as sources" >> beam.Map(lambda found: Source(found.path)))
        if kind == "folder":
            sources |= "audio files only" >> beam.Filter(lambda s: s.path.lower().endswith(AUDIO_EXTENSIONS))
    return sources | "spread files" >> beam.Reshuffle()


# === Outputs ===


def columns(classes) -> list[str]:
    return ["file", "start", "end", "emotion", *[f"prob_{c}" for c in classes], "arousal", "valence",
            "transcript", "transcript_source", "statistics", "warnings"]


def parquet_schema(classes):
    import pyarrow as pa

    floats = {"start", "end", "arousal", "valence", *[f"prob_{c}" for c in classes]}
    return pa.schema([(name, pa.float64() if name in floats else pa.string()) for name in columns(classes)])


def row_of(prediction: Prediction, classes) -> dict:
    """One output row (None where there is no value: a whole clip's start/end, a missing valence)."""
    return {
        "file": prediction.file, "start": prediction.start, "end": prediction.end,
        "emotion": prediction.emotion,
        **{f"prob_{c}": prediction.probabilities.get(c) for c in classes},
        "arousal": prediction.arousal, "valence": prediction.valence, "transcript": prediction.transcript,
        "transcript_source": prediction.transcript_source, "statistics": prediction.statistics,
        "warnings": "; ".join(prediction.warnings),
    }


def csv_line(values) -> str:
    """One CSV line (quoted as needed; None as an empty cell)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _failed_batch(failed):
    """RunInference's dead letter (batch, error) -> one (file, reason) per clip of the batch."""
    batch, error = failed
    if isinstance(error, tuple) and len(error) == 3 and error[2]:  # Beam's (type, repr, traceback lines)
        reason = str(error[2][-1]).strip().splitlines()[0]  # the traceback's "Type: message" line
    else:
        reason = first_line(error) if isinstance(error, BaseException) else str(error).strip().splitlines()[0]
    beam.metrics.Metrics.counter(NAMESPACE, "dead_letters").inc(len(batch))
    return [(clip.prediction.file, f"inference failed: {reason}") for clip in batch]


def write_outputs(rows, dead, output: str, classes, num_shards: int) -> None:
    """OUT-SSSSS-of-NNNNN.csv / .parquet and OUT-dead-letters-00000-of-00001.csv."""
    names = columns(classes)
    (rows | "csv rows" >> beam.Map(lambda row: csv_line([row[name] for name in names]))
     | "write csv" >> beam.io.WriteToText(output, file_name_suffix=".csv", num_shards=num_shards,
                                          header=csv_line(names)))
    rows | "write parquet" >> beam.io.WriteToParquet(output, parquet_schema(classes), file_name_suffix=".parquet",
                                                     num_shards=num_shards)
    (dead | "dead letter rows" >> beam.MapTuple(lambda file, reason: csv_line([file, reason]))
     | "write dead letters" >> beam.io.WriteToText(f"{output}-dead-letters", file_name_suffix=".csv",
                                                   num_shards=1, header=csv_line(DEAD_LETTER_COLUMNS)))


# === The pipeline ===


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the command line resolved: the version folder, its classes, whether it reads speaker
    statistics, and the samples its window holds."""

    model_path: str
    classes: list
    reads_speaker_statistics: bool
    window_samples: int


def plan_for(model: str) -> Plan:
    """The export's version folder and metadata, read on the launching machine (no TensorFlow).

    Raises:
        BulkError: not an export (a remote --model must be a version folder).
    """
    import json

    from kemdy_tf import export

    try:
        if is_remote(model):
            path = model.rstrip("/")
            with FileSystems.open(f"{path}/assets/{export.METADATA_ASSET}",
                                  compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                metadata = json.loads(handle.read().decode("utf-8"))
        else:
            path = str(export.find_export(model))
            metadata = export.read_metadata(path)
    except export.ExportError as error:
        raise BulkError(str(error)) from None
    except Exception as error:
        raise BulkError(f"cannot read {model}/assets/{export.METADATA_ASSET} (a remote --model is a version "
                        f"folder, e.g. gs://bucket/saved_models/kemdy/3): {first_line(error)}") from None
    from kemdy_tf.data.audio import samples_for_frames

    try:
        classes = [str(c) for c in metadata["classes"]]
        features = metadata["features"]
        window = samples_for_frames(features["max_frames"], argparse.Namespace(**features))
    except (KeyError, TypeError):
        raise BulkError(f"{path}: assets/{export.METADATA_ASSET} lacks its classes or features") from None
    reads = bool((metadata.get("speaker_statistics") or {}).get("reads"))
    return Plan(path, classes, reads, window)


def build(pipeline, args, plan: Plan, transcribe: bool) -> None:
    """The pipeline: sources -> decoded clips (speakers enrolled) -> (STT) -> RunInference -> files."""
    sources = read_sources(pipeline, args.input)
    decoded = []
    if plan.reads_speaker_statistics:
        named = sources | "by speaker?" >> beam.Partition(lambda s, _: int(s.speaker is not None), 2)
        sources = named[0]
        decoded.append(
            named[1] | "key by speaker" >> beam.Map(lambda s: (s.speaker, s))
            | "group by speaker" >> beam.GroupByKey()
            | "decode and enrol" >> beam.ParDo(_DecodeAndEnrolSpeaker(plan.model_path, args.timeline))
            .with_outputs(DEAD_LETTERS, NO_SPEECH, main="clips"))
    decoded.append(sources | "decode" >> beam.ParDo(_Decode(plan.model_path, args.timeline))
                   .with_outputs(DEAD_LETTERS, NO_SPEECH, main="clips"))
    clips = [d.clips for d in decoded] | "clips" >> beam.Flatten()
    if transcribe:
        clips |= "spread clips" >> beam.Reshuffle()
        clips |= "transcribe" >> beam.ParDo(_Transcribe(plan.model_path, args.timeline))
    batches = clips | "batch by length" >> beam.ParDo(LengthBatches(args.batch_size, plan.window_samples))
    predicted, failed = (batches | "model" >> RunInference(ExportHandler(plan.model_path)).with_exception_handling())
    rows = (([predicted, *[d[NO_SPEECH] for d in decoded]] | "predictions" >> beam.Flatten())
            | "rows" >> beam.Map(row_of, plan.classes))
    dead = ([*[d[DEAD_LETTERS] for d in decoded],
             failed.failed_inferences | "failed batches" >> beam.FlatMap(_failed_batch)]
            | "dead letters" >> beam.Flatten())
    write_outputs(rows, dead, args.output, plan.classes, args.num_shards)


def _counter(result, name: str) -> int:
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return int(sum((c.committed if c.committed is not None else c.attempted) or 0 for c in found))


def _defaults(beam_args: list) -> list:
    """Beam flags this command sets unless given: the DirectRunner, and workers that log only errors
    (a multi-process DirectRunner's workers otherwise print their gRPC lifecycle at INFO)."""
    given = {a.split("=")[0] for a in beam_args if a.startswith("--")}
    defaults = {"--runner": "DirectRunner", "--default_sdk_harness_log_level": "ERROR"}
    return [f"{flag}={value}" for flag, value in defaults.items() if flag not in given]


def main(argv=None) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from kemdy_tf import stt
    from kemdy_tf.logs import FORMAT

    parser = argparse.ArgumentParser(prog="python -m kemdy_tf.bulk", description=__doc__.split("\n\n")[0],
                                     epilog="Other flags go to Beam (--runner DirectRunner, --direct_num_workers "
                                            "2, Dataflow/Flink/Spark options: docs/bulk.md).")
    parser.add_argument("--model", required=True, help="an export: version folder (saved_models/kemdy/N) or "
                                                       "base folder (its highest version); remote: a version folder")
    parser.add_argument("--input", required=True, help="a folder, a glob ('clips/*.wav', gs://...), or a CSV "
                                                       "manifest (path, optional text, speaker)")
    parser.add_argument("--output", required=True, help="prefix of the output files (OUT-00000-of-00002.csv, ...)")
    parser.add_argument("--timeline", action="store_true",
                        help="cut files longer than the model's window at pauses into segments")
    parser.add_argument("--transcribe", action="store_true",
                        help="transcribe clips given no transcript with Vosk (requirements-stt.txt)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="most clips per call of the model (default %(default)s)")
    parser.add_argument("--num-shards", type=int, default=NUM_SHARDS,
                        help="output shards of the CSV and Parquet (fixed, so reruns overwrite; default %(default)s)")
    args, beam_args = parser.parse_known_args(argv)
    # quiet_logs' levels without its TensorFlow import: a launcher of worker processes (or of a
    # remote runner) needs none, and the in-process runner imports it quietly (open_export).
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.getLogger("kemdy_tf").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # The local job service repeats each worker's log lines; the workers' own errors still show.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    try:
        if args.batch_size < 1 or args.num_shards < 1:
            raise BulkError("--batch-size and --num-shards must be at least 1")
        plan = plan_for(args.model)
        transcribe = args.transcribe
        if transcribe and stt.unavailable_reason():
            print(f"warning: --transcribe: {stt.unavailable_reason()}; clips given no transcript are predicted "
                  "audio-only", file=sys.stderr)
            transcribe = False
        beam_args = [*_defaults(beam_args), *beam_args]
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
        build(pipeline, args, plan, transcribe)
    except BulkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = pipeline.run()
    result.wait_until_finish()
    files, clips, segments, dead = (_counter(result, n) for n in ("files", "clips", "segments", "dead_letters"))
    print(f"{files} files: {clips} clips and {segments} timeline segments predicted, {dead} dead letters\n"
          f"  {args.output}-SSSSS-of-{args.num_shards:05d}.csv / .parquet\n"
          f"  {args.output}-dead-letters-00000-of-00001.csv")
    return 0


if __name__ == "__main__":
    # Run as kemdy_tf.bulk, not __main__: the DoFns pickled for Beam's workers must name an importable module.
    from kemdy_tf.bulk import main as _main

    sys.exit(_main())
