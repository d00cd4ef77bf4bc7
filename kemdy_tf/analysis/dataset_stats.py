"""Numbers that describe an utterance table: lengths, durations, labels, ties, tags.

Every function takes the utterance table (docs/architecture.md) and returns plain
Python / pandas values; `report.py` turns them into plots, markdown and JSON.
Nothing here decodes audio: durations come from wav headers.

Example:
    >>> table, skips = read_kemdy20("KEMDy20_v1_1")
    >>> emotion_counts(table)["neutral"]
    >>> tie_stats(table)["tied"]
"""

from __future__ import annotations

import collections
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from kemdy_tf.config import ALL_EMOTIONS
from kemdy_tf.data import labels as labels_lib
from kemdy_tf.data.transcripts import NOISE_TAGS

NO_LABEL = "(none)"  # rows whose primary label is empty (manifests without a target emotion)
VA_BINS = np.arange(1.0, 5.0 + 0.25, 0.25)  # valence/arousal histogram edges (1..5, 0.25 wide)

ProgressFn = typing.Callable[[str, int, int], None]


def describe(values: typing.Iterable[float]) -> dict:
    """count, mean, std, min, percentiles 5/25/50/75/95 and max of the finite values."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return {"count": 0}
    p5, p25, p50, p75, p95 = np.percentile(array, [5, 25, 50, 75, 95])
    return {"count": int(array.size), "mean": float(array.mean()), "std": float(array.std()),
            "min": float(array.min()), "p5": float(p5), "p25": float(p25), "median": float(p50),
            "p75": float(p75), "p95": float(p95), "max": float(array.max())}


# === Transcripts ===


def word_counts(table: pd.DataFrame) -> pd.Series:
    """Words per utterance in the cleaned transcript (`text`, noise tags removed)."""
    return table["text"].fillna("").astype(str).str.split().str.len().astype(int)


def token_counts(texts: typing.Iterable[str], model_path: str | Path) -> np.ndarray:
    """SentencePiece pieces per text (no BOS/EOS, no truncation), with the model at `model_path`.

    The `sentencepiece` package itself is used for counting: it is the same model the
    in-graph keras-hub tokenizer runs, without loading TensorFlow.
    """
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    return np.array([len(ids) for ids in processor.encode([str(t) for t in texts])], dtype=int)


def _tag_patterns() -> tuple[re.Pattern, re.Pattern]:
    """Regexes that find the tags the way `transcripts.clean_transcript` removes them.

    Letter tags (`c/ n/ ...`) count at the start of a whitespace token, repeated
    (`n/l/`); the single-character marks (`* + /`) count wherever they remain.
    """
    letters = sorted(tag for tag in NOISE_TAGS if len(tag) == 2 and tag.endswith("/"))
    marks = sorted(tag for tag in NOISE_TAGS if len(tag) == 1)
    letter = "|".join(re.escape(tag) for tag in letters)
    return re.compile(rf"^(?:{letter})+"), re.compile("|".join(re.escape(m) for m in marks))


def noise_tag_counts(texts: typing.Iterable[str]) -> pd.DataFrame:
    """How often each KEMDy20 noise tag occurs in raw transcripts.

    Returns:
        DataFrame indexed by tag (`NOISE_TAGS` order) with `occurrences` (every use),
        `transcripts` (transcripts using it at least once) and `meaning`.
    """
    letter_run, mark = _tag_patterns()
    letter_tag = re.compile(r"[^/]/")
    occurrences: collections.Counter = collections.Counter()
    transcripts: collections.Counter = collections.Counter()
    for text in texts:
        seen: set[str] = set()
        for token in str(text).split():
            run = letter_run.match(token)
            rest = token
            if run:
                for tag in letter_tag.findall(run.group(0)):
                    occurrences[tag] += 1
                    seen.add(tag)
                rest = token[run.end():]
            for found in mark.findall(rest):
                occurrences[found] += 1
                seen.add(found)
        transcripts.update(seen)
    tags = list(NOISE_TAGS)
    return pd.DataFrame({"occurrences": [occurrences[t] for t in tags],
                         "transcripts": [transcripts[t] for t in tags],
                         "meaning": [NOISE_TAGS[t] for t in tags]}, index=pd.Index(tags, name="tag"))


def top_words(table: pd.DataFrame, n: int = 20) -> list[tuple[str, int]]:
    """The `n` most frequent words of the cleaned transcripts (for the markdown report)."""
    counter: collections.Counter = collections.Counter()
    for text in table["text"].fillna("").astype(str):
        counter.update(text.split())
    return counter.most_common(n)


# === Audio ===


def wav_durations(table: pd.DataFrame, problems: list[dict] | None = None,
                  progress: ProgressFn | None = None) -> pd.Series:
    """Seconds per utterance from the wav header (`soundfile.info`); no audio is decoded.

    An unreadable wav gives NaN and, when `problems` is given, an entry
    `{file, row, segment_id, reason}` (row is the table row).
    """
    durations = np.full(len(table), np.nan)
    paths = table["wav_path"].astype(str).tolist()
    ids = table["segment_id"].astype(str).tolist()
    for i, path in enumerate(paths):
        try:
            durations[i] = soundfile.info(path).duration
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            if problems is not None:
                problems.append({"file": path, "row": i, "segment_id": ids[i],
                                 "reason": f"wav header unreadable: {error}"})
        if progress is not None and ((i + 1) % 200 == 0 or i + 1 == len(paths)):
            progress("wav headers", i + 1, len(paths))
    return pd.Series(durations, index=table.index, name="duration_s")


# === Labels ===


def emotions(table: pd.DataFrame) -> pd.Series:
    """The primary label of each row, `(none)` where it is empty."""
    return table["emotion"].fillna("").astype(str).replace("", NO_LABEL)


def emotion_order(values: typing.Iterable[str]) -> list[str]:
    """KEMDy20's emotions in the project's order, then anything else found, then `(none)`."""
    present = set(values)
    known = [e for e in ALL_EMOTIONS if e in present]
    other = sorted(present - set(ALL_EMOTIONS) - {NO_LABEL})
    return known + other + ([NO_LABEL] if NO_LABEL in present else [])


def emotion_counts(table: pd.DataFrame) -> dict[str, int]:
    """Utterances per primary emotion; every row is counted once (sum = table size)."""
    labels = emotions(table)
    counts = labels.value_counts()
    return {name: int(counts[name]) for name in emotion_order(labels)}


def emotion_crosstab(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Utterances per `by` value (rows; `session`, `sex`, ...) and primary emotion (columns)."""
    labels = emotions(table)
    groups = table[by].fillna("").astype(str).replace("", "(unknown)")
    counts = pd.crosstab(groups, labels)
    return counts.reindex(columns=emotion_order(labels), fill_value=0)


def tie_stats(table: pd.DataFrame) -> dict:
    """Utterances annotated with several emotions, and which combinations.

    Returns:
        {"tied": int, "share": float, "combinations": {"happy+neutral": n, ...}}; a
        combination is its emotions sorted and joined by `+`, so `happy;neutral` and
        `neutral;happy` are counted together.
    """
    combos: collections.Counter = collections.Counter()
    for raw in table["labels"].fillna("").astype(str):
        names = labels_lib.split_labels(raw)
        if len(names) > 1:
            combos["+".join(sorted(names))] += 1
    tied = int(sum(combos.values()))
    return {"tied": tied, "share": tied / len(table) if len(table) else 0.0,
            "combinations": dict(combos.most_common())}


def valence_arousal_by_emotion(table: pd.DataFrame) -> dict:
    """Per primary emotion: valence and arousal summaries and histogram counts (`VA_BINS`)."""
    labels = emotions(table)
    out: dict = {"bins": VA_BINS.tolist()}
    for name in emotion_order(labels):
        rows = table[labels == name]
        out[name] = {}
        for column in ("valence", "arousal"):
            values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            hist, _ = np.histogram(values, bins=VA_BINS)
            out[name][column] = {**describe(values), "histogram": hist.astype(int).tolist()}
    return out


# === The reader's skip report ===


def skip_summary(skips: pd.DataFrame) -> dict:
    """Skipped rows in total and per reason kind (the text before the first `:`)."""
    if skips is None or len(skips) == 0:
        return {"skipped": 0, "reasons": {}}
    kinds = skips["reason"].astype(str).str.partition(":")[0].value_counts()
    return {"skipped": int(len(skips)), "reasons": {str(k): int(v) for k, v in kinds.items()},
            "remapped": int(getattr(skips, "attrs", {}).get("remapped", 0))}
