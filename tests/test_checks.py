"""kemdy_tf.data.checks: silent data problems become warnings, or errors where a run means nothing."""

import pandas as pd
import pytest

from kemdy_tf.data.checks import (
    NoUtterancesError,
    SingleClassError,
    check_not_empty,
    check_training_labels,
    feature_failure_skips,
    skip_reasons,
    warn_if_many_skipped,
)

CLASSES = ["angry", "happy", "neutral", "sad", "surprise"]


def _table(rows):
    """rows: (split, labels[, augmented_from])."""
    return pd.DataFrame([{"split": r[0], "labels": r[1], "emotion": "", "augmented_from": r[2] if len(r) > 2 else ""}
                         for r in rows])


def _skips(reasons):
    return pd.DataFrame({"file": ["m.csv"] * len(reasons), "row": range(2, 2 + len(reasons)),
                         "segment_id": ["x"] * len(reasons), "reason": reasons})


def test_one_class_in_training_is_an_error_naming_it():
    table = _table([("train", "neutral")] * 5 + [("val", "happy"), ("test", "sad")])
    with pytest.raises(SingleClassError, match=r"1 class\(es\): 'neutral' \(5 rows\).*1\.000"):
        check_training_labels(table, CLASSES)
    with pytest.raises(SingleClassError, match="no labelled row"):
        check_training_labels(_table([("train", "excited"), ("val", "happy")]), CLASSES)
    assert issubclass(SingleClassError, ValueError)


def test_augmented_copies_do_not_count_as_a_second_class():
    table = _table([("train", "neutral"), ("train", "happy", "u1")])
    with pytest.raises(SingleClassError):
        check_training_labels(table, CLASSES)


def test_labels_outside_the_classes_are_named_with_their_counts():
    table = _table([("train", "neutral"), ("train", "happy"), ("train", "angry"), ("train", "sad"),
                    ("train", "surprise"), ("train", "excited"), ("val", "excited"), ("test", "bored;excited"),
                    ("train", "fear;neutral")])  # a tie with a class is labelled, not outside
    warnings = check_training_labels(table, CLASSES)
    assert warnings == ["3 row(s) have no label among the classes " + str(CLASSES) +
                        " and are left out: their labels are 'excited' (3), 'bored' (1)"]


def test_a_class_missing_from_training_but_present_in_val_or_test_is_a_warning():
    table = _table([("train", "neutral"), ("train", "happy"), ("val", "sad"), ("test", "sad"), ("test", "sad")])
    warnings = check_training_labels(table, CLASSES)
    assert any("class 'sad' has no training row but 1 in val, 2 in test" in w for w in warnings)
    assert any("'angry' has no row at all" in w for w in warnings)


def test_a_healthy_table_gives_no_warning():
    table = _table([("train", c) for c in CLASSES] + [("val", "happy;neutral")])
    assert check_training_labels(table, CLASSES) == []


def test_a_table_without_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        check_training_labels(pd.DataFrame({"labels": ["sad"]}), CLASSES)


def test_skip_share_warning_and_empty_source():
    assert warn_if_many_skipped(95, _skips(["missing wav: a"] * 5), "m.csv") is None  # 5% is tolerated
    message = warn_if_many_skipped(10, _skips(["missing wav: a"] * 8 + ["empty label: b"] * 2), "m.csv")
    assert "10 of 20 rows (50%)" in message and "missing wav (8), empty label (2)" in message
    assert skip_reasons(_skips([])) == "none"
    check_not_empty(1, _skips([]), "m.csv")
    with pytest.raises(NoUtterancesError, match="no utterances: m.csv holds no data rows"):
        check_not_empty(0, _skips([]), "m.csv")


def test_feature_build_failures_become_skip_report_rows():
    table = pd.DataFrame({"segment_id": ["a", "b", "a#aug1"], "wav_path": ["/d/a.wav", "/d/b.wav", "/d/a.wav"]})
    skips = feature_failure_skips(table, [("/d/a.wav", "cannot decode audio: empty file (0 bytes)")])
    assert list(skips.columns) == ["file", "row", "segment_id", "reason"]
    assert skips.values.tolist() == [
        ["/d/a.wav", 2, "a", "undecodable audio: cannot decode audio: empty file (0 bytes)"],
        ["/d/a.wav", 4, "a#aug1", "undecodable audio: cannot decode audio: empty file (0 bytes)"]]
    assert feature_failure_skips(table, []).empty
