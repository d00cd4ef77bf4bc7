"""A plain CSV manifest (any dataset) <-> the utterance table.

A manifest has one row per utterance and a header naming its columns:

    path      required  audio file, relative to the manifest's folder (or absolute)
    text      required  transcript (KEMDy noise tags are removed unless clean_tags=False)
    emotion   required  one emotion, or ties joined by ';' ("happy;neutral")
    valence, arousal    optional  numbers in 1..5 (empty = unknown, NaN)
    speaker, session    optional  used by speaker/session-disjoint splits
    split               optional  train / val / test only
    id                  optional  segment id (default: the audio file's stem, or its path
                                  relative to the manifest without extension, `spkA/000`,
                                  when distinct files of the manifest share that stem)
    clean_tags          optional  per row: false/0/no keeps `text` as written (no tag
                                  removal), true/1/yes removes tags; empty = the reader's
                                  `clean_tags` argument

Every other utterance-table column (script, sex, text_raw, wav_start, rater_*,
txt_path, eda_path, ...) is taken from the manifest when it has it, and any other
column is kept as is. `write_manifest` writes exactly this format, so
`read_manifest(write_manifest(table, csv))` gives the table back.

    >>> table, skips = read_manifest("my_data/manifest.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os

import pandas as pd

from kemdy_tf.config import ALL_EMOTIONS
from kemdy_tf.data import checks
from kemdy_tf.data import labels as labels_lib
from kemdy_tf.data.schema import FLOAT_COLUMNS, SKIP_COLUMNS, TABLE_COLUMNS, check_skips, check_table
from kemdy_tf.data.transcripts import clean_transcript

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "text", "emotion")
SPLITS = ("train", "val", "test")
# Table columns that hold paths: written relative to the manifest, read back absolute.
_PATH_COLUMNS = ("txt_path", "eda_path", "ibi_path", "temp_path")
# Table columns a manifest spells differently; a manifest using these names is ambiguous.
_RENAMED = {"segment_id": "id", "wav_path": "path", "labels": "emotion"}
# Table columns copied from the manifest when present, else filled per the contract.
_OPTIONAL_TEXT = ("script", "sex", "rater_emotions", "rater_valence", "rater_arousal")
_EMPTY = ("", "nan", "none", "null")
_TRUE, _FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


class _Skip(Exception):
    """A manifest row that cannot be used; the message is the skip report's reason."""


def read_manifest(csv_path: str | os.PathLike, clean_tags: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads a CSV manifest into the utterance table; never decodes audio.

    Args:
        csv_path: the manifest (UTF-8, with or without BOM).
        clean_tags: remove KEMDy noise tags from `text` (harmless on clean text;
            turn off for datasets whose text uses `*`, `+` or `/` as real characters).

    Returns:
        `(table, skips)`: the utterance table (columns `TABLE_COLUMNS`, then `split`
        when the manifest has it, then the manifest's other columns) and the skip
        report (`file, row, segment_id, reason`; `row` is the CSV line number, the
        header being line 1). Skipped: empty or missing audio file, empty emotion,
        empty text, non-numeric or out-of-range valence/arousal, repeated id (the
        same file listed twice, or an `id` given twice). More than
        `checks.SKIP_WARN_SHARE` of the rows skipped is logged as a warning naming
        the share and the reasons.
        `emotion` is `labels.primary_label` over every known emotion, "" when none
        of the row's labels is one (the row stays; training leaves it out).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ValueError: a required column is missing, a column is named like a derived
            table column (`segment_id`, `wav_path`, `labels`), or `split` or
            `clean_tags` holds an unknown value (the file and line are named).
        checks.NoUtterancesError: (a ValueError) the manifest has no data row, or
            every row was skipped (the message names the file and the reasons).
    """
    csv_path = os.path.abspath(os.fspath(csv_path))
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"manifest {csv_path} does not exist")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise checks.NoUtterancesError(f"no utterances: manifest {csv_path} is empty (no header, no rows)",
                                       f"manifest {csv_path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {csv_path} is not a readable UTF-8 CSV: {error}") from None
    frame.columns = [str(name).strip() for name in frame.columns]
    _check_columns(frame, csv_path)
    if "split" in frame.columns:
        frame["split"] = _check_split(frame["split"], csv_path)
    folder = os.path.dirname(csv_path)
    rows = frame.to_dict("records")
    default_ids = _default_ids(rows, folder)
    records, skipped, seen = [], [], {}
    for index, row in enumerate(rows):
        line = index + 2  # the header is line 1
        segment_id = row.get("id", "").strip() or default_ids[index]
        try:
            record = _record(row, segment_id, folder, _clean_tags(row, clean_tags, csv_path, line))
            if segment_id in seen:
                raise _Skip(f"duplicate id: first seen on line {seen[segment_id]}")
        except _Skip as skip:
            skipped.append((csv_path, line, segment_id, str(skip)))
            continue
        seen[segment_id] = line
        records.append(record)
    known = {*REQUIRED_COLUMNS, "id", "split", "clean_tags", *TABLE_COLUMNS}
    columns = list(TABLE_COLUMNS) + (["split"] if "split" in frame.columns else [])
    columns += [c for c in frame.columns if c not in known]
    table = pd.DataFrame(records, columns=columns)
    table[list(FLOAT_COLUMNS)] = table[list(FLOAT_COLUMNS)].astype(float)
    skips = pd.DataFrame(skipped, columns=list(SKIP_COLUMNS)).astype({"row": int})
    unlabelled = table["emotion"] == ""
    if unlabelled.any():
        # Kept: `labels` still holds them, and they train when data.classes names them.
        others = sorted({name for cell in table.loc[unlabelled, "labels"] for name in cell.split(";") if name})
        logger.info("%s: %d rows have labels outside KEMDy20's emotions (%s); they train only when "
                    "data.classes names them", csv_path, int(unlabelled.sum()), ", ".join(others[:5]))
    checks.check_not_empty(len(table), skips, f"manifest {csv_path}")
    if skipped and not checks.warn_if_many_skipped(len(table), skips, f"manifest {csv_path}", logger):
        logger.warning("%s: %d rows skipped (see the skip report)", csv_path, len(skipped))
    return check_table(table, str(csv_path)), check_skips(skips, str(csv_path))


def _check_columns(frame: pd.DataFrame, csv_path: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"manifest {csv_path} lacks required column(s) {missing}; it has {list(frame.columns)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)})"
        )
    clashing = [c for c in _RENAMED if c in frame.columns]
    if clashing:
        spelled = ", ".join(f"{c} -> {_RENAMED[c]}" for c in clashing)
        raise ValueError(f"manifest {csv_path} has column(s) {clashing}; a manifest spells them: {spelled}")


def _check_split(values: pd.Series, csv_path: str) -> pd.Series:
    cleaned = values.str.strip().str.lower()
    bad = ~cleaned.isin(SPLITS)
    if bad.any():
        index = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"manifest {csv_path} line {index + 2}: split {values.iloc[index]!r} is not one of "
            f"{', '.join(SPLITS)} ({int(bad.sum())} such row(s))"
        )
    return cleaned


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path.strip()))[0]


def _default_ids(rows: list[dict], folder: str) -> list[str]:
    """Each row's id when it has no `id`: the file's stem, unless distinct files share it.

    `spkA/000.wav` and `spkB/000.wav` both have the stem `000`; such rows get the path
    relative to the manifest's folder without extension (`spkA/000`), so distinct files
    never collide. The same file listed twice keeps one id (and is skipped as a repeat).
    """
    files_of_stem: dict[str, set[str]] = {}
    for row in rows:
        files_of_stem.setdefault(_stem(row["path"]), set()).add(_resolve(folder, row["path"]))
    ids = []
    for row in rows:
        stem = _stem(row["path"])
        if len(files_of_stem[stem]) > 1 and row["path"].strip():
            relative = _relative(_resolve(folder, row["path"]), folder)
            ids.append(os.path.splitext(relative)[0].replace(os.sep, "/"))
        else:
            ids.append(stem)
    return ids


def _clean_tags(row: dict, default: bool, csv_path: str, line: int) -> bool:
    value = str(row.get("clean_tags", "")).strip().lower()
    if not value:
        return default
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"manifest {csv_path} line {line}: clean_tags {row['clean_tags']!r} is not one of "
                     f"true/false/1/0/yes/no (or empty)")


def _resolve(folder: str, path: str) -> str:
    path = path.strip()
    return os.path.normpath(os.path.join(folder, path)) if path else ""


def _number(row: dict, name: str) -> float:
    value = row.get(name, "").strip()
    if value.lower() in _EMPTY:
        return math.nan
    try:
        number = float(value)
    except ValueError:
        raise _Skip(f"malformed row: {name} {value!r} is not a number") from None
    if name in ("valence", "arousal") and not 1 <= number <= 5:
        raise _Skip(f"malformed row: {name} {value!r} is outside 1..5")
    return number


def _record(row: dict, segment_id: str, folder: str, clean_tags: bool) -> dict:
    if not row["path"].strip():
        raise _Skip("missing wav: path is empty")
    wav_path = _resolve(folder, row["path"])
    if not os.path.isfile(wav_path):
        raise _Skip(f"missing wav: {wav_path} does not exist or is not a file")
    if os.path.getsize(wav_path) == 0:
        raise _Skip(f"empty wav: {wav_path} has 0 bytes")
    names = labels_lib.split_labels(row["emotion"]) if row["emotion"].strip().lower() not in _EMPTY else ()
    if not names:
        raise _Skip(f"empty label: emotion cell is {row['emotion']!r}")
    text_raw = row.get("text_raw", "").strip() or row["text"].strip()
    text = clean_transcript(row["text"]) if clean_tags else " ".join(row["text"].split())
    if not text:
        raise _Skip(f"empty transcript: text is {row['text']!r}")
    record = dict(row)  # extra columns are kept as written
    record.update({
        "segment_id": segment_id,
        "session": row.get("session", "").strip(),
        "speaker": row.get("speaker", "").strip(),
        "wav_path": wav_path,
        "text_raw": text_raw,
        "text": text,
        "labels": ";".join(names),
        "emotion": labels_lib.primary_label(names, ALL_EMOTIONS) or "",
        "valence": _number(row, "valence"),
        "arousal": _number(row, "arousal"),
        "wav_start": _number(row, "wav_start"),
        "wav_end": _number(row, "wav_end"),
    })
    for name in _OPTIONAL_TEXT:
        record[name] = row.get(name, "").strip()
    for name in _PATH_COLUMNS:
        record[name] = _resolve(folder, row.get(name, ""))
    return record


def write_manifest(table: pd.DataFrame, csv_path: str | os.PathLike) -> str:
    """Writes any utterance table as a manifest, paths relative to the CSV's folder.

    Columns: `id, path, text, emotion` (all of the row's `labels`, so ties survive),
    `valence, arousal, speaker, session`, `split` when the table has it, then the
    table's other columns. Paths on another drive (Windows) stay absolute.

    Args:
        table: an utterance table (e.g. from `read_kemdy20` or `read_manifest`).
        csv_path: where to write; its folder is created.

    Returns:
        The absolute path written.
    """
    csv_path = os.path.abspath(os.fspath(csv_path))
    folder = os.path.dirname(csv_path)
    os.makedirs(folder, exist_ok=True)
    missing = [c for c in ("segment_id", "wav_path", "text", "labels") if c not in table.columns]
    if missing:
        raise ValueError(f"cannot write a manifest from a table without column(s) {missing}")
    out = pd.DataFrame({
        "id": table["segment_id"],
        "path": table["wav_path"].map(lambda p: _relative(p, folder)),
        "text": table["text"],
        "emotion": table["labels"],
    })
    for name in ("valence", "arousal", "speaker", "session", "split"):
        if name in table.columns:
            out[name] = table[name]
    skip = set(out.columns) | {"segment_id", "wav_path", "labels", "emotion"}
    for name in table.columns:
        if name not in skip:
            out[name] = table[name].map(lambda p: _relative(p, folder)) if name in _PATH_COLUMNS else table[name]
    out.to_csv(csv_path, index=False, encoding="utf-8")
    return csv_path


def _relative(path: str, folder: str) -> str:
    if not isinstance(path, str) or not path:
        return ""
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return path
