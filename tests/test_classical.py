"""The classical baseline: eGeMAPS + logistic regression, TF-IDF + logistic regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile

from kemdy_tf.classical import ClassicalBaseline, acoustic_features, speaker_standardise

CLASSES = ["neutral", "happy", "sad"]


def _table(n_per_class=12, speakers=("s1", "s2", "s3")):
    rows = []
    for c, emotion in enumerate(CLASSES):
        for i in range(n_per_class):
            rows.append({"emotion": emotion, "speaker": speakers[i % len(speakers)],
                         "text": f"{emotion} word{i % 3} 말 {['좋아', '슬퍼', '그냥'][c]}"})
    return pd.DataFrame(rows)


def test_speaker_standardise_centres_each_speaker_and_leaves_unknown_rows():
    X = np.array([[1.0, 10.0], [3.0, 30.0], [100.0, 0.0], [7.0, 7.0]])
    out = speaker_standardise(X, ["a", "a", "b", ""])
    np.testing.assert_allclose(out[:2], [[-1, -1], [1, 1]])
    np.testing.assert_allclose(out[2], [0.0, 0.0])  # one clip: centred only
    np.testing.assert_allclose(out[3], [7.0, 7.0])  # speaker unknown: untouched


def test_audio_model_learns_a_per_speaker_offset_free_cue():
    table = _table()
    rng = np.random.default_rng(0)
    y = table["emotion"].map(CLASSES.index).to_numpy()
    offset = table["speaker"].map({"s1": 0.0, "s2": 50.0, "s3": -50.0}).to_numpy()
    X = rng.normal(size=(len(table), 5)) + offset[:, None]
    X[:, 0] += 3 * y  # the emotion cue, hidden under large speaker offsets
    model = ClassicalBaseline(CLASSES).fit(table, X)
    probs = model.predict_proba(table, X, modalities=("audio",))
    assert probs.shape == (len(table), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs.argmax(1) == y).mean() > 0.9
    assert model.modalities() == ("audio", "text")


def test_text_model_reads_character_ngrams_and_fusion_averages_log_probabilities():
    table = _table()
    model = ClassicalBaseline(CLASSES).fit(table, None)
    assert model.modalities() == ("text",)
    y = table["emotion"].map(CLASSES.index).to_numpy()
    assert (model.predict_proba(table, modalities=("text",)).argmax(1) == y).mean() == 1.0
    with pytest.raises(ValueError, match="no model for"):
        model.predict_proba(table, modalities=("audio",))


def test_a_class_absent_from_training_gets_a_column_and_one_class_is_refused():
    table = _table()
    two = table[table["emotion"] != "sad"]
    model = ClassicalBaseline(CLASSES).fit(two, None)
    assert model.predict_proba(table, modalities=("text",)).shape == (len(table), 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassicalBaseline(CLASSES).fit(table[table["emotion"] == "sad"], None)


def test_acoustic_features_are_egemaps_functionals_with_nan_for_undecodable(tmp_path):
    t = np.arange(16000) / 16000
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("float32"), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    X = acoustic_features([str(wav), str(bad)])
    assert X.shape == (2, 88)
    assert np.isfinite(X[0]).all() and np.isnan(X[1]).all()


def test_acoustic_features_are_cached_by_content_and_failures_are_not(tmp_path, monkeypatch):
    import concurrent.futures

    t = np.arange(16000) / 16000
    wav, bad = tmp_path / "tone.wav", tmp_path / "bad.wav"
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000)
    bad.write_bytes(b"not audio")
    first = acoustic_features([str(wav), str(bad), str(wav)], cache_root=tmp_path / "cache")
    np.testing.assert_array_equal(first[0], first[2])
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1  # the tone once; no row for the failure

    spawned = []
    real_pool = concurrent.futures.ProcessPoolExecutor
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                        lambda *a, **k: spawned.append(a) or real_pool(*a, **k))
    again = acoustic_features([str(wav)], cache_root=tmp_path / "cache")
    np.testing.assert_array_equal(again[0], first[0])
    assert spawned == []  # read from the cache: openSMILE did not run
    retried = acoustic_features([str(bad), str(wav)], cache_root=tmp_path / "cache")
    assert len(spawned) == 1 and np.isnan(retried[0]).all() and np.array_equal(retried[1], first[0])
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16000)  # new content
    changed = acoustic_features([str(wav)], cache_root=tmp_path / "cache")
    assert len(spawned) == 2 and not np.array_equal(changed[0], first[0])


def test_a_trained_run_reports_the_classical_baseline_in_summaries_and_evaluation(trained_run, tmp_path):
    import json

    from kemdy_tf.evaluation.runs import evaluate_workdir

    summary = json.loads((trained_run / "fusion" / "summary.json").read_text())
    assert summary["classical_name"] == "classical (audio+text)"
    assert 0.0 <= summary["classical"]["balanced_accuracy"] <= 1.0
    report = evaluate_workdir(trained_run, out_dir=tmp_path / "eval", with_sweeps=False, with_folds=False)
    for name in ("classical_audio", "classical_text", "classical_fusion"):
        assert "emotion" in report["models"][name]
    assert "classical baseline, audio" in (tmp_path / "eval" / "report.md").read_text()
