"""Training metrics that Keras lacks in the form we need: macro-F1 and balanced accuracy
(UA) over integer labels, the figures the classifiers are judged by."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kemdy_tf")
class SparseMacroF1(keras.metrics.F1Score):
    """Macro-F1 over integer labels (Keras' F1Score wants one-hot labels).

    Args:
        num_classes: number of classes; labels are indices in [0, num_classes).
        name: metric name.

    Example:
        >>> m = SparseMacroF1(3)
        >>> m.update_state([0, 1, 2], [[.9, .1, 0], [.1, .8, .1], [.2, .2, .6]])
        >>> float(m.result())
        1.0
    """

    def __init__(self, num_classes, name="f1", dtype=None, **kwargs):
        kwargs.pop("average", None)
        super().__init__(average="macro", name=name, dtype=dtype, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        # argmax one-hot: F1 of the predicted class, not of a 0.5 threshold on each probability
        y_pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("average", None)
        config.pop("threshold", None)
        return {**config, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="kemdy_tf")
class SparseBalancedAccuracy(keras.metrics.Metric):
    """Balanced accuracy (UA: the mean recall over the classes present in the labels seen)
    from integer labels and class probabilities, streamed over batches.

    The state is the confusion matrix of everything seen since the last reset (rows true,
    columns the argmax prediction), so the result over an epoch is the score of the whole
    epoch, not a mean of per-batch scores: a batch without a class cannot skew it. It equals
    `sklearn.metrics.balanced_accuracy_score` on the same labels, predictions and sample
    weights. Per-class sample weights (the class weighting) cancel out of each recall.
    Keras sums the matrix across replicas.

    Args:
        num_classes: number of classes; labels are indices in [0, num_classes) (others
            are ignored).
        name: metric name (logged as `name` and `val_<name>`).

    Example:
        >>> m = SparseBalancedAccuracy(3)
        >>> m.update_state([0, 0, 1], [[.9, .1, 0], [.1, .8, .1], [.2, .7, .1]])
        >>> float(m.result())  # recalls 1/2 (class 0) and 1 (class 1); class 2 unseen
        0.75
    """

    # Higher is better: Keras callbacks in mode "auto" read this.
    _direction = "up"

    def __init__(self, num_classes, name="ua", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes),
                                           initializer="zeros", dtype="float32", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        truth = ops.one_hot(y_true, self.num_classes, dtype="float32")
        guess = ops.one_hot(ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1),
                            self.num_classes, dtype="float32")
        if sample_weight is not None:
            truth = truth * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        self.confusion.assign_add(ops.matmul(ops.transpose(truth), guess))

    def result(self):
        support = ops.sum(self.confusion, axis=1)
        present = ops.cast(support > 0, "float32")
        recall = ops.divide_no_nan(ops.diagonal(self.confusion), support)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
