"""E4 wristband signals (EDA, IBI, TEMP): parsing, per-utterance series and features.

KEMDy20 stores one CSV per speaker and script under `EDA/SessionNN/`, `IBI/SessionNN/`
and `TEMP/SessionNN/`, e.g. `Sess01_script01_User001F.csv`. The utterance table points
at them through `eda_path`, `ibi_path` and `temp_path`; the rows of one utterance are
the rows whose last cell is its segment id.

File layout (E4 style):
    EDA, TEMP  2 header lines (start time, sample rate 4 Hz), then rows
               `value, timestamp[, segment_id]`
    IBI        1 header line, then rows `time_diff, ibi, timestamp[, segment_id]`

Timestamps look like `2020-0821-1213-19-250` (YYYY-MMDD-HHMM-SS-mmm). The segment id
is written only on rows inside an utterance, so rows are ragged. Cells are read by
position; a row that cannot be read is left out and reported as
`{file, row, segment_id, reason}` (the reader's skip-report columns), never fatal.

Example:
    >>> problems = []
    >>> eda = read_e4("EDA/Session01/Sess01_script01_User001F.csv", "eda", problems)
    >>> series = segment_series(table, "eda")        # {segment_id: np.ndarray}
    >>> samples = segment_samples(table, "eda")      # {segment_id: (times, values)}
    >>> features = bio_features(table)               # one row per utterance
"""

from __future__ import annotations

import csv
import hashlib
import os
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BIO_KINDS = ("eda", "ibi", "temp")
TIMESTAMP_FORMAT = "%Y-%m%d-%H%M-%S-%f"
BIO_FEATURES_FILE = "bio_features.csv"
BIO_FEATURES_VERSION = 1  # bump when bio_features' columns or formulas change: old caches are ignored

# Called as progress(label, done, total) after each file; the CLI prints it.
ProgressFn = typing.Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Layout:
    header_lines: int
    value_columns: tuple[str, ...]  # numeric cells before the timestamp
    value: str  # the column a per-segment series is made of


_LAYOUTS = {
    "eda": _Layout(2, ("value",), "value"),
    "temp": _Layout(2, ("value",), "value"),
    "ibi": _Layout(1, ("time_diff", "ibi"), "ibi"),
}


def _layout(kind: str) -> _Layout:
    if kind not in _LAYOUTS:
        raise ValueError(f"unknown E4 signal kind {kind!r}; choose one of {BIO_KINDS}")
    return _LAYOUTS[kind]


def columns(kind: str) -> list[str]:
    """Columns of `read_e4(path, kind)`: the value cells, `time`, `segment_id`."""
    return [*_layout(kind).value_columns, "time", "segment_id"]


def read_e4(path: str | Path, kind: str, problems: list[dict] | None = None) -> pd.DataFrame:
    """Read one E4 CSV (EDA, TEMP or IBI) by position.

    Args:
        path: the CSV file.
        kind: "eda", "temp" or "ibi" (sets the header length and the cells per row).
        problems: malformed rows are appended here as
            `{"file", "row" (1-based line), "segment_id", "reason"}`. When None, a
            warning names the file and the number of rows left out.

    Returns:
        DataFrame with the value columns (`value`; or `time_diff`, `ibi`), `time`
        (seconds since the Unix epoch, float64) and `segment_id` (`""` outside
        utterances), in file order. A missing or unreadable file gives an empty frame
        and one problem entry.
    """
    layout = _layout(kind)
    path = Path(path)
    n_values = len(layout.value_columns)
    found: list[dict] = []
    lines: list[int] = []
    cells: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if reader.line_num <= layout.header_lines or not any(c.strip() for c in row):
                    continue
                # Trailing empty cells (`2.5,2020-...,`) mean "no segment id".
                while len(row) > n_values + 1 and not row[-1].strip():
                    row = row[:-1]
                if len(row) not in (n_values + 1, n_values + 2):
                    found.append(_problem(path, reader.line_num, row[-1] if row else "",
                                          f"expected {n_values + 1} or {n_values + 2} cells, got {len(row)}"))
                    continue
                lines.append(reader.line_num)
                cells.append(row)
    except OSError as error:
        found.append(_problem(path, 0, "", f"cannot read {kind.upper()} file: {error.strerror or error}"))

    frame = _to_frame(cells, layout)
    frame.insert(0, "_line", lines)
    bad = frame[layout.value_columns[0]].isna()
    for column in layout.value_columns[1:]:
        bad |= frame[column].isna()
    bad_time = frame["time"].isna()
    for line, seg, is_bad_value, is_bad_time in zip(frame["_line"], frame["segment_id"], bad, bad_time):
        if is_bad_value or is_bad_time:
            reason = "value is not a number" if is_bad_value else "timestamp is not YYYY-MMDD-HHMM-SS-mmm"
            found.append(_problem(path, line, seg, reason))
    if kind == "ibi":
        non_positive = ~bad & (frame["ibi"] <= 0)
        for line, seg in zip(frame.loc[non_positive, "_line"], frame.loc[non_positive, "segment_id"]):
            found.append(_problem(path, line, seg, "inter-beat interval must be > 0"))
        bad |= non_positive
    frame = frame[~(bad | bad_time)].drop(columns="_line").reset_index(drop=True)
    found.sort(key=lambda problem: problem["row"])  # file order

    if problems is not None:
        problems.extend(found)
    elif found:
        warnings.warn(f"{path}: {len(found)} malformed {kind.upper()} rows left out "
                      f"(first: line {found[0]['row']}, {found[0]['reason']})", stacklevel=2)
    return frame


def _to_frame(cells: list[list[str]], layout: _Layout) -> pd.DataFrame:
    """Vectorised conversion of the collected cells (numbers, timestamps) to columns."""
    n_values = len(layout.value_columns)
    data: dict[str, typing.Any] = {}
    for i, name in enumerate(layout.value_columns):
        data[name] = pd.to_numeric(pd.Series([row[i] for row in cells], dtype=str).str.strip(),
                                   errors="coerce").astype("float64")
    stamps = pd.Series([row[n_values] for row in cells], dtype=str).str.strip()
    parsed = pd.to_datetime(stamps, format=TIMESTAMP_FORMAT, errors="coerce")
    data["time"] = ((parsed - pd.Timestamp(0)) / pd.Timedelta(seconds=1)).astype("float64")
    data["segment_id"] = pd.Series(
        [row[n_values + 1].strip() if len(row) > n_values + 1 else "" for row in cells], dtype=str)
    return pd.DataFrame(data, columns=[*layout.value_columns, "time", "segment_id"])


def _problem(path: Path, line: int, segment_id: str, reason: str) -> dict:
    return {"file": str(path), "row": int(line), "segment_id": str(segment_id).strip(), "reason": reason}


def segment_samples(table: pd.DataFrame, kind: str, problems: list[dict] | None = None,
                    progress: ProgressFn | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{segment_id: (times, values)}` of every utterance in `table`, reading each E4 file once.

    Utterances are grouped by their `<kind>_path`; only the table's segment ids are
    kept, in file order. `values` are EDA / TEMP values, or IBI intervals (seconds);
    `times` are seconds since the Unix epoch. Utterances with no path, or with no row
    carrying their id, are absent from the result.
    """
    value = _layout(kind).value
    column = f"{kind}_path"
    if column not in table.columns:
        raise ValueError(f"utterance table has no {column!r} column (columns: {list(table.columns)})")
    paths = table[column].fillna("").astype(str)
    has_path = paths != ""
    groups = table.loc[has_path, "segment_id"].astype(str).groupby(paths[has_path], sort=True)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    total = groups.ngroups
    for done, (path, ids) in enumerate(groups, start=1):
        frame = read_e4(path, kind, problems)
        wanted = frame[frame["segment_id"].isin(set(ids))]
        times = wanted["time"].to_numpy(dtype=np.float64)
        values = wanted[value].to_numpy(dtype=np.float64)
        for segment_id, rows in wanted.groupby("segment_id", sort=False).indices.items():
            out[str(segment_id)] = (times[rows], values[rows])
        if progress is not None:
            progress(f"{kind.upper()} files", done, total)
    return out


def segment_series(table: pd.DataFrame, kind: str, problems: list[dict] | None = None,
                   progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """`{segment_id: values}` for one signal: EDA/TEMP values or IBI intervals (seconds).

    Each series has one entry per E4 row carrying that segment id, in file order.
    """
    return {seg: values for seg, (_, values) in segment_samples(table, kind, problems, progress).items()}


def _slope(time: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope per second; NaN with fewer than two distinct times."""
    if len(values) < 2 or np.ptp(time) == 0:
        return float("nan")
    return float(np.polyfit(time - time[0], values, 1)[0])


def bio_features(table: pd.DataFrame, problems: list[dict] | None = None,
                 progress: ProgressFn | None = None,
                 samples: typing.Mapping[str, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None,
                 ) -> pd.DataFrame:
    """Per-utterance summary of the E4 signals, one row per table row, in table order.

    Columns: `segment_id`; `eda_mean`, `eda_std`, `eda_slope` (uS/s), same for `temp`
    (degrees C/s); `ibi_mean`, `ibi_std` (s); `hr_mean`, `hr_std` (beats/min, 60/ibi);
    `eda_n`, `temp_n`, `ibi_n` (samples found); `bio_coverage`: True when the
    utterance has at least one EDA and one TEMP sample. IBI is often missing in E4
    data (beats are dropped under motion), so it does not decide coverage. Rows
    without coverage keep NaN features and are flagged, not dropped.

    Args:
        table: the utterance table.
        problems: malformed E4 rows are appended here (see `read_e4`).
        progress: called as progress(label, done, total) after each file.
        samples: `{kind: segment_samples(table, kind)}` already read, to avoid
            reading the files again (kinds missing from it are read).
    """
    samples = dict(samples or {})
    for kind in BIO_KINDS:
        if kind not in samples:
            samples[kind] = segment_samples(table, kind, problems, progress)
    ids = table["segment_id"].astype(str)
    out = pd.DataFrame({"segment_id": ids.to_numpy()})
    for kind in ("eda", "temp"):
        stats = {seg: (values.mean(), values.std(), _slope(times, values), len(values))
                 for seg, (times, values) in samples[kind].items()}
        _assign(out, ids, stats, [f"{kind}_mean", f"{kind}_std", f"{kind}_slope", f"{kind}_n"])
    stats = {}
    for seg, (_, ibi) in samples["ibi"].items():
        rate = 60.0 / ibi
        stats[seg] = (ibi.mean(), ibi.std(), rate.mean(), rate.std(), len(ibi))
    _assign(out, ids, stats, ["ibi_mean", "ibi_std", "hr_mean", "hr_std", "ibi_n"])
    for count in ("eda_n", "temp_n", "ibi_n"):
        out[count] = out[count].fillna(0).astype(int)
    out["bio_coverage"] = (out["eda_n"] > 0) & (out["temp_n"] > 0)
    return out


def _assign(out: pd.DataFrame, ids: pd.Series, stats: dict[str, tuple], names: list[str]) -> None:
    values = np.full((len(ids), len(names)), np.nan)
    for i, seg in enumerate(ids):
        if seg in stats:
            values[i] = stats[seg]
    for j, name in enumerate(names):
        out[name] = values[:, j]


def bio_cache_key(table: pd.DataFrame) -> str:
    """Content key of a table's bio features: its segment ids and every E4 file's
    (path, size, mtime). Any change to either gives a new key."""
    digest = hashlib.sha1(f"bio-features-v{BIO_FEATURES_VERSION}".encode())
    for segment_id in sorted(table["segment_id"].astype(str)):
        digest.update(f"|{segment_id}".encode())
    paths = set()
    for kind in BIO_KINDS:
        column = f"{kind}_path"
        if column in table.columns:
            paths.update(p for p in table[column].fillna("").astype(str) if p)
    for path in sorted(paths):
        try:
            stat = os.stat(path)
            digest.update(f"|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"|{os.path.abspath(path)}|missing".encode())
    return digest.hexdigest()


def cache_bio_features(table: pd.DataFrame, cache_dir: str | Path, problems: list[dict] | None = None,
                       progress: ProgressFn | None = None) -> Path:
    """`bio_features(table)` as a CSV in the feature cache, computed only when absent.

    Written to `<cache_dir>/bio-<key>/bio_features.csv`, where the key is
    `bio_cache_key(table)`: the same table and E4 files reuse the file, any change
    writes a new one. `cache_dir` is the feature cache's root (the folder holding
    its `logmel-*` recipes). A later (optional) bio branch of the model reads it
    with `read_bio_features`. CSV rather than parquet so no pyarrow is needed.

    Returns:
        The path of the CSV.
    """
    folder = Path(cache_dir) / f"bio-{bio_cache_key(table)[:16]}"
    path = folder / BIO_FEATURES_FILE
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    features = bio_features(table, problems, progress)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    features.to_csv(tmp, index=False)
    os.replace(tmp, path)  # a reader never sees a half-written file
    return path


def read_bio_features(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by `cache_bio_features` (a folder means its bio_features.csv)."""
    path = Path(path)
    if path.is_dir():
        path = path / BIO_FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no bio feature cache at {path}; write it with cache_bio_features")
    frame = pd.read_csv(path, dtype={"segment_id": str})
    missing = {"segment_id", "bio_coverage"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} is not a bio feature cache: missing columns {sorted(missing)}")
    frame["bio_coverage"] = frame["bio_coverage"].astype(bool)
    return frame
