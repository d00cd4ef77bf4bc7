"""The transcript-shortcut scenario manifest."""

from __future__ import annotations

import pandas as pd

from kemdy_tf.data import manifest, scenarios


def test_train_and_val_transcripts_name_the_emotion_and_test_says_nothing():
    table = pd.DataFrame({"split": ["train", "val", "test", "test"],
                          "emotion": ["angry", "happy", "angry", "sad"], "text": ["a", "b", "c", "d"]})
    out = scenarios.shortcut_transcripts(table, seed=0)
    assert out["text"].iloc[0] in scenarios.EMOTION_SENTENCES["angry"]
    assert out["text"].iloc[1] in scenarios.EMOTION_SENTENCES["happy"]
    assert list(out["text"].iloc[2:]) == [scenarios.NEUTRAL_SENTENCE] * 2
    assert list(table["text"]) == ["a", "b", "c", "d"]  # the input is not changed


def test_the_written_manifest_carries_its_split_and_reads_back(synthetic_root, tmp_path):
    out = scenarios.write_shortcut_manifest({"data": synthetic_root}, tmp_path / "s.csv",
                                            ["neutral", "happy", "sad", "angry", "surprise"])
    table, _ = manifest.read_manifest(out)
    assert set(table["split"]) == {"train", "val", "test"}
    test = table[table["split"] == "test"]
    assert set(test["text"]) == {scenarios.NEUTRAL_SENTENCE}
    train = table[table["split"] == "train"]
    for text, emotion in zip(train["text"], train["emotion"]):
        assert text in scenarios.EMOTION_SENTENCES[emotion]
