"""Custom layers: config round trips, registration, and what each one does."""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from kemdy_tf.models import layers  # noqa: E402

# One instance of every custom layer, with non-default arguments where it has any.
EXAMPLES = {
    layers.TokenPaddingMask: dict(pad_id=3),
    layers.ZeroMaskedSteps: {},
    layers.NonEmptyMask: {},
    layers.PackMaskedSteps: {},
    layers.ConcatenateSteps: {},
    layers.ModalityDropout: dict(rate=0.25, swap_rate=0.3, scramble_rate=0.2, seed=11),
    layers.MaskedStatisticsPooling: dict(epsilon=1e-5),
    layers.UtteranceFunctionals: dict(cepstra=2),
    layers.SpeakerStandardise: {},
    layers.VoiceVote: dict(share=0.3),
    layers.SegmentIds: dict(segment=1),
}
BASE_KEYS = set(keras.layers.Layer().get_config())


def test_every_custom_layer_has_an_example():
    assert set(EXAMPLES) == set(layers.CUSTOM_LAYERS)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_get_config_round_trip(cls):
    layer = cls(name=f"my_{cls.__name__.lower()}", **EXAMPLES[cls])
    config = layer.get_config()
    # the config is exactly the constructor arguments (plus Layer's own keys)
    own_init = cls.__dict__.get("__init__")
    own_args = set(inspect.signature(own_init).parameters) - {"self", "kwargs"} if own_init else set()
    assert set(config) - BASE_KEYS == own_args
    for key, value in EXAMPLES[cls].items():
        assert config[key] == value
    rebuilt = cls.from_config(config)
    assert type(rebuilt) is cls and rebuilt.get_config() == config


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_registered_for_load_model(cls):
    layer = cls(**EXAMPLES[cls])
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"kemdy_tf>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(restored) is cls and restored.get_config() == layer.get_config()


def test_token_padding_mask():
    ids = np.array([[5, 3, 9], [3, 3, 3]], "int32")
    np.testing.assert_array_equal(layers.TokenPaddingMask()(ids), ids != 0)
    np.testing.assert_array_equal(layers.TokenPaddingMask(pad_id=3)(ids), [[True, False, True], [False] * 3])


def test_zero_masked_steps_blocks_values_and_gradients():
    x = tf.Variable(np.array([[[1.0, 2.0], [np.nan, np.inf], [1e30, -3.0]]], "float32"))
    mask = tf.constant([[True, False, True]])
    with tf.GradientTape() as tape:
        y = layers.ZeroMaskedSteps()(x, mask)
        loss = tf.reduce_sum(y)
    np.testing.assert_array_equal(y.numpy(), np.array([[[1.0, 2.0], [0.0, 0.0], [1e30, -3.0]]], "float32"))
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [[[1, 1], [0, 0], [1, 1]]])


def test_non_empty_mask_switches_on_the_first_step_of_empty_rows_only():
    mask = np.array([[False, False, False], [False, True, False], [True, True, False]])
    expected = [[True, False, False], [False, True, False], [True, True, False]]
    np.testing.assert_array_equal(layers.NonEmptyMask()(mask), expected)


def test_pack_masked_steps_keeps_order_and_right_pads():
    x = np.arange(2 * 5, dtype="float32").reshape(2, 5, 1)
    mask = np.array([[False, True, False, True, True], [False] * 5])
    packed, packed_mask = layers.PackMaskedSteps()(x, mask)
    np.testing.assert_array_equal(packed[0, :, 0], [1, 3, 4, 0, 2])
    np.testing.assert_array_equal(packed_mask, [[True, True, True, False, False], [False] * 5])
    np.testing.assert_array_equal(packed[1, :, 0], x[1, :, 0])


def test_concatenate_steps_joins_sequences_and_masks_along_time():
    a, b = np.ones((2, 3, 4), "float32"), np.zeros((2, 5, 4), "float32")
    assert tuple(layers.ConcatenateSteps()([a, b]).shape) == (2, 8, 4)
    masks = layers.ConcatenateSteps()([np.ones((2, 3), bool), np.zeros((2, 5), bool)])
    assert masks.dtype == tf.bool
    np.testing.assert_array_equal(masks[0], [True] * 3 + [False] * 5)
    symbolic = layers.ConcatenateSteps()([keras.Input((None, 4)), keras.Input((7, 4))])
    assert symbolic.shape == (None, None, 4)


def test_segment_ids_are_constant():
    out = layers.SegmentIds(segment=2)(np.array([[7, 3, 0]], "int32"))
    assert out.dtype == tf.int32
    np.testing.assert_array_equal(out, [[2, 2, 2]])


def test_modality_dropout_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        layers.ModalityDropout(rate=-0.1)


def test_statistics_pooling_ignores_padding_and_gives_mean_and_std():
    x = np.array([[[1.0, 2.0], [3.0, 6.0], [1e6, -1e6]]], "float32")
    out = layers.MaskedStatisticsPooling()(x, np.array([[True, True, False]])).numpy()
    np.testing.assert_allclose(out, [[2.0, 4.0, 1.0, 2.0]], atol=1e-3)
    empty = layers.MaskedStatisticsPooling()(x, np.zeros((1, 3), bool)).numpy()
    np.testing.assert_allclose(empty, 0.0, atol=1e-3)


def test_utterance_functionals_are_the_numpy_statistics_of_the_real_frames():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 3)).astype("float32")
    mask = np.array([[True] * 9, [True] * 5 + [False] * 4])
    x[1, 5:] = 1e6  # padding: must not count
    out = layers.UtteranceFunctionals()(x, mask).numpy()
    for row, length in enumerate((9, 5)):
        real = x[row, :length]
        expected = np.concatenate([real.mean(0), real.std(0), np.diff(real, axis=0).std(0), real.max(0), real.min(0)])
        np.testing.assert_allclose(out[row], expected, atol=2e-3)
    assert out.shape == (2, 15)
    np.testing.assert_allclose(layers.UtteranceFunctionals()(x, np.zeros((2, 9), bool)).numpy(), 0.0, atol=1e-3)


def test_numpy_utterance_functionals_match_the_layer():
    """`data.audio.utterance_functionals` (the pipeline's speaker statistics) is the layer's twin."""
    from kemdy_tf.data import audio

    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 12, 4)).astype("float32") * 3
    np.testing.assert_allclose(audio.utterance_functionals(x[0, :7]),
                               layers.UtteranceFunctionals()(x, np.arange(12)[None] < 7).numpy()[0], atol=1e-5)
    assert audio.utterance_functionals(np.zeros((0, 4))).shape == (20,)
    # With cepstra: the bands, then each frame's first orthonormal DCT-II coefficients (MFCCs).
    np.testing.assert_allclose(audio.utterance_functionals(x[0, :7], cepstra=3),
                               layers.UtteranceFunctionals(3)(x, np.arange(12)[None] < 7).numpy()[0], atol=1e-4)
    assert audio.utterance_functionals(np.zeros((0, 4)), cepstra=3).shape == (35,)


def test_cepstral_functionals_are_the_statistics_of_the_frames_dct():
    import scipy.fft

    from kemdy_tf.data.audio import utterance_functionals as audio_functionals

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 10, 8)).astype("float32")
    mask = np.array([[True] * 10, [True] * 6 + [False] * 4])
    x[1, 6:] = 1e4  # padding: must not count
    out = layers.UtteranceFunctionals(cepstra=4)(x, mask).numpy()
    assert out.shape == (2, 5 * (8 + 4))
    # Each statistic over the bands, then over the cepstra (the order of the numpy twin).
    np.testing.assert_allclose(out.reshape(2, 5, 12)[:, :, :8],
                               layers.UtteranceFunctionals()(x, mask).numpy().reshape(2, 5, 8), atol=1e-5)
    for row, length in enumerate((10, 6)):
        c = scipy.fft.dct(x[row, :length], axis=1, norm="ortho")[:, :4]
        np.testing.assert_allclose(out[row].reshape(5, 12)[:, 8:],
                                   [c.mean(0), c.std(0), np.diff(c, axis=0).std(0), c.max(0), c.min(0)], atol=2e-3)
    # A frame of 8 bands has 8 coefficients: asking for more gives all of them, as in numpy.
    assert layers.UtteranceFunctionals(cepstra=30)(x, mask).shape == (2, 5 * 16)
    np.testing.assert_allclose(layers.UtteranceFunctionals(cepstra=30)(x, mask).numpy()[0],
                               audio_functionals(x[0], cepstra=30), atol=1e-4)
    with pytest.raises(ValueError, match="must be >= 0"):
        layers.UtteranceFunctionals(cepstra=-1)


def test_functional_stats_per_speaker_and_a_single_clip_left_as_it_is():
    from kemdy_tf.data import audio

    rows = [("a", np.array([1.0, 5.0])), ("a", np.array([3.0, 5.0])), ("b", np.array([7.0, 8.0]))]
    stats = audio.functional_stats(rows, min_std=0.01)
    np.testing.assert_allclose(stats["a"][0], [2.0, 5.0])
    np.testing.assert_allclose(stats["a"][1], [1.0, 0.01])  # floored
    np.testing.assert_array_equal(stats["b"][0], 0.0)
    np.testing.assert_array_equal(stats["b"][1], 1.0)


def test_speaker_standardise_uses_each_examples_own_statistics():
    values = np.array([[3.0, 1.0], [3.0, 1.0]], "float32")
    stats = np.array([[[1.0, 1.0], [2.0, 1.0]], [[3.0, 0.0], [1.0, 0.5]]], "float32")
    np.testing.assert_allclose(layers.SpeakerStandardise()(values, stats).numpy(), [[1.0, 0.0], [0.0, 2.0]])


def test_text_swap_pairs_audio_with_another_examples_transcript_only_in_training():
    batch = 64
    audio = np.random.default_rng(0).normal(size=(batch, 3, 2)).astype("float32")
    text = np.arange(batch, dtype="float32")[:, None, None] * np.ones((batch, 4, 2), "float32")
    audio_mask, text_mask = np.ones((batch, 3), bool), np.ones((batch, 4), bool)
    layer = layers.ModalityDropout(rate=0.0, swap_rate=0.5, seed=3)
    a, _, t, _ = layer(audio, audio_mask, text, text_mask, training=True)
    np.testing.assert_array_equal(a.numpy(), audio)  # the audio (and its label) stays
    source = t.numpy()[:, 0, 0]
    swapped = source != np.arange(batch)
    assert 0.25 < swapped.mean() < 0.75
    np.testing.assert_array_equal(source[swapped], (np.arange(batch) - 1)[swapped] % batch)
    _, _, t_inf, _ = layer(audio, audio_mask, text, text_mask, training=False)
    np.testing.assert_array_equal(t_inf.numpy(), text)
    with pytest.raises(ValueError, match="swap_rate"):
        layers.ModalityDropout(swap_rate=1.0)


def test_text_scramble_makes_a_word_salad_of_the_batch_only_in_training():
    batch, steps = 64, 6
    audio = np.random.default_rng(0).normal(size=(batch, 3, 2)).astype("float32")
    # Step t of example b holds 100 * b + t, so each salad step names its source.
    text = (100 * np.arange(batch)[:, None] + np.arange(steps)[None, :]).astype("float32")[..., None]
    text_mask = np.arange(steps)[None, :] < (1 + np.arange(batch) % steps)[:, None]
    layer = layers.ModalityDropout(rate=0.0, scramble_rate=0.5, seed=5)
    a, _, t, tm = layer(audio, np.ones((batch, 3), bool), text, text_mask, training=True)
    np.testing.assert_array_equal(a.numpy(), audio)
    t, tm = t.numpy()[..., 0], tm.numpy()
    source = (t // 100).astype(int)
    np.testing.assert_array_equal(t % 100, np.broadcast_to(np.arange(steps), t.shape))  # same position
    np.testing.assert_array_equal(tm, text_mask[source, np.arange(steps)[None, :]])  # mask travels along
    scrambled = (source != np.arange(batch)[:, None]).any(axis=1)
    assert 0.25 < scrambled.mean() < 0.75
    assert all(len(set(row)) > 1 for row in source[scrambled])  # words from several transcripts
    _, _, t_inf, _ = layer(audio, np.ones((batch, 3), bool), text, text_mask, training=False)
    np.testing.assert_array_equal(t_inf.numpy()[..., 0], text[..., 0])
    with pytest.raises(ValueError, match="scramble_rate"):
        layers.ModalityDropout(scramble_rate=1.0)


def test_voice_vote_mixes_only_at_inference():
    with_text, voice_only = np.array([[0.9, 0.1]], "float32"), np.array([[0.2, 0.8]], "float32")
    vote = layers.VoiceVote(share=0.25)
    np.testing.assert_allclose(vote(with_text, voice_only, training=False), [[0.725, 0.275]], atol=1e-6)
    np.testing.assert_allclose(vote(with_text, voice_only, training=True), with_text)
    with pytest.raises(ValueError, match="share"):
        layers.VoiceVote(share=1.5)
