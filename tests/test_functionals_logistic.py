"""The audio classifier's fitted regression on its utterance functionals
(models.functionals_logistic): the layer answers what scikit-learn fitted, the strength is
chosen on validation, and a trained audio classifier mixes it in by its validation share."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kemdy_tf.models import functionals_logistic, ngram_logistic
from kemdy_tf.models.functionals_logistic import C_GRID, FUNCTIONALS_SCORES, FunctionalsLogisticScores


def _model(width: int, n_classes: int):
    inputs = keras.Input(shape=(width,), name="functionals")
    return keras.Model(inputs, FunctionalsLogisticScores(n_classes, name=FUNCTIONALS_SCORES)(inputs))


def _dataset(features, labels, weights=None):
    parts = (features.astype("float32"), {"emotion": labels})
    if weights is not None:
        parts = (*parts, weights.astype("float32"))
    return tf.data.Dataset.from_tensor_slices(parts).batch(16)


def _data(seed: int, rows: int, n_classes: int = 3, width: int = 12):
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % n_classes
    # differently scaled columns: the layer must standardise as the fit did
    features = rng.normal(size=(rows, width)) * np.linspace(0.1, 50, width) + 3.0
    features[:, 0] += 40 * labels  # the first column tells the class, on a scale of its own
    return features, labels


def test_the_layer_answers_what_scikit_learn_fitted_with_the_strength_the_validation_chose():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _data(0, 90)
    val_features, val_labels = _data(1, 30)
    model = _model(features.shape[1], 3)
    report = functionals_logistic.fit_functionals_logistic(model, _dataset(features, labels),
                                                          _dataset(val_features, val_labels))
    assert report["rows"] == 90 and report["c"] in C_GRID
    losses = {float(k): v for k, v in report["validation_log_loss"].items()}
    assert report["c"] == min(losses, key=losses.get) and len(losses) == len(C_GRID)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=report["c"], max_iter=5000)).fit(features, labels)
    np.testing.assert_allclose(model.predict(val_features, verbose=0), reference.predict_proba(val_features),
                               atol=1e-5)
    assert (model.predict(val_features, verbose=0).argmax(1) == val_labels).mean() > 0.9


def test_a_given_strength_is_kept_and_sample_weights_reach_the_fit():
    features, labels = _data(2, 60, n_classes=2)
    weighted, plain = _model(features.shape[1], 2), _model(features.shape[1], 2)
    weights = np.where(labels == 1, 5.0, 1.0)
    assert functionals_logistic.fit_functionals_logistic(weighted, _dataset(features, labels, weights), c=0.1) == {
        "rows": 60, "c": 0.1}
    functionals_logistic.fit_functionals_logistic(plain, _dataset(features, labels), c=0.1)
    # two classes: scikit-learn's one row of coefficients becomes a column per class
    table = np.asarray(weighted.get_layer(FUNCTIONALS_SCORES).table)
    np.testing.assert_allclose(table[:, 0], -table[:, 1])
    assert np.asarray(weighted.predict(features, verbose=0))[:, 1].mean() > \
        np.asarray(plain.predict(features, verbose=0))[:, 1].mean()


def test_a_class_without_training_rows_gets_no_probability_and_one_class_is_refused():
    features, labels = _data(3, 40, n_classes=2)
    model = _model(features.shape[1], 3)
    functionals_logistic.fit_functionals_logistic(model, _dataset(features, labels), c=1.0)
    assert np.asarray(model.predict(features, verbose=0))[:, 2].max() < 1e-6
    with pytest.raises(ValueError, match="two classes"):
        functionals_logistic.fit_functionals_logistic(model, _dataset(features, np.zeros(40, int)), c=1.0)


def test_an_audio_classifier_fits_its_functionals_path_then_mixes_by_the_validation_share(trained_run):
    stage = trained_run / "audio_clf"
    summary = json.loads((stage / "summary.json").read_text())
    fitted = summary["functionals_logistic"]
    assert fitted["c"] in C_GRID and set(fitted["validation_log_loss"]) == {str(c) for c in C_GRID}
    assert fitted["share"] in ngram_logistic.SHARE_GRID
    model = keras.saving.load_model(stage / "model.keras", compile=False)
    assert ngram_logistic.share_of(model) == pytest.approx(fitted["share"])
    assert np.abs(np.asarray(model.get_layer(FUNCTIONALS_SCORES).table)).sum() > 0
    # the saved model's answer is the mixture of its two paths
    parts = keras.Model(model.input, [model.get_layer(ngram_logistic.DEEP_SCORES).output,
                                      model.get_layer(FUNCTIONALS_SCORES).output, model.output["emotion"]])
    rng = np.random.default_rng(0)
    shapes = {t.name: t.shape for t in model.inputs}
    feed = {"log_mel": rng.normal(size=(3, 40, shapes["log_mel"][-1])).astype("float32"),
            "frame_mask": np.ones((3, 40), bool)}
    if "speaker_functionals" in shapes:  # mean 0, std 1: the functionals as they are
        width = shapes["speaker_functionals"][-1]
        feed["speaker_functionals"] = np.stack([np.zeros((3, width)), np.ones((3, width))], axis=1).astype("float32")
    deep, wide, mixed = parts.predict({t.name: feed[t.name] for t in model.inputs}, verbose=0)
    np.testing.assert_allclose(mixed, (1 - fitted["share"]) * deep + fitted["share"] * wide, rtol=1e-5, atol=1e-6)
    from kemdy_tf import summaries

    assert f"with C {fitted['c']:g} (the lowest validation log loss)" in summaries.format_summary(summary)
