"""Which n-gram regression the text classifier carries (kemdy_tf.ngram_choice): the default
unless validation tells another one apart."""

import json

import numpy as np
import pytest

from kemdy_tf import ngram_choice

DEFAULT = ngram_choice.CANDIDATES[0][0]


def _noise(n, seed, scale=0.5):
    return 1.0 + scale * np.random.default_rng(seed).standard_normal(n)


def test_the_default_is_the_classical_baselines_ngrams():
    # TF-IDF over character 1-4-grams within words: what the classical text baseline reads.
    assert DEFAULT == "tfidf_char4_words"
    assert ngram_choice.CANDIDATES[0][1]["char_ngram_model"] == "tfidf_lr"


def test_a_lower_loss_within_the_noise_keeps_the_default():
    n = 200
    losses = {name: _noise(n, k) for k, (name, _) in enumerate(ngram_choice.CANDIDATES)}
    losses["nblr_char4_words"] = losses[DEFAULT] - 0.03 + 0.5 * np.random.default_rng(9).standard_normal(n)
    report = ngram_choice.decide(losses)
    means = report["validation_log_loss"]
    assert min(means, key=means.get) != DEFAULT  # another candidate has the lowest mean...
    assert report["chosen"] == DEFAULT  # ...by less than two standard errors
    assert report["settings"] == dict(ngram_choice.CANDIDATES)[DEFAULT]
    assert "within 2 standard errors" in report["why"]
    assert report["lowest"] == min(means, key=means.get)
    difference = losses[DEFAULT] - losses[report["lowest"]]
    assert report["gain"] == pytest.approx(difference.mean(), abs=1e-4)
    assert report["standard_error"] == pytest.approx(difference.std(ddof=1) / np.sqrt(n), abs=1e-4)


def test_a_gain_validation_can_tell_apart_wins():
    n = 2000
    losses = {name: _noise(n, k) for k, (name, _) in enumerate(ngram_choice.CANDIDATES)}
    losses["nblr_jamo6"] = losses[DEFAULT] - 0.1 + 0.2 * np.random.default_rng(9).standard_normal(n)
    report = ngram_choice.decide(losses)
    assert report["chosen"] == "nblr_jamo6"
    assert report["settings"]["char_ngram_model"] == "nblr" and report["settings"]["char_ngram_jamo"]
    assert "more than 2 standard errors" in report["why"]
    assert report["validation_log_loss"]["nblr_jamo6"] == pytest.approx(losses["nblr_jamo6"].mean(), abs=1e-4)


def test_best_decides_on_each_candidates_losses_by_its_settings():
    losses = {name: _noise(100, k) for k, (name, _) in enumerate(ngram_choice.CANDIDATES)}
    losses["tfidf_jamo6"] = losses[DEFAULT] - 1.0  # a clear gain
    settings_seen = []

    def losses_of(settings):
        settings_seen.append(settings)
        return losses[next(name for name, s in ngram_choice.CANDIDATES if s is settings)]

    assert ngram_choice.best(losses_of) == ngram_choice.decide(losses)
    assert ngram_choice.best(losses_of)["chosen"] == "tfidf_jamo6"
    assert len(settings_seen) == 2 * len(ngram_choice.CANDIDATES)


def test_the_default_with_the_lowest_loss_is_kept():
    n = 50
    losses = {name: _noise(n, k) + 1.0 for k, (name, _) in enumerate(ngram_choice.CANDIDATES)}
    losses[DEFAULT] = _noise(n, 7)
    report = ngram_choice.decide(losses)
    assert report["chosen"] == DEFAULT and report["why"] == "the lowest validation log loss"


def test_the_per_utterance_losses_average_to_the_weighted_log_loss(tiny_config):
    """`validation_losses` fits the regression and scores each validation utterance; their
    mean is scikit-learn's class-weighted log loss of the same probabilities."""
    import dataclasses

    import keras
    from sklearn.metrics import log_loss

    from kemdy_tf.models import ngram_logistic, text_encoder
    from kemdy_tf.models.fusion import build_fusion_model

    cfg = tiny_config
    fusion = dataclasses.replace(cfg.fusion, **dict(ngram_choice.CANDIDATES)[DEFAULT])
    rng = np.random.default_rng(0)
    classes = len(cfg.data.classes)

    def batches(n):  # the class shows in the first token id, as a word would
        labels = rng.integers(0, classes, n)
        ids = rng.integers(5, 40, (n, 10)).astype("int32")
        ids[:, 0] = 40 + labels
        return [({"token_ids": ids}, {"emotion": labels})]

    pieces = [""] + [f"▁{chr(0xAC00 + i)}" for i in range(1, 64)]  # one word per id
    model = build_fusion_model(None, text_encoder.build_text_backbone(cfg.text, cfg.features, 64), fusion, classes,
                               modalities=("text",), pieces=pieces)
    train, val = batches(120), batches(60)
    weights = np.linspace(0.5, 2.0, classes)
    losses = ngram_choice.validation_losses(model, train, val, 0.0, weights)
    labels = val[0][1]["emotion"]
    scores = keras.Model(model.input, model.get_layer(ngram_logistic.NGRAM_SCORES).output)
    probs = np.asarray(scores.predict(val[0][0], verbose=0), np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 one-vs-rest shares: sum to 1 within 1e-6
    assert losses.shape == (60,)
    assert losses.mean() == pytest.approx(log_loss(labels, probs, sample_weight=weights[labels],
                                                   labels=range(classes)), rel=1e-4)
    assert losses.mean() < np.log(classes)  # the fitted regression reads the class token


def test_a_trained_text_classifier_records_the_choice_and_why(trained_run):
    summary = json.loads((trained_run / "text_clf" / "summary.json").read_text())
    choice = summary["char_ngram_choice"]
    assert choice["chosen"] in dict(ngram_choice.CANDIDATES)
    assert set(choice["validation_log_loss"]) == {name for name, _ in ngram_choice.CANDIDATES}
    assert choice["why"]
