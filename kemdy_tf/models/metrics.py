"""Training metrics that Keras lacks in the form we need."""

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
