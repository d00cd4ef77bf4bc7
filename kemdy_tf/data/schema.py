"""The utterance table: the one contract between every reader and everything after it.

A reader (`kemdy20.read_kemdy20`, `manifest.read_manifest`, and so the synthetic set,
which is read by the KEMDy20 reader) returns `(table, skips)`; both pass
`check_table` / `check_skips` before they leave the reader. Column meanings:
docs/architecture.md, "The utterance table".

    >>> from kemdy_tf.data import schema
    >>> list(schema.check_table(schema.empty_table(), "example").columns) == list(schema.TABLE_COLUMNS)
    True
"""

from __future__ import annotations

import pandas as pd

# Every reader writes these columns, in this order.
TABLE_COLUMNS = (
    "segment_id", "session", "script", "speaker", "sex", "wav_path", "txt_path",
    "text_raw", "text", "labels", "emotion", "valence", "arousal", "wav_start", "wav_end",
    "rater_emotions", "rater_valence", "rater_arousal", "eda_path", "ibi_path", "temp_path",
)
# Float columns (NaN where unknown); every other contract column is text.
FLOAT_COLUMNS = ("valence", "arousal", "wav_start", "wav_end")
# Columns a table may carry beyond TABLE_COLUMNS: `split` (a manifest's own split; always
# present in a run's table.csv) and `augmented_from` (a run's text-augmented copies).
OPTIONAL_COLUMNS = ("split", "augmented_from")
STRING_COLUMNS = tuple(c for c in TABLE_COLUMNS + OPTIONAL_COLUMNS if c not in FLOAT_COLUMNS)
# The skip report: every row a reader left out, and why.
SKIP_COLUMNS = ("file", "row", "segment_id", "reason")


class SchemaError(ValueError):
    """A table does not have the utterance table's columns or types."""


def empty_table() -> pd.DataFrame:
    """A table with the contract's columns and no rows."""
    table = pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_COLUMNS})
    table[list(FLOAT_COLUMNS)] = table[list(FLOAT_COLUMNS)].astype(float)
    return table


def check_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """`table` itself, after checking it against the contract; raises SchemaError naming `source`.

    Checks: every column of TABLE_COLUMNS present and first, in order; float columns
    are float; text columns hold strings (no NaN); segment ids are unique and non-empty.
    Extra columns (a manifest keeps its own) are allowed after the contract's.
    """
    columns = list(table.columns)
    missing = [c for c in TABLE_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(f"{source}: the utterance table lacks column(s) {missing}")
    if columns[: len(TABLE_COLUMNS)] != list(TABLE_COLUMNS):
        raise SchemaError(f"{source}: the utterance table's columns must start with {list(TABLE_COLUMNS)}, "
                          f"got {columns[: len(TABLE_COLUMNS)]}")
    for column in FLOAT_COLUMNS:
        if not pd.api.types.is_float_dtype(table[column]):
            raise SchemaError(f"{source}: column {column!r} must be float, got {table[column].dtype}")
    for column in STRING_COLUMNS:
        if column in table.columns and len(table):
            bad = ~table[column].map(lambda v: isinstance(v, str))
            if bad.any():
                raise SchemaError(f"{source}: column {column!r} must hold text; row {int(bad.to_numpy().argmax())} "
                                  f"holds {table[column][bad].iloc[0]!r}")
    if len(table):
        ids = table["segment_id"]
        if (ids == "").any():
            raise SchemaError(f"{source}: empty segment_id")
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise SchemaError(f"{source}: segment_id {duplicated.iloc[0]!r} occurs more than once")
    return table


def check_skips(skips: pd.DataFrame, source: str) -> pd.DataFrame:
    """`skips` itself, after checking it has exactly the skip report's columns."""
    if list(skips.columns) != list(SKIP_COLUMNS):
        raise SchemaError(f"{source}: the skip report's columns must be {list(SKIP_COLUMNS)}, "
                          f"got {list(skips.columns)}")
    return skips
