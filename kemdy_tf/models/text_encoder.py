"""Text encoder: SentencePiece token ids -> token sequence -> valence.

The seed's design (see docs/architecture.md): token ids with a padding mask ->
`d_model` embeddings -> self-attention layers -> GRU -> valence. The padding mask is
derived in-graph as ``token_ids != 0`` (SentencePiece pad id), so a transcript-less
utterance is an all-zero row.

The backbone (everything up to the token sequence) is its own `keras.Model`, nested
in the encoder under the name `text_backbone`, so the fusion model can reuse the
pretrained weights: `encoder.get_layer("text_backbone")`. It can start from a
pretrained token embedding or wrap a pretrained keras-hub backbone; see
`build_text_backbone`. Runs reach pretrained keras-hub presets through
`text.backbone` and `models.backbones`, which wraps them with `call_pretrained`.
"""

from __future__ import annotations

import os

import keras
import keras_hub
import numpy as np
from keras import ops

from kemdy_tf.config import FeatureConfig, TextEncoderConfig
from kemdy_tf.models.layers import SegmentIds, TokenPaddingMask, ZeroMaskedSteps, rating_head, transformer_blocks
from kemdy_tf.models.schedules import warmup_cosine

PAD_ID = 0


# === Layers ===


@keras.saving.register_keras_serializable(package="kemdy_tf")
class HashedTokenBigrams(keras.layers.Layer):
    """Ids of adjacent token pairs, hashed into `buckets` rows: ``[B, T]`` -> ``[B, T]`` int32.

    Position t holds ``1 + (a * 1000003 + b) mod buckets`` for the pair (a, b) =
    (ids[t], ids[t+1]) when both are real tokens, else 0 (pad). fastText's word
    bigrams: they carry local order ("not good") into a bag-of-tokens summary.

    Args:
        buckets: number of hash buckets (the bigram embedding has `buckets + 1` rows).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> HashedTokenBigrams(100)(np.array([[5, 9, 7, 0]], "int32")).shape
        TensorShape([1, 4])
    """

    def __init__(self, buckets: int, **kwargs):
        super().__init__(**kwargs)
        if int(buckets) < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        self.buckets = int(buckets)

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int64")
        nxt = ops.pad(ids[:, 1:], [[0, 0], [0, 1]])
        pair = ops.mod(ids * 1000003 + nxt, self.buckets) + 1
        real = ops.logical_and(ops.not_equal(ids, PAD_ID), ops.not_equal(nxt, PAD_ID))
        return ops.cast(ops.where(real, pair, ops.zeros_like(pair)), "int32")

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}


@keras.saving.register_keras_serializable(package="kemdy_tf")
class MaskedMeanMaxPool(keras.layers.Layer):
    """Mean and max over the real steps, concatenated: ``[B, T, d]`` -> ``[B, 2d]``.

    Padded steps never reach the output (not even inf or NaN in them); a row with no
    real step gives zeros. Pooled in float32 under any dtype policy, returned in the
    layer's compute dtype.

    Example:
        >>> x = np.array([[[1.0], [3.0], [99.0]]], "float32")
        >>> MaskedMeanMaxPool()(x, np.array([[True, True, False]])).numpy()
        array([[2., 3.]], dtype=float32)
    """

    def call(self, sequence, step_mask):
        sequence = ops.cast(sequence, "float32")
        keep = ops.expand_dims(ops.cast(step_mask, "bool"), axis=-1)
        zeros = ops.zeros_like(sequence)
        count = ops.sum(ops.cast(keep, "float32"), axis=1)
        mean = ops.sum(ops.where(keep, sequence, zeros), axis=1) / ops.maximum(count, 1.0)
        lowest = ops.full_like(sequence, -1e9)
        peak = ops.max(ops.where(keep, sequence, lowest), axis=1)
        peak = ops.where(count > 0, peak, ops.zeros_like(peak))
        return ops.cast(ops.concatenate([mean, peak], axis=-1), self.compute_dtype)

    def compute_output_spec(self, sequence, step_mask):
        return keras.KerasTensor((sequence.shape[0], 2 * sequence.shape[-1]), dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="kemdy_tf")
class AddToSteps(keras.layers.Layer):
    """Adds one vector per example to every step: ``x [B, T, d] + v [B, d]``.

    Example:
        >>> AddToSteps()(np.zeros((1, 2, 3)), np.ones((1, 3))).shape
        TensorShape([1, 2, 3])
    """

    def call(self, sequence, vector):
        return sequence + ops.expand_dims(ops.cast(vector, sequence.dtype), axis=1)

    def compute_output_spec(self, sequence, vector):
        return keras.KerasTensor(sequence.shape, dtype=sequence.dtype)


# === Functional Model ===


def build_text_backbone(
    text_cfg: TextEncoderConfig,
    feature_cfg: FeatureConfig,
    vocab_size: int | None = None,
    *,
    embedding_weights: np.ndarray | str | os.PathLike | None = None,
    train_embedding: bool = True,
    pretrained: keras.Model | None = None,
    name: str = "text_backbone",
) -> keras.Model:
    """Token ids -> one `d_model` vector per token, pad tokens zero.

    Pad tokens (id 0) change nothing: attention never uses them as keys and they are
    zeroed on exit, so the gradient reaching their embeddings is zero.

    Three ways to get the token representation:

    * default: a fresh `token_embedding` (`keras.layers.Embedding`, `vocab_size` x
      `d_model`) + learned positions (`keras_hub.layers.PositionEmbedding` up to
      `max_tokens`) + `text_cfg.n_layers` `keras_hub.layers.TransformerEncoder`
      layers.
    * ``embedding_weights``: the same, but the token embedding starts from a
      pretrained matrix ``[vocab_size, dim]`` (a numpy array or a ``.npy`` path; row
      i belongs to SentencePiece id i). When ``dim != d_model`` a Dense
      ``embedding_projection`` maps it to ``d_model``. ``train_embedding=False``
      freezes the matrix.
    * ``pretrained``: a whole pretrained encoder replaces the embedding and the
      attention layers, e.g. a keras-hub backbone saved on local disk (no download)::

          bert = keras.saving.load_model("/models/my_korean_bert.keras")
          backbone = build_text_backbone(cfg.text, cfg.features, pretrained=bert)

      It is called with its inputs by name: ``token_ids``, ``padding_mask``
      (``token_ids != 0``) and ``segment_ids`` (zeros) where it has them, or with
      the token ids alone if it has a single input. Its output, or its
      ``"sequence_output"`` entry, must be ``[B, tokens, dim]``; a Dense
      ``pretrained_projection`` maps ``dim`` to ``d_model`` when they differ. The
      token ids must come from that model's own tokenizer and its pad id must be 0.

    Args:
        text_cfg: sizes of the embedding and attention layers.
        feature_cfg: `max_tokens` (longest sequence) and the default `vocab_size`.
        vocab_size: token vocabulary size (the trained SentencePiece model's
            `vocabulary_size()`); default `feature_cfg.vocab_size`.
        embedding_weights: pretrained token embedding, array or `.npy` path.
        train_embedding: False keeps `embedding_weights` fixed during training.
        pretrained: a pretrained encoder model (see above).
        name: the model's name (it becomes the layer name when nested).

    Returns:
        A `keras.Model` with input ``token_ids`` ``[B, tokens]`` int32 (tokens <=
        `max_tokens`, pad id 0) and output ``[B, tokens, d_model]``.

    Raises:
        ValueError: on inconsistent sizes, an unreadable or mis-shaped embedding
            file, or a pretrained model whose inputs cannot be fed.

    Example:
        >>> backbone = build_text_backbone(TextEncoderConfig(), FeatureConfig(), vocab_size=1000)
        >>> backbone(np.array([[12, 7, 99, 0, 0]], "int32")).shape
        TensorShape([1, 5, 64])
    """
    vocab_size = feature_cfg.vocab_size if vocab_size is None else int(vocab_size)
    if vocab_size <= 0:
        raise ValueError("features.vocab_size is 0 (sized from the corpus): pass the trained tokenizer's "
                         "vocabulary_size() as vocab_size")
    if text_cfg.d_model % text_cfg.n_heads:
        raise ValueError(
            f"text.d_model ({text_cfg.d_model}) must be divisible by text.n_heads ({text_cfg.n_heads})"
        )
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (pad id 0 plus tokens), got {vocab_size}")
    if pretrained is not None and embedding_weights is not None:
        raise ValueError("give either embedding_weights or pretrained, not both")

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = TokenPaddingMask(pad_id=PAD_ID, name="padding_mask")(token_ids)
    if pretrained is not None:
        x = call_pretrained(pretrained, token_ids, padding_mask)
        if x.shape[-1] != text_cfg.d_model:
            x = keras.layers.Dense(text_cfg.d_model, name="pretrained_projection")(x)
    else:
        x = _embed_and_encode(
            token_ids, padding_mask, text_cfg, feature_cfg, vocab_size, embedding_weights, train_embedding
        )
    sequence = ZeroMaskedSteps(name="token_sequence")(x, padding_mask)
    return keras.Model(token_ids, sequence, name=name)


def build_text_encoder(
    text_cfg: TextEncoderConfig,
    feature_cfg: FeatureConfig,
    vocab_size: int | None = None,
    backbone: keras.Model | None = None,
) -> keras.Model:
    """The valence regressor: text backbone -> masked GRU -> `valence`.

    Args:
        text_cfg: model sizes (`gru_units`, `dropout` and the backbone's).
        feature_cfg: input sizes.
        vocab_size: token vocabulary size, when a new backbone is built.
        backbone: an existing text backbone (e.g. one built with pretrained
            embeddings, see `build_text_backbone`); default: a new one.

    Returns:
        A `keras.Model` named ``text_encoder`` with input ``token_ids`` and output
        ``{"valence": [B, 1]}`` (linear, 1..5 scale). An all-pad row (no transcript)
        gives a finite, input-independent prediction.

    Example:
        >>> encoder = build_text_encoder(TextEncoderConfig(), FeatureConfig(), vocab_size=1000)
        >>> encoder.compile(optimizer="adam", loss={"valence": "mse"})
        >>> backbone = encoder.get_layer("text_backbone")  # reuse in the fusion model
    """
    if backbone is None:
        backbone = build_text_backbone(text_cfg, feature_cfg, vocab_size)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    sequence = backbone(token_ids)
    padding_mask = TokenPaddingMask(pad_id=PAD_ID, name="padding_mask")(token_ids)
    valence = rating_head(sequence, padding_mask, gru_units=text_cfg.gru_units,
                          dropout=text_cfg.dropout, name="valence")
    return keras.Model(token_ids, {"valence": valence}, name="text_encoder")


def load_embedding_weights(source: np.ndarray | str | os.PathLike, vocab_size: int) -> np.ndarray:
    """A pretrained token-embedding matrix, checked: float32 ``[vocab_size, dim]``, finite.

    Args:
        source: the matrix, or the path of a `.npy` file holding it.
        vocab_size: the number of rows it must have.

    Raises:
        ValueError: naming the file (or "array") and what is wrong with it.
    """
    where = "embedding_weights array"
    if isinstance(source, (str, os.PathLike)):
        where = f"embedding file {os.fspath(source)!r}"
        try:
            source = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {where} as a .npy array: {error}") from None
    matrix = np.asarray(source)
    if matrix.ndim != 2 or matrix.shape[0] != vocab_size or matrix.shape[1] < 1:
        raise ValueError(f"{where} has shape {matrix.shape}; expected ({vocab_size}, dim)")
    if not np.issubdtype(matrix.dtype, np.number) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{where} must hold finite numbers")
    return matrix.astype("float32")


def _embed_and_encode(token_ids, padding_mask, text_cfg, feature_cfg, vocab_size, embedding_weights, train_embedding):
    matrix = None if embedding_weights is None else load_embedding_weights(embedding_weights, vocab_size)
    embedding_dim = text_cfg.d_model if matrix is None else matrix.shape[1]
    embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="token_embedding")
    x = embedding(token_ids)
    if matrix is not None:
        # set_weights, not a Constant initializer: an initializer would copy the whole
        # matrix into the model's JSON config.
        embedding.set_weights([matrix])
        embedding.trainable = bool(train_embedding)
    if text_cfg.token_dropout > 0:
        # drops whole tokens (all features of a position), like word dropout
        x = keras.layers.Dropout(text_cfg.token_dropout, noise_shape=(None, None, 1), name="token_dropout")(x)
    if embedding_dim != text_cfg.d_model:
        x = keras.layers.Dense(text_cfg.d_model, name="embedding_projection")(x)
    embedded = x
    positions = keras_hub.layers.PositionEmbedding(
        sequence_length=feature_cfg.max_tokens, name="position_embedding"
    )(x)
    x = keras.layers.Add(name="add_positions")([x, positions])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)
    x = keras.layers.Dropout(text_cfg.dropout, name="embedding_dropout")(x)
    x = transformer_blocks(x, padding_mask, n_layers=text_cfg.n_layers, n_heads=text_cfg.n_heads,
                           ff_dim=text_cfg.ff_dim, dropout=text_cfg.dropout)
    if text_cfg.bag_of_tokens:
        x = _add_bag_of_tokens(x, embedded, token_ids, padding_mask, text_cfg)
    return x


def _add_bag_of_tokens(x, embedded, token_ids, padding_mask, text_cfg):
    """fastText-like path: masked mean+max of token (+ hashed bigram) embeddings, added to every step."""
    bag = embedded
    if text_cfg.bigram_buckets > 0:
        bigram_ids = HashedTokenBigrams(text_cfg.bigram_buckets, name="bigram_ids")(token_ids)
        bigrams = keras.layers.Embedding(text_cfg.bigram_buckets + 1, text_cfg.d_model,
                                         name="bigram_embedding")(bigram_ids)
        bigram_mask = TokenPaddingMask(pad_id=PAD_ID, name="bigram_mask")(bigram_ids)
        bigrams = ZeroMaskedSteps(name="bigram_steps")(bigrams, bigram_mask)
        bag = keras.layers.Add(name="bag_tokens")([bag, bigrams])
    pooled = MaskedMeanMaxPool(name="bag_pool")(bag, padding_mask)
    pooled = keras.layers.Dropout(text_cfg.dropout, name="bag_dropout")(pooled)
    summary = keras.layers.Dense(text_cfg.d_model, name="bag_projection")(pooled)
    return AddToSteps(name="add_bag")(x, summary)


def call_pretrained(pretrained: keras.Model, token_ids, padding_mask):
    """Feeds a pretrained encoder by its input names; returns its token sequence."""
    spec = pretrained.input
    if isinstance(spec, dict):
        feeds = {"token_ids": token_ids, "padding_mask": padding_mask}
        if "segment_ids" in spec:
            feeds["segment_ids"] = SegmentIds(name="segment_ids")(token_ids)
        unknown = sorted(set(spec) - set(feeds))
        if unknown or "token_ids" not in spec:
            raise ValueError(
                f"pretrained model {pretrained.name!r} has inputs {sorted(spec)}; this builder feeds "
                "token_ids, padding_mask and segment_ids. Wrap it in a keras.Model taking token_ids."
            )
        output = pretrained({key: feeds[key] for key in spec})
    elif isinstance(spec, (list, tuple)):
        raise ValueError(
            f"pretrained model {pretrained.name!r} takes {len(spec)} unnamed inputs; give it dict "
            "inputs named token_ids / padding_mask / segment_ids, or a single token_ids input"
        )
    else:
        output = pretrained(token_ids)
    if isinstance(output, dict):
        if "sequence_output" not in output:
            raise ValueError(
                f"pretrained model {pretrained.name!r} returns {sorted(output)}; expected a tensor "
                "or a dict with 'sequence_output'"
            )
        output = output["sequence_output"]
    if len(output.shape) != 3:
        raise ValueError(
            f"pretrained model {pretrained.name!r} returns shape {output.shape}; expected [batch, tokens, dim]"
        )
    return output


# === Training recipe (called by the training runner for text stages) ===


def text_optimizer(text_cfg: TextEncoderConfig, learning_rate: float, total_steps: int):
    """AdamW with a linear warmup and a cosine decay, the NSMC text recipe (Adam when
    `weight_decay` and `warmup_share` are both 0, the default).

    Peak `learning_rate` after `text_cfg.warmup_share` of `total_steps`, then cosine
    decay to 5% of it at `total_steps`; decoupled weight decay `text_cfg.weight_decay`
    on every variable except biases, LayerNorm scales/offsets and embeddings (a rare
    piece's row would otherwise shrink toward zero between its updates); global-norm
    clipping at 1 as before.

    Args:
        text_cfg: `weight_decay`, `warmup_share`.
        learning_rate: the peak rate (`config.train.learning_rate`).
        total_steps: optimizer steps of the whole run (epochs x steps per epoch).

    Example:
        >>> opt = text_optimizer(cfg.text, cfg.train.learning_rate, epochs * steps_per_epoch)
    """
    if text_cfg.weight_decay <= 0 and text_cfg.warmup_share <= 0:
        return keras.optimizers.Adam(learning_rate, clipnorm=1.0)  # the plain default
    schedule = warmup_cosine(learning_rate, text_cfg.warmup_share, total_steps)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=text_cfg.weight_decay, clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "embeddings"])
    return optimizer


def text_classification_loss(text_cfg: TextEncoderConfig, n_classes: int):
    """Sparse cross-entropy on probabilities with `text_cfg.label_smoothing` (0: the plain loss)."""
    if text_cfg.label_smoothing <= 0:
        return keras.losses.SparseCategoricalCrossentropy(name="sparse_categorical_crossentropy")
    return SmoothedSparseCrossentropy(n_classes, text_cfg.label_smoothing)


@keras.saving.register_keras_serializable(package="kemdy_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against probabilities, with label smoothing.

    Keras' sparse loss has no `label_smoothing`; this one-hots the labels first.
    """

    def __init__(self, n_classes: int, label_smoothing: float = 0.1, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.n_classes)
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "label_smoothing": self.label_smoothing}
