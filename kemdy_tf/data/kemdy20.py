"""Reader of the real ETRI KEMDy20 layout -> the utterance table and a skip report.

The layout (`KEMDy20_v1_1/` after unzipping):

    annotation/Sess01_eval.csv ... Sess40_eval.csv    two header rows, 37 columns
    wav/Session01/<segment id>.wav and .txt           side by side, flat
    EDA/ IBI/ TEMP/ SessionNN/Sess01_script01_User001F.csv   E4 wristband, per speaker+script

Annotation columns are read by position, because rater names differ between
sessions and some header cells are a single space: 0 Numb, 1-2 wav start/end,
3 Segment ID, 4-6 total evaluation (emotion, valence, arousal), 7-36 ten raters x
(emotion, valence, arousal).

What makes a row usable (anything else is skipped and listed, with the CSV file, its
1-based line number and the reason):
    * cells 0-6 present; segment id well formed; emotion non-empty and every name a
      KEMDy20 emotion (ties `happy;neutral` keep all names); valence and arousal
      numbers in 1..5; wav start/end numbers or empty. Rater cells (7-36) may be
      missing or empty (short rows are padded); cells beyond 37 must be empty
      (Excel's trailing commas), otherwise the row is malformed.
    * its wav exists and its header (opened with `soundfile.SoundFile`, no decoding) says
      it has at least one frame; its transcript exists, decodes, and is not empty
      once the noise tags are removed.
    * its segment id was not seen before.
An annotation file that cannot be decoded at all is one entry with row 0.

Segment ids are resolved against the wav files on disk: `Sess17_eval.csv` names
some segments with another session's prefix, so an id that is not on disk is tried
with the annotation file's own session. Such remaps are not skips: they are counted
in `skips.attrs["remapped"]` (original -> resolved id in `skips.attrs["remaps"]`)
and logged as a warning. The table records the id as it lives on disk.

Command line: `python -m kemdy_tf.data.kemdy20 ROOT` prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import math
import os
import re
import sys
import typing

import pandas as pd
import soundfile

from kemdy_tf.config import ALL_EMOTIONS
from kemdy_tf.data import checks
from kemdy_tf.data import labels as labels_lib
from kemdy_tf.data.schema import FLOAT_COLUMNS, SKIP_COLUMNS, TABLE_COLUMNS, check_skips, check_table  # noqa: F401
from kemdy_tf.data.transcripts import TranscriptError, clean_transcript, read_transcript

logger = logging.getLogger(__name__)

N_COLUMNS = 37
N_RATERS = 10
_TOTAL_EVALUATION = 7  # cells 0-6 are required
SEGMENT_ID = re.compile(r"^(Sess(\d+))_(script\d+)_(User\d+([FM]))_(\d+)$")
_ANNOTATION_FILE = re.compile(r"^Sess(\d+)_eval\.csv$", re.IGNORECASE)
_E4_SIGNALS = ("EDA", "IBI", "TEMP")
_EMPTY = ("", "nan", "none", "null")


# === Finding the dataset ===


def find_root(path: str | os.PathLike) -> str:
    """The KEMDy20 root: `path` itself, or the one folder inside it holding `annotation/`.

    Accepts the root (`.../KEMDy20_v1_1`) or the folder it was unzipped into.

    Raises:
        FileNotFoundError: `path` does not exist, or neither it nor any folder
            directly inside it has `annotation/` and `wav/`.
        ValueError: several folders inside `path` look like a KEMDy20 root.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"KEMDy20 folder {path} does not exist or is not a folder")
    if _looks_like_root(path):
        return path
    candidates = sorted(
        entry.path for entry in os.scandir(path) if entry.is_dir() and _looks_like_root(entry.path)
    )
    if len(candidates) > 1:
        named = [c for c in candidates if "kemdy20" in os.path.basename(c).lower()]
        if len(named) == 1:
            return named[0]
        raise ValueError(f"{path} holds several KEMDy20-like folders, name one: {candidates}")
    if candidates:
        return candidates[0]
    found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(path))
    raise FileNotFoundError(
        f"{path} is not a KEMDy20 folder: expected {path}/annotation/Sess01_eval.csv ... and "
        f"{path}/wav/Session01/..., or a folder inside it (e.g. KEMDy20_v1_1/) laid out so. "
        f"Found: {', '.join(found[:20]) or 'nothing'}{' ...' if len(found) > 20 else ''}"
    )


def _looks_like_root(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "annotation")) and os.path.isdir(os.path.join(path, "wav"))


def annotation_files(root: str, sessions: typing.Iterable[int | str] | None = None) -> list[tuple[int, str]]:
    """`(session number, path)` of every `annotation/SessNN_eval.csv`, by session.

    Args:
        root: the KEMDy20 root (see `find_root`).
        sessions: keep only these sessions: numbers (`17`) or names (`"Sess17"`,
            `"Session17"`); None keeps all.

    Raises:
        FileNotFoundError: no annotation file, or a requested session has none.
    """
    folder = os.path.join(root, "annotation")
    found = {}
    for entry in os.scandir(folder):
        match = _ANNOTATION_FILE.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(1))] = entry.path
    if not found:
        raise FileNotFoundError(f"no SessNN_eval.csv annotation file in {folder}")
    if sessions is not None:
        wanted = {_session_number(s) for s in sessions}
        missing = sorted(wanted - set(found))
        if missing:
            raise FileNotFoundError(
                f"no annotation file for session(s) {missing} in {folder}; it has {sorted(found)}"
            )
        found = {n: p for n, p in found.items() if n in wanted}
    return sorted(found.items())


def _session_number(session: int | str) -> int:
    if isinstance(session, int):
        return session
    match = re.fullmatch(r"(?:Sess(?:ion)?)?0*(\d+)", str(session).strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"session {session!r} is not a number or SessNN / SessionNN")
    return int(match.group(1))


def index_segment_files(root: str) -> dict[str, dict[str, str]]:
    """`{stem: {"wav": path, "txt": path}}` for every file in `wav/Session*/` (names only)."""
    index: dict[str, dict[str, str]] = {}
    wav_folder = os.path.join(root, "wav")
    for session in sorted(os.scandir(wav_folder), key=lambda e: e.name):
        if not session.is_dir():
            continue
        for entry in os.scandir(session.path):
            stem, ext = os.path.splitext(entry.name)
            kind = ext.lower().lstrip(".")
            if kind in ("wav", "txt") and entry.is_file():
                index.setdefault(stem, {}).setdefault(kind, entry.path)
    return index


def index_e4_files(root: str) -> dict[str, dict[str, str]]:
    """`{signal: {"Sess01_script01_User001F": path}}` for the EDA, IBI and TEMP CSVs.

    Searched recursively, since some copies keep them in `SessionNN/Original/`;
    when a stem appears twice the shallowest path wins.
    """
    index: dict[str, dict[str, str]] = {}
    for signal in _E4_SIGNALS:
        found: dict[str, str] = {}
        for folder, _, files in sorted(os.walk(os.path.join(root, signal))):
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                path = os.path.join(folder, name)
                if ext.lower() == ".csv" and (stem not in found or path.count(os.sep) < found[stem].count(os.sep)):
                    found[stem] = path
        index[signal] = found
    return index


# === Reading annotation rows ===


class _Skip(Exception):
    """A row that cannot be used; the message is the skip report's reason."""


def read_annotation_rows(path: str) -> list[tuple[int, list[str]]]:
    """`(1-based line number, cells)` of each data row of one annotation CSV.

    The csv module rather than pandas: the skip report needs every row's true line
    number, and pandas pads short rows and drops long ones without saying which
    line they were. Two header rows are skipped; a second header row that holds a
    segment id is data. Blank rows (no cell written) are not utterances and are
    left out.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp949")  # Excel on Korean Windows saves cp949
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    for number, cells in enumerate(reader):
        start, line = line, reader.line_num + 1
        is_header = number == 0 or (number == 1 and not (len(cells) > 3 and SEGMENT_ID.match(cells[3].strip())))
        if is_header or not any(cell.strip() for cell in cells):
            continue
        rows.append((start, cells))
    return rows


def _number(cell: str, name: str, *, required: bool, low: float | None = None, high: float | None = None) -> float:
    value = cell.strip()
    if value.lower() in _EMPTY:
        if required:
            raise _Skip(f"malformed row: {name} is missing ({cell!r})")
        return math.nan
    try:
        number = float(value)
    except ValueError:
        raise _Skip(f"malformed row: {name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise _Skip(f"malformed row: {name} {value!r} is not a finite number")
    if low is not None and not low <= number <= high:
        raise _Skip(f"malformed row: {name} {value!r} is outside {low:g}..{high:g}")
    return number


def _rater_cells(cells: list[str]) -> tuple[str, str, str]:
    """Rater emotions, valences, arousals, each `;`-joined with one field per rater.

    Fields stay positional (empty for a missing rater) so the three columns line up;
    a rater's own tie (rare) is joined with `|`.
    """
    raters = cells[_TOTAL_EVALUATION:_TOTAL_EVALUATION + 3 * N_RATERS]
    emotions = [_rater_emotion(cell) for cell in raters[0::3]]
    valences = ["" if cell.lower() in _EMPTY else cell for cell in raters[1::3]]
    arousals = ["" if cell.lower() in _EMPTY else cell for cell in raters[2::3]]
    return ";".join(emotions), ";".join(valences), ";".join(arousals)


@functools.lru_cache(maxsize=1024)
def _rater_emotion(cell: str) -> str:
    return "" if cell.lower() in _EMPTY else "|".join(labels_lib.split_labels(cell))


def _parse_row(cells: list[str]) -> dict:
    """The annotation fields of one row; raises `_Skip` when the row is malformed."""
    cells = [cell.strip() for cell in cells]
    if len(cells) > N_COLUMNS:
        if any(cells[N_COLUMNS:]):
            raise _Skip(f"malformed row: {len(cells)} cells, expected {N_COLUMNS}")
        cells = cells[:N_COLUMNS]
    if len(cells) < _TOTAL_EVALUATION:
        raise _Skip(
            f"malformed row: {len(cells)} cells, the total evaluation needs columns 0-6 (of {N_COLUMNS})"
        )
    cells = cells + [""] * (N_COLUMNS - len(cells))
    segment_id = cells[3]
    if not segment_id:
        raise _Skip("malformed row: segment id is empty")
    if not SEGMENT_ID.match(segment_id):
        raise _Skip(f"malformed row: segment id {segment_id!r} is not SessNN_scriptMM_UserKKKG_III")
    if cells[4].lower() in _EMPTY:
        raise _Skip(f"empty label: emotion cell is {cells[4]!r}")
    names = labels_lib.split_labels(cells[4])
    unknown = [name for name in names if not labels_lib.is_known(name)]
    if unknown:
        raise _Skip(f"unknown emotion: {', '.join(unknown)} (in {cells[4]!r})")
    rater_emotions, rater_valence, rater_arousal = _rater_cells(cells)
    return {
        "annotated_id": segment_id,
        "labels": ";".join(names),
        "valence": _number(cells[5], "valence", required=True, low=1, high=5),
        "arousal": _number(cells[6], "arousal", required=True, low=1, high=5),
        "wav_start": _number(cells[1], "wav start", required=False),
        "wav_end": _number(cells[2], "wav end", required=False),
        "rater_emotions": rater_emotions,
        "rater_valence": rater_valence,
        "rater_arousal": rater_arousal,
    }


def _resolve_id(segment_id: str, session: int, files: dict) -> str | None:
    """The id as it lives on disk: itself, or with the annotation file's session prefix."""
    if segment_id in files:
        return segment_id
    own = f"Sess{session:02d}" + segment_id[segment_id.index("_"):]
    return own if own in files else None


def _check_wav(path: str) -> None:
    if os.path.getsize(path) == 0:
        raise _Skip(f"empty wav: {path} has 0 bytes")
    try:
        with soundfile.SoundFile(path) as wav:  # opening parses the header only; nothing is decoded
            frames = wav.frames
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise _Skip(f"unreadable wav: {path} ({error})") from None
    if frames <= 0:
        raise _Skip(f"empty wav: {path} has a header but no audio frames")


def _read_text(path: str) -> tuple[str, str]:
    try:
        raw = read_transcript(path)
    except TranscriptError as error:
        raise _Skip(f"unreadable transcript: {error}") from None
    if not raw:
        raise _Skip(f"empty transcript: {path}")
    text = clean_transcript(raw)
    if not text:
        raise _Skip(f"empty transcript: {path} holds only noise tags ({raw!r})")
    return raw, text


# === The reader ===


def read_kemdy20(
    root: str | os.PathLike, sessions: typing.Iterable[int | str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads a KEMDy20 folder into the utterance table; never decodes audio.

    Args:
        root: the KEMDy20 root or the folder holding it (see `find_root`).
        sessions: only these sessions (numbers or `SessNN`); None reads all.

    Returns:
        `(table, skips)`: the utterance table (columns `TABLE_COLUMNS`, see
        docs/architecture.md) and the skip report (`file, row, segment_id, reason`,
        one entry per skipped row; `attrs["remapped"]` counts ids found under the
        annotation file's session, `attrs["remaps"]` maps them). More than
        `checks.SKIP_WARN_SHARE` of the rows skipped is logged as a warning.

    Raises:
        checks.NoUtterancesError: (a ValueError) the annotation files hold no data
            row (headers only, or 0 bytes), or every row was skipped; the message
            names the annotation folder and files read.

    Example:
        >>> table, skips = read_kemdy20("KEMDy20_v1_1")  # doctest: +SKIP
        >>> table.emotion.value_counts()  # doctest: +SKIP
    """
    root = find_root(root)
    files = index_segment_files(root)
    e4 = index_e4_files(root)
    records, skipped, remaps = [], [], {}
    seen: dict[str, tuple[str, int]] = {}
    read = annotation_files(root, sessions)
    for session, csv_path in read:
        try:
            rows = read_annotation_rows(csv_path)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            # The whole file is unusable: one entry, row 0, says so.
            skipped.append((csv_path, 0, "", f"unreadable annotation file: {error}"))
            continue
        for line, cells in rows:
            annotated = cells[3].strip() if len(cells) > 3 else ""
            try:
                fields = _parse_row(cells)
                segment_id = _resolve_id(fields.pop("annotated_id"), session, files)
                if segment_id is None:
                    raise _Skip(f"missing wav and transcript: no {annotated}.wav/.txt under {root}/wav/")
                if segment_id in seen:
                    first_file, first_line = seen[segment_id]
                    raise _Skip(f"duplicate segment id: first seen in {first_file} line {first_line}")
                found = files[segment_id]
                if "wav" not in found:
                    raise _Skip(f"missing wav: no {segment_id}.wav next to {found['txt']}")
                if "txt" not in found:
                    raise _Skip(f"missing transcript: no {segment_id}.txt next to {found['wav']}")
                _check_wav(found["wav"])
                text_raw, text = _read_text(found["txt"])
            except _Skip as skip:
                skipped.append((csv_path, line, annotated, str(skip)))
                continue
            seen[segment_id] = (csv_path, line)
            if segment_id != annotated:
                remaps[annotated] = segment_id
            records.append(_record(segment_id, found, text_raw, text, fields, e4))
    table = pd.DataFrame(records, columns=list(TABLE_COLUMNS))
    table[list(FLOAT_COLUMNS)] = table[list(FLOAT_COLUMNS)].astype(float)
    skips = pd.DataFrame(skipped, columns=list(SKIP_COLUMNS)).astype({"row": int})
    skips.attrs["remapped"] = len(remaps)
    skips.attrs["remaps"] = remaps
    if remaps:
        examples = ", ".join(f"{a} -> {b}" for a, b in list(remaps.items())[:3])
        logger.warning("%d segment ids found under their annotation file's session (%s)", len(remaps), examples)
    where = f"{len(read)} annotation file(s) in {os.path.join(root, 'annotation')} ({_names(read)})"
    checks.check_not_empty(len(table), skips, where)
    if skipped and not checks.warn_if_many_skipped(len(table), skips, where, logger):
        logger.warning("%d annotation rows skipped (see the skip report)", len(skipped))
    return check_table(table, str(root)), check_skips(skips, str(root))


def _names(files: list[tuple[int, str]], limit: int = 5) -> str:
    names = [os.path.basename(path) for _, path in files]
    return ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def _record(segment_id: str, found: dict, text_raw: str, text: str, fields: dict, e4: dict) -> dict:
    session, _, script, speaker, sex, _ = SEGMENT_ID.match(segment_id).groups()
    e4_stem = f"{session}_{script}_{speaker}"
    labels = fields["labels"]
    return {
        "segment_id": segment_id,
        "session": session,
        "script": script,
        "speaker": speaker,
        "sex": sex,
        "wav_path": found["wav"],
        "txt_path": found["txt"],
        "text_raw": text_raw,
        "text": text,
        "emotion": labels_lib.primary_label(labels, ALL_EMOTIONS),
        "eda_path": e4["EDA"].get(e4_stem, ""),
        "ibi_path": e4["IBI"].get(e4_stem, ""),
        "temp_path": e4["TEMP"].get(e4_stem, ""),
        **fields,
    }


# === Command line ===


def summary(table: pd.DataFrame, skips: pd.DataFrame) -> str:
    """A printable summary: utterances, sessions, speakers, emotions, skip reasons."""
    lines = [
        f"utterances: {len(table)}  sessions: {table.session.nunique()}  speakers: {table.speaker.nunique()}",
        f"tied labels (several emotions): {int(table['labels'].str.contains(';').sum())}",
        "primary emotion:",
    ]
    counts = table.emotion.value_counts()
    lines += [f"  {name:<9} {counts.get(name, 0):>6}" for name in ALL_EMOTIONS]
    lines.append(f"remapped segment ids: {skips.attrs.get('remapped', 0)}")
    lines.append(f"skipped rows: {len(skips)}")
    reasons = skips.reason.str.partition(":")[0].value_counts() if len(skips) else {}
    lines += [f"  {reason}: {count}" for reason, count in dict(reasons).items()]
    return "\n".join(lines)


def main(argv: typing.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kemdy_tf.data.kemdy20", description="Summarise a KEMDy20 folder."
    )
    parser.add_argument("root", help="KEMDy20 root (holds annotation/ and wav/) or the folder holding it")
    parser.add_argument("--sessions", nargs="*", help="only these sessions, e.g. 1 2 or Sess17")
    parser.add_argument("--skips", metavar="CSV", help="also write the skip report here")
    args = parser.parse_args(argv)
    try:
        table, skips = read_kemdy20(args.root, args.sessions)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, checks.NoUtterancesError) and args.skips and error.skips is not None:
            error.skips.to_csv(args.skips, index=False)
            print(f"skip report: {args.skips}", file=sys.stderr)
        return 2
    print(f"root: {find_root(args.root)}")
    print(summary(table, skips))
    if args.skips:
        skips.to_csv(args.skips, index=False)
        print(f"skip report: {args.skips}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
