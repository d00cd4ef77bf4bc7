"""How fast one training step runs, as samples/s and as a fraction of the matmul ceiling.

For each stage the model is built the way `kemdy_tf.training` builds it (the fusion
stage on frozen encoder backbones, as `build_stage_model` does by default), compiled
with `training.compile_stage_model` (the real optimizer, loss and metrics), and fed one
fixed synthetic batch of realistic shape through Keras' own compiled
`train_function`, so the data pipeline is not in the measurement (it has its own
section). FLOPs per sample are counted from the traced forward+backward graph
(`bench.flops`).

Variants answer "what would make it faster" without touching kemdy_tf: XLA
(`model.jit_compile = True` after compiling, what `compile(jit_compile=True)` does),
bfloat16 mixed precision (Keras policy `mixed_bfloat16` while building), a larger
batch. A step of each stage's recurrent layer alone shows how much of the stage's
step the sequential loop takes, and calls at new sequence lengths show what a padded
batch of a new length costs (tf.function retracing, or an XLA recompile).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench.flops import count_flops
from kemdy_tf import stages as stages_lib
from kemdy_tf.config import RunConfig

# The fusion stage and the encoders it starts from, from the stage registry.
STAGES = stages_lib.with_requirements("fusion")


def precision(policy: str | None):
    """Build models under a Keras dtype policy (None: leave the global policy alone);
    the training loop's own context manager (`train.precision`)."""
    from kemdy_tf.models.precision import dtype_policy

    return dtype_policy(policy)


def build_stage(config: RunConfig, stage: str, vocab_size: int):
    """A compiled model for `stage` (audio, text, fusion), as `training` builds and compiles it."""
    from kemdy_tf import training
    from kemdy_tf.models import build_audio_encoder, build_fusion_model, build_text_encoder

    if stage == "audio":
        model = build_audio_encoder(config.audio, config.features)
    elif stage == "text":
        model = build_text_encoder(config.text, config.features, vocab_size)
    elif stage == "fusion":
        # build_stage_model loads the trained encoders and freezes their backbones
        # (unfreeze=False): the same graph, with untrained weights.
        audio = build_audio_encoder(config.audio, config.features).get_layer("audio_backbone")
        text = build_text_encoder(config.text, config.features, vocab_size).get_layer("text_backbone")
        audio.trainable = text.trainable = False
        model = build_fusion_model(audio, text, config.fusion, len(config.data.classes))
    else:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    training.compile_stage_model(model, stage, config)
    return model


def stage_batch(config: RunConfig, stage: str, batch: int, frames: int, vocab_size: int, seed: int = 0):
    """One `(inputs, targets[, sample_weight])` batch shaped like `stages.stage_dataset`'s.

    Log-mels in a dB-like range, every frame real (a padded batch is as long as its
    longest clip); transcripts of 20 tokens padded with 0 to max_tokens.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    tokens = config.features.max_tokens
    ids = np.zeros((batch, tokens), np.int32)
    ids[:, : min(20, tokens)] = rng.integers(1, vocab_size, (batch, min(20, tokens)))
    features = {
        "log_mel": tf.constant(rng.normal(-40.0, 15.0, (batch, frames, config.features.n_mels)).astype(np.float32)),
        "frame_mask": tf.ones((batch, frames), tf.bool),
        "token_ids": tf.constant(ids),
    }
    spec = stages_lib.get(stage)
    x = {k: features[k] for k in spec.inputs}
    if len(x) == 1:  # the encoders are single-input models (one tensor, not a dict)
        (x,) = x.values()
    target = spec.target
    if target == "emotion":
        y = {target: tf.constant(rng.integers(0, len(config.data.classes), batch).astype(np.int32))}
        return x, y, tf.ones([batch], tf.float32)  # training passes class weights as sample weights
    return x, {target: tf.constant(rng.uniform(1, 5, (batch, 1)).astype(np.float32))}


def train_flops(model, data) -> dict:
    """FLOPs of one forward+backward pass on `data`, split into forward and backward.

    Traces the loss of the model's outputs and its gradient with respect to the
    trainable weights (what the train step computes; the optimizer's elementwise
    update is left out). Ops TF creates under the gradient tape's name scope are the
    backward pass.
    """
    import tensorflow as tf

    x, y = data[0], data[1]

    @tf.function
    def loss_and_gradients(x, y):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(outputs[k], tf.float32))) for k in y])
        # The loss is returned as the train step reports it, so the forward pass stays live.
        return loss, tape.gradient(loss, model.trainable_variables)

    graph = loss_and_gradients.get_concrete_function(x, y).graph
    split = count_flops(graph, group=lambda op: "backward" if op.name.startswith("gradient_tape") else "forward")
    forward, backward = sum(split.get("forward", {}).values()), sum(split.get("backward", {}).values())
    batch = int(tf.nest.flatten(x)[0].shape[0])
    return {"forward_per_sample": forward / batch, "train_per_sample": (forward + backward) / batch,
            "by_op": {g: {k: v / batch for k, v in d.items()} for g, d in split.items()}}


def time_steps(model, data, warmup: int, steps: int) -> dict:
    """Seconds per compiled train step after warm-up (median), and the first call's seconds.

    Every call goes through `model.train_function` with the same structure of data
    (`train_on_batch` would pass a `None` sample weight and trace a second function).
    """
    model.make_train_function()
    start = time.perf_counter()
    _sync(model.train_function([data]))  # traces the step and builds the optimizer
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        _sync(model.train_function([data]))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _sync(model.train_function([data]))
        times.append(time.perf_counter() - start)
    return {"first_call_s": first, "step_s": statistics.median(times), "step_s_all": times}


def new_length_calls(model, data, frames: int, lengths: int = 3) -> list[float]:
    """Seconds of train steps on batches of `lengths` new frame counts (retrace/recompile cost)."""
    x, *rest = data
    if not isinstance(x, dict) or "log_mel" not in x:
        return []
    times = []
    for shorter in range(1, lengths + 1):
        cut = max(frames - 2 * shorter, 1)
        sliced = {k: (v[:, :cut] if k in ("log_mel", "frame_mask") else v) for k, v in x.items()}
        start = time.perf_counter()
        _sync(model.train_function([(sliced, *rest)]))
        times.append(time.perf_counter() - start)
    return times


def _sync(logs) -> None:
    float(logs["loss"])


def measure_stage(config: RunConfig, stage: str, *, batch: int, frames: int, vocab_size: int, warmup: int,
                  steps: int, jit: bool = False, policy: str | None = None, count: bool = True,
                  new_lengths: int = 0) -> dict:
    """Samples/s of one stage's train step (and its FLOPs when `count`)."""
    import keras

    keras.utils.set_random_seed(0)
    with precision(policy):
        model = build_stage(config, stage, vocab_size)
        if jit:
            model.jit_compile = True
        data = stage_batch(config, stage, batch, frames, vocab_size)
        result = {"stage": stage, "batch": batch, "frames": frames, "tokens": config.features.max_tokens,
                  "jit_compile": bool(model.jit_compile),
                  "policy": policy or keras.mixed_precision.global_policy().name,
                  "params": int(model.count_params()),
                  "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights))}
        if count:
            result["flops"] = train_flops(model, data)
        result.update(time_steps(model, data, warmup, steps))
        if new_lengths:
            result["new_length_call_s"] = new_length_calls(model, data, frames, new_lengths)
    result["samples_per_s"] = batch / result["step_s"]
    keras.backend.clear_session()
    return result


def measure_rnn(kind: str, units: int, width: int, *, batch: int, steps_in_sequence: int, warmup: int,
                steps: int) -> dict:
    """Train step of one masked recurrent layer alone (`kind` "gru" or "lstm") on [batch, steps, width].

    The models' GRU (audio, text) and LSTM (fusion) run one small matmul per time
    step in a `While` loop; timed alone they show how much of a stage's step the
    sequential part takes.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    sequence = keras.Input((None, width), name="sequence")
    mask = keras.Input((None,), dtype="bool", name="mask")
    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[kind](units)
    model = keras.Model({"sequence": sequence, "mask": mask},
                        {"out": keras.layers.Dense(1)(layer(sequence, mask=mask))})
    model.compile(keras.optimizers.Adam(1e-3), loss="mse")
    x = {"sequence": tf.random.stateless_normal([batch, steps_in_sequence, width], seed=[5, 6]),
         "mask": tf.ones([batch, steps_in_sequence], tf.bool)}
    data = (x, {"out": tf.ones([batch, 1])})
    result = {"kind": kind, "units": units, "width": width, "batch": batch, "steps_in_sequence": steps_in_sequence,
              "flops": train_flops(model, data)}
    result.update(time_steps(model, data, warmup, steps))
    result["samples_per_s"] = batch / result["step_s"]
    keras.backend.clear_session()
    return result


def achieved(result: dict, ceiling_gflops: float) -> dict:
    """GFLOP/s a measurement achieved, and that as a fraction of the ceiling."""
    gflops = result["flops"]["train_per_sample"] * result["samples_per_s"] / 1e9
    return {"gflops": gflops, "fraction_of_ceiling": gflops / ceiling_gflops}
