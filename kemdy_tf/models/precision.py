"""Training precision: the Keras dtype policy a stage is built and trained under.

    with dtype_policy("mixed_bfloat16"):     # train.precision; the global policy is restored after
        model = build(...); model.fit(...)
    served = with_policy(model, "float32")   # the same weights, computing in float32

Under `mixed_bfloat16` layers keep float32 variables and compute in bfloat16 (1.4-1.9x
faster training steps on a CPU with AVX512-BF16, docs/benchmarks.md). The model
builders pin the layers that must stay float32 whatever the policy: the emotion
softmax and the voice vote (the class probabilities), the rating outputs (the
regression targets), and the audio encoder's sinusoidal positions (bfloat16 cannot
hold frame indices above 256, nor the angles they give). Losses are float32 anyway
(Keras computes a loss in its own dtype, float32).

A finished stage's `model.keras` is saved float32 (`training.train_stage`), so the
evaluation, the export and `--init-from` see float32 models; the export converts a
mixed-precision checkpoint too. A loaded model keeps the policy it was saved with: a
classifier's encoder backbones (from the encoders' `model.keras`) and an `--init-from`
model compute in float32 under either setting; only the layers built new follow
`train.precision`.
"""

from __future__ import annotations

import contextlib

from kemdy_tf.config import PRECISIONS, check_precision  # noqa: F401  (re-exported)


@contextlib.contextmanager
def dtype_policy(name: str | None):
    """Set Keras' global dtype policy to `name` inside the block; the previous one is
    restored on the way out, also on error. None: leave the global policy alone."""
    import keras

    if name is None:
        yield
        return
    check_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def is_mixed(model) -> bool:
    """Whether any layer of `model` (nested ones included) computes in another dtype than
    it stores its variables in (a mixed-precision model)."""
    return any(layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype
               for layer in model._flatten_layers(include_self=True, recursive=True))


def with_policy(model, name: str = "float32"):
    """A copy of `model` whose every layer, nested ones included, uses the dtype policy
    `name`, with the same weights (a mixed-precision model's variables are float32 already).

    Trainable flags travel in the config; keras-hub sublayers of a frozen backbone may come
    back trainable (as with `load_model`; `training._freeze_backbones` refreezes them).
    """
    import keras

    import kemdy_tf.models  # noqa: F401  registers the custom layers

    config = _replace_policies(keras.saving.serialize_keras_object(model), name)
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _replace_policies(config, name: str):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in config:
            return {**config, "config": {**config["config"], "name": name}}
        return {key: _replace_policies(value, name) for key, value in config.items()}
    if isinstance(config, list):
        return [_replace_policies(value, name) for value in config]
    return config
