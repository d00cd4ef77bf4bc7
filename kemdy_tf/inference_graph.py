"""The three models of a run as one inference computation, each backbone run once.

The fusion model nests the audio and text backbones, and so do the audio and text
encoders. Called one after the other (as the export did), each backbone ran twice
per request: about a third of the serving latency (docs/benchmarks.md). Here each
Keras model is split at its backbone into

* the backbone (`audio_backbone` / `text_backbone`, nested layers of the model), and
* a *head*: a Functional model built on the model's own graph, whose inputs are the
  model's inputs plus the backbone's output sequence (everything after the backbone).

When the fusion model's backbone holds exactly the weights of its encoder's (the
fusion stage trains on frozen backbones by default), it runs once and its sequence
feeds both heads; otherwise (a fine-tuned backbone) each runs on its own. The outputs
are those of the Keras models (the split changes which ops run, not what they compute;
tests/test_export.py checks 1e-4).

`xla_bucket`: the model part is compiled with XLA (`jit_compile=True`), its frames
padded with masked zeros to a multiple of the bucket so that one compiled program
serves every clip length in a bucket (`max_frames / bucket` programs per batch size).
The models ignore masked frames, so the padding changes nothing but the shape.
Under XLA three more things change where the work runs, never what it computes
(issue 17; docs/serving.md, "Latency"):

* the seed audio backbone's convolution stem (up to `STEM_LAYER`) runs in graph mode
  on the real frames, before the padding: oneDNN's convolutions beat XLA's on CPU;
* each text backbone is its own XLA program, free to run beside that stem;
* token ids are cut to a multiple of `TOKEN_BUCKET` past the longest transcript (pad
  tokens, like padded frames, change nothing), for the seed text backbone.

Example:
    >>> graph = InferenceGraph(audio_encoder, text_encoder, fusion, max_frames=512)
    >>> graph(log_mel, frame_count, token_ids)["emotion_probs"]  # inside a tf.function
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

AUDIO_BACKBONE = "audio_backbone"
TEXT_BACKBONE = "text_backbone"
OUTPUTS = ("emotion_probs", "arousal", "valence")
# The seed audio backbone's convolutions end here (models/audio_encoder.py); `graph_stem`.
STEM_LAYER = "frame_projection"
# With xla_bucket: each text backbone is its own XLA program (run beside the audio stem).
SEPARATE_TEXT = True
# With xla_bucket: token ids are cut to a multiple of this past the longest transcript.
TOKEN_BUCKET = 16


class InferenceGraph:
    """Callable: `(log_mel, frame_count, token_ids[, speaker_functionals]) -> {emotion_probs,
    arousal, valence}` (`speaker_functionals` [B, 2, F] for models that read them,
    `kemdy_tf.speaker_statistics`).

    Args:
        audio_encoder: log_mel, frame_mask -> {"arousal": [B, 1]}, or None (no arousal
            labels: `arousal` is NaN).
        text_encoder: token_ids -> {"valence": [B, 1]}, or None (`valence` is NaN).
        fusion: log_mel, frame_mask, token_ids -> {"emotion": [B, classes]}.
        max_frames: frames past this are dropped, as in training.
        xla_bucket: compile the models with XLA, frames padded to a multiple of this;
            None: plain graph mode.
        graph_stem: with `xla_bucket`, run the audio backbone's convolution stem in
            graph mode outside the XLA program (where the backbone has one).
    """

    def __init__(self, audio_encoder, text_encoder, fusion, max_frames: int, xla_bucket: int | None = None,
                 graph_stem: bool = True):
        if xla_bucket is not None and int(xla_bucket) < 1:
            raise ValueError(f"xla_bucket must be a positive number of frames or None, got {xla_bucket}")
        self.max_frames = int(max_frames)
        self.xla_bucket = None if xla_bucket is None else int(xla_bucket)
        self.fusion = _Split(fusion, (AUDIO_BACKBONE, TEXT_BACKBONE))
        self.encoders = {"arousal": _Split(audio_encoder, (AUDIO_BACKBONE,)) if audio_encoder else None,
                         "valence": _Split(text_encoder, (TEXT_BACKBONE,)) if text_encoder else None}
        # Backbones to run: the fusion model's, plus each encoder's that differs from it.
        self.shared = {}
        for encoder in filter(None, self.encoders.values()):
            for name, backbone in encoder.backbones.items():
                same = name in self.fusion.backbones and _same_weights(backbone, self.fusion.backbones[name])
                self.shared[name] = same
                if same:
                    encoder.backbones[name] = self.fusion.backbones[name]
        # Under XLA, an audio backbone's convolution stem stays outside the compiled
        # program (oneDNN runs it on the real frames; XLA's CPU convolutions were 1.7x
        # slower on it, and padded frames cost as much as real ones), and a text backbone
        # is its own XLA program: it needs only the token ids, so it can run while the
        # audio front end and stem do.
        self.stems, self.text_programs = {}, {}
        if self.xla_bucket:
            for split in [self.fusion, *filter(None, self.encoders.values())]:
                for name, backbone in split.backbones.items():
                    key = id(backbone)
                    if name == AUDIO_BACKBONE and graph_stem and key not in self.stems:
                        stem = _stem_split(backbone, STEM_LAYER)
                        if stem is not None:
                            self.stems[key] = stem
                    elif name == TEXT_BACKBONE and SEPARATE_TEXT and key not in self.text_programs:
                        self.text_programs[key] = tf.function(
                            functools.partial(_text_call, backbone), jit_compile=True)
        # Under XLA, token ids are cut to a multiple of TOKEN_BUCKET past the longest
        # transcript (pad tokens change nothing, as padded frames): a 10-word transcript
        # fills 16 of the 64 token slots, and the fusion head's sequence is frames + tokens.
        # Only for the seed text backbone (a pretrained one may treat its length otherwise).
        self.token_bucket = None
        if self.xla_bucket and TOKEN_BUCKET and self.fusion.backbones.get(TEXT_BACKBONE) is not None:
            names = {layer.name for layer in self.fusion.backbones[TEXT_BACKBONE].layers}
            if "token_embedding" in names and "pretrained_projection" not in names:
                self.token_bucket = TOKEN_BUCKET
        models = functools.partial(_models_call, self)
        self._models = tf.function(models, jit_compile=True) if self.xla_bucket else models

    def __call__(self, log_mel, frame_count, token_ids, speaker_functionals=None) -> dict:
        # Same preparation as training batches: at most max_frames, zero padding, bool mask.
        log_mel = log_mel[:, : self.max_frames]
        frames = tf.shape(log_mel)[1]
        frame_count = tf.clip_by_value(tf.cast(frame_count, tf.int32), 0, frames)
        stems = {}
        if self.stems:  # graph mode, on the real frames
            frame_mask = tf.range(frames)[tf.newaxis, :] < frame_count[:, tf.newaxis]
            log_mel = tf.where(frame_mask[:, :, tf.newaxis], log_mel, 0.0)
            stems = {key: stem({"log_mel": log_mel, "frame_mask": frame_mask}, training=False)
                     for key, (stem, _) in self.stems.items()}
        if self.xla_bucket:  # one compiled program per bucket of lengths
            padded = (frames + self.xla_bucket - 1) // self.xla_bucket * self.xla_bucket
            log_mel = tf.pad(log_mel, [[0, 0], [0, padded - frames], [0, 0]])
            stems = {key: tf.pad(x, [[0, 0], [0, padded - frames], [0, 0]]) for key, x in stems.items()}
            frames = padded
        frame_mask = tf.range(frames)[tf.newaxis, :] < frame_count[:, tf.newaxis]
        log_mel = tf.where(frame_mask[:, :, tf.newaxis], log_mel, 0.0)
        if self.token_bucket:
            token_ids = _cut_padding(token_ids, self.token_bucket)
        ready = {key: program(token_ids) for key, program in self.text_programs.items()}
        extra = {} if speaker_functionals is None else {"speaker_functionals": speaker_functionals}
        return self._models(log_mel, frame_mask, token_ids, stems, ready, extra)

    def variables(self) -> list:
        """The distinct variables the computation reads (a shared backbone's once)."""
        seen = {}
        for split in [self.fusion, *filter(None, self.encoders.values())]:
            for model in [split.head, *split.backbones.values(), *(m for pair in self.stems.values() for m in pair)]:
                for variable in model.variables:
                    seen.setdefault(id(variable), variable)
        return list(seen.values())


def _cut_padding(token_ids, bucket: int):
    """`token_ids` [B, T] cut to the first multiple of `bucket` (at least one, at most T) that
    holds every non-pad id."""
    tokens = tf.shape(token_ids)[1]
    last = tf.reduce_max(tf.where(token_ids != 0, tf.range(1, tokens + 1)[tf.newaxis, :], 0))
    width = tf.minimum(tf.maximum((last + bucket - 1) // bucket * bucket, bucket), tokens)
    return token_ids[:, :width]


def _text_call(backbone, token_ids):
    return _call(backbone, {"token_ids": token_ids})


def _models_call(graph: InferenceGraph, log_mel, frame_mask, token_ids, stems: dict, ready: dict,
                 extra: dict) -> dict:
    feeds = {"log_mel": log_mel, "frame_mask": frame_mask, "token_ids": token_ids, **extra}
    # id(backbone) -> its output: a backbone shared by two heads runs once
    sequences = dict(ready)

    def run(split):
        for backbone in split.backbones.values():
            key = id(backbone)
            if key in sequences:
                continue
            if key in stems:  # the stem ran outside: the rest of the backbone on its output
                sequences[key] = graph.stems[key][1]([stems[key], frame_mask], training=False)
            else:
                sequences[key] = _call(backbone, feeds)
        return split(feeds, {name: sequences[id(b)] for name, b in split.backbones.items()})

    probs = run(graph.fusion)["emotion"]
    outputs = {"emotion_probs": probs}
    for output, split in graph.encoders.items():
        # No encoder (a corpus without these ratings): NaN for every example.
        outputs[output] = (tf.fill(tf.shape(probs)[:1], float("nan")) if split is None
                           else run(split)[output][:, 0])
    return outputs


class _Split:
    """A Keras model as its backbones (nested models, by name) and the head after them."""

    def __init__(self, model, backbone_names):
        import keras

        # A copy: a head built on intermediate tensors of the caller's model adds cloned
        # nodes to its layers, after which the caller's model no longer saves.
        model = _copy(model)
        self.name = model.name
        self.inputs = [tensor.name for tensor in model.inputs]
        self.backbones, sequences = {}, []
        for name in backbone_names:
            layer = model.get_layer(name)
            self.backbones[name] = layer
            sequences.append(_output_in(model, layer))
        # Built on the model's own graph: the head shares its layers and weights.
        self.head = keras.Model([*model.inputs, *sequences], model.output, name=f"{model.name}_head")

    def __call__(self, feeds: dict, sequences: dict) -> dict:
        return self.head([*(feeds[name] for name in self.inputs), *(sequences[n] for n in self.backbones)],
                         training=False)


def _stem_split(backbone, layer_name: str):
    """`(stem, rest)` of a backbone cut after `layer_name`: `stem` takes the backbone's inputs
    to that layer's output, `rest` takes `[that output, frame_mask]` to the backbone's output
    (both on the backbone's own layers). None when the backbone has no such layer or takes
    other inputs, or when anything after the cut reads `log_mel` (Keras then refuses the rest)."""
    import keras

    try:
        layer = backbone.get_layer(layer_name)
    except ValueError:
        return None
    if not isinstance(backbone.input, dict) or set(backbone.input) != {"log_mel", "frame_mask"}:
        return None
    cut = _output_in(backbone, layer)
    try:
        rest = keras.Model([cut, backbone.input["frame_mask"]], backbone.output, name=f"{backbone.name}_rest")
    except ValueError:  # the graph after the cut needs log_mel as well
        return None
    return keras.Model(backbone.input, cut, name=f"{backbone.name}_stem"), rest


def _copy(model):
    """The same model on fresh layers holding the same weight values."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _output_in(model, layer):
    """The output tensor of `layer`'s call inside `model`'s graph (a backbone shared by two
    models has a node in each)."""
    # Keras keeps a Functional model's nodes in `_nodes_by_depth` (no public accessor).
    outputs = [node.outputs for nodes in model._nodes_by_depth.values() for node in nodes
               if node.operation is layer]
    if len(outputs) != 1 or len(outputs[0]) != 1:
        raise ValueError(f"{model.name}: expected {layer.name} to be called once with one output, "
                         f"found {len(outputs)} calls")
    return outputs[0][0]


def _call(model, feeds: dict):
    spec = model.input
    inputs = {name: feeds[name] for name in spec} if isinstance(spec, dict) else feeds[spec.name]
    return model(inputs, training=False)


def _same_weights(a, b) -> bool:
    if a is b:
        return True
    wa, wb = a.weights, b.weights
    return len(wa) == len(wb) and all(
        x.shape == y.shape and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(wa, wb))
