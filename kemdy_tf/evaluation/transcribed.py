"""The deployment row: audio+text models fed speech-recognition transcripts.

A served model rarely gets a human transcript: `predict.py` without `--text` feeds it
Vosk's. This runs every model that reads both audio and transcript (the fusion model)
on the split's audio with the transcripts replaced by what `kemdy_tf.stt` heard, under
the name `<model>_stt`, and measures those transcripts' character error rate against
the references (`kemdy_tf.stt.character_error_rate`: spaces and punctuation stripped).
The reference-transcript row stays the upper bound, `<model>_no_text` the lower one.

Transcribing runs at about real time, so `vosk_transcriber(cache=...)` keeps what it
heard in `WORKDIR/stt_transcripts.jsonl` (`CACHE_NAME`), one JSON line per clip, keyed
by the recogniser's model folder and the SHA-1 of the clip's bytes: evaluating the run
again (another split, another `--out`) transcribes only clips it has not heard yet.
Lines are appended as clips are transcribed, so an interrupted run keeps its progress;
delete the file to transcribe afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import typing

import pandas as pd

from kemdy_tf.evaluation.predict import input_names, predict_split

log = logging.getLogger("kemdy_tf.evaluation")

STT_SUFFIX = "_stt"
CACHE_NAME = "stt_transcripts.jsonl"  # in the workdir: what Vosk heard, per clip


def vosk_transcriber(sample_rate: int = 16000, cache: str | pathlib.Path | None = None) -> typing.Callable[[str], str]:
    """`transcribe(wav_path) -> text` with the process's Vosk recogniser.

    Args:
        sample_rate: the rate clips are read at.
        cache: a `CACHE_NAME` file: transcripts are read from and appended to it
            (a `CachedTranscriber`); None: every call transcribes.

    Raises:
        kemdy_tf.stt.SttUnavailable: speech recognition is not installed.
    """
    from kemdy_tf import stt
    from kemdy_tf.data.audio import load_audio

    reason = stt.unavailable_reason()
    if reason:
        raise stt.SttUnavailable(reason)
    recognizer = stt.recognizer()

    def transcribe(path: str) -> str:
        return recognizer.transcribe(load_audio(path, sample_rate), sample_rate).text

    if cache is None:
        return transcribe
    return CachedTranscriber(transcribe, cache, os.path.abspath(stt.model_folder()))


class CachedTranscriber:
    """`transcribe(wav_path) -> text` that asks `transcribe` only for clips `path` lacks.

    Args:
        transcribe: the recogniser, `wav path -> text`.
        path: the JSON-lines cache (created on the first new transcript).
        recognizer: what made the transcripts (the Vosk model folder): lines of another
            recogniser are kept in the file but not used.

    `reused` and `transcribed` count the calls answered from the file and by `transcribe`.
    A cache that cannot be written (a read-only workdir) is warned about once; the
    transcripts are still returned.
    """

    def __init__(self, transcribe: typing.Callable[[str], str], path: str | pathlib.Path, recognizer: str):
        self.transcribe, self.path, self.recognizer = transcribe, pathlib.Path(path), recognizer
        self.reused = self.transcribed = 0
        self._writable = True
        self._known: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run
                if isinstance(entry, dict) and entry.get("recognizer") == recognizer:
                    self._known[entry.get("audio_sha1")] = str(entry.get("text", ""))

    def __call__(self, wav_path: str) -> str:
        key = hashlib.sha1(pathlib.Path(wav_path).read_bytes()).hexdigest()
        if key in self._known:
            self.reused += 1
            return self._known[key]
        text = self.transcribe(wav_path)
        self.transcribed += 1
        self._known[key] = text
        if self._writable:
            line = {"recognizer": self.recognizer, "audio_sha1": key, "wav_path": str(wav_path), "text": text}
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            except OSError as error:
                self._writable = False
                log.warning("cannot write the transcript cache %s (%s): transcripts are not kept", self.path, error)
        return text


def stt_predictions(models: typing.Mapping[str, object], table: pd.DataFrame, make_dataset, classes,
                    transcribe: typing.Callable[[str], str]) -> tuple[pd.DataFrame, dict]:
    """`<model>_stt` predictions on `table`'s audio with transcripts from `transcribe`, and their CER.

    Args:
        models: the run's stage models by name; those reading audio and text are used.
        table: the split's utterance table (`wav_path`, `text`, `segment_id`).
        make_dataset: `table -> evaluation dataset` (`runs.split_dataset` bound to the run).
        classes: the run's classes.
        transcribe: `wav path -> transcript`, e.g. `vosk_transcriber()`.

    Returns:
        (the predictions table of `predict.predict_split`, `{"models", "clips", "cer",
        "transcripts"}`); an empty table when no model reads text.
    """
    from kemdy_tf import stt
    from kemdy_tf.data.transcripts import clean_transcript

    chosen = {name + STT_SUFFIX: model for name, model in models.items()
              if {"log_mel", "token_ids"} <= set(input_names(model))}
    if not chosen:
        return pd.DataFrame(), {"models": [], "clips": 0, "cer": None, "transcripts": []}
    log.info("%s: transcribing the split's %d clips (about real time per clip not yet transcribed)",
             ", ".join(chosen), len(table))
    heard = [clean_transcript(transcribe(path)) for path in table["wav_path"]]
    references = table["text"].fillna("").astype(str).tolist()
    frame = predict_split(chosen, make_dataset(table.assign(text=heard)), classes, table=table, blank_variants=False)
    summary = {"models": list(chosen), "clips": len(heard),
               "cer": round(stt.character_error_rate(heard, references), 4),
               "transcripts": [{"segment_id": s, "reference": r, "stt": h}
                               for s, r, h in zip(table["segment_id"], references, heard)]}
    return frame, summary
