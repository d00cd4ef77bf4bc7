"""The utterance table has one home (kemdy_tf.data.schema) and every reader produces it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kemdy_tf.data import schema


def test_kemdy20_reader_and_synthetic_set_produce_the_schema(synthetic_root):
    from kemdy_tf.data.kemdy20 import read_kemdy20

    table, skips = read_kemdy20(synthetic_root)
    assert list(table.columns) == list(schema.TABLE_COLUMNS)
    assert list(skips.columns) == list(schema.SKIP_COLUMNS)
    schema.check_table(table, "synthetic")


def test_manifest_reader_produces_the_schema(synthetic_root, tmp_path):
    from kemdy_tf.data.kemdy20 import read_kemdy20
    from kemdy_tf.data.manifest import read_manifest, write_manifest

    table, _ = read_kemdy20(synthetic_root)
    path = write_manifest(table.head(8).assign(split="train", note="kept"), tmp_path / "m.csv")
    again, skips = read_manifest(path)
    assert list(again.columns[: len(schema.TABLE_COLUMNS)]) == list(schema.TABLE_COLUMNS)
    assert {"split", "note"} <= set(again.columns)
    schema.check_table(again, "manifest")
    assert list(skips.columns) == list(schema.SKIP_COLUMNS)


def test_the_split_reader_restores_the_schemas_types(tmp_path):
    from kemdy_tf.data import splits

    table = schema.empty_table()
    row = {c: "" for c in schema.TABLE_COLUMNS} | {c: np.nan for c in schema.FLOAT_COLUMNS}
    table = pd.DataFrame([row | {"segment_id": "001", "valence": 3.0}], columns=list(schema.TABLE_COLUMNS))
    splits.write_split(table.assign(split="train", augmented_from=""), tmp_path / "t.csv")
    back = splits.read_split(tmp_path / "t.csv")
    schema.check_table(back, "table.csv")
    assert back["segment_id"].iloc[0] == "001"


@pytest.mark.parametrize("break_it, message", [
    (lambda t: t.drop(columns=["speaker"]), "lacks column"),
    (lambda t: t[list(reversed(t.columns))], "must start with"),
    (lambda t: t.assign(valence=t["valence"].astype(str)), "must be float"),
    (lambda t: t.assign(text=[np.nan, "a"]), "must hold text"),
    (lambda t: t.assign(segment_id=["x", "x"]), "more than once"),
])
def test_check_table_names_what_is_wrong(break_it, message):
    row = {c: "" for c in schema.TABLE_COLUMNS} | {c: 1.0 for c in schema.FLOAT_COLUMNS}
    table = pd.DataFrame([row | {"segment_id": "a"}, row | {"segment_id": "b"}], columns=list(schema.TABLE_COLUMNS))
    schema.check_table(table, "ok")
    with pytest.raises(schema.SchemaError, match=message):
        schema.check_table(break_it(table), "broken")
