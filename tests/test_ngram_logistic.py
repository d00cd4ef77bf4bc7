"""fusion.char_ngram_model=nblr: a naive-Bayes logistic regression over the transcript's
character n-grams, fitted by scikit-learn before the deep path trains, mixed by a share
chosen on the validation split (models.ngram_logistic)."""

import json

import keras
import numpy as np
import pytest
import scipy.special

from kemdy_tf.models import ngram_logistic
from kemdy_tf.models.ngram_logistic import (
    NgramLogisticScores,
    WideShare,
    choose_wide_share,
    fit_nb_logistic,
    presence_matrix,
)


def test_scores_count_each_ngram_once_and_normalise_one_vs_rest_sigmoids():
    layer = NgramLogisticScores(buckets=10, n_classes=3)
    ids = np.array([[1, 1, 2, 0, 2], [0, 0, 0, 0, 0]])
    layer.build(ids.shape)
    table = np.arange(33, dtype="float32").reshape(11, 3) / 10
    layer.table.assign(table)
    layer.bias.assign(np.array([0.1, -0.2, 0.0], "float32"))
    out = np.asarray(layer(ids))
    expected = scipy.special.expit(table[1] + table[2] + [0.1, -0.2, 0.0])  # 1 and 2 once each
    np.testing.assert_allclose(out[0], expected / expected.sum(), rtol=1e-5)
    empty = scipy.special.expit(np.array([0.1, -0.2, 0.0]))
    np.testing.assert_allclose(out[1], empty / empty.sum(), rtol=1e-5)  # no n-gram: the biases
    assert not layer.trainable_weights  # scikit-learn fits it, not the optimizer


def test_wide_share_mixes_probabilities_and_starts_at_zero():
    layer = WideShare()
    deep, wide = np.array([[0.9, 0.1]], "float32"), np.array([[0.2, 0.8]], "float32")
    np.testing.assert_allclose(np.asarray(layer(deep, wide)), deep)
    layer.share.assign(0.25)
    np.testing.assert_allclose(np.asarray(layer(deep, wide)), 0.75 * deep + 0.25 * wide, rtol=1e-6)
    assert not layer.trainable_weights


def test_presence_matrix_is_binary_and_skips_id_zero():
    matrix = presence_matrix(np.array([[3, 3, 0, 1], [0, 0, 0, 0]]), buckets=4)
    assert matrix.shape == (2, 5)
    assert matrix.toarray().tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]


def test_nb_logistic_learns_the_ngrams_that_mark_each_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    ids = rng.integers(4, 40, (300, 6))  # noise n-grams
    ids[:, 0] = labels + 1  # n-gram k + 1 marks class k
    presence = presence_matrix(ids, buckets=40)
    table, bias = fit_nb_logistic(presence, labels, 3, c=1.0)
    layer = NgramLogisticScores(40, 3)
    layer.build(ids.shape)
    layer.table.assign(table)
    layer.bias.assign(bias)
    assert (np.asarray(layer(ids)).argmax(-1) == labels).mean() == 1.0
    assert table[1, 0] > 0 > table[1, 1] and table[2, 1] > 0 > table[2, 0]
    assert not table[0].any()  # "no n-gram" weighs nothing


def test_a_class_without_training_rows_gets_no_probability():
    labels = np.array([0, 1] * 20)
    ids = np.stack([labels + 1, labels + 3], axis=1)
    table, bias = fit_nb_logistic(presence_matrix(ids, 8), labels, 3, c=1.0)
    assert not table[:, 2].any() and bias[2] < -10


def test_the_share_follows_whichever_path_is_right_on_validation():
    labels = np.array([0, 1, 1, 0, 1])
    right = np.eye(2)[labels] * 0.9 + 0.05
    wrong = right[:, ::-1]
    assert choose_wide_share(right, wrong, labels) == 0.0
    assert choose_wide_share(wrong, right, labels) == 1.0
    assert 0.0 < choose_wide_share(right * 0 + 0.5, right, labels) <= 1.0


def _nblr_args(train_args, workdir, *extra):
    return ["--stage", "text_clf", "--from-scratch", *train_args(
        workdir, "--epochs", "2", "--set", "fusion.char_ngrams=4",
        "--set", "fusion.char_ngram_model=nblr", "--set", "fusion.char_ngram_jamo=true", *extra)]


@pytest.fixture(scope="module")
def nblr_run(trained_run, train_args, tmp_path_factory):
    from train import main

    workdir = tmp_path_factory.mktemp("nblr") / "nblr"
    assert main(_nblr_args(train_args, workdir, "--set", "train.refit=true")) == 0
    return workdir


def _parts(model, token_ids):
    parts = keras.Model(model.input, [model.get_layer("emotion").output,
                                       model.get_layer("char_ngram_scores").output])
    deep, wide = parts.predict({"token_ids": token_ids}, verbose=0)
    return deep, wide


def test_a_text_classifier_fits_its_ngram_path_then_mixes_by_the_validation_share(nblr_run):
    import pandas as pd

    stage = nblr_run / "text_clf"
    summary = json.loads((stage / "summary.json").read_text())
    table = pd.read_csv(nblr_run / "table.csv", keep_default_na=False)
    fitted = summary["char_ngram_logistic"]
    assert fitted["rows"] == (table["split"] == "train").sum()
    assert fitted["share"] in ngram_logistic.SHARE_GRID
    early = keras.saving.load_model(stage / "early_stopped.keras", compile=False)
    refit = keras.saving.load_model(stage / "model.keras", compile=False)
    assert ngram_logistic.share_of(early) == pytest.approx(fitted["share"])  # a float32 weight
    assert ngram_logistic.share_of(refit) == pytest.approx(fitted["share"])
    assert refit.get_layer("char_ngram_ids").jamo  # fusion.char_ngram_jamo reached the n-grams
    # the refit fitted the n-gram path again, on training + validation rows
    early_table = np.asarray(early.get_layer("char_ngram_scores").table)
    refit_table = np.asarray(refit.get_layer("char_ngram_scores").table)
    assert np.abs(early_table).sum() > 0 and not np.array_equal(early_table, refit_table)
    # the saved model's answer is the mixture of its two paths
    ids = np.random.default_rng(0).integers(1, 40, (4, 12)).astype("int32")
    deep, wide = _parts(refit, ids)
    mixed = refit.predict({"token_ids": ids}, verbose=0)["emotion"]
    np.testing.assert_allclose(mixed, (1 - fitted["share"]) * deep + fitted["share"] * wide, rtol=1e-5, atol=1e-6)


def test_the_summary_says_what_share_the_ngram_path_was_given():
    from kemdy_tf.summaries import format_summary

    metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5}
    text = format_summary({"stage": "text_clf", "n": 10, "model": metrics, "baseline": metrics,
                           "baseline_name": "majority", "char_ngram_logistic": {"rows": 90, "share": 0.35}})
    assert "fitted on 90 training rows" in text and "35%" in text


def test_an_unknown_char_ngram_model_is_refused(tiny_config):
    import dataclasses

    from kemdy_tf.models import text_encoder
    from kemdy_tf.models.fusion import build_fusion_model

    fusion_cfg = dataclasses.replace(tiny_config.fusion, char_ngrams=3, char_ngram_model="svm")
    backbone = text_encoder.build_text_backbone(tiny_config.text, tiny_config.features, 50)
    with pytest.raises(ValueError, match="char_ngram_model must be one of auto, bag, nblr"):
        build_fusion_model(None, backbone, fusion_cfg, 3, modalities=("text",), pieces=["", "▁가", "나"])


def test_two_classes_fit_once_and_match_fitting_each_side():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    ids = rng.integers(3, 30, (200, 5))
    ids[:, 0] = np.where(rng.random(200) < 0.8, labels + 1, 2 - labels)  # a noisy marker
    presence = presence_matrix(ids, 30)
    table, bias = fit_nb_logistic(presence, labels, 2, c=0.5)
    # class 0 fitted on its own, as for any other number of classes
    with_0 = 1.0 + np.asarray(presence[labels == 0].sum(0)).ravel()
    without_0 = 1.0 + np.asarray(presence[labels == 1].sum(0)).ravel()
    ratio = np.log(with_0 / with_0.sum()) - np.log(without_0 / without_0.sum())
    own = LogisticRegression(C=0.5, max_iter=3000).fit(presence.multiply(ratio).tocsr(), labels == 0)
    np.testing.assert_allclose(table[1:, 0], ratio[1:] * own.coef_[0][1:], atol=1e-3)
    assert bias[0] == pytest.approx(own.intercept_[0], abs=1e-3)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_tfidf_weighting_gives_scikit_learns_tfidf_regression(n_classes):
    """weighting=tfidf_lr: the layer's probabilities are those of scikit-learn's pipeline
    (smoothed idf, l2 rows, multinomial logistic regression) on the same presence matrix."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    labels = rng.integers(0, n_classes, 120)
    ids = rng.integers(n_classes + 1, 25, (120, 6))
    ids[:, 0] = np.where(rng.random(120) < 0.7, labels + 1, 1)
    presence = presence_matrix(ids, 25)
    idf, table, bias = ngram_logistic.fit_tfidf_logistic(presence, labels, n_classes, c=10.0)
    layer = NgramLogisticScores(25, n_classes, weighting="tfidf_lr")
    layer.build(ids.shape)
    layer.idf.assign(idf)
    layer.table.assign(table)
    layer.bias.assign(bias)
    columns = presence[:, 1:]  # scikit-learn sees only the real n-grams
    tfidf = TfidfTransformer(sublinear_tf=False).fit(columns)
    reference = LogisticRegression(C=10.0, max_iter=3000).fit(tfidf.transform(columns), labels)
    np.testing.assert_allclose(np.asarray(layer(ids)), reference.predict_proba(tfidf.transform(columns)),
                               atol=2e-3)
