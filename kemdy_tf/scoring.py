"""Classification and regression metrics, and the baselines every figure is read against.

Everything sklearn computes comes from sklearn; only Lin's concordance correlation
coefficient (CCC), which sklearn lacks, is written here. Definitions, formulas and the
reasons behind each choice are in docs/metrics.md.

It sits below both training (the validation summary each stage prints) and
evaluation (the test report), so both score with the same code and neither imports
the other. `from kemdy_tf.evaluation import metrics` still gives this module (its old name).

Example:
    >>> from kemdy_tf import scoring
    >>> scores = scoring.classification_metrics([0, 0, 1], [0, 1, 1], ["neutral", "happy"])
    >>> round(scores["balanced_accuracy"], 3)
    0.75
"""

from __future__ import annotations

import math
import typing
import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# The four headline classification figures, in the order every table shows them.
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
HEADLINE_NAMES = {"accuracy": "WA", "balanced_accuracy": "UA",
                  "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


def concordance_correlation(y_true: typing.Sequence[float], y_pred: typing.Sequence[float]) -> float:
    """Lin's concordance correlation coefficient.

    `2 cov(t, p) / (var(t) + var(p) + (mean(t) - mean(p))^2)` with population (1/n)
    moments, as in Lin (1989). 1 is perfect agreement, 0 none (any constant prediction),
    -1 perfect disagreement. NaN when both vectors are the same constant (0/0).

    Args:
        y_true: reference values.
        y_pred: predictions, same length.

    Raises:
        ValueError: when the lengths differ, the vectors are empty or hold NaN/inf.
    """
    t, p = _paired_floats(y_true, y_pred)
    t_mean, p_mean = t.mean(), p.mean()
    covariance = np.mean((t - t_mean) * (p - p_mean))
    denominator = t.var() + p.var() + (t_mean - p_mean) ** 2
    if denominator == 0:
        return math.nan
    return float(2 * covariance / denominator)


def regression_metrics(y_true: typing.Sequence[float], y_pred: typing.Sequence[float]) -> dict:
    """RMSE and CCC over the rows whose reference is known.

    Rows with a NaN reference (a manifest may leave arousal/valence out) are dropped and
    counted in `n_missing`. Returns `{"n", "n_missing", "rmse", "ccc"}`.
    """
    t = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    known = ~np.isnan(t)
    t, p = t[known], p[known]
    if t.size == 0:
        raise ValueError("no reference value is known (all NaN): cannot score a regression")
    _paired_floats(t, p)  # rejects NaN/inf predictions with a clear message
    return {
        "n": int(t.size),
        "n_missing": int((~known).sum()),
        "rmse": float(skm.root_mean_squared_error(t, p)),
        "ccc": concordance_correlation(t, p),
    }


def classification_metrics(y_true: typing.Sequence[int], y_pred: typing.Sequence[int],
                           classes: typing.Sequence[str]) -> dict:
    """WA, UA, macro/weighted F1, per-class precision/recall/F1/support, confusion matrix.

    Args:
        y_true: class indices into `classes`.
        y_pred: predicted class indices, same length.
        classes: class names; every class appears in `per_class` and the confusion
            matrix even when absent from both vectors (support 0, scores 0).

    Returns:
        `{"n", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1",
        "per_class": {name: {"precision", "recall", "f1", "support"}},
        "confusion_matrix": [[count]] (rows true, columns predicted)}`.
        Macro-F1 and UA average over the classes that occur (sklearn's defaults): a
        class missing from the split does not drag the average down.

    Raises:
        ValueError: on empty input, length mismatch or an index outside `classes`.
    """
    t, p = _class_indices(y_true, y_pred, len(classes))
    labels = list(range(len(classes)))
    report = skm.classification_report(t, p, labels=labels, target_names=list(classes),
                                       output_dict=True, zero_division=0)
    with warnings.catch_warnings():
        # A class predicted but absent from y_true has no recall; sklearn warns and
        # leaves it out of the mean, which is the definition of UA we want.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = skm.balanced_accuracy_score(t, p)
    return {
        "n": int(t.size),
        "accuracy": float(skm.accuracy_score(t, p)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(skm.f1_score(t, p, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(t, p, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(report[name]["precision"]),
                   "recall": float(report[name]["recall"]),
                   "f1": float(report[name]["f1-score"]),
                   "support": int(report[name]["support"])}
            for name in classes
        },
        "confusion_matrix": skm.confusion_matrix(t, p, labels=labels).tolist(),
    }


# Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15


def expected_calibration_error(y_true: typing.Sequence[int], probabilities: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error: the examples binned by the confidence of their
    answer (the highest probability; `bins` equal widths on [0, 1]); each bin's
    |accuracy - mean confidence|, weighted by its share of examples (docs/metrics.md).

    0 for a model whose confidence is its accuracy; a model that says .9 and is right half
    the time has about .4.
    """
    probs = np.asarray(probabilities, np.float64)
    t = np.asarray(y_true, dtype=int).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(t) or not len(t):
        raise ValueError(f"expected_calibration_error: {probs.shape} probabilities for {len(t)} labels")
    confidence, answer = probs.max(axis=1), probs.argmax(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        rows = which == b
        error += rows.mean() * abs(float((answer[rows] == t[rows]).mean()) - float(confidence[rows].mean()))
    return float(error)


def majority_class(train_labels: typing.Sequence[int], n_classes: int) -> int:
    """The most frequent class index of the training labels (the lowest index on a tie).

    Raises:
        ValueError: when there are no training labels.
    """
    labels = np.asarray(train_labels, dtype=int).reshape(-1)
    if labels.size == 0:
        raise ValueError("no training labels: the majority baseline needs the training split")
    _check_range(labels, n_classes, "train_labels")
    return int(np.bincount(labels, minlength=n_classes).argmax())


def majority_baseline(y_true: typing.Sequence[int], majority: int,
                      classes: typing.Sequence[str]) -> dict:
    """Classification metrics of predicting `majority` (the training split's) for every row.

    Its UA is 1 / (classes present in `y_true`) when `majority` is among them.
    """
    t = np.asarray(y_true, dtype=int).reshape(-1)
    scores = classification_metrics(t, np.full_like(t, majority), classes)
    scores["class"] = classes[majority]
    return scores


def mean_baseline(y_true: typing.Sequence[float], train_mean: float) -> dict:
    """RMSE/CCC of predicting the training split's mean for every row (its CCC is 0)."""
    t = np.asarray(y_true, dtype=float).reshape(-1)
    scores = regression_metrics(t, np.full_like(t, train_mean))
    scores["value"] = float(train_mean)
    return scores


def mean_and_std(values: typing.Sequence[float]) -> dict:
    """`{"mean", "std", "n", "values"}` over folds; std is the sample std (ddof=1), 0 for one value.

    NaN values (e.g. an undefined CCC) are left out of mean and std but kept in `values`.
    """
    all_values = [float(v) for v in values]
    finite = np.array([v for v in all_values if not math.isnan(v)])
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "values": all_values}
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": int(finite.size), "values": all_values}


# === A predictions table, scored ===

def score_predictions(predictions: pd.DataFrame, classes: typing.Sequence[str],
                      train_emotions: typing.Sequence[str],
                      train_means: typing.Mapping[str, float]) -> dict:
    """Every model's metrics on one split, with the baselines computed on the same split.

    Args:
        predictions: the long table of `predict.predict_split` (one row per model and
            utterance; every model sees the same utterances).
        classes: class names; `emotion_true` / `emotion_pred` hold these names.
        train_emotions: the training split's primary labels (original rows, not
            augmented copies); the majority baseline predicts their most frequent class.
        train_means: `{"arousal": mean, "valence": mean}` of the training split, the
            mean-predictor baseline.

    Returns:
        `{"n", "classes", "majority_baseline", "mean_baseline": {target: ...},
        "models": {model: {"emotion": classification_metrics, "arousal": ..., "valence": ...}}}`;
        a model gets an entry per output it predicts.
    """
    if predictions.empty:
        raise ValueError("no predictions to score")
    classes = list(classes)
    index = {name: i for i, name in enumerate(classes)}
    models = list(dict.fromkeys(predictions["model"]))
    reference = predictions[predictions["model"] == models[0]]
    scores: dict = {"n": int(len(reference)), "classes": classes, "models": {}}

    if "emotion_true" in predictions:
        y_true = _indices(reference["emotion_true"], index, "emotion_true")
        train = [e for e in train_emotions if e in index]
        majority = majority_class([index[e] for e in train], len(classes))
        scores["majority_baseline"] = majority_baseline(y_true, majority, classes)
    scores["mean_baseline"] = {
        target: mean_baseline(reference[f"{target}_true"], train_means[target])
        for target in ("arousal", "valence")
        if f"{target}_true" in reference and target in train_means
        and reference[f"{target}_true"].notna().any()
    }
    for model in models:
        rows = predictions[predictions["model"] == model]
        entry = {}
        if "emotion_pred" in rows and rows["emotion_pred"].notna().all():
            entry["emotion"] = classification_metrics(
                _indices(rows["emotion_true"], index, "emotion_true"),
                _indices(rows["emotion_pred"], index, "emotion_pred"), classes)
            probability_columns = [f"prob_{c}" for c in classes]
            if set(probability_columns) <= set(rows) and rows[probability_columns].notna().all().all():
                entry["emotion"]["ece"] = expected_calibration_error(
                    _indices(rows["emotion_true"], index, "emotion_true"), rows[probability_columns].to_numpy())
        for target in ("arousal", "valence"):
            column = f"{target}_pred"
            if column in rows and rows[column].notna().all() and rows[f"{target}_true"].notna().any():
                entry[target] = regression_metrics(rows[f"{target}_true"], rows[column])
        scores["models"][model] = entry
    return scores


def _indices(names: pd.Series, index: dict[str, int], column: str) -> np.ndarray:
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"{column} holds labels that are not classes {list(index)}: {unknown[:5]}")
    return names.map(index).to_numpy(dtype=int)


# === Input checks ===

def _paired_floats(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("cannot score empty vectors")
    for name, values in (("y_true", t), ("y_pred", p)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} holds {int((~np.isfinite(values)).sum())} NaN/inf values")
    return t, p


def _class_indices(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("cannot score an empty split")
    if n_classes < 1:
        raise ValueError("classes is empty")
    for name, values in (("y_true", t), ("y_pred", p)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must hold class indices (integers), got dtype {values.dtype}")
        _check_range(values, n_classes, name)
    return t.astype(int), p.astype(int)


def _check_range(values: np.ndarray, n_classes: int, name: str) -> None:
    bad = values[(values < 0) | (values >= n_classes)]
    if bad.size:
        raise ValueError(f"{name} holds class indices outside 0..{n_classes - 1}: "
                         f"{sorted(set(bad.tolist()))[:5]}")
