"""EDA-style text augmentation (random swap / deletion) and class balancing."""

import collections

import numpy as np
import pandas as pd
import pytest

from kemdy_tf.data.augment import (
    augment_table,
    augment_text,
    balance_table,
    random_deletion,
    random_swap,
)

WORDS = "나는 오늘 아침에 학교에 정말 일찍 갔다".split()


def _table(emotions):
    return pd.DataFrame({
        "segment_id": [f"u{i:02d}" for i in range(len(emotions))],
        "wav_path": [f"/data/u{i:02d}.wav" for i in range(len(emotions))],
        "text": [" ".join(WORDS[: 2 + i % 5]) for i in range(len(emotions))],
        "emotion": emotions,
        "valence": np.linspace(1, 5, len(emotions)),
    })


def test_random_swap_keeps_the_words():
    rng = np.random.default_rng(0)
    swapped = random_swap(WORDS, 1, rng)
    assert sorted(swapped) == sorted(WORDS)
    assert sum(a != b for a, b in zip(swapped, WORDS)) == 2  # exactly one pair moved
    assert random_swap(["하나"], 3, rng) == ["하나"]


def test_random_deletion_never_empties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = random_deletion(WORDS, 0.99, rng)
        assert 1 <= len(out) and set(out) <= set(WORDS)
    assert random_deletion(["하나"], 1.0, rng) == ["하나"]
    assert random_deletion(WORDS, 0.0, rng) == WORDS
    kept = [len(random_deletion(WORDS * 20, 0.5, rng)) for _ in range(20)]
    assert 0.35 < np.mean(kept) / (len(WORDS) * 20) < 0.65


def test_augment_text_is_seeded_and_changes_text():
    text = " ".join(WORDS)
    a = [augment_text(text, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    outputs = {augment_text(text, np.random.default_rng(seed)) for seed in range(20)}
    assert len(outputs) > 5  # different seeds give different texts
    for out in outputs:
        assert out and set(out.split()) <= set(WORDS)
    assert augment_text("하나", np.random.default_rng(0)) == "하나"
    assert augment_text("", np.random.default_rng(0)) == ""


def test_augment_table_returns_only_new_rows_from_given_rows():
    table = _table(["neutral", "happy", "sad", "neutral"])
    new = augment_table(table, copies=2, seed=3)
    assert len(new) == 8
    assert list(new.columns) == list(table.columns) + ["augmented_from"]
    assert set(new.augmented_from) == set(table.segment_id)
    assert not set(new.segment_id) & set(table.segment_id)
    assert sorted(new.segment_id) == sorted(f"u{i:02d}#aug{k}" for i in range(4) for k in (1, 2))
    source = table.set_index("segment_id")
    for _, row in new.iterrows():
        original = source.loc[row.augmented_from]
        assert row.wav_path == original.wav_path and row.emotion == original.emotion
        assert row.valence == original.valence
        # The augmented words are the original's, some perhaps deleted, none added.
        assert not collections.Counter(row.text.split()) - collections.Counter(original.text.split())


def test_augment_table_is_deterministic_and_seed_dependent():
    table = _table(["neutral"] * 10)
    first = augment_table(table, copies=1.5, seed=1)
    pd.testing.assert_frame_equal(first, augment_table(table, copies=1.5, seed=1))
    other = augment_table(table, copies=1.5, seed=2)
    assert not first.equals(other)
    counts = collections.Counter(first.augmented_from)
    assert len(first) == 15 and sorted(counts.values()) == [1] * 5 + [2] * 5


def test_augment_table_zero_and_negative():
    table = _table(["neutral", "sad"])
    empty = augment_table(table, copies=0, seed=0)
    assert empty.empty and "augmented_from" in empty.columns
    with pytest.raises(ValueError, match="copies"):
        augment_table(table, copies=-1, seed=0)


def test_augmented_rows_are_not_copied_again_and_ids_stay_unique():
    table = _table(["neutral", "sad"])
    first = augment_table(table, copies=1, seed=0)
    both = pd.concat([table.assign(augmented_from=""), first], ignore_index=True)
    second = augment_table(both, copies=1, seed=0)
    assert set(second.augmented_from) == {"u00", "u01"}
    assert sorted(second.segment_id) == ["u00#aug2", "u01#aug2"]


def test_balance_table_reaches_the_target():
    table = _table(["neutral"] * 10 + ["happy"] * 4 + ["sad"] * 1)
    new = balance_table(table, target=0.8, seed=0)
    assert set(new.augmented_from) <= set(table.segment_id)
    after = pd.concat([table, new]).emotion.value_counts()
    assert after.to_dict() == {"neutral": 10, "happy": 8, "sad": 8}
    # Copies spread evenly over a class's rows.
    happy_sources = collections.Counter(new[new.emotion == "happy"].augmented_from)
    assert sorted(happy_sources.values()) == [1, 1, 1, 1]
    assert set(new[new.emotion == "sad"].augmented_from) == {"u14"}
    assert sorted(new[new.emotion == "sad"].segment_id) == sorted(f"u14#bal{k}" for k in range(1, 8))
    pd.testing.assert_frame_equal(new, balance_table(table, target=0.8, seed=0))


def test_balance_table_counts_rows_already_augmented_and_respects_classes():
    table = _table(["neutral"] * 6 + ["happy"] * 2 + ["fear"] * 1)
    augmented = pd.concat([table.assign(augmented_from=""), augment_table(table.iloc[6:8], 1, seed=0)],
                          ignore_index=True)
    new = balance_table(augmented, target=1.0, seed=0, classes=["neutral", "happy"])
    assert list(new.emotion) == ["happy", "happy"]  # 2 + 2 augmented + 2 new = 6; fear left alone
    assert set(new.segment_id) == {"u06#bal1", "u07#bal1"}
    again = balance_table(pd.concat([augmented, new], ignore_index=True), target=1.5, seed=0,
                          classes=["neutral", "happy"])
    assert set(again.segment_id) >= {"u06#bal2", "u07#bal2"}  # numbering continues
    assert balance_table(table, target=0, seed=0).empty


def test_augment_and_balance_on_the_same_rows_never_repeat_an_id():
    table = _table(["neutral"] * 6 + ["happy"] * 2).assign(augmented_from="")
    both = pd.concat([table, augment_table(table, 1, seed=0), balance_table(table, 1.0, seed=0)],
                     ignore_index=True)
    assert both.segment_id.is_unique
    assert len(both) == 8 + 8 + 4


def test_balance_table_needs_its_label_column():
    with pytest.raises(KeyError, match="label"):
        balance_table(_table(["neutral"]), target=1, seed=0, label_col="label")
