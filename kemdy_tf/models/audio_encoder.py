"""Audio encoder: log-mel frames -> frame sequence -> arousal.

The seed's design (see docs/architecture.md): four Conv2D layers whose kernels run
along the mel axis only (relations between frequencies; time resolution kept), a
projection of each frame to `d_model`, self-attention layers that never look at
padded frames, a GRU over the real frames, and an arousal regression head.

The backbone (everything up to the frame sequence) is its own `keras.Model`, nested
in the encoder under the name `audio_backbone`, so the fusion model can reuse the
pretrained weights: `encoder.get_layer("audio_backbone")`.
"""

from __future__ import annotations

import keras
import keras_hub

from kemdy_tf.config import AudioEncoderConfig, FeatureConfig
from kemdy_tf.models.layers import ZeroMaskedSteps, rating_head, transformer_blocks



# === Functional Model ===


def build_audio_backbone(
    audio_cfg: AudioEncoderConfig, feature_cfg: FeatureConfig, name: str = "audio_backbone"
) -> keras.Model:
    """Log-mel frames -> one `d_model` vector per frame, padded frames zero.

    Padded frames (``frame_mask`` False) change nothing: they are zeroed on entry, the
    convolutions only mix mel bins within a frame, attention never uses them as keys,
    and they are zeroed again on exit. So their content and their gradient don't matter.

    Args:
        audio_cfg: sizes of the convolutions, attention layers and heads.
        feature_cfg: `n_mels`, the input width. Any number of frames is accepted
            (the position signal is sinusoidal); the data pipeline caps it at `max_frames`.
        name: the model's name (it becomes the layer name when nested).

    Returns:
        A `keras.Model` with inputs ``{"log_mel": [B, frames, n_mels] float32,
        "frame_mask": [B, frames] bool}`` and output ``[B, frames, d_model]``; the
        frames axis may have any length.

    Example:
        >>> backbone = build_audio_backbone(AudioEncoderConfig(), FeatureConfig())
        >>> seq = backbone({"log_mel": np.zeros((2, 40, 128), "float32"),
        ...                 "frame_mask": np.ones((2, 40), bool)})
        >>> seq.shape
        TensorShape([2, 40, 64])
    """
    _check_audio_config(audio_cfg, feature_cfg)
    n_mels = feature_cfg.n_mels
    log_mel = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
    frame_mask = keras.Input(shape=(None,), dtype="bool", name="frame_mask")

    x = ZeroMaskedSteps(name="zero_padded_input")(log_mel, frame_mask)
    x = keras.layers.Reshape((-1, n_mels, 1), name="add_channel_axis")(x)
    for index, filters in enumerate(audio_cfg.conv_filters, start=1):
        # Kernel (1, k): mixes neighbouring mel bins, never neighbouring frames.
        x = keras.layers.Conv2D(
            filters, (1, audio_cfg.conv_kernel), padding="same", activation="relu",
            name=f"freq_conv_{index}",
        )(x)
    x = keras.layers.Reshape((-1, n_mels * audio_cfg.conv_filters[-1]), name="flatten_frequency")(x)
    x = keras.layers.Dense(audio_cfg.d_model, name="frame_projection")(x)
    # Normalise before adding positions: raw dB features are far larger than the
    # [-1, 1] sinusoids and would drown them.
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="frame_norm")(x)
    # float32 under any training precision: bfloat16 holds no frame index above 256.
    positions = keras_hub.layers.SinePositionEncoding(dtype="float32", name="position_encoding")(x)
    x = keras.layers.Add(name="add_positions")([x, positions])
    x = keras.layers.Dropout(audio_cfg.dropout, name="embedding_dropout")(x)
    x = transformer_blocks(x, frame_mask, n_layers=audio_cfg.n_layers, n_heads=audio_cfg.n_heads,
                           ff_dim=audio_cfg.ff_dim, dropout=audio_cfg.dropout)
    sequence = ZeroMaskedSteps(name="frame_sequence")(x, frame_mask)
    return keras.Model({"log_mel": log_mel, "frame_mask": frame_mask}, sequence, name=name)


def build_audio_encoder(
    audio_cfg: AudioEncoderConfig,
    feature_cfg: FeatureConfig,
    backbone: keras.Model | None = None,
) -> keras.Model:
    """The arousal regressor: audio backbone -> masked GRU -> `arousal`.

    Args:
        audio_cfg: model sizes (`gru_units`, `dropout` and the backbone's).
        feature_cfg: input sizes.
        backbone: an existing audio backbone to build on (e.g. to fine-tune one);
            default: a new one from `build_audio_backbone`.

    Returns:
        A `keras.Model` named ``audio_encoder`` with inputs ``log_mel``,
        ``frame_mask`` and output ``{"arousal": [B, 1]}`` (linear, 1..5 scale).

    Example:
        >>> encoder = build_audio_encoder(AudioEncoderConfig(), FeatureConfig())
        >>> encoder.compile(optimizer="adam", loss={"arousal": "mse"})
        >>> backbone = encoder.get_layer("audio_backbone")  # reuse in the fusion model
    """
    if backbone is None:
        backbone = build_audio_backbone(audio_cfg, feature_cfg)
    log_mel = keras.Input(shape=(None, feature_cfg.n_mels), dtype="float32", name="log_mel")
    frame_mask = keras.Input(shape=(None,), dtype="bool", name="frame_mask")

    sequence = backbone({"log_mel": log_mel, "frame_mask": frame_mask})
    arousal = rating_head(sequence, frame_mask, gru_units=audio_cfg.gru_units,
                          dropout=audio_cfg.dropout, name="arousal")
    return keras.Model(
        {"log_mel": log_mel, "frame_mask": frame_mask}, {"arousal": arousal}, name="audio_encoder"
    )


def _check_audio_config(audio_cfg: AudioEncoderConfig, feature_cfg: FeatureConfig) -> None:
    if not audio_cfg.conv_filters:
        raise ValueError("audio.conv_filters must name at least one Conv2D layer")
    if audio_cfg.d_model % audio_cfg.n_heads:
        raise ValueError(
            f"audio.d_model ({audio_cfg.d_model}) must be divisible by audio.n_heads ({audio_cfg.n_heads})"
        )
    if feature_cfg.n_mels < 1 or audio_cfg.conv_kernel < 1:
        raise ValueError(
            f"features.n_mels ({feature_cfg.n_mels}) and audio.conv_kernel ({audio_cfg.conv_kernel}) must be >= 1"
        )
