"""Serializable custom layers shared by the audio, text and fusion models.

Every layer here is written with `keras.ops` only (no TensorFlow calls), is registered
under the package name `kemdy_tf`, and takes its whole config as constructor
arguments, so `.keras` archives load with `keras.saving.load_model(path)` (safe mode
on) once `kemdy_tf.models` is imported.

Masks in this project are explicit boolean tensors `[batch, steps]`, True on real
steps. They travel beside the sequences as ordinary inputs rather than as implicit
Keras masks, because some keras-hub layers (e.g. `PositionEmbedding`) drop implicit
masks.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PACKAGE = "kemdy_tf"


# Targets are ratings on a 1..5 scale: regression heads start at the middle.
RATING_MIDPOINT = 3.0


# === Layers ===


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TokenPaddingMask(keras.layers.Layer):
    """Boolean padding mask of a batch of token ids: True where the id is not `pad_id`.

    Args:
        pad_id: the id the tokenizer pads with (SentencePiece here: 0).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:
        >>> ids = np.array([[5, 9, 0, 0]], "int32")
        >>> TokenPaddingMask()(ids).numpy()
        array([[ True,  True, False, False]])
    """

    def __init__(self, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroMaskedSteps(keras.layers.Layer):
    """Sets every step whose mask is False to zero: `where(mask[..., None], x, 0)`.

    `where` (not multiplication) so that garbage, even inf or NaN, in padding cannot
    reach the output, and the gradient at masked steps is exactly zero.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call args:
        sequence: `[batch, steps, features]`.
        step_mask: boolean `[batch, steps]`, True on real steps. (Not called
            `mask`: Keras reserves that argument name for implicit masks.)

    Example:
        >>> x = np.ones((1, 3, 2), "float32")
        >>> ZeroMaskedSteps()(x, np.array([[True, True, False]]))[0, :, 0].numpy()
        array([1., 1., 0.], dtype=float32)
    """

    def call(self, sequence, step_mask):
        keep = ops.expand_dims(ops.cast(step_mask, "bool"), axis=-1)
        return ops.where(keep, sequence, ops.zeros_like(sequence))

    def compute_output_spec(self, sequence, step_mask):
        return keras.KerasTensor(sequence.shape, dtype=sequence.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NonEmptyMask(keras.layers.Layer):
    """Makes sure every row of a boolean mask keeps at least one True step.

    A row with no True step (an empty transcript, a blanked modality) gets its first
    step switched on. Callers zero that step's features, so the model sees one
    all-zero step: a fixed "no information" input. Without it, attention would have
    no key to attend to (a softmax over nothing) and Keras' cuDNN RNN path rejects
    a fully masked row.
    Rows with any True step are returned unchanged, and a right-padded mask stays
    right-padded.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> NonEmptyMask()(np.array([[False, False], [True, False]])).numpy()
        array([[ True, False],
               [ True, False]])
    """

    def call(self, step_mask):
        mask = ops.cast(step_mask, "bool")
        empty_row = ops.logical_not(ops.any(mask, axis=1, keepdims=True))
        first_step = ops.expand_dims(ops.equal(ops.arange(ops.shape(mask)[1]), 0), axis=0)
        return ops.logical_or(mask, ops.logical_and(empty_row, first_step))

    def compute_output_spec(self, step_mask):
        return keras.KerasTensor(step_mask.shape, dtype="bool")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PackMaskedSteps(keras.layers.Layer):
    """Moves the real steps of each row to the front, keeping their order.

    After concatenating two padded sequences along time (`[audio | pad | text | pad]`)
    the mask has a hole in the middle. Recurrent layers skip masked steps anyway, so
    packing changes no result on CPU; but cuDNN RNN kernels only accept right-padded
    masks and fail on any other, so the fusion model packs before its LSTM.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call args:
        sequence: `[batch, steps, features]`.
        step_mask: boolean `[batch, steps]`.

    Returns:
        `(packed_sequence, packed_mask)`; the packed mask is right-padded.

    Example:
        >>> x = np.arange(4, dtype="float32").reshape(1, 4, 1)
        >>> seq, mask = PackMaskedSteps()(x, np.array([[True, False, True, False]]))
        >>> seq[0, :, 0].numpy(), mask.numpy()
        (array([0., 2., 1., 3.], dtype=float32), array([[ True,  True, False, False]]))
    """

    def call(self, sequence, step_mask):
        mask = ops.cast(step_mask, "bool")
        steps = ops.shape(mask)[1]
        # Unique sort keys: real steps keep their index, padded steps go after all of them.
        position = ops.expand_dims(ops.arange(steps, dtype="int32"), axis=0)
        key = position + ops.cast(ops.logical_not(mask), "int32") * steps
        order = ops.argsort(key, axis=1)
        packed_mask = ops.take_along_axis(mask, order, axis=1)
        packed = ops.take_along_axis(sequence, ops.expand_dims(order, axis=-1), axis=1)
        return packed, packed_mask

    def compute_output_spec(self, sequence, step_mask):
        return (
            keras.KerasTensor(sequence.shape, dtype=sequence.dtype),
            keras.KerasTensor(step_mask.shape, dtype="bool"),
        )


def _masked_mean_std(values, weights, epsilon: float = 1e-6):
    """Mean and standard deviation over axis 1 of the steps whose weight is 1.

    `values` must be finite at weight-0 steps (callers zero them). The deviation is
    `sqrt(variance + epsilon) - sqrt(epsilon)`: 0 for a constant, finite gradient.
    """
    count = ops.maximum(ops.sum(weights, axis=1), 1.0)
    mean = ops.sum(weights * values, axis=1) / count
    variance = ops.sum(weights * ops.square(values - ops.expand_dims(mean, 1)), axis=1) / count
    return mean, ops.sqrt(variance + epsilon) - epsilon ** 0.5


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedStatisticsPooling(keras.layers.Layer):
    """Mean and standard deviation over the real steps: `[B, T, d]` -> `[B, 2 d]`.

    The x-vector pooling of speaker and emotion recognition. Beside a recurrent
    summary it gives the classifier a short gradient path to every frame, which is
    what lets a from-scratch model fit a few hundred real clips.
    A row with no real step pools to zeros. The statistics are computed in float32 under
    any dtype policy (a bfloat16 sum over hundreds of frames, or a bfloat16 frame count
    above 256, is not exact) and returned in the layer's compute dtype.

    Args:
        epsilon: added to the variance before the square root (finite gradients).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> x = np.array([[[1.0], [3.0], [99.0]]], "float32")
        >>> MaskedStatisticsPooling()(x, np.array([[True, True, False]])).numpy()
        array([[2., 1.]], dtype=float32)
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, sequence, step_mask):
        sequence = ops.cast(sequence, "float32")
        weights = ops.expand_dims(ops.cast(step_mask, "float32"), axis=-1)
        sequence = ops.where(weights > 0, sequence, ops.zeros_like(sequence))
        mean, std = _masked_mean_std(sequence, weights, self.epsilon)
        return ops.cast(ops.concatenate([mean, std], axis=-1), self.compute_dtype)

    def compute_output_spec(self, sequence, step_mask):
        return keras.KerasTensor((sequence.shape[0], 2 * sequence.shape[-1]), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UtteranceFunctionals(keras.layers.Layer):
    """Per-band (and per-cepstrum) statistics of a clip's real frames: `[B, T, n]` -> `[B, 5 (n + min(cepstra, n))]`.

    Mean, standard deviation, standard deviation of the frame-to-frame difference
    (how fast each band moves), maximum and minimum over the frames `step_mask`
    marks real: the utterance functionals classical speech emotion recognition
    classifies (openSMILE's are of the same kind). Next to a deep encoder they give
    the classifier a low-variance summary a few hundred real clips can train, where
    a frame sequence model alone over-fits (docs/real_speech.md). A row with no real
    frame gives zeros; one real frame gives a zero difference.

    With `cepstra` > 0 the same five statistics of each frame's first `cepstra`
    cepstral coefficients follow (the orthonormal DCT-II of the log-mel frame: MFCCs
    when the input is a log-mel): the spectral envelope's shape, decorrelated, which
    per-band statistics only hold spread over many bands (+.04 UA for a linear model
    on RAVDESS, `bench/speech_functionals.py`).

    Args:
        cepstra: number of cepstral coefficients to add (0: the bands only); a frame of
            n bands has n, so more than n gives all n.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> x = np.array([[[1.0], [3.0], [99.0]]], "float32")
        >>> UtteranceFunctionals()(x, np.array([[True, True, False]])).numpy()
        array([[2., 0.999, 0., 3., 1.]], dtype=float32)  # std - sqrt(1e-6): finite gradients
    """

    def __init__(self, cepstra: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(cepstra) < 0:
            raise ValueError(f"UtteranceFunctionals cepstra must be >= 0, got {cepstra!r}")
        self.cepstra = int(cepstra)

    def build(self, sequence_shape, step_mask_shape=None):
        # A frame of n bands has n coefficients: asking for more gives all of them.
        bands = sequence_shape[-1]
        self._dct = dct_matrix(bands, min(self.cepstra, bands)) if self.cepstra else None

    def call(self, sequence, step_mask):
        # In float32 under any dtype policy (sums over hundreds of frames), returned in
        # the layer's compute dtype.
        sequence = ops.cast(sequence, "float32")
        weights = ops.expand_dims(ops.cast(step_mask, "float32"), axis=-1)
        real = weights > 0
        sequence = ops.where(real, sequence, ops.zeros_like(sequence))
        if self._dct is not None:
            sequence = ops.concatenate([sequence, ops.matmul(sequence, ops.convert_to_tensor(self._dct))], axis=-1)
        mean, std = _masked_mean_std(sequence, weights)
        # Differences between neighbouring real frames only (padding follows real frames).
        _, step_std = _masked_mean_std(sequence[:, 1:] - sequence[:, :-1], weights[:, 1:] * weights[:, :-1])
        any_real = ops.any(real, axis=1)
        maximum = ops.where(any_real, ops.max(ops.where(real, sequence, -3.0e38), axis=1), 0.0)
        minimum = ops.where(any_real, ops.min(ops.where(real, sequence, 3.0e38), axis=1), 0.0)
        return ops.cast(ops.concatenate([mean, std, step_std, maximum, minimum], axis=-1), self.compute_dtype)

    def compute_output_spec(self, sequence, step_mask):
        bands = sequence.shape[-1]
        return keras.KerasTensor((sequence.shape[0], 5 * (bands + min(self.cepstra, bands))),
                                 dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "cepstra": self.cepstra}


def dct_matrix(bands: int, coefficients: int):
    """`[bands, coefficients]` float32: `frames @ dct_matrix` is the orthonormal DCT-II of each
    frame, first `coefficients` terms (scipy.fft.dct(..., norm="ortho"), how MFCCs are taken)."""
    m = np.arange(bands)[:, None] + 0.5
    k = np.arange(coefficients)[None, :]
    matrix = np.cos(np.pi / bands * m * k) * np.sqrt(2.0 / bands)
    matrix[:, 0] = np.sqrt(1.0 / bands)
    return matrix.astype("float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpeakerStandardise(keras.layers.Layer):
    """Standardises each example's values by its speaker's statistics: `[B, n]`, `[B, 2, n]` -> `[B, n]`.

    `speaker_stats[:, 0]` is the mean and `speaker_stats[:, 1]` the standard deviation
    (floored, > 0) of the same values over the speaker's clips, computed by the data
    pipeline (`data.audio.functional_stats`; `fusion.functionals_speaker_norm`). The
    classical recipe of per-speaker z-normalised utterance functionals, in the graph.
    Computed in float32, returned in the layer's compute dtype.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> SpeakerStandardise()(np.array([[3.0]]), np.array([[[1.0], [2.0]]])).numpy()
        array([[1.]], dtype=float32)
    """

    def call(self, values, speaker_stats):
        values = ops.cast(values, "float32")
        speaker_stats = ops.cast(speaker_stats, "float32")
        return ops.cast((values - speaker_stats[:, 0]) / speaker_stats[:, 1], self.compute_dtype)

    def compute_output_spec(self, values, speaker_stats):
        return keras.KerasTensor(values.shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConcatenateSteps(keras.layers.Layer):
    """Concatenates sequences, or boolean masks, along the time axis (axis 1).

    A plain `keras.layers.Concatenate` would do for float sequences; this layer also
    takes boolean masks and never touches implicit Keras masks.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> a, b = np.zeros((2, 3, 4)), np.ones((2, 5, 4))
        >>> ConcatenateSteps()([a, b]).shape
        TensorShape([2, 8, 4])
    """

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=1)

    def compute_output_spec(self, inputs):
        first = inputs[0]
        lengths = [x.shape[1] for x in inputs]
        total = None if any(n is None for n in lengths) else sum(lengths)
        return keras.KerasTensor((first.shape[0], total, *first.shape[2:]), dtype=first.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ModalityDropout(keras.layers.Layer):
    """In training, blanks one whole modality of an example with probability `rate`.

    Blanking sets the modality's mask to all False and its sequence to zero, so the
    fusion model learns to predict from audio alone and from text alone: at inference
    an utterance without a transcript (all-zero token ids) is just "no text". For each
    example: with probability `rate` one modality is chosen at random (even odds);
    it is blanked only if the other modality has at least one real step, so an
    example is never left with neither. At inference the layer is the identity.

    With probability `swap_rate` an example's transcript is replaced by the next
    example's in the (shuffled) batch, its label staying with the audio. When the
    transcript is a shortcut in training (scripted sentences that name the emotion),
    these mismatched pairs are the only examples where text and label disagree, and
    they teach the model to follow the voice when the words and the voice disagree,
    instead of reading and never listening.

    With probability `scramble_rate` an example's transcript becomes a word salad: each
    step is taken from a random example of the batch at the same position. Such text
    names no class consistently, which teaches the model that words it cannot place
    (an unseen sentence, a recogniser's garbled transcript) carry no evidence.

    Args:
        rate: probability, per example, of blanking one modality (0 <= rate < 1).
        swap_rate: probability, per example, of pairing its audio with another
            example's transcript (0 <= swap_rate < 1).
        scramble_rate: probability, per example, of replacing its transcript by a
            word salad of the batch's transcripts (0 <= scramble_rate < 1).
        seed: seed of the layer's random stream (None: a random seed).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call args:
        audio_sequence: `[batch, frames, features]`.
        audio_mask: boolean `[batch, frames]`.
        text_sequence: `[batch, tokens, features]`.
        text_mask: boolean `[batch, tokens]`.
        training: blank only when True.

    Returns:
        `(audio_sequence, audio_mask, text_sequence, text_mask)` after blanking.

    Example:
        >>> drop = ModalityDropout(rate=0.5, seed=1)
        >>> a, am, t, tm = drop(audio, audio_mask, text, text_mask, training=True)
    """

    def __init__(self, rate: float = 0.15, swap_rate: float = 0.0, seed: int | None = None,
                 scramble_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("rate", rate), ("swap_rate", swap_rate), ("scramble_rate", scramble_rate)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"ModalityDropout {label} must be in [0, 1), got {value!r}")
        self.rate = float(rate)
        self.swap_rate = float(swap_rate)
        self.scramble_rate = float(scramble_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, audio_sequence, audio_mask, text_sequence, text_mask, training=None):
        audio_mask = ops.cast(audio_mask, "bool")
        text_mask = ops.cast(text_mask, "bool")
        if not training or (self.rate == 0.0 and self.swap_rate == 0.0 and self.scramble_rate == 0.0):
            return audio_sequence, audio_mask, text_sequence, text_mask
        batch = ops.shape(audio_mask)[0]
        draw = keras.random.uniform((batch, 4), seed=self.seed_generator)
        if self.swap_rate > 0.0:
            swap = (draw[:, 2] < self.swap_rate)[:, None]
            text_mask = ops.where(swap, ops.roll(text_mask, 1, axis=0), text_mask)
            text_sequence = ops.where(swap[..., None], ops.roll(text_sequence, 1, axis=0), text_sequence)
        if self.scramble_rate > 0.0:
            scramble = (draw[:, 3] < self.scramble_rate)[:, None]
            salad, salad_mask = self._word_salad(text_sequence, text_mask, batch)
            text_mask = ops.where(scramble, salad_mask, text_mask)
            text_sequence = ops.where(scramble[..., None], salad, text_sequence)
        drop = draw[:, 0] < self.rate
        pick_audio = draw[:, 1] < 0.5
        has_audio = ops.any(audio_mask, axis=1)
        has_text = ops.any(text_mask, axis=1)
        blank_audio = drop & pick_audio & has_text
        blank_text = drop & ops.logical_not(pick_audio) & has_audio
        keep_audio = ops.logical_not(blank_audio)[:, None]
        keep_text = ops.logical_not(blank_text)[:, None]
        audio_mask = audio_mask & keep_audio
        text_mask = text_mask & keep_text
        audio_sequence = ops.where(keep_audio[..., None], audio_sequence, ops.zeros_like(audio_sequence))
        text_sequence = ops.where(keep_text[..., None], text_sequence, ops.zeros_like(text_sequence))
        return audio_sequence, audio_mask, text_sequence, text_mask

    def _word_salad(self, text_sequence, text_mask, batch):
        """Step t of example b taken from step t of a random example of the batch."""
        steps = ops.shape(text_mask)[1]
        source = keras.random.randint((steps, batch), 0, batch, seed=self.seed_generator)
        by_step = ops.transpose(text_sequence, (1, 0, 2))  # [steps, batch, features]
        salad = ops.take_along_axis(by_step, source[..., None], axis=1)
        salad_mask = ops.take_along_axis(ops.transpose(text_mask), source, axis=1)
        return ops.transpose(salad, (1, 0, 2)), ops.transpose(salad_mask)

    def compute_output_spec(self, audio_sequence, audio_mask, text_sequence, text_mask, training=None):
        return (
            keras.KerasTensor(audio_sequence.shape, dtype=audio_sequence.dtype),
            keras.KerasTensor(audio_mask.shape, dtype="bool"),
            keras.KerasTensor(text_sequence.shape, dtype=text_sequence.dtype),
            keras.KerasTensor(text_mask.shape, dtype="bool"),
        )

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "swap_rate": self.swap_rate,
                "scramble_rate": self.scramble_rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VoiceVote(keras.layers.Layer):
    """At inference, `(1 - share) * with_text + share * voice_only`; in training, `with_text`.

    The fusion model's answer with the transcript is mixed with its own answer from the
    voice alone (the same head, transcript blanked), so the voice always holds `share`
    of the vote: a transcript that was a shortcut in training (scripted sentences naming
    the emotion) can move at most the rest of the probability mass when it says nothing
    at test. Training stays on `with_text`: trained on the mixture, the with-text answer
    grew more extreme to win the vote back (docs/real_speech.md). In a compiled training
    step the unused voice-only pass is pruned from the graph.

    Args:
        share: the voice-only answer's share at inference, 0 <= share <= 1.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> VoiceVote(0.5)(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).numpy()
        array([[0.5, 0.5]], dtype=float32)
    """

    def __init__(self, share: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(share) <= 1.0:
            raise ValueError(f"VoiceVote share must be in [0, 1], got {share!r}")
        self.share = float(share)

    def call(self, with_text, voice_only, training=None):
        with_text = ops.cast(with_text, self.compute_dtype)
        if training:
            return with_text
        return (1.0 - self.share) * with_text + self.share * ops.cast(voice_only, self.compute_dtype)

    def compute_output_spec(self, with_text, voice_only, training=None):
        return keras.KerasTensor(with_text.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "share": self.share}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SegmentIds(keras.layers.Layer):
    """Constant segment ids shaped like `token_ids`, for BERT-style backbones.

    keras-hub BERT backbones take `segment_ids` as a third input; a single-sentence
    task feeds all zeros.

    Args:
        segment: the id every position gets.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> SegmentIds()(np.array([[7, 3, 0]], "int32")).numpy()
        array([[0, 0, 0]], dtype=int32)
    """

    def __init__(self, segment: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.segment = int(segment)

    def call(self, token_ids):
        return ops.full_like(token_ids, self.segment, dtype="int32")

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "segment": self.segment}


CUSTOM_LAYERS = (
    TokenPaddingMask,
    MaskedStatisticsPooling,
    UtteranceFunctionals,
    SpeakerStandardise,
    ZeroMaskedSteps,
    NonEmptyMask,
    PackMaskedSteps,
    ConcatenateSteps,
    ModalityDropout,
    VoiceVote,
    SegmentIds,
)


# === Blocks (functional helpers, built from the layers above and keras-hub) ===

def transformer_blocks(x, padding_mask, *, n_layers, n_heads, ff_dim, dropout):
    """`n_layers` keras-hub `TransformerEncoder` blocks named `attention_block_<i>`.

    Both encoders use this stack; the padding mask keeps padded steps out of attention.
    """
    import keras_hub

    for index in range(1, n_layers + 1):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=ff_dim, num_heads=n_heads, dropout=dropout,
            name=f"attention_block_{index}",
        )(x, padding_mask=padding_mask)
    return x


def rating_head(sequence, mask, *, gru_units, dropout, name):
    """Masked GRU -> dropout -> one linear output on the 1..5 rating scale, named `name`.

    An all-padding row still gets one (zero) step, so the GRU always has input; the
    bias starts at the scale's midpoint.
    """
    rnn_mask = NonEmptyMask(name="rnn_mask")(mask)
    summary = keras.layers.GRU(gru_units, name="gru")(sequence, mask=rnn_mask)
    summary = keras.layers.Dropout(dropout, name="head_dropout")(summary)
    return keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(RATING_MIDPOINT),
                              dtype="float32", name=name)(summary)  # float32 under any precision
