"""E4 parsing, per-segment series and per-utterance bio features (kemdy_tf.data.bio)."""

from __future__ import annotations

import collections
import datetime
import math

import numpy as np
import pandas as pd
import pytest

from kemdy_tf.data import bio

U1 = "Sess01_script01_User001F_001"
U2 = "Sess01_script01_User001F_002"
U3 = "Sess01_script01_User001F_003"  # in the table, but no E4 row carries it
U4 = "Sess01_script01_User002M_001"  # in the table, no E4 files at all

# Line numbers (1-based) matter: the problems must name them.
EDA_LINES = [
    "1598011972.000000",  # 1 header: start time
    "4.000000",  # 2 header: sample rate
    "2.0,2020-0821-1213-19-000",  # 3 outside any utterance
    f"2.5,2020-0821-1213-19-250,{U1}",  # 4
    f"3.0,2020-0821-1213-19-500,{U1}",  # 5
    f"3.5,2020-0821-1213-19-750,{U1}",  # 6
    f"abc,2020-0821-1213-20-000,{U1}",  # 7 bad value
    "4.0,2020-0821-1213-20-250,",  # 8 trailing comma: no segment id
    "",  # 9 blank
    f"4.5,not-a-time,{U2}",  # 10 bad timestamp
    f"5.0,2020-0821-1213-20-750,{U2},extra",  # 11 too many cells
    f"5.5,2020-0821-1213-21-000,{U2}",  # 12
    f"6.0,2020-0821-1213-21-250,{U2}",  # 13
    "6.5,2020-0821-1213-21-500,Sess01_script01_User001F_009",  # 14 id not in the table
    "7.0",  # 15 too few cells
]
TEMP_LINES = [
    "1598011972.000000",
    "4.000000",
    f"33.0,2020-0821-1213-19-250,{U1}",
    f"33.5,2020-0821-1213-19-500,{U1}",
    f"33.25,2020-0821-1213-21-000,{U2}",
]
IBI_LINES = [
    "1598011972.000000, IBI",  # 1 header
    "1.0,0.8,2020-0821-1213-19-100",  # 2
    f"1.75,0.75,2020-0821-1213-19-350,{U1}",  # 3
    f"2.35,0.6,2020-0821-1213-19-950,{U1}",  # 4
    f"2.35,0,2020-0821-1213-19-950,{U1}",  # 5 non-positive interval
    f"3.0,0.65,2020-0821-1213-20-600,{U2},x",  # 6 too many cells
]


def _epoch(*parts) -> float:
    return datetime.datetime(*parts, tzinfo=datetime.timezone.utc).timestamp()


@pytest.fixture()
def e4(tmp_path):
    """A hand-written E4 sample in the real layout, and a table pointing at it."""
    paths = {}
    for signal, lines in (("EDA", EDA_LINES), ("TEMP", TEMP_LINES), ("IBI", IBI_LINES)):
        folder = tmp_path / signal / "Session01"
        folder.mkdir(parents=True)
        path = folder / "Sess01_script01_User001F.csv"
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
        paths[signal.lower()] = str(path)
    table = pd.DataFrame({
        "segment_id": [U1, U2, U3, U4],
        "session": "Sess01",
        "script": "script01",
        "speaker": ["User001F", "User001F", "User001F", "User002M"],
        "emotion": ["happy", "neutral", "sad", "angry"],
        "eda_path": [paths["eda"]] * 3 + [""],
        "ibi_path": [paths["ibi"]] * 3 + [""],
        "temp_path": [paths["temp"]] * 3 + [""],
    })
    return paths, table


def test_read_e4_parses_by_position_and_reports_malformed_rows(e4):
    paths, _ = e4
    problems = []
    frame = bio.read_e4(paths["eda"], "eda", problems)
    assert list(frame.columns) == ["value", "time", "segment_id"]
    assert frame["value"].tolist() == [2.0, 2.5, 3.0, 3.5, 4.0, 5.5, 6.0, 6.5]
    assert frame["segment_id"].tolist() == ["", U1, U1, U1, "", U2, U2, "Sess01_script01_User001F_009"]
    assert frame["time"].iloc[0] == pytest.approx(_epoch(2020, 8, 21, 12, 13, 19))
    assert np.diff(frame["time"].to_numpy()[:4]) == pytest.approx([0.25, 0.25, 0.25])
    by_line = {p["row"]: p for p in problems}
    assert sorted(by_line) == [7, 10, 11, 15]
    assert all(p["file"] == paths["eda"] for p in problems)
    assert "not a number" in by_line[7]["reason"] and by_line[7]["segment_id"] == U1
    assert "timestamp" in by_line[10]["reason"]
    assert "got 4" in by_line[11]["reason"]
    assert "got 1" in by_line[15]["reason"]


def test_read_e4_ibi_layout_and_non_positive_intervals(e4):
    paths, _ = e4
    problems = []
    frame = bio.read_e4(paths["ibi"], "ibi", problems)
    assert list(frame.columns) == ["time_diff", "ibi", "time", "segment_id"]
    assert frame["ibi"].tolist() == [0.8, 0.75, 0.6]
    assert frame["time_diff"].tolist() == [1.0, 1.75, 2.35]
    assert frame["time"].iloc[1] - frame["time"].iloc[0] == pytest.approx(0.25)
    assert [(p["row"], "> 0" in p["reason"]) for p in problems] == [(5, True), (6, False)]


def test_read_e4_missing_file_is_a_problem_not_a_crash(tmp_path):
    problems = []
    frame = bio.read_e4(tmp_path / "nope.csv", "temp", problems)
    assert frame.empty and list(frame.columns) == bio.columns("temp")
    assert len(problems) == 1 and "nope.csv" in problems[0]["file"]


def test_read_e4_warns_when_no_problem_list(e4):
    paths, _ = e4
    with pytest.warns(UserWarning, match="4 malformed EDA rows"):
        bio.read_e4(paths["eda"], "eda")


def test_unknown_kind_is_refused(e4):
    paths, _ = e4
    with pytest.raises(ValueError, match="unknown E4 signal kind 'ecg'"):
        bio.read_e4(paths["eda"], "ecg")


def test_segment_series_match_rows_and_read_each_file_once(e4, monkeypatch):
    paths, table = e4
    reads = collections.Counter()
    original = bio.read_e4

    def counting(path, kind, problems=None):
        reads[(str(path), kind)] += 1
        return original(path, kind, problems)

    monkeypatch.setattr(bio, "read_e4", counting)
    series = bio.segment_series(table, "eda", problems=[])
    # Only the table's ids that have rows; malformed rows are not part of a series.
    assert set(series) == {U1, U2}
    assert series[U1].tolist() == [2.5, 3.0, 3.5]
    assert series[U2].tolist() == [5.5, 6.0]
    assert bio.segment_series(table, "ibi", problems=[])[U1].tolist() == [0.75, 0.6]
    assert reads == {(paths["eda"], "eda"): 1, (paths["ibi"], "ibi"): 1}


def test_bio_features_values_and_coverage_flags(e4):
    _, table = e4
    problems = []
    features = bio.bio_features(table, problems)
    assert features["segment_id"].tolist() == table["segment_id"].tolist()  # nothing dropped
    assert features["bio_coverage"].tolist() == [True, True, False, False]
    row = features.set_index("segment_id").loc[U1]
    assert row["eda_mean"] == pytest.approx(3.0)
    assert row["eda_std"] == pytest.approx(np.std([2.5, 3.0, 3.5]))
    assert row["eda_slope"] == pytest.approx(2.0)  # 0.5 per quarter second
    assert row["temp_slope"] == pytest.approx(2.0)
    assert row["ibi_mean"] == pytest.approx(0.675)
    assert row["hr_mean"] == pytest.approx(90.0)  # 60/0.75 = 80, 60/0.6 = 100
    assert row["hr_std"] == pytest.approx(10.0)
    assert (row["eda_n"], row["temp_n"], row["ibi_n"]) == (3, 2, 2)
    two = features.set_index("segment_id").loc[U2]
    assert two["ibi_n"] == 0 and math.isnan(two["hr_mean"])  # no IBI: still covered
    assert math.isnan(two["temp_slope"])  # one TEMP sample has no slope
    uncovered = features[~features["bio_coverage"]]
    assert uncovered[["eda_mean", "temp_mean"]].isna().all().all()
    assert (uncovered[["eda_n", "temp_n", "ibi_n"]] == 0).all().all()
    # EDA 4 + TEMP 0 + IBI 2 malformed rows, each reported once.
    assert len(problems) == 6


def test_cache_bio_features_round_trip_and_reuse(e4, tmp_path, monkeypatch):
    paths, table = e4
    path = bio.cache_bio_features(table, tmp_path / "cache", problems=[])
    assert path.parent.parent == tmp_path / "cache" and path.name == bio.BIO_FEATURES_FILE
    back = bio.read_bio_features(path.parent)
    expected = bio.bio_features(table, problems=[])
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)

    def no_recompute(*args, **kwargs):
        raise AssertionError("cached bio features were computed again")

    monkeypatch.setattr(bio, "bio_features", no_recompute)
    assert bio.cache_bio_features(table, tmp_path / "cache") == path  # same table and files: reused
    with pytest.raises(AssertionError, match="computed again"):
        bio.cache_bio_features(table.iloc[:2], tmp_path / "cache")  # other rows: another key
    with open(paths["eda"], "a", encoding="ascii") as handle:
        handle.write(f"8.0,2020-0821-1213-21-750,{U2}\n")
    with pytest.raises(AssertionError, match="computed again"):
        bio.cache_bio_features(table, tmp_path / "cache")  # an E4 file changed: another key
    with pytest.raises(FileNotFoundError, match="no bio feature cache"):
        bio.read_bio_features(tmp_path / "elsewhere")


def test_synthetic_series_lengths_match_rows_carrying_each_id(synthetic_root):
    from kemdy_tf.data.kemdy20 import read_kemdy20

    table, _ = read_kemdy20(synthetic_root, sessions=[1])
    problems = []
    for kind in ("eda", "temp", "ibi"):
        series = bio.segment_series(table, kind, problems)
        counts: collections.Counter = collections.Counter()
        for path in table[f"{kind}_path"].unique():
            with open(path, encoding="ascii") as handle:
                for line in handle:
                    cells = line.rstrip("\n").split(",")
                    if cells[-1].startswith("Sess"):
                        counts[cells[-1]] += 1
        expected = {seg: n for seg, n in counts.items() if seg in set(table["segment_id"])}
        assert {seg: len(values) for seg, values in series.items()} == expected
    assert problems == []
    features = bio.bio_features(table, problems)
    assert features["bio_coverage"].all()
    eda = bio.segment_series(table, "eda")
    assert features["eda_n"].tolist() == [len(eda[seg]) for seg in features["segment_id"]]
