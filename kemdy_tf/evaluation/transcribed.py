"""The deployment row: audio+text models fed speech-recognition transcripts.

A served model rarely gets a human transcript: `predict.py` without `--text` feeds it
Vosk's. This runs every model that reads both audio and transcript (the fusion model)
on the split's audio with the transcripts replaced by what `kemdy_tf.stt` heard, under
the name `<model>_stt`, and measures those transcripts' character error rate against
the references (`kemdy_tf.stt.character_error_rate`: spaces and punctuation stripped).
The reference-transcript row stays the upper bound, `<model>_no_text` the lower one.
"""

from __future__ import annotations

import typing

import pandas as pd

from kemdy_tf.evaluation.predict import input_names, predict_split

STT_SUFFIX = "_stt"


def vosk_transcriber(sample_rate: int = 16000) -> typing.Callable[[str], str]:
    """`transcribe(wav_path) -> text` with the process's Vosk recogniser.

    Raises:
        kemdy_tf.stt.SttUnavailable: speech recognition is not installed.
    """
    from kemdy_tf import stt
    from kemdy_tf.data.audio import load_audio

    reason = stt.unavailable_reason()
    if reason:
        raise stt.SttUnavailable(reason)
    recognizer = stt.recognizer()
    return lambda path: recognizer.transcribe(load_audio(path, sample_rate), sample_rate).text


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
    heard = [clean_transcript(transcribe(path)) for path in table["wav_path"]]
    references = table["text"].fillna("").astype(str).tolist()
    frame = predict_split(chosen, make_dataset(table.assign(text=heard)), classes, table=table, blank_variants=False)
    summary = {"models": list(chosen), "clips": len(heard),
               "cer": round(stt.character_error_rate(heard, references), 4),
               "transcripts": [{"segment_id": s, "reference": r, "stt": h}
                               for s, r, h in zip(table["segment_id"], references, heard)]}
    return frame, summary
