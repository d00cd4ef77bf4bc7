"""Logit adjustment: train on the class prior, answer without it.

Balanced class weights multiply a rare class's loss by ~15-20 under KEMDy20's shares, so a
dozen utterances steer every step and the validation curves jump from epoch to epoch
(docs/imbalance.md). Logit adjustment (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021) reaches the balanced decision rule without weights: the loss
sees the model's probabilities multiplied by the training class prior and renormalised
(its logits plus log prior), so what the model itself outputs is the prior-free,
class-balanced posterior. Every example weighs one, the validation loss is the same
likelihood as the training loss, and the exported model needs nothing extra.

    >>> loss = LogitAdjustedLoss([0.9, 0.1])
    >>> # a model that says 50/50 is told "the prior says class 0": low loss for label 0
    >>> float(loss(np.array([0]), np.array([[0.5, 0.5]])))  # doctest: +ELLIPSIS
    0.105...
"""

from __future__ import annotations

import typing

import keras
import numpy as np
from keras import ops

_EPS = 1e-7  # probabilities are clipped here before the log, as Keras' own cross-entropy does


def class_prior(labels, n_classes: int) -> list[float]:
    """Training class shares with one added example per class (a class absent from the
    labels must not get log 0 = -inf)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)[:n_classes] + 1.0
    return [float(c) for c in counts / counts.sum()]


@keras.saving.register_keras_serializable(package="kemdy_tf")
class LogitAdjustedLoss(keras.losses.Loss):
    """`base` applied to `normalise(y_pred * prior)`: the logit-adjusted loss on probabilities.

    Args:
        prior: the training class shares, one positive number per class (`class_prior`).
        base: the loss on (integer labels, probabilities), a Keras loss name or object
            (e.g. the text stages' label-smoothed cross-entropy).
    """

    def __init__(self, prior: typing.Sequence[float], base="sparse_categorical_crossentropy",
                 name="logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]
        if not self.prior or min(self.prior) <= 0:
            raise ValueError(f"LogitAdjustedLoss needs a positive share per class; got {prior!r}")
        self.base = keras.losses.get(base)

    def call(self, y_true, y_pred):
        log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), _EPS, 1.0))
        adjusted = ops.softmax(log_p + ops.log(ops.convert_to_tensor(self.prior, "float32")), axis=-1)
        if isinstance(self.base, keras.losses.Loss):
            return self.base.call(y_true, adjusted)  # per example: reduction stays this loss's
        return self.base(y_true, adjusted)

    def get_config(self):
        return {**super().get_config(), "prior": self.prior, "base": keras.losses.serialize(self.base)}
