"""Predictions table, report files, plots, sweeps and folds of kemdy_tf.evaluation.

The unit tests use tiny plain-Keras stand-ins with the contract's input and output
names (docs/architecture.md); the whole-workdir tests use conftest's real tiny run.
"""

import importlib.util
import json
import math
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import copy_run

from kemdy_tf import scoring as metrics
from kemdy_tf.evaluation import plots, predict, report, runs, sweeps

CLASSES = ("neutral", "happy", "sad")
ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# === Tiny stand-ins for a run's models and data ===

def build_models(seed: int = 0) -> dict:
    import keras

    keras.utils.set_random_seed(seed)

    def audio_inputs():
        return {"log_mel": keras.Input((None, 8), name="log_mel"),
                "frame_mask": keras.Input((None,), dtype="bool", name="frame_mask")}

    def pooled_audio(inputs):
        return keras.layers.GlobalAveragePooling1D()(inputs["log_mel"])

    def pooled_text(token_ids):
        embedded = keras.layers.Embedding(20, 4)(token_ids)
        return keras.layers.GlobalAveragePooling1D()(embedded)

    a = audio_inputs()
    audio = keras.Model(a, {"arousal": keras.layers.Dense(1, name="arousal")(pooled_audio(a))})
    t = keras.Input((None,), dtype="int32", name="token_ids")  # single input, as the text encoder
    text = keras.Model(t, {"valence": keras.layers.Dense(1, name="valence")(pooled_text(t))})
    f = {**audio_inputs(), "token_ids": keras.Input((None,), dtype="int32", name="token_ids")}
    joined = keras.layers.Concatenate()([pooled_audio(f), pooled_text(f["token_ids"])])
    fusion = keras.Model(f, {"emotion": keras.layers.Dense(3, activation="softmax", name="emotion")(joined)})
    a = audio_inputs()
    audio_clf = keras.Model(a, {"emotion": keras.layers.Dense(3, activation="softmax", name="emotion")(pooled_audio(a))})
    t = keras.Input((None,), dtype="int32", name="token_ids")
    text_clf = keras.Model(t, {"emotion": keras.layers.Dense(3, activation="softmax", name="emotion")(pooled_text(t))})
    return {"audio": audio, "text": text, "fusion": fusion, "audio_clf": audio_clf, "text_clf": text_clf}


def split_table(n: int, seed: int = 0) -> pd.DataFrame:
    """A test split of n utterances; the first carries a tie."""
    rng = np.random.default_rng(seed)
    emotion = [CLASSES[i % 3] for i in range(n)]
    labels = list(emotion)
    labels[1] = "happy;neutral"
    return pd.DataFrame({"segment_id": [f"Sess01_script01_User001F_{i:03d}" for i in range(n)],
                         "labels": labels, "emotion": emotion, "split": "test",
                         "arousal": rng.uniform(1, 5, n).round(2), "valence": rng.uniform(1, 5, n).round(2)})


def dataset_of(table: pd.DataFrame, batch: int = 4, seed: int = 0):
    """(features, targets) batches as features.make_dataset(..., with_ids=True) yields them."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    n = len(table)
    features = {"log_mel": rng.normal(size=(n, 6, 8)).astype("float32"),
                "frame_mask": np.ones((n, 6), bool),
                "token_ids": rng.integers(1, 20, size=(n, 5)).astype("int32"),
                "segment_id": table["segment_id"].to_numpy(dtype=str)}
    targets = {"emotion": table["emotion"].map(CLASSES.index).to_numpy("int32"),
               "arousal": table[["arousal"]].to_numpy("float32"),
               "valence": table[["valence"]].to_numpy("float32")}
    return tf.data.Dataset.from_tensor_slices((features, targets)).batch(batch)


# === predict_split ===

def test_predict_split_collects_every_model_and_the_blank_transcript_variant():
    models = build_models()
    table = split_table(10)
    dataset = dataset_of(table)
    frame = predict.predict_split(models, dataset, CLASSES, table=table)

    order = ["audio", "text", "fusion", "fusion_no_text", "audio_clf", "text_clf"]
    assert list(dict.fromkeys(frame["model"])) == order
    assert (frame.groupby("model").size() == 10).all()
    assert list(frame.columns) == (["model", "segment_id", "labels", "emotion_true", "emotion_pred"]
                                   + [f"prob_{c}" for c in CLASSES]
                                   + ["arousal_true", "arousal_pred", "valence_true", "valence_pred"])
    fusion = frame[frame["model"] == "fusion"].reset_index(drop=True)
    assert list(fusion["segment_id"]) == list(table["segment_id"])
    assert fusion.loc[1, "labels"] == "happy;neutral" and fusion.loc[1, "emotion_true"] == "happy"
    assert list(fusion["emotion_true"]) == list(table["emotion"])
    np.testing.assert_allclose(fusion["arousal_true"], table["arousal"], rtol=1e-6)

    # Probabilities: one column per class, rows sum to 1, argmax is the predicted label.
    probs = fusion[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(fusion["emotion_pred"]) == [CLASSES[i] for i in probs.argmax(axis=1)]

    # The no-text variant is the fusion model on all-zero token ids, not on the real ones.
    features = next(iter(dataset.unbatch().batch(10)))[0]
    blank = models["fusion"].predict_on_batch({"log_mel": features["log_mel"], "frame_mask": features["frame_mask"],
                                               "token_ids": np.zeros((10, 5), "int32")})["emotion"]
    no_text = frame[frame["model"] == "fusion_no_text"][[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(no_text, blank, rtol=1e-5, atol=1e-6)
    assert not np.allclose(no_text, probs, atol=1e-4)

    # Regression models: their own output, no class columns.
    audio = frame[frame["model"] == "audio"]
    direct = models["audio"].predict_on_batch({"log_mel": features["log_mel"],
                                               "frame_mask": features["frame_mask"]})["arousal"][:, 0]
    np.testing.assert_allclose(audio["arousal_pred"], direct, rtol=1e-5)
    assert audio["emotion_pred"].isna().all() and audio["prob_happy"].isna().all()
    assert audio["valence_pred"].isna().all()


def test_predict_split_feeds_the_speaker_functionals_a_classifier_reads():
    """fusion.functionals_speaker_norm: the classifier's third input comes from the dataset."""
    import keras
    import tensorflow as tf

    inputs = {"log_mel": keras.Input((None, 8), name="log_mel"),
              "frame_mask": keras.Input((None,), dtype="bool", name="frame_mask"),
              "speaker_functionals": keras.Input((2, 4), name="speaker_functionals")}
    joined = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling1D()(inputs["log_mel"]),
                                         keras.layers.Flatten()(inputs["speaker_functionals"])])
    model = keras.Model(inputs, {"emotion": keras.layers.Dense(3, activation="softmax", name="emotion")(joined)})
    table = split_table(6)
    stats = np.random.default_rng(0).normal(size=(6, 2, 4)).astype("float32")
    dataset = dataset_of(table, batch=6).map(lambda x, y: ({**x, "speaker_functionals": stats}, y))
    frame = predict.predict_split({"audio_clf": model}, dataset, CLASSES, table=table)
    features = next(iter(dataset))[0]
    expected = model({k: features[k] for k in inputs})["emotion"].numpy()
    assert list(frame["model"].unique()) == ["audio_clf"] and len(frame) == 6
    np.testing.assert_allclose(frame[[f"prob_{c}" for c in CLASSES]].to_numpy(), expected, atol=1e-5)
    assert tf.is_tensor(features["speaker_functionals"])


def test_predict_split_rejects_wrong_class_count_and_missing_ids():
    models = build_models()
    table = split_table(4)
    with pytest.raises(ValueError, match="predicts 3 emotion classes, the run has 2"):
        predict.predict_split({"fusion": models["fusion"]}, dataset_of(table), CLASSES[:2])
    without_ids = dataset_of(table).map(lambda f, t: ({k: v for k, v in f.items() if k != "segment_id"}, t))
    with pytest.raises(ValueError, match="with_ids=True"):
        predict.predict_split({"audio": models["audio"]}, without_ids, CLASSES)
    with pytest.raises(ValueError, match="dataset is empty"):
        predict.predict_split({"audio": models["audio"]}, dataset_of(table).take(0), CLASSES)


# === Scoring and report files ===

def hand_predictions() -> pd.DataFrame:
    """Six utterances: fusion as in test_metrics (4 right), audio_clf always neutral."""
    truth = ["neutral", "neutral", "neutral", "happy", "happy", "sad"]
    fusion_pred = ["neutral", "neutral", "happy", "happy", "sad", "sad"]
    base = pd.DataFrame({"segment_id": [f"s{i}" for i in range(6)],
                         "labels": ["neutral", "neutral;happy", "neutral", "happy", "happy", "sad"],
                         "emotion_true": truth,
                         "arousal_true": [1.0, 2.0, 3.0, 3.0, 4.0, 5.0],
                         "valence_true": [np.nan, 2.0, 3.0, 3.0, 4.0, 5.0]})

    def model(name, pred, arousal=None):
        frame = base.assign(model=name, emotion_pred=pred)
        for c in CLASSES:
            frame[f"prob_{c}"] = [1.0 if p == c else 0.0 for p in pred] if pred[0] is not None else np.nan
        frame["arousal_pred"] = arousal if arousal is not None else np.nan
        frame["valence_pred"] = np.nan
        return frame

    return pd.concat([model("fusion", fusion_pred), model("audio_clf", ["neutral"] * 6),
                      model("audio", [None] * 6, arousal=[1.0, 2.0, 3.0, 3.0, 4.0, 5.0])],
                     ignore_index=True)


def test_score_predictions_matches_hand_computed_figures_and_baselines():
    scores = metrics.score_predictions(hand_predictions(), CLASSES,
                                       train_emotions=["neutral"] * 5 + ["happy", "sad", "fear"],
                                       train_means={"arousal": 3.0, "valence": 3.0})
    assert scores["n"] == 6
    fusion = scores["models"]["fusion"]["emotion"]
    assert fusion["accuracy"] == pytest.approx(4 / 6) and fusion["balanced_accuracy"] == pytest.approx(13 / 18)
    # Certain of every answer (probability 1) and right 4 times in 6: calibration error 1/3.
    assert fusion["ece"] == pytest.approx(1 / 3)
    assert scores["models"]["audio_clf"]["emotion"]["ece"] == pytest.approx(0.5)
    assert sum(c["support"] for c in fusion["per_class"].values()) == 6
    assert set(scores["models"]["fusion"]) == {"emotion"}
    # Predicting the training majority (neutral) is exactly the audio_clf here.
    baseline = scores["majority_baseline"]
    assert baseline["class"] == "neutral"
    assert baseline["balanced_accuracy"] == pytest.approx(1 / 3)
    assert baseline["accuracy"] == scores["models"]["audio_clf"]["emotion"]["accuracy"] == pytest.approx(0.5)
    # A perfect arousal model; the mean predictor has CCC 0 and its own RMSE.
    assert scores["models"]["audio"]["arousal"]["rmse"] == pytest.approx(0.0)
    assert scores["models"]["audio"]["arousal"]["ccc"] == pytest.approx(1.0)
    assert "emotion" not in scores["models"]["audio"]
    assert scores["mean_baseline"]["arousal"]["ccc"] == 0.0
    assert scores["mean_baseline"]["arousal"]["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0 + 0 + 1 + 4) / 6))
    assert scores["mean_baseline"]["valence"]["n"] == 5  # one unknown valence left out


def test_score_predictions_names_unknown_labels():
    bad = hand_predictions()
    bad.loc[0, "emotion_pred"] = "fear"
    with pytest.raises(ValueError, match="emotion_pred holds labels that are not classes.*fear"):
        metrics.score_predictions(bad, CLASSES, ["neutral"], {"arousal": 3.0, "valence": 3.0})


def test_write_report_files(tmp_path):
    predictions = hand_predictions()
    scores = metrics.score_predictions(predictions, CLASSES, ["neutral", "neutral", "happy"],
                                       {"arousal": 3.0, "valence": 3.0})
    content = {"workdir": "runs/fake", "split": "test", "label_policy": runs.LABEL_POLICY, **scores}
    paths = report.write_report(content, tmp_path, predictions)

    loaded = json.loads(paths["json"].read_text())
    assert loaded["models"]["fusion"]["emotion"]["macro_f1"] == pytest.approx(59 / 90)
    assert loaded["models"]["fusion"]["emotion"]["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert loaded["majority_baseline"]["class"] == "neutral"

    markdown = paths["markdown"].read_text()
    lines = markdown.splitlines()
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[first_table] == "| model | WA | UA | macro-F1 | weighted-F1 | ECE | n |"
    assert lines[first_table + 2] == "| majority baseline (`neutral`) | 0.500 | 0.333 | 0.222 | 0.333 |  | 6 |"
    # Comparison rows: audio only before fusion; fusion's figures as worked out by hand.
    assert lines[first_table + 3].startswith("| audio only (`audio_clf`) | 0.500 | 0.333 |")
    assert lines[first_table + 4] == "| fusion (audio + text) (`fusion`) | 0.667 | 0.722 | 0.656 | 0.678 | 0.333 | 6 |"
    warning = [line for line in lines[:first_table] if "Warning" in line]
    assert len(warning) == 1 and warning[0].startswith("**") and warning[0].endswith("**")
    assert "WA 0.500" in warning[0] and "UA" in warning[0]
    assert "| arousal | audio encoder (`audio`) | 0.000 | 1.000 |" in markdown
    assert "| **total** |  |  |  | 6 |" in markdown
    assert "primary_label" in markdown

    written = pd.read_csv(paths["predictions"], keep_default_na=False)
    assert len(written) == 18
    assert {"segment_id", "labels", "emotion_true", "emotion_pred", "prob_neutral", "prob_happy",
            "prob_sad", "arousal_true", "arousal_pred", "valence_true", "valence_pred"} <= set(written.columns)
    assert written.loc[1, "labels"] == "neutral;happy"


def test_json_has_no_nan_tokens(tmp_path):
    content = {"workdir": "w", "value": float("nan"), "array": np.array([1.5, np.inf]), "n": np.int64(3)}
    text = report.write_report(content, tmp_path)["json"].read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"workdir": "w", "value": None, "array": [1.5, None], "n": 3}


# === Plots ===

def assert_png(path, min_bytes=5000):
    import matplotlib.image

    path = pathlib.Path(path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 200 and width > 300


def test_plots_are_valid_pngs(tmp_path):
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    assert_png(plots.plot_confusion(y_true, y_pred, CLASSES, tmp_path / "c.png", "fusion"))
    assert_png(plots.plot_recall_bars({"fusion": [2 / 3, 0.5, 1.0], "audio_clf": [1.0, 0.0, 0.0]},
                                      CLASSES, tmp_path / "r.png"))
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7], "f1": [0.2, 0.3, 0.4],
                            "val_loss": [1.1, 0.9, 0.95], "val_f1": [0.1, 0.2, 0.25], "learning_rate": 1e-3})
    assert_png(plots.plot_history(history, tmp_path / "h.png", "fusion"))
    rows = pd.DataFrame({"value": ["1", "2", "4"], "stage": "audio", "metric": "rmse",
                         "train": [0.9, 0.7, 0.6], "val": [1.0, 0.8, 0.85]})
    assert_png(plots.plot_sweep(rows, tmp_path / "s.png", "sweep of audio.n_layers"))
    with pytest.raises(ValueError, match="no rows or no metric"):
        plots.plot_history(pd.DataFrame({"epoch": [0]}), tmp_path / "x.png", "empty")


def test_metric_pairs_groups_train_and_validation_columns():
    assert plots.metric_pairs(["epoch", "accuracy", "f1", "learning_rate", "loss", "val_accuracy",
                               "val_f1", "val_loss"]) == [("loss", "val_loss"), ("accuracy", "val_accuracy"),
                                                          ("f1", "val_f1")]
    assert plots.metric_pairs(["epoch", "rmse", "val_auc"]) == [("rmse", None), ("val_auc", None)]


# === Sweeps and folds ===

def write_history(folder: pathlib.Path, **columns) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(columns.values())))
    pd.DataFrame({"epoch": range(n), **columns}).to_csv(folder / "history.csv", index=False)


def test_collect_sweep_takes_best_validation_epoch_and_orders_values(tmp_path):
    field = tmp_path / "sweeps" / "audio.n_layers"
    # Best val_loss at epoch index 1 -> train/val rmse of that row.
    write_history(field / "10" / "audio", loss=[1.0, 0.5, 0.4], rmse=[1.0, 0.7, 0.6],
                  val_loss=[1.2, 0.6, 0.9], val_rmse=[1.1, 0.77, 0.95])
    write_history(field / "2" / "audio", loss=[1.0, 0.9], rmse=[0.95, 0.9], val_loss=[1.0, 0.8], val_rmse=[1.0, 0.9])
    write_history(field / "2" / "fusion", loss=[1.0], f1=[0.4], accuracy=[0.5], val_loss=[1.0],
                  val_f1=[0.3], val_accuracy=[0.45])
    (field / "cache" / "logmel-0123").mkdir(parents=True)  # train.py's per-sweep feature cache
    (field / "3" / "audio").mkdir(parents=True)
    (field / "3" / "audio" / "summary.json").write_text(json.dumps({"stage": "audio", "rmse": 0.88}))

    rows = sweeps.find_sweeps(tmp_path)["audio.n_layers"]
    assert list(zip(rows["value"], rows["stage"])) == [("2", "audio"), ("2", "fusion"), ("3", "audio"), ("10", "audio")]
    ten = rows.iloc[3]
    assert (ten["metric"], ten["train"], ten["val"], ten["epoch"], ten["epochs"]) == ("rmse", 0.7, 0.77, 2, 3)
    assert (rows.iloc[1]["metric"], rows.iloc[1]["val"]) == ("f1", 0.3)
    assert math.isnan(rows.iloc[2]["train"]) and rows.iloc[2]["val"] == 0.88
    assert sweeps.find_sweeps(tmp_path / "nowhere") == {}


def test_sweep_of_a_val_ua_classifier_takes_the_epoch_of_the_highest_val_ua(tmp_path):
    """A classifier trained with train.monitor=val_ua (val_f1) kept the highest-val_ua
    (val_f1) epoch, not the lowest-val_loss one; a rating stage with the same config still
    follows val_loss."""
    columns = dict(loss=[1.0, 0.8, 0.7], f1=[.2, .3, .4], val_loss=[0.9, 0.7, 0.8], val_f1=[.25, .2, .35],
                   val_ua=[.5, .25, .45])
    kept = {}
    for monitor in ("val_loss", "val_ua", "val_f1"):
        folder = tmp_path / monitor / "text_clf"
        write_history(folder, **columns)
        (folder / "config.json").write_text(json.dumps({"config": {"train": {"monitor": monitor}}}))
        result = sweeps.stage_result(folder)
        kept[monitor] = (result["epoch"], result["val"])
    assert kept == {"val_loss": (2, .2), "val_ua": (1, .25), "val_f1": (3, .35)}
    assert "highest val_f1" in result["source"]
    rating = tmp_path / "text"
    write_history(rating, loss=[1.0, 0.8], rmse=[1.0, 0.9], val_loss=[0.9, 0.95], val_rmse=[0.95, 0.97])
    (rating / "config.json").write_text(json.dumps({"config": {"train": {"monitor": "val_ua"}}}))
    assert sweeps.stage_result(rating)["epoch"] == 1


def test_read_history_names_bad_file(tmp_path):
    empty = tmp_path / "history.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="history.csv"):
        sweeps.read_history(empty)


def test_aggregate_folds_mean_and_sample_std():
    def fold(wa, rmse):
        return {"majority_baseline": {k: 0.5 for k in metrics.HEADLINE},
                "models": {"fusion": {"emotion": {k: wa for k in metrics.HEADLINE}},
                           "audio": {"arousal": {"rmse": rmse, "ccc": float("nan")}}}}

    summary = runs.aggregate_folds({"fold0": fold(0.6, 1.0), "fold1": fold(0.8, 0.5), "fold2": fold(0.7, 0.75)})
    accuracy = summary["models"]["fusion"]["emotion"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(0.7)
    assert accuracy["std"] == pytest.approx(0.1)  # sqrt((0.01 + 0.01 + 0) / 2)
    assert summary["models"]["audio"]["arousal"]["rmse"]["std"] == pytest.approx(0.25)
    assert math.isnan(summary["models"]["audio"]["arousal"]["ccc"]["mean"])
    assert summary["majority_baseline"]["balanced_accuracy"]["std"] == 0.0
    assert summary["folds"] == ["fold0", "fold1", "fold2"]


def test_pool_folds_scores_every_folds_predictions_as_one_set(tmp_path):
    """Fold 0 gets its one rare utterance right, fold 1 its one wrong: the fold mean of
    UA is .75, pooled (both rare utterances, one right) the rare recall is .5; the
    majority baseline predicts each fold's own training majority."""
    classes = ["neutral", "sad"]

    def fold(name, truth, predicted, majority):
        frame = pd.DataFrame({"model": "text_clf", "segment_id": [f"{name}-{i}" for i in range(len(truth))],
                              "emotion_true": truth, "emotion_pred": predicted})
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        return {"classes": classes, "majority_baseline": {"class": majority},
                "paths": {"predictions": str(path)}}, path

    r0, p0 = fold("fold0", ["neutral"] * 3 + ["sad"], ["neutral"] * 3 + ["sad"], "neutral")
    r1, p1 = fold("fold1", ["neutral"] * 3 + ["sad"], ["neutral", "neutral", "sad", "neutral"], "sad")
    pooled = runs.pool_folds({"fold0": r0, "fold1": r1})
    assert pooled["n"] == 8
    text = pooled["models"]["text_clf"]
    assert text["accuracy"] == pytest.approx(6 / 8)
    assert text["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    # fold0 says neutral to all 4, fold1 sad to all 4: neutral recall 3/6, sad recall 1/2
    assert pooled["majority_baseline"]["balanced_accuracy"] == pytest.approx(0.5)
    assert pooled["majority_baseline"]["accuracy"] == pytest.approx(4 / 8)
    p1.unlink()  # a fold without predictions: nothing pooled
    assert runs.pool_folds({"fold0": r0, "fold1": r1}) == {}


# === A whole workdir: a real tiny run (conftest's trained_run), copied ===

def _trim(workdir: pathlib.Path, keep) -> pathlib.Path:
    for folder in workdir.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder)
    return workdir


def _snapshot(folder: pathlib.Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_evaluate_workdir_writes_report_plots_sweeps_and_folds(tmp_path, trained_run):
    workdir = copy_run(trained_run, tmp_path / "run")
    for k in range(2):
        _trim(copy_run(trained_run, workdir / "folds" / f"fold{k}"), keep={"fusion", "audio"})
    write_history(workdir / "sweeps" / "text.n_layers" / "1" / "text", loss=[1.0], rmse=[0.9],
                  val_loss=[1.0], val_rmse=[0.95])
    write_history(workdir / "sweeps" / "text.n_layers" / "2" / "text", loss=[1.0], rmse=[0.8],
                  val_loss=[1.0], val_rmse=[0.85])
    (workdir / "text_clf" / "model.keras").unlink()  # a stage whose training did not finish
    before = _snapshot(workdir)

    result = runs.evaluate_workdir(workdir)
    out = workdir / "eval_test"
    after = {p: t for p, t in _snapshot(workdir).items() if out not in p.parents}
    assert after == before, "evaluation wrote into the run outside its eval_test/ folder"
    assert any("text_clf/model.keras is missing" in note for note in result["notes"])
    table = pd.read_csv(workdir / "table.csv", keep_default_na=False)
    n_test = int(((table["split"] == "test") & (table["augmented_from"] == "")).sum())
    assert result["n"] == n_test
    assert set(result["models"]) == {"audio", "text", "fusion", "fusion_no_text", "audio_clf", "classical_audio", "classical_text", "classical_fusion"}

    for name in ("confusion_fusion.png", "confusion_fusion_no_text.png", "confusion_audio_clf.png",
                 "recall_per_class.png", "curves_fusion.png", "sweep_text.n_layers.png"):
        assert_png(out / name)
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 8 * n_test  # 5 deep models and variants + 3 classical rows per utterance

    markdown = (out / "report.md").read_text()
    for row in ("| majority baseline (`", "| audio only (`audio_clf`)",
                "| fusion (audio + text) (`fusion`)", "| fusion, transcript blanked (token ids 0) (`fusion_no_text`)"):
        assert row in markdown
    assert "![training curves of fusion](curves_fusion.png)" in markdown
    assert "| 2 | text | rmse | 0.800 | 0.850 | 1 | 1 |" in markdown
    assert "## Cross-validation (2 folds, test split of each)" in markdown
    assert " ± " in markdown

    # Folds: each fold's own report, and the mean of the two folds' figures.
    fold_reports = [json.loads((out / "folds" / f"fold{k}" / "report.json").read_text()) for k in range(2)]
    wa = [r["models"]["fusion"]["emotion"]["accuracy"] for r in fold_reports]
    assert result["folds"]["models"]["fusion"]["emotion"]["accuracy"]["mean"] == pytest.approx(np.mean(wa))
    assert result["folds"]["models"]["fusion"]["emotion"]["accuracy"]["values"] == pytest.approx(wa)
    assert (out / "folds" / "fold1" / "report.md").exists()
    # Pooled: both folds' test predictions as one set (here the same run twice: the same figures).
    assert result["folds"]["pooled"]["n"] == 2 * n_test
    assert result["folds"]["pooled"]["models"]["fusion"]["accuracy"] == pytest.approx(wa[0])
    assert "Pooled: every fold's test predictions scored as one set" in markdown


def test_evaluation_never_rebuilds_a_missing_feature_cache(tmp_path, trained_run):
    workdir = copy_run(trained_run, tmp_path / "run")
    with pytest.raises(runs.EvaluationError, match="feature cache .* does not exist"):
        runs.evaluate_workdir(workdir, cache_dir=tmp_path / "gone")
    assert not (tmp_path / "gone").exists()
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    with pytest.raises(runs.EvaluationError, match="holds none of the test split"):
        runs.evaluate_workdir(workdir, cache_dir=empty)


def test_evaluate_workdir_refuses_empty_or_missing_workdir(tmp_path):
    with pytest.raises(runs.EvaluationError, match="no such workdir"):
        runs.evaluate_workdir(tmp_path / "missing")
    with pytest.raises(runs.EvaluationError, match="nothing to evaluate"):
        runs.evaluate_workdir(tmp_path)
    (tmp_path / "fusion").mkdir()
    (tmp_path / "fusion" / "model.keras").write_text("")
    with pytest.raises(runs.EvaluationError, match="run.json is missing"):
        runs.evaluate_workdir(tmp_path)


def test_sweep_only_workdir_gets_a_report(tmp_path):
    write_history(tmp_path / "sweeps" / "audio.n_layers" / "1" / "audio", loss=[1.0, 0.9], rmse=[1.0, 0.95],
                  val_loss=[1.0, 0.8], val_rmse=[1.0, 0.9])
    result = runs.evaluate_workdir(tmp_path, out_dir=tmp_path / "out")
    assert "models" not in result and list(result["sweeps"]) == ["audio.n_layers"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| 1 | audio | rmse | 0.950 | 0.900 | 2 | 2 |" in markdown
    assert "Emotion classification" not in markdown
    assert_png(tmp_path / "out" / "sweep_audio.n_layers.png")


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--workdir", str(tmp_path / "missing")]) == 2
    assert "no such workdir" in capsys.readouterr().err
    assert cli.parse_args([]).workdir == pathlib.Path("runs/synthetic")


# === End to end: train.py then evaluate.py on the synthetic set ===

def test_cli_on_a_trained_run(trained_run, capsys):
    workdir = trained_run
    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--workdir", str(workdir), "--no-stt"]) == 0  # the STT row: tests/test_stt.py
    printed = capsys.readouterr().out
    assert "| majority baseline (`" in printed and "Warning" in printed

    out = workdir / "eval_test"
    table = pd.read_csv(workdir / "table.csv", keep_default_na=False)
    test_rows = table[table["split"] == "test"]
    result = json.loads((out / "report.json").read_text())
    assert result["n"] == len(test_rows)
    assert set(result["models"]) == {"audio", "text", "fusion", "fusion_no_text", "audio_clf", "text_clf", "classical_audio", "classical_text", "classical_fusion"}
    for model in ("fusion", "fusion_no_text", "audio_clf", "text_clf", "classical_audio", "classical_text", "classical_fusion"):
        emotion = result["models"][model]["emotion"]
        assert sum(c["support"] for c in emotion["per_class"].values()) == len(test_rows)
        assert 0 <= emotion["balanced_accuracy"] <= 1
        assert_png(out / f"confusion_{model}.png")
    train_rows = table[(table["split"] == "train") & (table["augmented_from"] == "")]
    assert result["majority_baseline"]["class"] == train_rows["emotion"].value_counts().idxmax()
    for stage in ("audio", "text", "fusion", "audio_clf", "text_clf"):
        assert_png(out / f"curves_{stage}.png")
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    fusion = predictions[predictions["model"] == "fusion"]
    assert sorted(fusion["segment_id"]) == sorted(test_rows["segment_id"])
    merged = fusion.merge(test_rows, on="segment_id")
    assert (merged["labels_x"] == merged["labels_y"]).all()
    assert (merged["emotion_true"] == merged["emotion"]).all()
