"""How a classifier stage balances its classes (`train.class_weighting`).

    scheme, weights, prior = class_balance(run)   # from the run's training split

Per-class example weights (`class_weight_values`), or a class prior for the
logit-adjusted loss (`models.losses.LogitAdjustedLoss`) where balanced weights would grow
too large (`resolve_class_weighting`). The allowed schemes are `config.CLASS_WEIGHTINGS`;
docs/imbalance.md has the measurements behind the `auto` default.
"""

from __future__ import annotations

import numpy as np

from kemdy_tf.config import CLASS_WEIGHTINGS
from kemdy_tf.models.losses import class_prior

WEIGHT_CAP = 10.0  # the "capped" scheme's largest weight


def class_weight_values(labels, n_classes: int, scheme: str = "weights") -> list[float]:
    """Per-class loss weights from the training labels (integer class indices).

    Schemes (n examples, k classes present, n_c of class c):
        auto     `weights`, or `logit_adjust` where a class's balanced weight would exceed
                 WEIGHT_CAP (`resolve_class_weighting`);
        weights  sklearn's 'balanced' n / (k * n_c): every class weighs the same in total;
        capped   the same, clipped at WEIGHT_CAP, so a class of a dozen examples cannot
                 outweigh the rest (KEMDy20's rarest classes get ~15 balanced);
        sqrt     proportional to n_c ** -0.5, scaled so the mean example weight is 1:
                 halfway (in log) between no weighting and balanced;
        none     all 1;
        logit_adjust  all 1: the balance comes from the loss instead (`class_prior`,
                 models.losses.LogitAdjustedLoss), not from weighting examples.
    A class absent from the labels gets weight 1 (it contributes no loss anyway).
    """
    scheme = resolve_class_weighting(labels, scheme)
    out = [1.0] * n_classes
    present, counts = np.unique(np.asarray(labels, dtype=int), return_counts=True)
    if scheme in ("none", "logit_adjust") or len(present) == 0:
        return out
    if scheme == "sqrt":
        weights = counts ** -0.5
        weights = weights * counts.sum() / (counts * weights).sum()
    else:
        weights = counts.sum() / (len(present) * counts)  # = sklearn compute_class_weight("balanced")
        if scheme == "capped":
            weights = np.minimum(weights, WEIGHT_CAP)
    for c, w in zip(present, weights):
        out[int(c)] = float(w)
    return out


def resolve_class_weighting(labels, scheme: str = "auto") -> str:
    """The scheme `auto` stands for on these training labels; any other scheme unchanged.

    Balanced weights where they stay moderate; logit adjustment where a class would weigh
    more than WEIGHT_CAP: then a dozen examples steer every step and the validation
    curves jump from epoch to epoch (KEMDy20's shares: weights up to ~19). Measured in
    docs/imbalance.md: under KEMDy20's shares logit adjustment lifts the fusion model (by
    .03-.10 UA) and the audio classifier above the classical baselines on both session
    partitions measured, the text classifier on one of them; on the default synthetic set
    (weights <= 2.1) balanced weights keep the fusion model .08 UA better.
    """
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"train.class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}; got {scheme!r}")
    if scheme != "auto":
        return scheme
    _, counts = np.unique(np.asarray(labels, dtype=int), return_counts=True)
    if len(counts) and counts.sum() / (len(counts) * counts.min()) > WEIGHT_CAP:
        return "logit_adjust"
    return "weights"


def training_labels(run) -> np.ndarray:
    """The training split's emotions as class indices (rows of other emotions left out)."""
    classes = list(run.config.data.classes)
    labels = run.split("train")["emotion"]
    return labels[labels.isin(classes)].map(classes.index).to_numpy()


def class_weights(run) -> list[float]:
    """`class_weight_values` of the training split under the run's `train.class_weighting`."""
    return class_weight_values(training_labels(run), len(run.config.data.classes),
                               run.config.train.class_weighting)


def class_balance(run) -> tuple[str, list[float] | None, list[float] | None]:
    """(scheme, class weights, class prior) of a classifier stage: the run's
    `train.class_weighting` resolved on its training split (`auto` -> a scheme), the
    per-class sample weights (None when every example weighs one) and the prior the
    logit-adjusted loss needs (None unless the scheme is `logit_adjust`)."""
    labels, n_classes = training_labels(run), len(run.config.data.classes)
    scheme = resolve_class_weighting(labels, run.config.train.class_weighting)
    if scheme == "logit_adjust":
        return scheme, None, class_prior(labels, n_classes)
    if scheme == "none":
        return scheme, None, None
    return scheme, class_weight_values(labels, n_classes, scheme), None
