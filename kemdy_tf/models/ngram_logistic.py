"""A logistic regression over the transcript's character n-grams, fitted, inside the model.

On real Korean text the strongest linear model we measured is NB-LR (Wang & Manning 2012,
"NBSVM"): binary n-gram presence scaled by each n-gram's naive-Bayes log-count ratio,
then an L2-penalised logistic regression (docs/text_real.md, NSMC 20k rows: .843-.847
alone, .849-.851 mixed with the deep path, against .841 for the TF-IDF baseline and
.820-.826 for the deep path alone). Transcripts whose adjacent words are unrelated favour
the classical baseline's own weighting instead, "tfidf_lr" (docs/imbalance.md). Trained by SGD
beside a deep path, the same features over-fit in one epoch while the deep path needs
four, so here they are not trained by the optimizer at all: `fit_nb_logistic` (or
`fit_tfidf_logistic`) fits them
with scikit-learn on the training split before the deep path trains (convex, deterministic,
seconds), `NgramLogisticScores` holds the result as frozen weights, and `WideShare` mixes
its probabilities with the deep head's by a share chosen on the validation split after the
deep path has trained (`choose_wide_share`). The deep path trains alone (share 0), so it
is not starved by a path that already fits the training set.

Multi-class NB-LR: one-vs-rest, as Wang & Manning: a log-count ratio and a logistic
regression per class, probabilities normalised over the classes as scikit-learn's OvR does.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kemdy_tf.config import CHAR_NGRAM_WEIGHTINGS

_PACKAGE = "kemdy_tf"
# The mixing weights a validation split picks the wide path's share from.
SHARE_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


# How the n-grams are weighted and the regression fitted (fusion.char_ngram_model):
#   nblr      binary presence x naive-Bayes log-count ratio, one-vs-rest (Wang & Manning)
#   tfidf_lr  binary presence x idf, rows l2-normalised, multinomial: the classical
#             baseline's TF-IDF logistic regression (kemdy_tf.classical), on these n-grams
WEIGHTINGS = CHAR_NGRAM_WEIGHTINGS  # the allowed values live in kemdy_tf.config
DEFAULT_C = {"nblr": 0.1, "tfidf_lr": 10.0}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NgramLogisticScores(keras.layers.Layer):
    """Hashed n-gram ids -> class probabilities of a frozen linear model.

    ``[B, K]`` ids in ``0..buckets`` (0: none; repeats count once: binary presence) ->
    ``[B, n_classes]``. "nblr": ``sigmoid(sum of the present ids' rows + bias)`` per class
    (one-vs-rest), normalised to sum to one; "tfidf_lr": the present ids' idf weights,
    l2-normalised, times the table, plus bias, softmax. The weights are not trained by the
    optimizer; `fit_nb_logistic` / `fit_tfidf_logistic` set them.

    Args:
        buckets: ids run 1..buckets (the table has buckets + 1 rows; row 0 stays zero).
        n_classes: number of classes.
        weighting: "nblr" or "tfidf_lr" (`WEIGHTINGS`).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, buckets: int, n_classes: int, weighting: str = "nblr", **kwargs):
        kwargs.setdefault("dtype", "float32")  # probabilities, summed over thousands of ids
        super().__init__(**kwargs)
        if int(buckets) < 1 or int(n_classes) < 2:
            raise ValueError(f"buckets must be >= 1 and n_classes >= 2, got {buckets}, {n_classes}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
        self.buckets, self.n_classes, self.weighting = int(buckets), int(n_classes), weighting

    def build(self, ids_shape):
        self.table = self.add_weight(shape=(self.buckets + 1, self.n_classes), name="table",
                                     initializer="zeros", trainable=False)
        self.bias = self.add_weight(shape=(self.n_classes,), name="bias", initializer="zeros", trainable=False)
        if self.weighting == "tfidf_lr":
            self.idf = self.add_weight(shape=(self.buckets + 1,), name="idf", initializer="ones", trainable=False)

    def call(self, ids):
        ids = ops.sort(ops.cast(ids, "int32"), axis=-1)
        # Binary presence: an id counts at its first place in the sorted row only.
        first = ops.concatenate([ops.ones_like(ids[:, :1], "bool"), ops.not_equal(ids[:, 1:], ids[:, :-1])], axis=-1)
        present = ops.cast(ops.logical_and(first, ops.not_equal(ids, 0)), "float32")
        if self.weighting == "tfidf_lr":
            weighted = present * ops.take(self.idf, ids, axis=0)
            norm = ops.sqrt(ops.maximum(ops.sum(weighted * weighted, axis=-1, keepdims=True), 1e-12))
            logits = ops.einsum("bk,bkc->bc", weighted / norm, ops.take(self.table, ids, axis=0)) + self.bias
            return ops.softmax(logits, axis=-1)
        logits = ops.einsum("bk,bkc->bc", present, ops.take(self.table, ids, axis=0)) + self.bias
        scores = ops.sigmoid(logits)
        return scores / ops.sum(scores, axis=-1, keepdims=True)

    def compute_output_spec(self, ids):
        return keras.KerasTensor((ids.shape[0], self.n_classes), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "n_classes": self.n_classes,
                "weighting": self.weighting}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WideShare(keras.layers.Layer):
    """``(1 - share) * deep + share * wide`` class probabilities.

    `share` is a frozen weight, 0 when built (the deep path trains alone), set after
    training from the validation split (`choose_wide_share`); it is saved with the model.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def build(self, deep_shape, wide_shape):
        self.share = self.add_weight(shape=(), name="share", initializer="zeros", trainable=False)

    def call(self, deep, wide):
        deep, wide = ops.cast(deep, "float32"), ops.cast(wide, "float32")
        return (1.0 - self.share) * deep + self.share * wide

    def compute_output_spec(self, deep, wide):
        return keras.KerasTensor(deep.shape, dtype="float32")


def presence_matrix(ngram_ids: np.ndarray, buckets: int):
    """``[N, K]`` hashed n-gram ids (0: none) -> a binary ``[N, buckets + 1]`` CSR matrix."""
    import scipy.sparse as sparse

    rows, cols = np.nonzero(ngram_ids)
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, ngram_ids[rows, cols])),
                               shape=(len(ngram_ids), buckets + 1))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _used_columns(presence) -> np.ndarray:
    """The buckets some row holds. The regressions are fitted on these columns only: a column
    of zeros gets a zero coefficient under L2 anyway, and L-BFGS over all 2^18 buckets cost
    seconds per fit even on a hundred rows."""
    return np.unique(presence.tocsr().indices)


def fit_nb_logistic(presence, labels: np.ndarray, n_classes: int, c: float,
                    sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NB-LR per class (one-vs-rest) on a binary presence matrix -> (table, bias).

    For class k: r = log((1 + n-gram counts in class k) / its total) - the same for the
    other classes (the naive-Bayes log-count ratio, add-one smoothed); a logistic
    regression (L2, inverse strength `c`) on presence * r; the table's column k is
    r * coefficients, so the layer needs no separate ratio. A class absent from
    `labels` gets a column of zeros and a very low bias.
    """
    import scipy.sparse as sparse
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    table = np.zeros((presence.shape[1], n_classes), np.float32)
    bias = np.full(n_classes, -20.0, np.float32)
    used = _used_columns(presence)
    # Two classes: class 0's problem is class 1's with features and labels negated, whose
    # optimum is the same coefficients (L2 is symmetric): one fit, column 0 = -column 1.
    for k in ([1] if n_classes == 2 else range(n_classes)):
        inside = labels == k
        if not inside.any() or inside.all():
            continue
        with_k = 1.0 + np.asarray(presence[inside].sum(axis=0)).ravel()
        without_k = 1.0 + np.asarray(presence[~inside].sum(axis=0)).ravel()
        ratio = np.log(with_k / with_k.sum()) - np.log(without_k / without_k.sum())
        model = LogisticRegression(C=c, max_iter=3000).fit((presence @ sparse.diags(ratio))[:, used], inside,
                                                           sample_weight=sample_weight)
        table[used, k] = ratio[used] * model.coef_[0]
        bias[k] = model.intercept_[0]
    if n_classes == 2 and bias[1] > -20.0:
        table[:, 0], bias[0] = -table[:, 1], -bias[1]
    table[0] = 0.0  # id 0 is "no n-gram"
    return table, bias


def fit_tfidf_logistic(presence, labels: np.ndarray, n_classes: int, c: float,
                       sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The classical baseline's recipe on a binary presence matrix -> (idf, table, bias):
    smoothed idf (scikit-learn's ``log((1 + n) / (1 + df)) + 1``), rows l2-normalised, a
    multinomial logistic regression (L2, inverse strength `c`). A class absent from
    `labels` gets a column of zeros and a very low bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    labels = np.asarray(labels)
    document_frequency = np.asarray(presence.sum(axis=0)).ravel()
    idf = (np.log((1.0 + presence.shape[0]) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
    idf[0] = 0.0  # id 0 is "no n-gram"
    table = np.zeros((presence.shape[1], n_classes), np.float32)
    bias = np.full(n_classes, -20.0, np.float32)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the n-gram regression needs two classes in the training split, got {present.tolist()}")
    used = _used_columns(presence)
    model = LogisticRegression(C=c, max_iter=3000).fit(normalize(presence.multiply(idf).tocsr())[:, used], labels,
                                                       sample_weight=sample_weight)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn's binary form: one row for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    table[np.ix_(used, model.classes_)] = coef.T
    bias[model.classes_] = intercept
    table[0] = 0.0
    return idf, table, bias


def choose_wide_share(deep: np.ndarray, wide: np.ndarray, labels: np.ndarray,
                      sample_weight: np.ndarray | None = None) -> float:
    """The share of `SHARE_GRID` whose mixture has the lowest (weighted) log loss on these rows;
    the smaller share on ties."""
    labels = np.asarray(labels)
    weights = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, float)
    rows = np.arange(len(labels))
    losses = [float(np.average(-np.log((1 - s) * deep[rows, labels] + s * wide[rows, labels] + 1e-7),
                               weights=weights)) for s in SHARE_GRID]
    return float(SHARE_GRID[int(np.argmin(losses))])


# === Fitting the path of a built model (the training runner calls these) ===

NGRAM_IDS, NGRAM_SCORES, WIDE_SHARE, DEEP_SCORES = "char_ngram_ids", "char_ngram_scores", "wide_share", "emotion"


def has_ngram_logistic(model) -> bool:
    """Whether `model` has the fitted n-gram path (fusion.char_ngram_model nblr or tfidf_lr)."""
    return any(layer.name == NGRAM_SCORES for layer in model.layers)


def _batches(dataset):
    """(model inputs, labels, sample weights or None) of each batch of a stage dataset."""
    for batch in dataset:
        yield batch[0], np.asarray(next(iter(batch[1].values()))).reshape(-1), (
            np.asarray(batch[2]).reshape(-1) if len(batch) > 2 else None)


def fit_ngram_logistic(model, dataset, c: float = 0.0) -> int:
    """Fit `model`'s n-gram path (`fit_nb_logistic` or `fit_tfidf_logistic`, by its weighting;
    `c` 0: `DEFAULT_C`) on the rows of `dataset`, a stage dataset of (inputs, {target:
    labels}[, sample weights]) batches; returns the number of rows."""
    import scipy.sparse as sparse

    ngrams, scores = model.get_layer(NGRAM_IDS), model.get_layer(NGRAM_SCORES)
    presence, labels, weights = [], [], []
    for x, y, w in _batches(dataset):
        ids = x["token_ids"] if isinstance(x, dict) else x
        presence.append(presence_matrix(np.asarray(ngrams(ids)), scores.buckets))
        labels.append(y)
        weights.append(np.ones(len(y), np.float32) if w is None else w)
    if not labels:
        raise ValueError("the training split has no rows to fit the character n-gram logistic regression on")
    c = c or DEFAULT_C[scores.weighting]
    fit_args = (sparse.vstack(presence).tocsr(), np.concatenate(labels).astype(int), scores.n_classes, c,
                np.concatenate(weights))
    if scores.weighting == "tfidf_lr":
        idf, table, bias = fit_tfidf_logistic(*fit_args)
        scores.idf.assign(idf)
    else:
        table, bias = fit_nb_logistic(*fit_args)
    scores.table.assign(table)
    scores.bias.assign(bias)
    return int(sum(len(y) for y in labels))


def has_wide_share(model) -> bool:
    """Whether `model` mixes a fitted path into its answer (`WideShare`: a text classifier's
    n-gram regression, an audio classifier's functionals regression)."""
    return any(layer.name == WIDE_SHARE for layer in model.layers)


def choose_share_for(model, dataset, weight_of_class=None) -> float:
    """Set `model`'s `WideShare` to `choose_wide_share` on `dataset` (the validation split;
    weighted by `weight_of_class`, indexed by label, if given) and return it. The two paths
    are the layer's own inputs (the deep head's and the fitted path's probabilities)."""
    parts = keras.Model(model.input, model.get_layer(WIDE_SHARE).input)
    deep, wide, labels = [], [], []
    for x, y, _ in _batches(dataset):
        d, w = parts.predict_on_batch(x)
        deep.append(np.asarray(d, np.float64))
        wide.append(np.asarray(w, np.float64))
        labels.append(y)
    if not labels:
        return set_share(model, 0.0)
    labels = np.concatenate(labels).astype(int)
    weights = None if weight_of_class is None else np.asarray(weight_of_class, float)[labels]
    return set_share(model, choose_wide_share(np.concatenate(deep), np.concatenate(wide), labels, weights))


def set_share(model, share: float) -> float:
    model.get_layer(WIDE_SHARE).share.assign(float(share))
    return float(share)


def share_of(model) -> float:
    return float(np.asarray(model.get_layer(WIDE_SHARE).share))
