"""Pretrained keras-hub backbones: the registry behind `text.backbone` and `audio.backbone`.

    python train.py --set text.backbone=/models/xlm_roberta_base_multi --set audio.backbone=whisper_tiny_multi

A config's `text.backbone` / `audio.backbone` is empty (the seed architecture, trained
from scratch: `text_encoder.build_text_backbone`, `audio_encoder.build_audio_backbone`)
or a keras-hub preset: a name such as ``"xlm_roberta_base_multi"`` (keras-hub downloads
it; needs the network once) or a local preset folder (offline; one `save_to_preset`
wrote, see docs/backbones.md). The preset's backbone class picks its family here:

    text   xlm_roberta (XLMRobertaBackbone), bert (BertBackbone), distil_bert (DistilBertBackbone)
    audio  whisper (WhisperBackbone: its encoder; the decoder is left out)

Whatever the family, the backbone becomes a `keras.Model` of the project's shape, so
the encoders, the fusion model, the training loop and the export take it unchanged:

    text   token_ids [B, T] int32 (pad 0) -> [B, T, hidden], zero at pad tokens
    audio  {log_mel [B, F, n_mels], frame_mask [B, F] bool} -> [B, F, hidden], zero at padded frames

and the data pipeline feeds the preset's own front end: its tokenizer (saved into the
run, `tokenizer.PresetTokenizer`) and its audio converter (`ConverterFeatures`, whose
log-mels fill the feature cache and are computed in the exported graph).

Adding a family is one `register_text(TextFamily(...))` or `register_audio(AudioFamily(...))`.
"""

from __future__ import annotations

import dataclasses
import typing

import keras
from keras import ops

from kemdy_tf.models.layers import TokenPaddingMask, ZeroMaskedSteps

PAD_ID = 0


class BackboneError(ValueError):
    """A backbone preset cannot be used (unreadable, unsupported family, sizes that don't fit)."""


# === Layers ===


@keras.saving.register_keras_serializable(package="kemdy_tf")
class BackboneTokenIds(keras.layers.Layer):
    """The project's token ids (pad 0) -> the backbone's own ids (pad `pad_id`).

    See `tokenizer.swap_pad_id`; identity when `pad_id` is 0.

    Example:
        >>> BackboneTokenIds(pad_id=1)(np.array([[1, 5, 2, 0]], "int32")).numpy()
        array([[0, 5, 2, 1]], dtype=int32)
    """

    def __init__(self, pad_id: int, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        from kemdy_tf.models.tokenizer import swap_pad_id

        return swap_pad_id(ops.cast(token_ids, "int32"), self.pad_id)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="kemdy_tf")
class EveryOtherStep(keras.layers.Layer):
    """A frame mask at half the frame rate: ``mask[:, ::2]`` (a stride-2 convolution's output).

    Example:
        >>> EveryOtherStep()(np.array([[True, True, True, False, False]])).numpy()
        array([[ True,  True, False]])
    """

    def call(self, mask):
        return ops.cast(mask, "bool")[:, ::2]

    def compute_output_spec(self, mask):
        steps = None if mask.shape[1] is None else (mask.shape[1] + 1) // 2
        return keras.KerasTensor((mask.shape[0], steps), dtype="bool")


@keras.saving.register_keras_serializable(package="kemdy_tf")
class RepeatToFrames(keras.layers.Layer):
    """Half-rate steps back at the frame rate: each step twice, cut to the frames of `like`.

    ``[B, ceil(F/2), d]`` -> ``[B, F, d]``, so the sequence lines up with `frame_mask`
    (which the encoders and the fusion model use as its mask).

    Example:
        >>> RepeatToFrames()(np.array([[[1.0], [2.0]]]), np.ones((1, 3), bool)).numpy()[0, :, 0]
        array([1., 1., 2.], dtype=float32)
    """

    def call(self, sequence, like):
        frames = ops.shape(like)[1]
        return ops.repeat(sequence, 2, axis=1)[:, :frames]

    def compute_output_spec(self, sequence, like):
        return keras.KerasTensor((sequence.shape[0], like.shape[1], sequence.shape[2]), dtype=sequence.dtype)


# === The registry ===


@dataclasses.dataclass(frozen=True)
class TextFamily:
    """A keras-hub text backbone class and how its output becomes a token sequence.

    Attributes:
        name: the family's name in docs and errors (keras-hub's folder name).
        backbone_class: the `keras_hub.models` class name, e.g. ``"XLMRobertaBackbone"``.
        sequence: ``sequence(backbone, token_ids, padding_mask) -> [B, T, hidden]``,
            called on symbolic tensors with the backbone's own ids (its pad id).
    """

    name: str
    backbone_class: str
    sequence: typing.Callable


@dataclasses.dataclass(frozen=True)
class AudioFamily:
    """A keras-hub audio backbone class, its converter, and how its encoder becomes a frame sequence.

    Attributes:
        name: the family's name.
        backbone_class: the `keras_hub.models` class name, e.g. ``"WhisperBackbone"``.
        sequence: ``sequence(backbone, log_mel, frame_mask) -> [B, F, hidden]`` on
            symbolic tensors (the converter's features, `F` frames).
        max_frames: ``max_frames(backbone) -> int``, the longest input it takes.
        fixed_layers: names of layers the preset never trains (kept frozen by `set_trainable`).
    """

    name: str
    backbone_class: str
    sequence: typing.Callable
    max_frames: typing.Callable
    fixed_layers: tuple[str, ...] = ()


TEXT_FAMILIES: dict[str, TextFamily] = {}
AUDIO_FAMILIES: dict[str, AudioFamily] = {}


def register_text(family: TextFamily) -> TextFamily:
    return _register(TEXT_FAMILIES, family)


def register_audio(family: AudioFamily) -> AudioFamily:
    return _register(AUDIO_FAMILIES, family)


def _register(registry: dict, family):
    if family.name in registry:
        raise ValueError(f"backbone family {family.name!r} is already registered")
    registry[family.name] = family
    return family


def family_of(registry: dict, backbone_class: type):
    """The registered family of a keras-hub backbone class (BackboneError names the supported ones)."""
    import keras_hub

    for family in registry.values():
        if issubclass(backbone_class, getattr(keras_hub.models, family.backbone_class)):
            return family
    supported = ", ".join(f"{f.name} ({f.backbone_class})" for f in registry.values())
    raise BackboneError(f"{backbone_class.__name__} is not a supported backbone here; supported: {supported}")


# === Loading presets ===


def _from_preset(kind: str, loader, preset: str):
    """`loader(preset)` with an error that says what a preset may be."""
    try:
        return loader(preset)
    except BackboneError:
        raise
    except Exception as error:
        raise BackboneError(
            f"cannot load the {kind} of backbone preset {preset!r}: {type(error).__name__}: {error}. "
            "A preset name downloads on first use (needs the network); offline, pass a local preset "
            "folder written by save_to_preset (docs/backbones.md)") from None


def load_backbone(preset: str):
    """`keras_hub.models.Backbone.from_preset(preset)` (weights included)."""
    import keras_hub

    return _from_preset("backbone", keras_hub.models.Backbone.from_preset, preset)


def load_preset_tokenizer(preset: str, max_tokens: int):
    """The preset's own tokenizer, packed to `max_tokens` (`tokenizer.PresetTokenizer`)."""
    import keras_hub

    from kemdy_tf.models.tokenizer import PresetTokenizer

    tokenizer = _from_preset("tokenizer", keras_hub.models.Tokenizer.from_preset, preset)
    family_of(TEXT_FAMILIES, tokenizer.backbone_cls)
    return PresetTokenizer(tokenizer, max_tokens)


def load_audio_converter(preset: str):
    """The preset's `keras_hub.layers.AudioConverter` (e.g. `WhisperAudioConverter`)."""
    import keras_hub

    converter = _from_preset("audio converter", keras_hub.layers.AudioConverter.from_preset, preset)
    family_of(AUDIO_FAMILIES, converter.backbone_cls)
    return converter


# === Building the project's backbone models ===


def build_text_backbone(preset: str, pad_id: int, max_tokens: int, name: str = "text_backbone") -> keras.Model:
    """A pretrained text backbone as the project's text backbone.

    Args:
        preset: keras-hub preset name or local preset folder.
        pad_id: the preset tokenizer's pad id (`PresetTokenizer.pad_id`).
        max_tokens: `features.max_tokens`; must fit the backbone's positions.
        name: the model's name (the encoders find it by `text_backbone`).

    Returns:
        `keras.Model`: token_ids [B, T] (pad 0) -> [B, T, hidden], pad tokens zero.
    """
    return wrap_text_backbone(load_backbone(preset), pad_id, max_tokens, name=name, source=preset)


def wrap_text_backbone(hub, pad_id: int, max_tokens: int, name: str = "text_backbone",
                       source: str = "the backbone") -> keras.Model:
    """`build_text_backbone` for a keras-hub backbone already in memory (e.g. built from its config)."""
    family = family_of(TEXT_FAMILIES, type(hub))
    longest = getattr(hub, "max_sequence_length", None)
    if longest is not None and max_tokens > longest:
        raise BackboneError(f"features.max_tokens={max_tokens} exceeds the {longest} positions of {source!r}")
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = TokenPaddingMask(pad_id=PAD_ID, name="padding_mask")(token_ids)
    own_ids = BackboneTokenIds(pad_id, name="backbone_token_ids")(token_ids)
    x = family.sequence(hub, own_ids, padding_mask)
    sequence = ZeroMaskedSteps(name="token_sequence")(x, padding_mask)
    return keras.Model(token_ids, sequence, name=name)


def build_audio_backbone(preset: str, n_mels: int, max_frames: int, name: str = "audio_backbone") -> keras.Model:
    """A pretrained audio backbone as the project's audio backbone.

    Args:
        preset: keras-hub preset name or local preset folder.
        n_mels: the converter's mel bins (`features.n_mels` of the run).
        max_frames: `features.max_frames`; must fit the backbone's positions.
        name: the model's name (the encoders find it by `audio_backbone`).

    Returns:
        `keras.Model`: {log_mel [B, F, n_mels], frame_mask [B, F]} -> [B, F, hidden],
        padded frames zero; padded frames change nothing else.
    """
    return wrap_audio_backbone(load_backbone(preset), n_mels, max_frames, name=name, source=preset)


def wrap_audio_backbone(hub, n_mels: int, max_frames: int, name: str = "audio_backbone",
                        source: str = "the backbone") -> keras.Model:
    """`build_audio_backbone` for a keras-hub backbone already in memory."""
    family = family_of(AUDIO_FAMILIES, type(hub))
    longest = family.max_frames(hub)
    if max_frames > longest:
        raise BackboneError(f"features.max_frames={max_frames} exceeds the {longest} frames {source!r} takes")
    log_mel = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
    frame_mask = keras.Input(shape=(None,), dtype="bool", name="frame_mask")
    x = family.sequence(hub, log_mel, frame_mask)
    sequence = ZeroMaskedSteps(name="frame_sequence")(x, frame_mask)
    return keras.Model({"log_mel": log_mel, "frame_mask": frame_mask}, sequence, name=name)


# === The audio converter as the run's audio front end ===


class ConverterFeatures:
    """A keras-hub audio converter as the feature recipe of a run (`audio.backbone`).

    It fills the feature cache (`compute_file`: one clip's features, [frames, n_mels])
    and runs in the exported graph (`in_graph`: a padded batch), with the same
    converter call in both, so training and serving features agree. The converter
    pads every clip to its fixed window (Whisper: 30 s); only a clip's own frames are
    kept, `1 + samples // stride`, at most `max_frames`.

    Args:
        converter: e.g. `keras_hub.layers.WhisperAudioConverter`.
        max_frames: `features.max_frames`.
    """

    # The FeatureConfig fields the converter decides (a run's config takes them from it, so
    # everything that reads the config, e.g. the export's window, sees the real recipe).
    FEATURE_FIELDS = ("n_mels", "sample_rate", "hop_length", "n_fft")

    def __init__(self, converter, max_frames: int):
        self.converter = converter
        self.max_frames = int(max_frames)
        self.n_mels = int(converter.num_mels)
        self.sample_rate = int(converter.sampling_rate)
        self.stride = int(converter.stride)
        # What the cached features depend on (FeatureCache hashes it into its folder name).
        self.settings = {"front_end": type(converter).__name__, **_plain(converter.get_config()),
                         "max_frames": self.max_frames}
        self.window_frames = int(converter.num_samples) // self.stride
        self._convert = None  # a tf.function, made on first use: keras-hub runs its TF path only in graphs

    def feature_fields(self) -> dict:
        """`FEATURE_FIELDS` as this converter sets them."""
        return {"n_mels": self.n_mels, "sample_rate": self.sample_rate, "hop_length": self.stride,
                "n_fft": int(self.converter.num_fft_bins)}

    def frame_count(self, num_samples):
        """Frames of a clip of `num_samples` samples (ints or tensors)."""
        limit = min(self.max_frames, self.window_frames)
        if isinstance(num_samples, int):
            return min(1 + num_samples // self.stride, limit)
        import tensorflow as tf

        return tf.minimum(1 + num_samples // self.stride, limit)

    def compute_file(self, path) -> "np.ndarray":
        """One audio file's features [frames, n_mels] float32 (raises audio.AudioError)."""
        import numpy as np
        import tensorflow as tf

        from kemdy_tf.data import audio

        if self._convert is None:
            self._convert = tf.function(self.converter, input_signature=[tf.TensorSpec([1, None], tf.float32)])
        wave = audio.load_audio(path, self.sample_rate)
        features = self._convert(tf.constant(wave[np.newaxis, : self.converter.num_samples]))
        return features.numpy()[0, : self.frame_count(len(wave))].astype("float32")

    def in_graph(self, waveform, waveform_length):
        """`(features [B, max(frames), n_mels], frames [B])` of padded waveforms, as TF ops.

        Samples past each clip's length are zeroed first (the converter pads with zeros).
        """
        import tensorflow as tf

        waveform = tf.convert_to_tensor(waveform, tf.float32)[:, : self.converter.num_samples]
        samples = tf.shape(waveform)[1]
        length = tf.clip_by_value(tf.cast(waveform_length, tf.int32), 0, samples)
        inside = tf.range(samples)[tf.newaxis, :] < length[:, tf.newaxis]
        features = self.converter(tf.where(inside, waveform, 0.0))
        frames = self.frame_count(length)
        kept = tf.reduce_max(tf.concat([frames, [0]], axis=0))
        features = features[:, :kept]
        valid = tf.range(kept)[tf.newaxis, :] < frames[:, tf.newaxis]
        return tf.where(valid[:, :, tf.newaxis], features, 0.0), frames


def _plain(config: dict) -> dict:
    """The JSON-safe scalar entries of a layer config (its sizes, not its dtype policy)."""
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool)) and k not in ("name", "trainable")}


# === What a stage builds (the stage builders' hook; kemdy_tf.stages) ===


def new_backbone(run, modality: str) -> keras.Model:
    """A fresh backbone for `modality` ("audio" or "text") as the run's config names it.

    The seed architecture (random weights, trainable) when `<modality>.backbone` is
    empty; else the preset's pretrained backbone, frozen (`trainable=False`): training
    fine-tunes it only when asked (`--unfreeze`, see `kemdy_tf.stages`).
    """
    preset = getattr(run.config, modality).backbone
    backbone = (_PRESET_BUILDERS if preset else _SEED_BUILDERS)[modality](run)
    set_trainable(backbone, not preset)
    return backbone


def set_trainable(backbone: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze a backbone, leaving the parts its preset keeps fixed (e.g. Whisper's
    sinusoidal position table) frozen: Keras' `trainable = True` would unfreeze every sublayer."""
    fixed = {name for family in AUDIO_FAMILIES.values() for name in family.fixed_layers}
    backbone.trainable = trainable
    # Every layer's own variables too: a keras-hub layer loaded from a .keras archive builds
    # its sublayers after its `trainable` flag is set, and the flag alone misses them.
    for layer in backbone._flatten_layers(include_self=True):
        flag = trainable and layer.name not in fixed
        layer._trainable = flag
        for variable in layer._trainable_variables:
            variable.trainable = flag


def _seed_audio(run):
    from kemdy_tf.models.audio_encoder import build_audio_backbone as build

    return build(run.config.audio, run.config.features)


def _seed_text(run):
    from kemdy_tf.models.text_encoder import build_text_backbone as build

    return build(run.config.text, run.config.features, run.vocab_size())


def _preset_audio(run):
    cfg = run.config
    return build_audio_backbone(cfg.audio.backbone, cfg.features.n_mels, cfg.features.max_frames)


def _preset_text(run):
    cfg = run.config
    return build_text_backbone(cfg.text.backbone, run.tokenizer().pad_id, cfg.features.max_tokens)


_SEED_BUILDERS = {"audio": _seed_audio, "text": _seed_text}
_PRESET_BUILDERS = {"audio": _preset_audio, "text": _preset_text}


# === Families ===


def _text_sequence(hub, token_ids, padding_mask):
    """BERT-style backbones: fed by input name, their `sequence_output` is the token sequence."""
    from kemdy_tf.models.text_encoder import call_pretrained

    return call_pretrained(hub, token_ids, padding_mask)


def _whisper_sequence(hub, log_mel, frame_mask):
    """Whisper's encoder, rebuilt from the backbone's own layers with a padding mask.

    keras-hub's WhisperBackbone attends over every frame (OpenAI pads clips to 30 s);
    here padded frames are zeroed before and after the first convolution (so the
    stride-2 convolution sees exact zeros past a clip, as at its end) and kept out of
    attention, so a clip gives the same output alone or in a padded batch. The
    half-rate output is repeated back to the frame rate to line up with `frame_mask`.
    """
    # keras' "gelu" is the exact (erf) one, as keras-hub's Whisper uses.
    x = ZeroMaskedSteps(name="zero_padded_input")(log_mel, frame_mask)
    x = keras.layers.Activation("gelu", name="conv_1_gelu")(hub.encoder_conv_layer_1(x))
    x = ZeroMaskedSteps(name="zero_padded_conv")(x, frame_mask)
    x = keras.layers.ZeroPadding1D(1, name="conv_2_padding")(x)
    x = keras.layers.Activation("gelu", name="conv_2_gelu")(hub.encoder_conv_layer_2(x))
    positions = hub.encoder_position_embedding(x)
    x = hub.encoder_embeddings_add((x, positions))
    x = hub.encoder_embeddings_dropout(x)
    half_mask = EveryOtherStep(name="half_rate_mask")(frame_mask)
    for layer in hub.encoder_transformer_layers:
        x = layer(x, padding_mask=half_mask)
    x = hub.encoder_layer_norm(x)
    return RepeatToFrames(name="frame_rate_sequence")(x, frame_mask)


register_text(TextFamily("xlm_roberta", "XLMRobertaBackbone", _text_sequence))
register_text(TextFamily("bert", "BertBackbone", _text_sequence))
register_text(TextFamily("distil_bert", "DistilBertBackbone", _text_sequence))
register_audio(AudioFamily("whisper", "WhisperBackbone", _whisper_sequence,
                           max_frames=lambda hub: int(hub.max_encoder_sequence_length),
                           fixed_layers=("encoder_position_embedding",)))
