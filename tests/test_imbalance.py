"""Class weights under KEMDy20-like imbalance: the `train.class_weighting` schemes.

docs/imbalance.md has the measurement that chose the default.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from kemdy_tf.class_balance import WEIGHT_CAP, class_weight_values
from kemdy_tf.config import CLASS_WEIGHTINGS

# The KEMDy20-share synthetic set's training split: neutral, happy, sad, angry, surprise.
COUNTS = [1082, 134, 17, 13, 27]
LABELS = np.repeat(np.arange(5), COUNTS)


def _mean_example_weight(weights) -> float:
    return float(np.dot(COUNTS, weights) / sum(COUNTS))


def test_balanced_is_sklearn_balanced():
    expected = compute_class_weight("balanced", classes=np.arange(5), y=LABELS)
    assert class_weight_values(LABELS, 5, "weights") == pytest.approx(expected)
    assert _mean_example_weight(expected) == pytest.approx(1.0)


def test_capped_clips_only_the_rare_classes():
    balanced = class_weight_values(LABELS, 5, "weights")
    capped = class_weight_values(LABELS, 5, "capped")
    assert max(balanced) > WEIGHT_CAP and max(capped) == WEIGHT_CAP
    assert capped[:2] == balanced[:2]  # neutral and happy are under the cap


def test_sqrt_is_halfway_in_log_and_keeps_the_mean_example_weight():
    weights = np.array(class_weight_values(LABELS, 5, "sqrt"))
    balanced = np.array(class_weight_values(LABELS, 5, "weights"))
    assert _mean_example_weight(weights) == pytest.approx(1.0)
    # The rarest-to-commonest ratio is the square root of balanced's.
    assert weights[3] / weights[0] == pytest.approx(np.sqrt(balanced[3] / balanced[0]))
    assert np.all(np.diff(weights[[0, 1, 4, 2, 3]]) > 0)  # rarer class, larger weight


def test_none_and_absent_classes_weigh_one():
    assert class_weight_values(LABELS, 5, "none") == [1.0] * 5
    for scheme in CLASS_WEIGHTINGS:
        assert class_weight_values(np.array([0, 0, 1]), 4, scheme)[2:] == [1.0, 1.0]


def test_unknown_scheme_is_refused_by_name():
    with pytest.raises(ValueError, match="train.class_weighting.*'balanced'"):
        class_weight_values(LABELS, 5, "balanced")


# === train.class_weighting=logit_adjust: the prior in the loss instead of weights ===


def test_logit_adjust_weighs_every_example_one():
    assert "logit_adjust" in CLASS_WEIGHTINGS
    assert class_weight_values(LABELS, 5, "logit_adjust") == [1.0] * 5


def test_class_prior_is_the_training_shares_with_one_example_added():
    from kemdy_tf.models.losses import class_prior

    prior = class_prior(LABELS, 5)
    assert prior == pytest.approx((np.array(COUNTS) + 1) / (sum(COUNTS) + 5))
    assert class_prior(np.array([0, 0, 1]), 3)[2] == pytest.approx(1 / 6)  # absent: positive, not 0


def test_the_adjusted_loss_is_the_base_loss_of_the_prior_weighted_probabilities():
    import keras

    from kemdy_tf.models.losses import LogitAdjustedLoss
    from kemdy_tf.models.text_encoder import SmoothedSparseCrossentropy

    prior = np.array([0.7, 0.2, 0.1])
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], "float32")
    labels = np.array([2, 0])
    adjusted = probs * prior / (probs * prior).sum(1, keepdims=True)
    expected = -np.log(adjusted[[0, 1], labels]).mean()
    assert float(LogitAdjustedLoss(prior)(labels, probs)) == pytest.approx(expected, rel=1e-5)

    smoothed = SmoothedSparseCrossentropy(3, 0.1)
    loss = LogitAdjustedLoss(prior, base=smoothed)
    assert float(loss(labels, probs)) == pytest.approx(float(smoothed(labels, adjusted)), rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again.base, SmoothedSparseCrossentropy) and again.prior == pytest.approx(list(prior))
    assert float(again(labels, probs)) == pytest.approx(float(loss(labels, probs)), rel=1e-6)
    with pytest.raises(ValueError, match="positive share"):
        LogitAdjustedLoss([0.5, 0.0])


def test_trained_on_the_adjusted_loss_a_model_answers_the_balanced_posterior():
    """Inputs that say nothing, labels 90% class 0: the plain loss learns the prior
    (.9 / .1), the adjusted one learns what the input says about the class (.5 / .5)."""
    import keras

    from kemdy_tf.models.losses import LogitAdjustedLoss, class_prior

    labels = np.array([0] * 90 + [1] * 10)
    inputs = np.ones((100, 1), "float32")
    answers = {}
    for name, loss in (("plain", "sparse_categorical_crossentropy"),
                       ("adjusted", LogitAdjustedLoss(class_prior(labels, 2)))):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.1), loss=loss)
        model.fit(inputs, labels, epochs=60, batch_size=100, verbose=0)
        answers[name] = model.predict(inputs[:1], verbose=0)[0]
    np.testing.assert_allclose(answers["plain"], [0.9, 0.1], atol=0.02)
    np.testing.assert_allclose(answers["adjusted"], [0.5, 0.5], atol=0.03)


def test_a_logit_adjust_run_compiles_its_classifiers_with_the_prior(tiny_config):
    import dataclasses

    import keras
    import pandas as pd

    from kemdy_tf.models.losses import LogitAdjustedLoss
    from kemdy_tf.class_balance import class_balance
    from kemdy_tf.training import compile_stage_model

    config = dataclasses.replace(tiny_config, train=dataclasses.replace(tiny_config.train,
                                                                        class_weighting="logit_adjust"))
    classes = list(config.data.classes)

    class Run:  # the two things class_balance reads
        def __init__(self, config):
            self.config = config

        def split(self, name):
            return pd.DataFrame({"emotion": [classes[0]] * 8 + [classes[1]] * 2 + ["not a class"]})

    scheme, weights, prior = class_balance(Run(config))
    assert scheme == "logit_adjust" and weights is None  # no sample weights beside the prior
    assert prior == pytest.approx(np.array([9, 3] + [1] * (len(classes) - 2)) / (10 + len(classes)))
    scheme, weights, prior_none = class_balance(Run(tiny_config))  # auto, weights <= 2.5: balanced
    assert (scheme, prior_none) == ("weights", None) and weights[:2] == pytest.approx([10 / 16, 10 / 4])

    class RareRun(Run):
        def split(self, name):
            return pd.DataFrame({"emotion": [classes[0]] * 90 + [classes[1]] * 3})

    assert class_balance(RareRun(tiny_config))[2] == pytest.approx(  # auto, a weight of 15.5: the prior
        np.array([91, 4] + [1] * (len(classes) - 2)) / (93 + len(classes)))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(len(classes), activation="softmax",
                                                                    name="emotion")])
    compile_stage_model(model, "audio_clf", config, total_steps=10, class_prior=prior)
    assert isinstance(model.loss, LogitAdjustedLoss) and model.loss.prior == pytest.approx(prior)
    rating = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="arousal")])
    compile_stage_model(rating, "audio", config, total_steps=10, class_prior=prior)
    assert not isinstance(rating.loss, LogitAdjustedLoss)  # the rating stages keep theirs


def test_auto_adjusts_logits_only_where_balanced_weights_would_pass_the_cap():
    from kemdy_tf.class_balance import resolve_class_weighting

    assert resolve_class_weighting(LABELS, "auto") == "logit_adjust"  # KEMDy20's shares: up to ~19
    assert class_weight_values(LABELS, 5, "auto") == [1.0] * 5
    default_set = np.repeat(np.arange(5), [389, 91, 79, 125, 100])  # the default synthetic set's: up to ~2.1
    assert resolve_class_weighting(default_set, "auto") == "weights"
    assert class_weight_values(default_set, 5, "auto") == class_weight_values(default_set, 5, "weights")
    at_cap = np.repeat([0, 1], [19, 1])  # balanced weight of class 1: 20 / (2 x 1) = 10, not above
    assert resolve_class_weighting(at_cap, "auto") == "weights"
    assert resolve_class_weighting(np.repeat([0, 1], [21, 1]), "auto") == "logit_adjust"
    assert resolve_class_weighting(LABELS, "sqrt") == "sqrt"  # named schemes are kept


def test_a_trained_logit_adjust_stage_keeps_the_prior_in_its_loss_and_says_so(trained_run, train_args,
                                                                               tiny_config, tmp_path):
    """train.py wires the scheme: the saved classifier is compiled with its training split's
    prior, and its summary records the scheme it used."""
    import json

    import keras
    import pandas as pd

    from kemdy_tf.models.losses import LogitAdjustedLoss, class_prior
    from train import main

    workdir = tmp_path / "logit_adjust"
    assert main([str(a) for a in ("--stage", "text_clf", "--from-scratch", *train_args(
        workdir, "--epochs", "1",
        "--set", "train.class_weighting=logit_adjust"))]) == 0
    assert json.loads((workdir / "text_clf" / "summary.json").read_text())["class_weighting"] == "logit_adjust"
    classes = list(tiny_config.data.classes)
    table = pd.read_csv(workdir / "table.csv", keep_default_na=False)
    train = table[(table["split"] == "train") & table["emotion"].isin(classes)]
    loss = keras.saving.load_model(workdir / "text_clf" / "model.keras").loss
    assert isinstance(loss, LogitAdjustedLoss)
    assert loss.prior == pytest.approx(class_prior(train["emotion"].map(classes.index), len(classes)))
