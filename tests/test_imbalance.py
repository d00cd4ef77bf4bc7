"""Class weights under KEMDy20-like imbalance: the `train.class_weighting` schemes.

docs/imbalance.md has the measurement that chose the default.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from kemdy_tf.training import CLASS_WEIGHTINGS, WEIGHT_CAP, TrainingError, class_weight_values

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
    with pytest.raises(TrainingError, match="train.class_weighting.*'balanced'"):
        class_weight_values(LABELS, 5, "balanced")
