"""Metrics against numbers worked out by hand (see the comments for the arithmetic)."""

import math
import warnings

import numpy as np
import pytest

from kemdy_tf.evaluation import metrics

CLASSES = ("neutral", "happy", "sad")

# 6 utterances, 3 classes. Confusion matrix (rows true, columns predicted):
#   neutral [2 1 0]   happy [0 1 1]   sad [0 0 1]
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_classification_metrics_match_hand_computed_example():
    scores = metrics.classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    # WA: 4 right of 6.
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # UA: recalls 2/3, 1/2, 1/1 -> mean 13/18.
    assert scores["balanced_accuracy"] == pytest.approx(13 / 18)
    # Precision 1, 1/2, 1/2; F1 = 2PR/(P+R): 4/5, 1/2, 2/3.
    per_class = scores["per_class"]
    assert per_class["neutral"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert per_class["happy"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_class["sad"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # macro-F1: (4/5 + 1/2 + 2/3) / 3 = 59/90; weighted by support 3, 2, 1: 61/90.
    assert scores["macro_f1"] == pytest.approx(59 / 90)
    assert scores["weighted_f1"] == pytest.approx(61 / 90)
    assert scores["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert scores["n"] == 6


def test_supports_sum_to_split_size_and_absent_classes_still_listed():
    classes = CLASSES + ("angry", "surprise")
    scores = metrics.classification_metrics(Y_TRUE, Y_PRED, classes)
    assert list(scores["per_class"]) == list(classes)
    assert sum(c["support"] for c in scores["per_class"].values()) == len(Y_TRUE)
    assert scores["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.array(scores["confusion_matrix"]).shape == (5, 5)
    assert np.array(scores["confusion_matrix"]).sum() == len(Y_TRUE)
    # Classes absent from the split do not change UA or macro-F1.
    assert scores["balanced_accuracy"] == pytest.approx(13 / 18)
    assert scores["macro_f1"] == pytest.approx(59 / 90)


def test_predicted_class_absent_from_truth_counts_in_f1_but_not_in_ua():
    # True: 0,0,1,1; predicted: 0,2,1,1. Recalls 1/2, 1 -> UA 3/4 (class 2 has no recall).
    scores = metrics.classification_metrics([0, 0, 1, 1], [0, 2, 1, 1], CLASSES)
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    # F1: neutral P=1 R=1/2 -> 2/3; happy 1; sad P=0 -> 0; macro over 3 present-or-predicted.
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_majority_baseline_uses_training_majority_and_has_chance_ua():
    train = [1, 1, 1, 0, 2, 1]  # training split: happy is the majority
    majority = metrics.majority_class(train, len(CLASSES))
    assert majority == 1
    baseline = metrics.majority_baseline(Y_TRUE, majority, CLASSES)
    assert baseline["class"] == "happy"
    assert baseline["balanced_accuracy"] == pytest.approx(1 / len(CLASSES))
    assert baseline["accuracy"] == pytest.approx(2 / 6)  # two happy rows in the evaluated split
    # Its UA is chance for any majority class present in the split.
    for cls in range(len(CLASSES)):
        assert metrics.majority_baseline(Y_TRUE, cls, CLASSES)["balanced_accuracy"] == pytest.approx(1 / 3)


def test_majority_class_breaks_ties_by_lowest_index_and_rejects_empty():
    assert metrics.majority_class([2, 2, 1, 1], 3) == 1
    with pytest.raises(ValueError, match="training split"):
        metrics.majority_class([], 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.majority_class([0, 3], 3)


def test_ccc_identical_constant_and_hand_computed():
    x = [1.0, 2.5, 3.0, 4.5]
    assert metrics.concordance_correlation(x, x) == pytest.approx(1.0)
    assert metrics.concordance_correlation(x, [3.0] * 4) == 0.0
    # t = 1,2,3 and p = t + 1: var 2/3 each, cov 2/3, mean gap 1 -> (4/3) / (7/3) = 4/7.
    assert metrics.concordance_correlation([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # p = 1,3,2: cov 1/3, var 2/3 each, same mean -> (2/3) / (4/3) = 1/2.
    assert metrics.concordance_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Perfect disagreement around the same mean.
    assert metrics.concordance_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(metrics.concordance_correlation([2, 2], [2, 2]))


def test_regression_metrics_hand_computed_and_nan_references_dropped():
    scores = metrics.regression_metrics([1, 2, 3, float("nan")], [1, 3, 2, 5])
    assert scores["n"] == 3 and scores["n_missing"] == 1
    assert scores["rmse"] == pytest.approx(math.sqrt(2 / 3))  # errors 0, 1, 1
    assert scores["ccc"] == pytest.approx(0.5)


def test_mean_baseline_has_zero_ccc_and_its_rmse():
    baseline = metrics.mean_baseline([1, 2, 3, 6], train_mean=3.0)
    assert baseline["ccc"] == 0.0
    assert baseline["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 4))
    assert baseline["value"] == 3.0


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.classification_metrics([0, 1], [0], CLASSES), "2 labels but y_pred has 1"),
    (lambda: metrics.classification_metrics([], [], CLASSES), "empty"),
    (lambda: metrics.classification_metrics([0, 5], [0, 1], CLASSES), "outside 0..2"),
    (lambda: metrics.classification_metrics([0.0, 1.0], [0, 1], CLASSES), "integers"),
    (lambda: metrics.concordance_correlation([1, 2], [1, float("inf")]), "y_pred holds 1 NaN/inf"),
    (lambda: metrics.regression_metrics([float("nan")], [1.0]), "all NaN"),
])
def test_bad_input_raises_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mean_and_std_uses_sample_std_and_skips_nan():
    summary = metrics.mean_and_std([0.5, 0.7, float("nan")])
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["std"] == pytest.approx(math.sqrt(0.02))  # ((0.1^2 + 0.1^2) / (2 - 1))
    assert summary["n"] == 2 and len(summary["values"]) == 3
    assert metrics.mean_and_std([0.4])["std"] == 0.0


# === The training metric: streamed balanced accuracy (models.metrics.SparseBalancedAccuracy) ===

def _probabilities(y_pred, n_classes, rng):
    """Random class probabilities whose argmax is `y_pred`."""
    p = rng.uniform(0, 0.5, (len(y_pred), n_classes))
    p[np.arange(len(y_pred)), y_pred] = 1.0
    return (p / p.sum(axis=1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample-weighted"])
def test_streamed_balanced_accuracy_matches_sklearn_over_uneven_batches(weighted):
    from sklearn.metrics import balanced_accuracy_score

    from kemdy_tf.models.metrics import SparseBalancedAccuracy

    rng = np.random.default_rng(0)
    n_classes = 5
    # KEMDy20-like: mostly class 0, class 3 rare, class 4 never a label (only predicted)
    y_true = rng.choice(4, size=90, p=[.8, .12, .05, .03])
    y_pred = np.where(rng.uniform(size=90) < .6, y_true, rng.integers(0, n_classes, 90))
    weights = rng.uniform(.5, 3, 90).astype("float32") if weighted else None
    probs = _probabilities(y_pred, n_classes, rng)
    metric = SparseBalancedAccuracy(n_classes)
    cuts = [0, 7, 8, 30, 31, 64, 90]  # batches of 7, 1, 22, 1, 33, 26: most lack a rare class
    for a, b in zip(cuts, cuts[1:]):
        metric.update_state(y_true[a:b].reshape(-1, 1), probs[a:b],  # [B, 1] labels, as Keras passes them
                            None if weights is None else weights[a:b])
    with warnings.catch_warnings():  # sklearn: "y_pred contains classes not in y_true", as intended
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y_true, y_pred, sample_weight=weights)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    # per-class constant weights (the class weighting) do not change any recall
    plain = SparseBalancedAccuracy(n_classes)
    plain.update_state(y_true, probs, np.array([.2, 1, 3, 9, 1], "float32")[y_true])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unweighted = balanced_accuracy_score(y_true, y_pred)
    assert float(plain.result()) == pytest.approx(unweighted, abs=1e-6)


def test_streamed_balanced_accuracy_counts_only_classes_seen_and_resets():
    from kemdy_tf.models.metrics import SparseBalancedAccuracy

    metric = SparseBalancedAccuracy(3)
    assert float(metric.result()) == 0.0  # nothing seen yet
    # a batch of class 0 only: recall 1/2, classes 1 and 2 have no labels -> UA 1/2
    metric.update_state([0, 0], [[.9, .1, 0], [.1, .8, .1]])
    assert float(metric.result()) == pytest.approx(0.5)
    # class 2 appears, predicted right: (1/2 + 1) / 2
    metric.update_state([2], [[0, .2, .8]])
    assert float(metric.result()) == pytest.approx(0.75)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state([1], [[0, 1, 0]])
    assert float(metric.result()) == pytest.approx(1.0)  # nothing left over from before the reset


def test_streamed_balanced_accuracy_config_round_trip_and_registration():
    import keras

    import kemdy_tf  # noqa: F401
    from kemdy_tf.models.metrics import SparseBalancedAccuracy

    metric = SparseBalancedAccuracy(4, name="val_thing")
    config = metric.get_config()
    assert config["num_classes"] == 4 and config["name"] == "val_thing"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is SparseBalancedAccuracy and clone.get_config() == config
    for m in (metric, clone):
        m.update_state([0, 1, 3, 3], [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    assert float(clone.result()) == pytest.approx(float(metric.result())) == pytest.approx(0.5)


def test_streamed_balanced_accuracy_in_keras_evaluate_is_the_whole_splits_score():
    """Inside `model.evaluate` (batches of 4) the result is the score of all the rows,
    as sklearn computes it from the model's predictions."""
    import keras
    from sklearn.metrics import balanced_accuracy_score

    from kemdy_tf.models.metrics import SparseBalancedAccuracy

    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 6)).astype("float32")
    y = rng.choice(3, size=37, p=[.7, .2, .1])
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=[SparseBalancedAccuracy(3)])
    scores = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert scores["ua"] == pytest.approx(balanced_accuracy_score(y, predicted), abs=1e-6)
