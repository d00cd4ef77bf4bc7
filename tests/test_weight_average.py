"""`train.ema_epochs`: epochs are validated and kept on a moving average of the weights.

The kill-and-resume test of an averaged run is in test_training.py (beside its fixture).
"""

from __future__ import annotations

import numpy as np
import pytest


def test_momentum_spans_the_asked_number_of_epochs():
    from kemdy_tf.training import TrainingError, ema_momentum

    assert ema_momentum(2, 50) == pytest.approx(1 - 1 / 100)   # a window of 100 steps
    assert ema_momentum(0.5, 2) == 0.0                          # under one step: no averaging
    with pytest.raises(TrainingError, match="train.ema_epochs must be >= 0"):
        ema_momentum(-1, 10)


def test_epoch_ends_see_the_average_and_training_goes_on_from_the_raw_weights():
    """The weights a later callback (checkpoint, early stopping) sees at each epoch's end
    are the exponential moving average of the raw weights after every step; the next
    epoch's first step starts from the raw weights, not from the average."""
    import keras

    from kemdy_tf.checkpoints import AveragedWeightsAtEpochEnd
    from kemdy_tf.training import average_weights

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], dtype="float32"))[:, None]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)
    steps_per_epoch = 4
    average_weights(optimizer, ema_epochs=1, steps_per_epoch=steps_per_epoch)
    momentum = optimizer.ema_momentum
    assert momentum == pytest.approx(0.75)
    model.compile(optimizer, loss="mse")

    raw, at_epoch_end, at_epoch_begin = [], [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            at_epoch_begin.append(self.model.get_weights()[0].copy())

        def on_train_batch_end(self, batch, logs=None):
            raw.append(self.model.get_weights()[0].copy())

        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(self.model.get_weights()[0].copy())

    model.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0,
              callbacks=[AveragedWeightsAtEpochEnd(), Record()])
    # the callback order in fit: the swap sits first, so Record's epoch end sees the average
    average = raw[0]  # Keras' average starts at the first step's weights (momentum 0 there)
    for step, weights in enumerate(raw):
        if step:
            average = momentum * average + (1 - momentum) * weights
        if (step + 1) % steps_per_epoch == 0:
            np.testing.assert_allclose(at_epoch_end[step // steps_per_epoch], average, rtol=1e-5, atol=1e-6)
    for epoch in (1, 2):  # each epoch trains on from the raw weights of the last step
        np.testing.assert_allclose(at_epoch_begin[epoch], raw[epoch * steps_per_epoch - 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(at_epoch_end[-1], raw[-1])  # the average is not the raw endpoint
    np.testing.assert_allclose(model.get_weights()[0], average, rtol=1e-5, atol=1e-6)  # fit ends on it



def test_a_negative_window_is_refused_when_the_stage_compiles(tiny_config):
    import dataclasses

    import keras

    from kemdy_tf.training import TrainingError, compile_stage_model

    config = dataclasses.replace(tiny_config, train=dataclasses.replace(tiny_config.train, ema_epochs=-2))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="arousal")])
    with pytest.raises(TrainingError, match="train.ema_epochs must be >= 0"):
        compile_stage_model(model, "audio", config, total_steps=10)
