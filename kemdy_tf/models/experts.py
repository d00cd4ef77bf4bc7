"""The fusion model's answer as a weighted product of experts.

The cross-modal network (both sequences concatenated along time, attention, LSTM:
`models.fusion`) is one expert; the single-modality classifiers of the same run are
the others. Their log-probabilities are summed with one weight per expert and one
bias per class, and the sum is the logit of the answer:

    p(c | x)  ∝  exp(b_c + Σ_e w_e · log p_e(c | x))

Two modalities that each narrow the classes (the voice: arousal; the words: valence)
multiply into a confident answer, which a fixed average of probabilities cannot do;
the weights (each in [0, 1]: an expert's evidence counts at most once) temper each
expert and the biases are a class offset. The weights decide; a last factor, the
`sharpness` (one temperature: `softmax(s · logits)`, which never changes the answer's
class), is then fitted on the same held-out predictions by plain log loss, so the
confidence is calibrated too: capped weights fitted for UA leave the answer underconfident
(on the synthetic main job its validation-fitted sharpness is 1.8, and the test ECE falls
from .113 to .038; docs/fusion.md). An example that lacks a modality (a blank transcript, no frames) is answered
by the weights and biases fitted for the modalities it has: that expert casts no vote,
and the others weigh what they are worth alone.

`fit_expert_weights` fits the weights (>= 0) and biases on validation predictions by
class-weighted log loss (scipy's L-BFGS-B), with the biases' L2 penalty that
`choose_bias_penalty` picks by cross-validation on the same rows; `fit_sharpness` the
temperature by unweighted log loss (the population's confidence, which ECE scores);
`ExpertProduct` holds them as its config, so the combined model saves, loads and exports
like any other.
"""

from __future__ import annotations

import typing

import keras
import numpy as np
from keras import ops

_PACKAGE = "kemdy_tf"
EXPERT_PRODUCT = "expert_product"
# Probabilities are clipped here before the log: a confident wrong expert costs log(1e-7), not -inf.
MIN_PROBABILITY = 1e-7
# Largest weight an expert may get: each expert's evidence counts at most once against the
# others. The weights may discount an expert, never let it outvote the rest past its own
# confidence, so an expert that is confidently wrong on input unlike its validation data (a
# transcript that names the emotion in training and says nothing at test: data.scenarios
# "shortcut") moves the decision no more than it believes. (The sharpness, fitted after,
# scales every expert alike: it changes the confidence, never the decision.) Measured (docs/fusion.md): uncapped, the shortcut scenario's
# fusion UA fell to .419 (audio_clf .547); capped at 1, .560, for .943 -> .931 on the
# synthetic main job.
MAX_WEIGHT = 1.0
# L2 penalty on the class biases (per unit of the mean log loss): they correct an offset, not
# the data. `choose_bias_penalty` picks it from the grid by cross-validation on the rows the
# weights are fitted on: every expert is trained class-balanced, so a bias fitted on ~30
# validation utterances of the rarer classes mostly fits their noise (docs/fusion.md).
BIAS_PENALTY = 1e-2
BIAS_PENALTY_GRID = (1e-2, 1e-1, 1.0, 10.0)
# Folds of that cross-validation (fewer only when even the largest class has fewer rows).
BIAS_PENALTY_FOLDS = 5
# Range of the fitted sharpness (temperature scaling's 1/T): wide enough for any real fit.
SHARPNESS_RANGE = (0.1, 10.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExpertProduct(keras.layers.Layer):
    """`softmax(sharpness · (bias + Σ_e weights[e] · log p_e))` over experts' class
    probabilities, with weights, biases and sharpness for each set of modalities an example has.

    Args:
        weights_per_expert: `[patterns][experts]` weights (>= 0). `patterns` is
            2 ** (masked experts): pattern `Σ_k present_k · 2**k` over the masked experts
            in call order (with one masked expert: 0 absent, 1 present). An expert absent
            from a pattern must weigh 0 there.
        class_bias: `[patterns][classes]` offsets.
        masked: per expert, whether it is called with a presence mask (see `call`).
        expert_names: names of the experts, for summaries (`kemdy_tf.fusion_experts`).
        sharpness: `[patterns]` factors (> 0) of the logits (1/temperature; default 1 each):
            calibration only, the most probable class stays the same.

    Call:
        `layer(probabilities, masks)`: `probabilities` a list of `[B, classes]`, one per
        expert; `masks` one `[B, steps]` boolean mask per masked expert (in order): an
        example whose mask holds no True step lacks that expert's modality, and gets the
        weights fitted for the modalities it has.

    Example:
        >>> layer = ExpertProduct([[1.0, 0.0], [0.8, 0.5]], [[0.0, 0.0], [0.1, -0.1]], masked=[False, True])
        >>> layer([fusion_probs, text_probs], [token_ids != 0])
    """

    def __init__(self, weights_per_expert: typing.Sequence[typing.Sequence[float]],
                 class_bias: typing.Sequence[typing.Sequence[float]],
                 masked: typing.Sequence[bool] | None = None, expert_names: typing.Sequence[str] | None = None,
                 sharpness: typing.Sequence[float] | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # class probabilities stay float32 under mixed precision
        super().__init__(**kwargs)
        self.weights_per_expert = [[float(w) for w in row] for row in weights_per_expert]
        self.class_bias = [[float(b) for b in row] for row in class_bias]
        n_experts = len(self.weights_per_expert[0]) if self.weights_per_expert else 0
        self.masked = [bool(m) for m in (masked if masked is not None else [False] * n_experts)]
        self.expert_names = [str(n) for n in (expert_names or [f"expert{i}" for i in range(n_experts)])]
        patterns = 2 ** sum(self.masked)
        self.sharpness = [float(v) for v in (sharpness if sharpness is not None else [1.0] * patterns)]
        if (not n_experts or len(self.weights_per_expert) != patterns
                or any(len(row) != n_experts for row in self.weights_per_expert)):
            raise ValueError(f"ExpertProduct needs {patterns} rows (one per pattern of the masked experts) of "
                             f"one weight per expert, got {weights_per_expert}")
        if any(w < 0 or not np.isfinite(w) for row in self.weights_per_expert for w in row):
            raise ValueError(f"ExpertProduct weights must be finite and >= 0, got {weights_per_expert}")
        if len(self.masked) != n_experts or len(self.expert_names) != n_experts:
            raise ValueError("ExpertProduct: weights_per_expert, masked and expert_names need one entry per expert")
        if len(self.class_bias) != patterns or len({len(row) for row in self.class_bias}) != 1 \
                or len(self.class_bias[0]) < 2:
            raise ValueError(f"ExpertProduct needs {patterns} rows of one bias per class (>= 2 classes), "
                             f"got {class_bias}")
        if len(self.sharpness) != patterns or any(not (v > 0 and np.isfinite(v)) for v in self.sharpness):
            raise ValueError(f"ExpertProduct needs {patterns} sharpness factors (> 0), got {sharpness}")

    def call(self, probabilities, masks=()):
        if len(probabilities) != len(self.masked) or len(masks) != sum(self.masked):
            raise ValueError(f"ExpertProduct has {len(self.masked)} experts ({sum(self.masked)} masked), called "
                             f"with {len(probabilities)} probability tensors and {len(masks)} masks")
        logs = ops.stack([ops.log(ops.clip(ops.cast(p, "float32"), MIN_PROBABILITY, 1.0))
                          for p in probabilities], axis=1)  # [B, experts, classes]
        pattern = ops.zeros(ops.shape(logs)[:1], dtype="int32")
        for k, mask in enumerate(masks):
            pattern = pattern + ops.cast(ops.any(mask, axis=-1), "int32") * (2 ** k)
        weights = ops.take(ops.convert_to_tensor(self.weights_per_expert, dtype="float32"), pattern, axis=0)
        bias = ops.take(ops.convert_to_tensor(self.class_bias, dtype="float32"), pattern, axis=0)
        sharpness = ops.take(ops.convert_to_tensor(self.sharpness, dtype="float32"), pattern, axis=0)
        return ops.softmax(sharpness[:, None] * (ops.einsum("bec,be->bc", logs, weights) + bias), axis=-1)

    def compute_output_spec(self, probabilities, masks=()):
        return keras.KerasTensor(probabilities[0].shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "weights_per_expert": self.weights_per_expert,
                "class_bias": self.class_bias, "masked": self.masked, "expert_names": self.expert_names,
                "sharpness": self.sharpness}


def expert_logits(log_probs: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """`[N, C]` logits of `ExpertProduct` from `[N, E, C]` clipped log-probabilities (an
    absent expert's rows zero), in numpy."""
    return np.einsum("nec,e->nc", log_probs, weights) + bias[None, :]


def clipped_log(probabilities: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """log(clip(p)) as `ExpertProduct` takes it; rows where `present` is False are zero."""
    logs = np.log(np.clip(np.asarray(probabilities, np.float64), MIN_PROBABILITY, 1.0))
    if present is not None:
        logs = np.where(np.asarray(present, bool)[:, None], logs, 0.0)
    return logs


def fit_expert_weights(log_probs: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None,
                       bias_penalty: float = BIAS_PENALTY) -> tuple[np.ndarray, np.ndarray, float]:
    """Weights (>= 0) and class biases minimising the weighted mean log loss of
    `softmax(bias + Σ_e w_e log p_e)` (+ `bias_penalty` · |bias|²).

    Args:
        log_probs: `[N, E, C]` clipped log-probabilities (`clipped_log`).
        labels: `[N]` class indices.
        sample_weight: `[N]` (e.g. class weights, so the loss is balanced over classes).

    The fit starts from the first expert alone (weight 1, the rest 0) and keeps that start
    unless it finds better, so on these rows it is never worse than that expert's answer.

    Returns:
        (weights [E], bias [C], the weighted mean log loss reached).
    """
    from scipy.optimize import minimize

    log_probs = np.asarray(log_probs, np.float64)
    n, n_experts, n_classes = log_probs.shape
    labels = np.asarray(labels, int)
    if labels.shape != (n,) or n == 0:
        raise ValueError(f"fit_expert_weights: {labels.shape} labels for {n} rows")
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = w / w.sum()
    onehot = np.eye(n_classes)[labels]

    def loss_and_grad(theta):
        weights, bias = theta[:n_experts], theta[n_experts:]
        z = expert_logits(log_probs, weights, bias)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(w * (onehot * log_p).sum(axis=1)).sum() + bias_penalty * (bias ** 2).sum()
        dz = (np.exp(log_p) - onehot) * w[:, None]
        grad_w = np.einsum("nc,nec->e", dz, log_probs)
        grad_b = dz.sum(axis=0) + 2 * bias_penalty * bias
        return loss, np.concatenate([grad_w, grad_b])

    start = np.zeros(n_experts + n_classes)
    start[0] = 1.0
    bounds = [(0.0, MAX_WEIGHT)] * n_experts + [(None, None)] * n_classes
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=bounds)
    theta = result.x if result.fun <= loss_and_grad(start)[0] else start
    return theta[:n_experts], theta[n_experts:], float(loss_and_grad(theta)[0])


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights that make each class present weigh the same (the training runner's
    balanced class weights, `class_balance.class_weight_values`, per row)."""
    from kemdy_tf.class_balance import class_weight_values

    return np.asarray(class_weight_values(labels, n_classes, "weights"), np.float64)[labels]


def choose_bias_penalty(log_probs: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The `BIAS_PENALTY_GRID` value whose fits give the lowest class-balanced log loss on
    held-out rows: stratified `BIAS_PENALTY_FOLDS`-fold cross-validation over these rows
    (seeded, so a rerun chooses the same), each fold fitted with `fit_expert_weights` on the
    others. A class of fewer rows than folds is held out in fewer folds (and missing from the
    fits of those): how a bias fitted without it answers it is part of what is measured.
    Returns `(penalty, {penalty: held-out loss})`; `(BIAS_PENALTY, {})` with fewer than two
    rows of every class (nothing to hold out)."""
    import warnings

    from scipy.special import log_softmax
    from sklearn.model_selection import StratifiedKFold

    log_probs = np.asarray(log_probs, np.float64)
    labels = np.asarray(labels, int)
    n_classes = log_probs.shape[-1]
    counts = np.bincount(labels, minlength=n_classes)
    folds = min(BIAS_PENALTY_FOLDS, int(counts.max()) if len(labels) else 0)
    if folds < 2:
        return BIAS_PENALTY, {}
    with warnings.catch_warnings():  # "the least populated class has only N members": intended
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(labels, labels))
    held_out_weight = balanced_weights(labels, n_classes)
    losses = {}
    for penalty in BIAS_PENALTY_GRID:
        total = 0.0
        for train, test in splits:
            weights, bias, _ = fit_expert_weights(log_probs[train], labels[train],
                                                  balanced_weights(labels[train], n_classes), penalty)
            log_p = log_softmax(expert_logits(log_probs[test], weights, bias), axis=1)
            total -= float((held_out_weight[test] * log_p[np.arange(len(test)), labels[test]]).sum())
        losses[penalty] = total / float(held_out_weight.sum())
    return min(losses, key=losses.get), losses


def fit_sharpness(logits: np.ndarray, labels: np.ndarray) -> float:
    """The factor `s` (in `SHARPNESS_RANGE`) minimising the mean log loss of `softmax(s · logits)`
    over `[N, C]` logits (`expert_logits`) and their labels: temperature scaling (Guo et al.,
    2017), unweighted, so the confidence matches the accuracy over the examples as they come."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, int)
    if logits.ndim != 2 or labels.shape != (len(logits),) or not len(labels):
        raise ValueError(f"fit_sharpness: logits {logits.shape} for labels {labels.shape}")
    rows = np.arange(len(labels))

    def loss(s):
        return -float(log_softmax(s * logits, axis=1)[rows, labels].mean())

    result = minimize_scalar(loss, bounds=SHARPNESS_RANGE, method="bounded")
    return float(result.x) if result.fun <= loss(1.0) else 1.0
