"""Group-disjoint splits, manifest splits, k folds, leak checks and the CSV round trip."""

import numpy as np
import pandas as pd
import pytest

from kemdy_tf.config import DataConfig
from kemdy_tf.data import splits

EMOTIONS = ["neutral", "happy", "sad", "angry", "surprise", "happy;neutral"]


def _table(n_sessions=8, per_speaker=3):
    """Sessions of two speakers each, two scripts, a few utterances per speaker."""
    rows = []
    for s in range(1, n_sessions + 1):
        for speaker in (f"User{2 * s - 1:03d}F", f"User{2 * s:03d}M"):
            for u in range(per_speaker):
                script = f"script0{u % 2 + 1}"
                sid = f"Sess{s:02d}_{script}_{speaker}_{u:03d}"
                rows.append({
                    "segment_id": sid, "session": f"Sess{s:02d}", "script": script,
                    "speaker": speaker, "sex": speaker[-1], "wav_path": f"/data/{sid}.wav",
                    "txt_path": "", "text_raw": "안녕, \"하세요\"", "text": "안녕 하세요",
                    "labels": EMOTIONS[(s + u) % len(EMOTIONS)], "emotion": "",
                    "valence": 3.0, "arousal": float(u % 5 + 1),
                })
    return pd.DataFrame(rows)


def test_session_split_is_disjoint_complete_and_seeded():
    table = _table()
    out = splits.split_table(table, DataConfig(), seed=0)
    splits.assert_disjoint(out, "session")
    assert set(out["split"]) == {"train", "val", "test"}
    assert len(out) == len(table)
    # 8 sessions, 15% each -> one session each for val and test.
    assert out.groupby("split")["session"].nunique().to_dict() == {"test": 1, "train": 6, "val": 1}
    again = splits.split_table(table, DataConfig(), seed=0)
    assert again["split"].tolist() == out["split"].tolist()
    assigned = {tuple(splits.split_table(table, DataConfig(), seed=s)["split"]) for s in range(5)}
    assert len(assigned) > 1, "the seed changes the assignment"


def test_speaker_split_keeps_speakers_apart():
    out = splits.split_table(_table(4), DataConfig(split_by="speaker", val_fraction=0.25,
                                                   test_fraction=0.25), seed=1)
    splits.assert_disjoint(out, "speaker")
    assert out.groupby("split")["speaker"].nunique().to_dict() == {"test": 2, "train": 4, "val": 2}


def test_split_by_any_column():
    table = _table(2)
    table["topic"] = [f"t{i % 4}" for i in range(len(table))]
    out = splits.split_table(table, DataConfig(split_by="topic"), seed=0)
    splits.assert_disjoint(out, "topic")
    assert set(out["split"]) == {"train", "val", "test"}


def test_three_groups_give_one_group_per_split_and_two_are_an_error():
    three = _table(3)
    out = splits.split_table(three, DataConfig(), seed=0)
    assert out.groupby("split")["session"].nunique().to_dict() == {"test": 1, "train": 1, "val": 1}
    with pytest.raises(ValueError, match="only 2 distinct 'session'"):
        splits.split_table(_table(2), DataConfig(), seed=0)
    with pytest.raises(ValueError, match="no such column"):
        splits.split_table(three, DataConfig(split_by="room"), seed=0)


def test_rows_without_a_target_class_are_excluded_and_ties_resolved():
    table = _table(4)
    table.loc[0, "labels"] = "fear"
    table.loc[1, "labels"] = "disqust;neutral"
    table.loc[2, "labels"] = "fear;sad"
    out = splits.split_table(table, DataConfig(), seed=0)
    assert out.loc[0, "split"] == "excluded" and out.loc[0, "emotion"] == ""
    assert out.loc[1, "emotion"] == "neutral" and out.loc[1, "split"] != "excluded"
    assert out.loc[2, "emotion"] == "sad"
    assert (out["split"] == "excluded").sum() == 1
    report = splits.split_report(out)
    assert report.loc["(none)", "excluded"] == 1
    assert report.loc["total", "total"] == len(table)


def test_manifest_split_is_used_exactly():
    table = _table(2)
    given = np.array(["train", "val", "test"] * (len(table) // 3) + ["train"] * (len(table) % 3))
    table["split"] = given
    out = splits.split_table(table, DataConfig(), seed=123)
    assert out["split"].tolist() == given.tolist()
    table.loc[0, "labels"] = "fear"
    assert splits.split_table(table, DataConfig(), seed=0).loc[0, "split"] == "excluded"


def test_manifest_split_values_are_checked():
    table = _table(2)
    table["split"] = "train"
    table.loc[3, "split"] = "validation"
    with pytest.raises(ValueError, match="row 3: 'validation'"):
        splits.split_table(table, DataConfig(), seed=0)
    table.loc[3, "split"] = ""
    with pytest.raises(ValueError, match="for every row or for none"):
        splits.split_table(table, DataConfig(), seed=0)


def test_k_folds_test_every_session_once():
    table = _table(7)
    folds = splits.k_folds(table, 3, seed=0)
    assert len(folds) == 3
    tested = []
    for fold in folds:
        splits.assert_disjoint(fold, "session")
        assert set(fold["split"]) == {"train", "val", "test"}
        tested += sorted(set(fold.loc[fold["split"] == "test", "session"]))
    assert sorted(tested) == sorted(set(table["session"]))
    cfg = DataConfig(folds=3, fold=2)
    assert splits.split_table(table, cfg, seed=0)["split"].tolist() == folds[2]["split"].tolist()
    with pytest.raises(ValueError, match="cannot make 5 folds"):
        splits.k_folds(_table(4), 5, seed=0)


def test_assert_disjoint_raises_on_a_crossing_group():
    out = splits.split_table(_table(4), DataConfig(), seed=0)
    splits.assert_disjoint(out, "session")
    crossing = out.copy()
    first_train = crossing.index[crossing["split"] == "train"][0]
    crossing.loc[first_train, "split"] = "test"
    with pytest.raises(ValueError, match="span several splits"):
        splits.assert_disjoint(crossing, "session")


def test_augmented_rows_must_come_from_train():
    out = splits.split_table(_table(4), DataConfig(), seed=0)
    out["augmented_from"] = ""
    train_id = out.loc[out["split"] == "train", "segment_id"].iloc[0]
    test_id = out.loc[out["split"] == "test", "segment_id"].iloc[0]
    good = pd.DataFrame([{"segment_id": f"{train_id}#aug1", "split": "train", "augmented_from": train_id}])
    ok = pd.concat([out, good], ignore_index=True)
    splits.assert_augmented_in_train(ok)
    for bad in (
        {"segment_id": f"{test_id}#aug1", "split": "train", "augmented_from": test_id},
        {"segment_id": f"{train_id}#aug2", "split": "val", "augmented_from": train_id},
        {"segment_id": "X#aug1", "split": "train", "augmented_from": "X"},
    ):
        with pytest.raises(ValueError, match="leak outside the training split"):
            splits.assert_augmented_in_train(pd.concat([out, pd.DataFrame([bad])], ignore_index=True))
    with pytest.raises(ValueError, match="split first, then augment"):
        splits.split_table(ok.drop(columns="split"), DataConfig(), seed=0)


def test_write_and_read_split_round_trip(tmp_path):
    out = splits.split_table(_table(3), DataConfig(), seed=0)
    out.loc[0, "valence"] = np.nan
    out.loc[1, "text"] = "줄바꿈\n과, 쉼표 \"따옴표\""
    out["session"] = out["session"].str.replace("Sess", "")  # "01": must stay text
    out["augmented_from"] = ""
    out["frames"] = np.arange(len(out))
    out["flag"] = out.index % 2 == 0
    path = tmp_path / "table.csv"
    splits.write_split(out, path)
    back = splits.read_split(path)
    pd.testing.assert_frame_equal(back, out)
    assert back["session"].iloc[0] == "01"
    assert back["valence"].dtype == float and np.isnan(back.loc[0, "valence"])
    assert back["augmented_from"].iloc[0] == ""
    assert back["frames"].dtype.kind == "i" and back["flag"].dtype == bool
    with pytest.raises(ValueError, match="no 'split' column"):
        splits.write_split(_table(3), tmp_path / "x.csv")
