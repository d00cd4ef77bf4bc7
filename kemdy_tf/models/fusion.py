"""Fusion classifier: audio frames + transcript tokens -> emotion.

The seed's design (see docs/architecture.md): the audio backbone's frame sequence
and the text backbone's token sequence are concatenated along TIME
(``[B, frames + tokens, d]``), followed by multi-head self-attention, an LSTM and the
emotion softmax. The same builder with one modality gives the single-modality
emotion classifiers the fusion model is compared against.

Masks: the audio mask is ``frame_mask``, the text mask ``token_ids != 0``; they are
concatenated like the sequences, and attention and the LSTM only see real steps.
An utterance without a transcript (all-zero token ids) is simply audio alone;
`ModalityDropout` trains the model for exactly that.
"""

from __future__ import annotations

import typing

import keras
import keras_hub

from kemdy_tf.config import CHAR_NGRAM_MODELS, FusionConfig, reads_functionals
from kemdy_tf.models.char_ngrams import HashedBag, PieceCharNgrams
from kemdy_tf.models.functionals_logistic import FUNCTIONALS_SCORES, FunctionalsLogisticScores
from kemdy_tf.models.ngram_logistic import (
    NGRAM_IDS,
    NGRAM_SCORES,
    WIDE_SHARE,
    NgramLogisticScores,
    WideShare,
)
from kemdy_tf.models.layers import (
    ConcatenateSteps,
    MaskedStatisticsPooling,
    ModalityDropout,
    NonEmptyMask,
    PackMaskedSteps,
    SpeakerStandardise,
    TokenPaddingMask,
    UtteranceFunctionals,
    VoiceVote,
    ZeroMaskedSteps,
)
from kemdy_tf.models.text_encoder import PAD_ID

MODALITIES = ("audio", "text")
# The input of per-speaker functional statistics (fusion.functionals_speaker_norm).
SPEAKER_FUNCTIONALS = "speaker_functionals"
# The input of each clip's pitch and energy statistics (fusion.pitch; data.prosody).
PITCH_STATISTICS = "pitch_statistics"
N_PITCH_STATISTICS = 12  # len(data.prosody.PITCH_STATISTICS)
# Pieces longer than this many syllables give the n-grams of their start only.
MAX_PIECE_SYLLABLES = 12
# Width of the attention block's feed-forward layer, in multiples of the model width.
FEEDFORWARD_MULTIPLE = 4


# === Functional Model ===


def build_fusion_model(
    audio_backbone: keras.Model | None,
    text_backbone: keras.Model | None,
    fusion_cfg: FusionConfig,
    n_classes: int,
    modalities: typing.Sequence[str] = MODALITIES,
    name: str | None = None,
    pieces: typing.Sequence[str] | None = None,
) -> keras.Model:
    """The emotion classifier over one or both modalities.

    Each backbone's sequence gets its own Dense projection to a common width (the
    wider of the two backbones), so a frozen backbone (``backbone.trainable =
    False`` before or after this call) still gets a trainable adapter. The
    sequences and masks are concatenated along time; real steps are packed to the
    front (cuDNN RNNs accept only right-padded masks); an example left with no real
    step at all gets one zero step (no softmax over zero keys, no NaN). Then one
    `keras_hub.layers.TransformerEncoder` block with the padding mask, a masked
    LSTM, dropout and a Dense softmax.

    With both modalities, `ModalityDropout` (rate `fusion_cfg.modality_dropout`)
    blanks one modality of some training examples. Dropout inside the backbones
    stays active in training unless the caller builds them with dropout 0.

    Args:
        audio_backbone: from `build_audio_backbone` (inputs ``log_mel``,
            ``frame_mask``); may be None when "audio" is not in `modalities`.
        text_backbone: from `build_text_backbone` (input ``token_ids``); may be None
            when "text" is not in `modalities`.
        fusion_cfg: attention heads, LSTM units, dropout rates.
        n_classes: number of emotion classes (`len(config.data.classes)`).
        modalities: ``("audio", "text")`` for the fusion model, ``("audio",)`` or
            ``("text",)`` for a single-modality classifier.
        name: model name; default ``fusion``, ``audio_clf`` or ``text_clf``.
        pieces: the tokenizer's piece strings (`char_ngrams.ngram_pieces`); needed by the
            text-only classifier when ``fusion_cfg.char_ngrams`` > 0.

    Returns:
        A `keras.Model` whose inputs are the chosen subset of ``log_mel`` ``[B,
        frames, n_mels]``, ``frame_mask`` ``[B, frames]`` and ``token_ids`` ``[B,
        tokens]``, and whose output is ``{"emotion": [B, n_classes]}`` probabilities.

    Example:
        >>> audio = build_audio_encoder(cfg.audio, cfg.features).get_layer("audio_backbone")
        >>> text = build_text_encoder(cfg.text, cfg.features, 1000).get_layer("text_backbone")
        >>> audio.trainable = text.trainable = False  # train the fusion layers only
        >>> model = build_fusion_model(audio, text, cfg.fusion, n_classes=5)
        >>> model({"log_mel": mel, "frame_mask": mask, "token_ids": ids})["emotion"]
    """
    modalities = _check_modalities(modalities, audio_backbone, text_backbone, n_classes)
    inputs: dict[str, keras.KerasTensor] = {}
    sequences, masks = {}, {}
    if "audio" in modalities:
        n_mels = audio_backbone.input["log_mel"].shape[-1]
        inputs["log_mel"] = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
        inputs["frame_mask"] = keras.Input(shape=(None,), dtype="bool", name="frame_mask")
        sequences["audio"] = audio_backbone({"log_mel": inputs["log_mel"], "frame_mask": inputs["frame_mask"]})
        masks["audio"] = inputs["frame_mask"]
    if "text" in modalities:
        inputs["token_ids"] = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        sequences["text"] = text_backbone(inputs["token_ids"])
        masks["text"] = TokenPaddingMask(pad_id=PAD_ID, name="text_mask")(inputs["token_ids"])
    if len(modalities) == 2:
        sequences["audio"], masks["audio"], sequences["text"], masks["text"] = ModalityDropout(
            rate=fusion_cfg.modality_dropout, swap_rate=fusion_cfg.text_swap,
            scramble_rate=fusion_cfg.text_scramble, name="modality_dropout"
        )(sequences["audio"], masks["audio"], sequences["text"], masks["text"])

    width = max(sequences[m].shape[-1] for m in modalities)
    if width % fusion_cfg.n_heads:
        raise ValueError(
            f"fusion width {width} (the wider backbone) must be divisible by fusion.n_heads ({fusion_cfg.n_heads})"
        )
    projected = {m: keras.layers.Dense(width, name=f"{m}_projection")(sequences[m]) for m in modalities}
    # Wide features beside the deep summary: the audio's utterance functionals, or the
    # text-only classifier's character n-gram bag.
    wide = wide_scores = None  # wide features for the head; a fitted regression's probabilities
    if reads_functionals(fusion_cfg, modalities):
        wide = UtteranceFunctionals(fusion_cfg.functional_cepstra, name="utterance_functionals")(
            inputs["log_mel"], inputs["frame_mask"])
        if fusion_cfg.pitch:
            # Tracked by the data pipeline; standardised per speaker with the functionals.
            inputs[PITCH_STATISTICS] = keras.Input(
                shape=(N_PITCH_STATISTICS,), dtype="float32", name=PITCH_STATISTICS)
            wide = keras.layers.Concatenate(name="functionals_and_pitch")([wide, inputs[PITCH_STATISTICS]])
        if fusion_cfg.functionals_speaker_norm:
            # Each speaker's mean and std of these functionals, from the data pipeline.
            inputs[SPEAKER_FUNCTIONALS] = keras.Input(
                shape=(2, wide.shape[-1]), dtype="float32", name=SPEAKER_FUNCTIONALS)
            wide = SpeakerStandardise(name="functionals_speaker_norm")(wide, inputs[SPEAKER_FUNCTIONALS])
        if modalities == ("audio",) and fusion_cfg.functionals_logistic:
            # A regression scikit-learn fits before training (models.functionals_logistic).
            wide_scores = FunctionalsLogisticScores(n_classes, name=FUNCTIONALS_SCORES)(wide)
        wide = keras.layers.BatchNormalization(name="functionals_norm")(wide)
        wide = keras.layers.Dropout(fusion_cfg.functionals_dropout, name="functionals_dropout")(wide)
    if modalities == ("text",) and fusion_cfg.char_ngrams > 0:
        ngrams = _char_ngram_ids(inputs["token_ids"], pieces, fusion_cfg)
        if fusion_cfg.char_ngram_model == "bag":
            wide = _char_ngram_bag(ngrams, fusion_cfg)
        else:  # a regression scikit-learn fits before training (models.ngram_logistic)
            wide_scores = NgramLogisticScores(fusion_cfg.char_ngram_buckets, n_classes,
                                               weighting=fusion_cfg.char_ngram_model, name=NGRAM_SCORES)(ngrams)
    head = _FusionHead(width, fusion_cfg, n_classes)
    emotion = head([projected[m] for m in modalities], [masks[m] for m in modalities], wide)
    if wide_scores is not None:  # mixed in by a share chosen on validation after training
        emotion = WideShare(name=WIDE_SHARE)(emotion, wide_scores)
    if len(modalities) == 2 and fusion_cfg.voice_share > 0.0:
        # The same head on the audio steps alone is exactly its answer with the
        # transcript blanked; at inference it holds the voice's share of every answer.
        voice_only = head([projected["audio"]], [masks["audio"]], wide, suffix="_voice_only")
        emotion = VoiceVote(fusion_cfg.voice_share, dtype="float32", name="voice_vote")(emotion, voice_only)
    default_name = "fusion" if len(modalities) == 2 else f"{modalities[0]}_clf"
    return keras.Model(inputs, {"emotion": emotion}, name=name or default_name)


def _char_ngram_ids(token_ids, pieces, fusion_cfg: FusionConfig):
    """The hashed character (or jamo) n-grams of the transcript the ids spell (models.char_ngrams)."""
    if not pieces:
        raise ValueError("fusion.char_ngrams needs the tokenizer's pieces (build_fusion_model(pieces=...), "
                         "char_ngrams.ngram_pieces); set fusion.char_ngrams=0 to build without them")
    if fusion_cfg.char_ngram_model == "auto":
        raise ValueError("fusion.char_ngram_model=auto is chosen by the training runner before the text "
                         "classifier is built (kemdy_tf.ngram_choice); build with bag, nblr or tfidf_lr")
    if fusion_cfg.char_ngram_model not in CHAR_NGRAM_MODELS:
        raise ValueError(f"fusion.char_ngram_model must be one of {', '.join(CHAR_NGRAM_MODELS)}; "
                         f"got {fusion_cfg.char_ngram_model!r}")
    # A syllable is two or three jamo: the same pieces, spelled in jamo, need a longer reach.
    piece_chars = 2 * MAX_PIECE_SYLLABLES if fusion_cfg.char_ngram_jamo else MAX_PIECE_SYLLABLES
    return PieceCharNgrams(pieces, max_n=fusion_cfg.char_ngrams, buckets=fusion_cfg.char_ngram_buckets,
                           max_piece_chars=piece_chars, jamo=fusion_cfg.char_ngram_jamo,
                           word_bounded=fusion_cfg.char_ngram_word_bounded,
                           name=NGRAM_IDS)(token_ids)


def _char_ngram_bag(ngrams, fusion_cfg: FusionConfig):
    """The wide text path "bag": the n-grams' learned embeddings, pooled, beside the deep summary."""
    bag = HashedBag(fusion_cfg.char_ngram_buckets, fusion_cfg.char_ngram_dim,
                    id_dropout=fusion_cfg.char_ngram_id_dropout, name="char_ngram_bag")(ngrams)
    return keras.layers.Dropout(fusion_cfg.char_ngram_dropout, name="char_ngram_dropout")(bag)


class _FusionHead:
    """The layers after the projections, made once so they can be applied twice.

    Sequences and masks are concatenated along time; real steps are packed to the
    front; an example left with no real step gets one zero step; then attention, the
    LSTM (+ statistics pooling), dropout and the softmax.
    """

    def __init__(self, width: int, fusion_cfg: FusionConfig, n_classes: int):
        self.concat_sequences = ConcatenateSteps(name="concat_sequences")
        self.concat_masks = ConcatenateSteps(name="concat_masks")
        self.pack = PackMaskedSteps(name="pack_real_steps")
        self.non_empty = NonEmptyMask(name="fusion_mask")
        self.zero = ZeroMaskedSteps(name="zero_padded_steps")
        self.attention = keras_hub.layers.TransformerEncoder(
            intermediate_dim=FEEDFORWARD_MULTIPLE * width, num_heads=fusion_cfg.n_heads,
            dropout=fusion_cfg.dropout, name="fusion_attention",
        )
        self.lstm = keras.layers.LSTM(fusion_cfg.lstm_units, name="lstm")
        self.statistics = (MaskedStatisticsPooling(name="statistics_pooling")
                           if fusion_cfg.statistics_pooling else None)
        self.dropout = keras.layers.Dropout(fusion_cfg.dropout, name="head_dropout")
        # Drops the whole summary of an example (noise shape [B, 1]), not single units.
        self.branch_dropout = keras.layers.Dropout(
            fusion_cfg.summary_branch_dropout, noise_shape=(None, 1), name="summary_branch_dropout")
        # float32 under any training precision: the class probabilities (models.precision)
        penalty = keras.regularizers.L2(fusion_cfg.classifier_l2) if fusion_cfg.classifier_l2 > 0 else None
        self.classify = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=penalty,
                                           dtype="float32", name="emotion")

    def __call__(self, sequences: list, masks: list, wide=None, suffix: str = ""):
        if len(sequences) > 1:
            sequence, mask = self.concat_sequences(sequences), self.concat_masks(masks)
        else:
            sequence, mask = sequences[0], masks[0]
        sequence, mask = self.pack(sequence, mask)
        mask = self.non_empty(mask)
        sequence = self.zero(sequence, mask)
        sequence = self.attention(sequence, padding_mask=mask)
        summary = self.lstm(sequence, mask=mask)
        if self.statistics is not None:
            summary = keras.layers.Concatenate(name=f"summary{suffix}")([summary, self.statistics(sequence, mask)])
        summary = self.dropout(summary)
        if wide is not None:
            summary = self.branch_dropout(summary)
            summary = keras.layers.Concatenate(name=f"with_wide_features{suffix}")([summary, wide])
        return self.classify(summary)


def _check_modalities(modalities, audio_backbone, text_backbone, n_classes) -> tuple[str, ...]:
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities) or set(modalities) - set(MODALITIES):
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES} without repeats, got {modalities}")
    # Keep the canonical order so the concatenation is always [audio | text].
    modalities = tuple(m for m in MODALITIES if m in modalities)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if "audio" in modalities:
        if audio_backbone is None:
            raise ValueError("modalities include 'audio' but audio_backbone is None")
        if not isinstance(audio_backbone.input, dict) or set(audio_backbone.input) != {"log_mel", "frame_mask"}:
            raise ValueError(
                f"audio_backbone {audio_backbone.name!r} must take inputs {{'log_mel', 'frame_mask'}} "
                "(see build_audio_backbone)"
            )
    if "text" in modalities:
        if text_backbone is None:
            raise ValueError("modalities include 'text' but text_backbone is None")
        if isinstance(text_backbone.input, (dict, list, tuple)):
            raise ValueError(
                f"text_backbone {text_backbone.name!r} must take the single input token_ids (see build_text_backbone)"
            )
    return modalities
