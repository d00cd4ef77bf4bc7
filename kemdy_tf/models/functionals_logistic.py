"""A logistic regression over the utterance functionals, fitted, inside the audio classifier.

The classical audio baseline beside every run (kemdy_tf.classical: eGeMAPS, standardised
per speaker, a class-balanced logistic regression) is a convex fit that a few hundred
clips determine well; the audio classifier's deep path is not, and on small or shifted
corpora it trailed that row (the transcript-shortcut sessions .547 against .581, RAVDESS
fold 0 .531 against .500-.562, docs/real_data.md). So the audio-only classifier carries
the same kind of model on its own features: the utterance functionals it already reads
(per-band and cepstral statistics of the log-mel, standardised per speaker), scaled to
unit variance and fed to an L2 logistic regression that scikit-learn fits on the
training split before the deep path trains. Its inverse strength is chosen from `C_GRID`
by the regression's class-weighted validation log loss (a decision from the data,
printed and recorded in the stage's summary.json), and its share of each answer by
`ngram_logistic.WideShare` on the validation split, as the text classifier's n-gram
regression (`models.ngram_logistic`): a corpus where the deep path is better gives the
regression little weight.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PACKAGE = "kemdy_tf"
FUNCTIONALS_SCORES = "functionals_scores"
# Inverse L2 strengths tried on validation: ~750 standardised statistics from a few
# hundred clips want strong shrinkage (bench/speech_functionals.py: C .03 on RAVDESS).
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FunctionalsLogisticScores(keras.layers.Layer):
    """``[B, F]`` functionals -> ``[B, n_classes]`` probabilities of a frozen, standardised
    multinomial logistic regression: ``softmax(((x - mean) / scale) @ table + bias)``.

    Its weights are not trained by the optimizer; `fit_functionals_logistic` sets them.

    Args:
        n_classes: number of classes.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, n_classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # probabilities, under any training precision
        super().__init__(**kwargs)
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n_classes = int(n_classes)

    def build(self, input_shape):
        width = int(input_shape[-1])
        self.mean = self.add_weight(shape=(width,), name="mean", initializer="zeros", trainable=False)
        self.scale = self.add_weight(shape=(width,), name="scale", initializer="ones", trainable=False)
        self.table = self.add_weight(shape=(width, self.n_classes), name="table", initializer="zeros",
                                     trainable=False)
        self.bias = self.add_weight(shape=(self.n_classes,), name="bias", initializer="zeros", trainable=False)

    def call(self, functionals):
        standardised = (ops.cast(functionals, "float32") - self.mean) / self.scale
        return ops.softmax(ops.matmul(standardised, self.table) + self.bias, axis=-1)

    def compute_output_spec(self, functionals):
        return keras.KerasTensor((functionals.shape[0], self.n_classes), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


def has_functionals_logistic(model) -> bool:
    """Whether `model` has the fitted functionals path (an audio-only classifier)."""
    return any(layer.name == FUNCTIONALS_SCORES for layer in model.layers)


def _functionals_of(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(functionals, labels, sample weights: ones where the dataset has none) of every row of
    a stage dataset, as `model`'s regression reads them (after any per-speaker standardising)."""
    features = keras.Model(model.input, model.get_layer(FUNCTIONALS_SCORES).input)
    rows, labels, weights = [], [], []
    for batch in dataset:
        x, y = batch[0], np.asarray(next(iter(batch[1].values()))).reshape(-1)
        rows.append(np.asarray(features.predict_on_batch(x), np.float64))
        labels.append(y.astype(int))
        weights.append(np.asarray(batch[2], np.float64).reshape(-1) if len(batch) > 2 else np.ones(len(y)))
    if not labels:
        return np.zeros((0, 0)), np.zeros(0, int), np.zeros(0)
    return np.concatenate(rows), np.concatenate(labels), np.concatenate(weights)


def _fit(features, labels, weights, n_classes: int, c: float):
    """(mean, scale, table, bias) of a standardised L2 logistic regression; a class absent
    from `labels` gets a column of zeros and a very low bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the functionals regression needs two classes in the training split, "
                         f"got {present.tolist()}")
    scaler = StandardScaler().fit(features)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    # One BLAS thread: beside TensorFlow's threads two of them spin against each other (a fit
    # of 824 x 740 took 1.8 s with two, 0.26 s with one, on 2 cores).
    with threadpool_limits(1):
        model = LogisticRegression(C=c, max_iter=5000).fit((features - scaler.mean_) / scale, labels,
                                                           sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn's binary form: one row for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    table = np.zeros((features.shape[1], n_classes))
    bias = np.full(n_classes, -20.0)
    table[:, model.classes_] = coef.T
    bias[model.classes_] = intercept
    return scaler.mean_, scale, table, bias


def _probabilities(features, fitted) -> np.ndarray:
    mean, scale, table, bias = fitted
    logits = ((features - mean) / scale) @ table + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def fit_functionals_logistic(model, train, val=None, c: float | None = None, class_weights=None) -> dict:
    """Fit `model`'s functionals regression on the rows of `train` (a stage dataset of
    (inputs, {target: labels}[, sample weights]) batches) and set its weights.

    The inverse strength: `c` if given (a refit keeps the first fit's), else the one of
    `C_GRID` with the lowest class-weighted log loss on `val` (weighted by `class_weights`,
    indexed by class), else, with no validation rows, .03. Returns `{"rows", "c"}` plus
    `"validation_log_loss"` ({C: loss}) when it chose. Deterministic (L-BFGS from zero).
    """
    layer = model.get_layer(FUNCTIONALS_SCORES)
    features, labels, weights = _functionals_of(model, train)
    if not len(labels):
        raise ValueError("the training split has no rows to fit the functionals logistic regression on")
    report = {"rows": int(len(labels))}
    val_features, val_labels, _ = (_functionals_of(model, val) if c is None and val is not None
                                   else (None, np.zeros(0, int), None))
    if c is not None or not len(val_labels):
        c = 0.03 if c is None else float(c)
        fitted = _fit(features, labels, weights, layer.n_classes, c)
    else:  # every strength of the grid, the lowest validation log loss kept
        val_weights = (np.ones(len(val_labels)) if class_weights is None
                       else np.asarray(class_weights, float)[val_labels])
        fits, losses = {}, {}
        for candidate in C_GRID:
            fits[candidate] = _fit(features, labels, weights, layer.n_classes, candidate)
            probs = _probabilities(val_features, fits[candidate])
            losses[candidate] = float(np.average(-np.log(probs[np.arange(len(val_labels)), val_labels] + 1e-7),
                                                 weights=val_weights))
        c = min(losses, key=losses.get)
        fitted = fits[c]
        report["validation_log_loss"] = {str(k): round(v, 4) for k, v in losses.items()}
    mean, scale, table, bias = fitted
    for variable, value in ((layer.mean, mean), (layer.scale, scale), (layer.table, table), (layer.bias, bias)):
        variable.assign(np.asarray(value, np.float32))
    report["c"] = c
    return report
