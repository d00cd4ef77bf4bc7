"""The three models: padding changes nothing, save/load, missing transcripts, presets.

Tiny configs (d_model 16, two attention layers) keep each test to about a second on
CPU; the paper preset gets one forward/backward step on 32 frames (~10 s).
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import kemdy_tf.models  # noqa: E402,F401  (registers the custom layers for load_model)
from kemdy_tf.config import (  # noqa: E402
    AudioEncoderConfig,
    FeatureConfig,
    FusionConfig,
    TextEncoderConfig,
    make_config,
)
from kemdy_tf.models.audio_encoder import build_audio_backbone, build_audio_encoder  # noqa: E402
from kemdy_tf.models.fusion import N_PITCH_STATISTICS, build_fusion_model  # noqa: E402
from kemdy_tf.models.layers import ModalityDropout  # noqa: E402
from kemdy_tf.models.text_encoder import build_text_backbone, build_text_encoder  # noqa: E402

VOCAB = 40
N_CLASSES = 5
FEATURES = FeatureConfig(n_mels=16, max_frames=64, max_tokens=12, vocab_size=VOCAB)
AUDIO = AudioEncoderConfig(
    conv_filters=(4, 4, 8, 8), conv_kernel=3, d_model=16, n_layers=2, n_heads=2, ff_dim=32, gru_units=8
)
TEXT = TextEncoderConfig(d_model=16, n_layers=2, n_heads=2, ff_dim=32, gru_units=8)
# The seed's head: no wide paths (the tests that turn them on say so).
FUSION = FusionConfig(n_heads=2, lstm_units=8, dropout=0.2, modality_dropout=0.3, functionals=False, char_ngrams=0)
FRAME_LENGTHS = (20, 13, 6)
TOKEN_LENGTHS = (9, 3, 0)  # the last utterance has no transcript
ATOL = 1e-5


def make_batch(seed=0, frame_lengths=FRAME_LENGTHS, token_lengths=TOKEN_LENGTHS, frames=None, tokens=None):
    """A padded batch: log-mels in dB-like range, zero padding, pad id 0."""
    rng = np.random.default_rng(seed)
    frames = frames or max(frame_lengths)
    tokens = tokens or FEATURES.max_tokens
    frame_mask = np.arange(frames)[None, :] < np.array(frame_lengths)[:, None]
    token_mask = np.arange(tokens)[None, :] < np.array(token_lengths)[:, None]
    log_mel = rng.normal(-40.0, 12.0, (len(frame_lengths), frames, FEATURES.n_mels)).astype("float32")
    log_mel[~frame_mask] = 0.0
    token_ids = rng.integers(1, VOCAB, (len(token_lengths), tokens)).astype("int32")
    token_ids[~token_mask] = 0
    return {"log_mel": log_mel, "frame_mask": frame_mask, "token_ids": token_ids}


def with_garbage_frames(batch, seed=1):
    """The same batch with huge random values in every padded frame."""
    rng = np.random.default_rng(seed)
    log_mel = batch["log_mel"].copy()
    padded = ~batch["frame_mask"]
    log_mel[padded] = rng.normal(0.0, 1e4, (int(padded.sum()), log_mel.shape[-1]))
    return {**batch, "log_mel": log_mel}


def inputs_of(model, batch):
    """The part of `batch` a model takes, as tensors: a dict by input name, or the one input.

    Tensors, not numpy: Keras refuses a dict that mixes the two (the gradient tests
    put a tf.Variable beside the other inputs).
    """
    if isinstance(model.input, dict):
        return {name: tf.convert_to_tensor(batch[name]) for name in model.input}
    return tf.convert_to_tensor(batch[model.input.name])


def run(model, batch, **kwargs):
    (output,) = model(inputs_of(model, batch), **kwargs).values()
    return np.asarray(output)


def build_all():
    """Fresh audio encoder, text encoder and fusion model sharing their backbones."""
    audio = build_audio_encoder(AUDIO, FEATURES)
    text = build_text_encoder(TEXT, FEATURES, VOCAB)
    fusion = build_fusion_model(
        audio.get_layer("audio_backbone"), text.get_layer("text_backbone"), FUSION, N_CLASSES
    )
    return {"audio": audio, "text": text, "fusion": fusion}


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return build_all()


MODEL_NAMES = ("audio", "text", "fusion")


def token_embedding(model):
    backbone = model.get_layer("text_backbone")
    return backbone.get_layer("token_embedding")


# --- padding changes nothing -------------------------------------------------------


@pytest.mark.parametrize("name", ["audio", "fusion"])
def test_garbage_in_padded_frames_changes_nothing(models, name):
    batch = make_batch()
    clean, dirty = run(models[name], batch), run(models[name], with_garbage_frames(batch))
    np.testing.assert_allclose(dirty, clean, atol=ATOL)


@pytest.mark.parametrize("name", ["audio", "fusion"])
def test_real_frames_do_change_the_output(models, name):
    """Guards the test above: the model is not simply ignoring its audio."""
    batch = make_batch()
    changed = {**batch, "log_mel": batch["log_mel"] + 5.0 * batch["frame_mask"][..., None]}
    assert np.abs(run(models[name], changed) - run(models[name], batch)).max() > 1e-4


@pytest.mark.parametrize("name", ["text", "fusion"])
def test_garbage_in_pad_token_embeddings_changes_nothing(name):
    """Pad id 0 is only ever at pad positions: a garbage row 0 is garbage in every pad embedding."""
    keras.utils.set_random_seed(0)
    model = build_all()[name]
    batch = make_batch()
    clean = run(model, batch)
    embedding = token_embedding(model)
    matrix = embedding.get_weights()[0]
    matrix[0] = np.random.default_rng(2).normal(0.0, 1e4, matrix.shape[1])
    embedding.set_weights([matrix])
    np.testing.assert_allclose(run(model, batch), clean, atol=ATOL)
    # and a real token's embedding does matter (a random change: LayerNorm removes a constant shift)
    matrix[batch["token_ids"][0, 0]] += np.random.default_rng(3).normal(0.0, 1.0, matrix.shape[1])
    embedding.set_weights([matrix])
    assert np.abs(run(model, batch) - clean).max() > 1e-4


@pytest.mark.parametrize("name", ["text", "fusion"])
def test_more_token_padding_changes_nothing(models, name):
    batch = make_batch()
    short = {**batch, "token_ids": batch["token_ids"][:, : max(TOKEN_LENGTHS)]}
    np.testing.assert_allclose(run(models[name], short), run(models[name], batch), atol=ATOL)


# A lone one-token transcript means attention over a single key, which Keras warns about.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_padded_batch_equals_each_example_alone(models, name):
    batch = make_batch()
    together = run(models[name], batch)
    for i, (frames, tokens) in enumerate(zip(FRAME_LENGTHS, TOKEN_LENGTHS)):
        alone = {
            "log_mel": batch["log_mel"][i : i + 1, :frames],
            "frame_mask": batch["frame_mask"][i : i + 1, :frames],
            # a missing transcript alone is a single pad token
            "token_ids": batch["token_ids"][i : i + 1, : max(tokens, 1)],
        }
        np.testing.assert_allclose(run(models[name], alone), together[i : i + 1], atol=ATOL)


# --- no gradient through padding -----------------------------------------------------


def _loss(outputs):
    (value,) = outputs.values()
    # a loss that depends on every output unit
    return tf.reduce_sum(tf.square(value - 0.3) * tf.range(1, value.shape[-1] + 1, dtype=value.dtype))


@pytest.mark.parametrize("name", ["audio", "fusion"])
def test_zero_gradient_at_padded_frames(models, name):
    batch = with_garbage_frames(make_batch())
    log_mel = tf.Variable(batch["log_mel"])
    with tf.GradientTape() as tape:
        outputs = models[name]({**inputs_of(models[name], batch), "log_mel": log_mel}, training=False)
        loss = _loss(outputs)
    per_frame = np.abs(tape.gradient(loss, log_mel).numpy()).sum(axis=-1)
    mask = batch["frame_mask"]
    assert np.all(per_frame[~mask] == 0.0)
    assert np.all(per_frame[mask] > 0.0)


def test_zero_gradient_at_pad_token_embeddings():
    """Per position, through the text backbone: d(output)/d(embedding output) is 0 at pads."""
    keras.utils.set_random_seed(0)
    encoder = build_text_encoder(TEXT, FEATURES, VOCAB)  # own copy: the sub-model below adds nodes
    backbone = encoder.get_layer("text_backbone")
    after_embedding = keras.Model([backbone.input, backbone.get_layer("token_embedding").output], backbone.output)
    token_ids = tf.constant(make_batch()["token_ids"])
    embedded = tf.Variable(backbone.get_layer("token_embedding")(token_ids))
    with tf.GradientTape() as tape:
        sequence = after_embedding([token_ids, embedded])
        loss = tf.reduce_sum(encoder.get_layer("gru")(sequence, mask=token_ids != 0))
    per_token = np.abs(tape.gradient(loss, embedded).numpy()).sum(axis=-1)
    is_token = token_ids.numpy() != 0
    assert np.all(per_token[~is_token] == 0.0)
    assert np.all(per_token[is_token] > 0.0)


@pytest.mark.parametrize("name", ["text", "fusion"])
def test_pad_id_embedding_row_gets_no_gradient(models, name):
    """Row 0 is used only at pad positions, so its gradient is the sum of theirs: zero."""
    model = models[name]
    embedding = token_embedding(model).embeddings
    batch = make_batch()
    with tf.GradientTape() as tape:
        loss = _loss(model(inputs_of(model, batch), training=False))
    gradient = tf.convert_to_tensor(tape.gradient(loss, embedding)).numpy()
    assert np.all(gradient[0] == 0.0)
    used = np.unique(batch["token_ids"][batch["token_ids"] != 0])
    assert np.all(np.abs(gradient[used]).sum(axis=-1) > 0.0)


# --- save / load -----------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keras_archive_round_trip(models, name, tmp_path):
    path = tmp_path / f"{name}.keras"
    models[name].save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    batch = make_batch()
    np.testing.assert_array_equal(run(loaded, batch), run(models[name], batch))
    assert loaded.output_names == models[name].output_names


def test_model_names_inputs_and_outputs(models):
    assert set(models["audio"].input) == {"log_mel", "frame_mask"}
    assert models["text"].input.name == "token_ids"
    assert set(models["fusion"].input) == {"log_mel", "frame_mask", "token_ids"}
    batch = make_batch()
    assert set(models["audio"](inputs_of(models["audio"], batch))) == {"arousal"}
    assert set(models["text"](batch["token_ids"])) == {"valence"}
    emotion = models["fusion"](batch)["emotion"].numpy()
    assert emotion.shape == (3, N_CLASSES)
    np.testing.assert_allclose(emotion.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["audio", "fusion"])
def test_frame_mask_may_be_given_as_int(models, name):
    """0/1 int masks work too: under MirroredStrategy Keras' fit averages a sample batch
    across replicas, which fails on bool tensors, so a pipeline may have to send ints."""
    batch = make_batch()
    as_int = {**batch, "frame_mask": batch["frame_mask"].astype("int32")}
    np.testing.assert_array_equal(run(models[name], as_int), run(models[name], batch))


# --- missing transcripts and empty inputs ----------------------------------------------


def test_fusion_without_transcript_predicts_from_audio(models):
    batch = make_batch(token_lengths=(0, 0, 0))
    probabilities = run(models["fusion"], batch)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    other_audio = make_batch(seed=5, token_lengths=(0, 0, 0))
    assert np.abs(run(models["fusion"], other_audio) - probabilities).max() > 1e-4


def test_voice_share_mixes_the_answer_with_the_transcript_and_the_answer_from_the_voice_alone(models):
    fusion = models["fusion"]
    assert FUSION.voice_share == 0.5
    backbones = fusion.get_layer("audio_backbone"), fusion.get_layer("text_backbone")
    unmixed = build_fusion_model(*backbones, dataclasses.replace(FUSION, voice_share=0.0), N_CLASSES)
    unmixed.set_weights(fusion.get_weights())  # the voice-only pass adds no weights
    batch = make_batch(token_lengths=(9, 3, 4))
    blanked = {**batch, "token_ids": np.zeros_like(batch["token_ids"])}
    expected = 0.5 * run(unmixed, batch) + 0.5 * run(unmixed, blanked)
    np.testing.assert_allclose(run(fusion, batch), expected, atol=ATOL)
    np.testing.assert_allclose(run(fusion, blanked), run(unmixed, blanked), atol=ATOL)
    assert np.abs(run(unmixed, batch) - run(unmixed, blanked)).max() > 1e-3  # the transcript matters
    # Training is on the answer with the transcript (no dropout here, so no randomness).
    quiet = dataclasses.replace(FUSION, dropout=0.0, modality_dropout=0.0, text_swap=0.0, text_scramble=0.0)
    quiet_backbones = (build_audio_backbone(dataclasses.replace(AUDIO, dropout=0.0), FEATURES),
                       build_text_backbone(dataclasses.replace(TEXT, dropout=0.0), FEATURES, VOCAB))
    trained = build_fusion_model(*quiet_backbones, quiet, N_CLASSES)
    trained_unmixed = build_fusion_model(*quiet_backbones, dataclasses.replace(quiet, voice_share=0.0), N_CLASSES)
    trained_unmixed.set_weights(trained.get_weights())
    np.testing.assert_allclose(run(trained, batch, training=True), run(trained_unmixed, batch, training=True),
                               atol=ATOL)


@pytest.mark.parametrize("training", [False, True])
def test_fusion_with_no_audio_and_no_text_stays_finite(models, training):
    batch = make_batch(frame_lengths=(0, 0, 4), token_lengths=(0, 5, 0), frames=6)
    model = models["fusion"]
    log_mel = tf.Variable(batch["log_mel"])
    with tf.GradientTape() as tape:
        outputs = model({**inputs_of(model, batch), "log_mel": log_mel}, training=training)
        loss = _loss(outputs)
    probabilities = outputs["emotion"].numpy()
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    gradients = tape.gradient(loss, [log_mel, *model.trainable_variables])
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in gradients if g is not None)


def test_encoders_accept_an_empty_clip_and_an_empty_transcript(models):
    batch = make_batch(frame_lengths=(0, 4, 4), token_lengths=(0, 0, 2), frames=4)
    assert np.all(np.isfinite(run(models["audio"], batch)))
    valence = run(models["text"], batch)
    assert np.all(np.isfinite(valence))
    assert valence[0, 0] == valence[1, 0]  # no transcript: one fixed prediction


# --- modality dropout --------------------------------------------------------------------


def test_modality_dropout_blanks_exactly_one_modality():
    rate, n, no_text = 0.4, 4000, 500
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(n, 5, 3)).astype("float32")
    text = rng.normal(size=(n, 4, 3)).astype("float32")
    audio_mask = np.ones((n, 5), bool)
    text_mask = np.ones((n, 4), bool)
    text_mask[-no_text:] = False  # utterances without a transcript
    layer = ModalityDropout(rate=rate, seed=3)
    a, am, t, tm = (np.asarray(x) for x in layer(audio, audio_mask, text, text_mask, training=True))

    has_text = text_mask.any(axis=1)
    audio_blank = ~am.any(axis=1)
    text_blank = has_text & ~tm.any(axis=1)  # blanked by the layer, not missing from the start
    assert not np.any(audio_blank & ~tm.any(axis=1))  # never both, even with no transcript
    dropped = audio_blank | text_blank
    assert abs(dropped[has_text].mean() - rate) < 0.03
    assert abs(audio_blank[dropped].mean() - 0.5) < 0.05
    # a blanked modality is all zero; everything else is untouched
    assert np.all(a[audio_blank] == 0.0) and np.all(t[text_blank] == 0.0)
    np.testing.assert_array_equal(a[~audio_blank], audio[~audio_blank])
    np.testing.assert_array_equal(am[~audio_blank], audio_mask[~audio_blank])
    kept_text = has_text & ~text_blank
    np.testing.assert_array_equal(t[kept_text], text[kept_text])
    np.testing.assert_array_equal(tm[kept_text], text_mask[kept_text])


def test_modality_dropout_is_identity_at_inference():
    rng = np.random.default_rng(1)
    inputs = (
        rng.normal(size=(50, 5, 3)).astype("float32"), rng.random((50, 5)) > 0.3,
        rng.normal(size=(50, 4, 3)).astype("float32"), rng.random((50, 4)) > 0.3,
    )
    outputs = ModalityDropout(rate=0.9, seed=0)(*inputs, training=False)
    for given, returned in zip(inputs, outputs):
        np.testing.assert_array_equal(np.asarray(returned), given)


def test_fusion_trains_with_modality_dropout_and_frozen_backbones():
    keras.utils.set_random_seed(0)
    built = build_all()
    fusion = built["fusion"]
    backbones = [fusion.get_layer("audio_backbone"), fusion.get_layer("text_backbone")]
    for backbone in backbones:
        backbone.trainable = False
    before = [w.copy() for b in backbones for w in b.get_weights()]
    head_before = fusion.get_layer("emotion").get_weights()[0].copy()
    optimizer = keras.optimizers.Adam(1e-2)
    batch = make_batch()
    # eager steps: Model.fit would spend most of the test tracing a tf.function
    for _ in range(2):
        with tf.GradientTape() as tape:
            probabilities = fusion(inputs_of(fusion, batch), training=True)["emotion"]
            loss = keras.losses.sparse_categorical_crossentropy(np.array([0, 1, 2]), probabilities)
        assert np.all(np.isfinite(loss.numpy()))
        optimizer.apply(tape.gradient(loss, fusion.trainable_variables), fusion.trainable_variables)
    trainable_ids = {id(v) for v in fusion.trainable_variables}
    assert not any(id(v) in trainable_ids for b in backbones for v in b.weights)
    after = [w for b in backbones for w in b.get_weights()]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))
    assert not np.array_equal(fusion.get_layer("emotion").get_weights()[0], head_before)


# --- single-modality classifiers ---------------------------------------------------------


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_single_modality_classifier(models, modality):
    backbone = models[modality].get_layer(f"{modality}_backbone")
    classifier = build_fusion_model(
        backbone if modality == "audio" else None, backbone if modality == "text" else None,
        FUSION, N_CLASSES, modalities=(modality,),
    )
    expected_inputs = {"audio": {"log_mel", "frame_mask"}, "text": {"token_ids"}}[modality]
    assert set(classifier.input if isinstance(classifier.input, dict) else [classifier.input.name]) == expected_inputs
    assert classifier.name == f"{modality}_clf"
    layer_names = {layer.name for layer in classifier.layers}
    assert "modality_dropout" not in layer_names and f"{modality}_backbone" in layer_names
    batch = make_batch()
    probabilities = run(classifier, batch)
    assert probabilities.shape == (3, N_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(run(classifier, with_garbage_frames(batch)), probabilities, atol=ATOL)


def test_functionals_beside_the_deep_summary(models):
    """`fusion.functionals`: the classifier also reads the log-mel's utterance statistics."""
    backbone = models["audio"].get_layer("audio_backbone")
    cfg = dataclasses.replace(FUSION, functionals=True, functionals_speaker_norm=False,
                              functionals_in_fusion="true")
    classifier = build_fusion_model(backbone, None, cfg, N_CLASSES, modalities=("audio",))
    names = {layer.name for layer in classifier.layers}
    assert {"utterance_functionals", "functionals_norm", "summary_branch_dropout"} <= names
    assert classifier.get_layer("utterance_functionals").cepstra == cfg.functional_cepstra > 0  # + MFCC statistics
    batch = make_batch()
    probabilities = run(classifier, batch)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(run(classifier, with_garbage_frames(batch)), probabilities, atol=ATOL)
    # The branch dropout drops an example's whole deep summary or none of it, in training only.
    dropped = np.asarray(classifier.get_layer("summary_branch_dropout")(np.ones((256, 6), "float32"), training=True))
    assert set(np.unique(dropped.std(axis=1))) == {0.0} and 0.3 < (dropped[:, 0] == 0).mean() < 0.7
    np.testing.assert_array_equal(classifier.get_layer("summary_branch_dropout")(np.ones((4, 6), "float32")), 1.0)
    fusion = build_fusion_model(backbone, models["text"].get_layer("text_backbone"), cfg, N_CLASSES)
    assert "utterance_functionals" in {layer.name for layer in fusion.layers}
    np.testing.assert_allclose(run(fusion, batch).sum(axis=-1), 1.0, atol=1e-5)
    # "false", or "auto" not yet decided by the training runner: only the audio classifier reads them.
    for value in ("false", "auto"):
        plain = build_fusion_model(backbone, models["text"].get_layer("text_backbone"),
                                   dataclasses.replace(cfg, functionals_in_fusion=value), N_CLASSES)
        assert "utterance_functionals" not in {layer.name for layer in plain.layers}


def test_functionals_standardised_by_the_speakers_statistics(models):
    """`fusion.functionals_speaker_norm`: a third input holds each example's speaker's
    mean and std of the functionals; the classifier reads the standardised functionals."""
    backbone = models["audio"].get_layer("audio_backbone")
    cfg = dataclasses.replace(FUSION, functionals=True, functionals_speaker_norm=True)
    classifier = build_fusion_model(backbone, None, cfg, N_CLASSES, modalities=("audio",))
    assert set(classifier.input) == {"log_mel", "frame_mask", "speaker_functionals"}
    batch = make_batch()
    n = classifier.get_layer("utterance_functionals").output.shape[-1]  # bands and cepstra
    rng = np.random.default_rng(3)
    stats = np.stack([rng.normal(size=(3, n)), rng.uniform(0.5, 2.0, (3, n))], axis=1).astype("float32")
    batch["speaker_functionals"] = stats
    probabilities = run(classifier, batch)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(run(classifier, with_garbage_frames(batch)), probabilities, atol=ATOL)
    inner = keras.Model(classifier.input, classifier.get_layer("functionals_speaker_norm").output)
    raw = keras.Model(classifier.input, classifier.get_layer("utterance_functionals").output)
    np.testing.assert_allclose(np.asarray(inner(inputs_of(classifier, batch))),
                               (np.asarray(raw(inputs_of(classifier, batch))) - stats[:, 0]) / stats[:, 1],
                               rtol=1e-4, atol=1e-4)
    other = dict(batch, speaker_functionals=stats[::-1].copy())
    assert not np.allclose(run(classifier, other), probabilities)
    # Off without functionals: no third input.
    plain = build_fusion_model(backbone, None, dataclasses.replace(cfg, functionals=False), N_CLASSES,
                               modalities=("audio",))
    assert set(plain.input) == {"log_mel", "frame_mask"}


def test_pitch_statistics_join_the_functionals(models):
    """`fusion.pitch`: the classifier reads each clip's pitch statistics beside the functionals,
    standardised per speaker with them."""
    backbone = models["audio"].get_layer("audio_backbone")
    cfg = dataclasses.replace(FUSION, functionals=True, functionals_speaker_norm=False, pitch=True)
    classifier = build_fusion_model(backbone, None, cfg, N_CLASSES, modalities=("audio",))
    assert set(classifier.input) == {"log_mel", "frame_mask", "pitch_statistics"}
    batch = make_batch()
    batch["pitch_statistics"] = np.random.default_rng(4).normal(size=(3, N_PITCH_STATISTICS)).astype("float32")
    probabilities = run(classifier, batch)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(run(classifier, with_garbage_frames(batch)), probabilities, atol=ATOL)
    assert not np.allclose(run(classifier, dict(batch, pitch_statistics=batch["pitch_statistics"][::-1].copy())),
                           probabilities)
    n = classifier.get_layer("utterance_functionals").output.shape[-1]
    assert classifier.get_layer("functionals_and_pitch").output.shape[-1] == n + N_PITCH_STATISTICS
    per_speaker = build_fusion_model(backbone, None, dataclasses.replace(cfg, functionals_speaker_norm=True),
                                     N_CLASSES, modalities=("audio",))
    assert per_speaker.input["speaker_functionals"].shape[-1] == n + N_PITCH_STATISTICS
    # Without functionals there is nothing to join: no pitch input.
    plain = build_fusion_model(backbone, None, dataclasses.replace(cfg, functionals=False), N_CLASSES,
                               modalities=("audio",))
    assert set(plain.input) == {"log_mel", "frame_mask"}


def test_classifier_l2_penalises_the_emotion_weights_only_when_asked(models):
    """`fusion.classifier_l2`: an L2 penalty on the softmax layer's kernel joins the training loss."""
    backbone = models["audio"].get_layer("audio_backbone")
    plain = build_fusion_model(backbone, None, FUSION, N_CLASSES, modalities=("audio",))
    assert plain.get_layer("emotion").kernel_regularizer is None and not plain.losses
    cfg = dataclasses.replace(FUSION, functionals=True, classifier_l2=0.03)
    penalised = build_fusion_model(backbone, None, cfg, N_CLASSES, modalities=("audio",))
    kernel = np.asarray(penalised.get_layer("emotion").kernel)
    np.testing.assert_allclose(float(sum(penalised.losses)), 0.03 * np.square(kernel).sum(), rtol=1e-5)
    restored = keras.Model.from_config(penalised.get_config())  # the custom layers are registered
    assert restored.get_layer("emotion").kernel_regularizer.get_config()["l2"] == pytest.approx(0.03)


# --- pretrained text representations -----------------------------------------------------


def test_pretrained_embedding_matrix_from_npy(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(VOCAB, 10)).astype("float32")
    np.save(tmp_path / "emb.npy", matrix)
    backbone = build_text_backbone(
        TEXT, FEATURES, VOCAB, embedding_weights=tmp_path / "emb.npy", train_embedding=False
    )
    embedding = backbone.get_layer("token_embedding")
    np.testing.assert_array_equal(embedding.get_weights()[0], matrix)
    assert not embedding.trainable
    assert backbone.get_layer("embedding_projection").units == TEXT.d_model
    assert backbone(make_batch()["token_ids"]).shape == (3, FEATURES.max_tokens, TEXT.d_model)


def test_bad_embedding_file_is_named_in_the_error(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((VOCAB + 1, 8), "float32"))
    with pytest.raises(ValueError, match=r"wrong\.npy.*\(41, 8\)"):
        build_text_backbone(TEXT, FEATURES, VOCAB, embedding_weights=tmp_path / "wrong.npy")
    (tmp_path / "broken.npy").write_text("not numpy")
    with pytest.raises(ValueError, match=r"broken\.npy"):
        build_text_backbone(TEXT, FEATURES, VOCAB, embedding_weights=tmp_path / "broken.npy")


def test_pretrained_keras_hub_backbone_plugs_in(tmp_path):
    keras.utils.set_random_seed(0)
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=FEATURES.max_tokens,
    )
    backbone = build_text_backbone(TEXT, FEATURES, pretrained=bert)
    encoder = build_text_encoder(TEXT, FEATURES, backbone=backbone)
    batch = make_batch()
    valence = run(encoder, batch)
    alone = run(encoder, {"token_ids": batch["token_ids"][:1, : TOKEN_LENGTHS[0]]})
    np.testing.assert_allclose(alone, valence[:1], atol=ATOL)
    encoder.save(tmp_path / "bert_text.keras")
    loaded = keras.saving.load_model(tmp_path / "bert_text.keras")
    np.testing.assert_array_equal(run(loaded, batch), valence)


# --- configuration errors ------------------------------------------------------------------


def test_bad_configurations_raise_clear_errors(models):
    with pytest.raises(ValueError, match="divisible"):
        build_audio_backbone(AudioEncoderConfig(d_model=10, n_heads=4), FEATURES)
    with pytest.raises(ValueError, match="divisible"):
        build_text_backbone(TextEncoderConfig(d_model=10, n_heads=4), FEATURES, VOCAB)
    audio_backbone = models["audio"].get_layer("audio_backbone")
    with pytest.raises(ValueError, match="modalities"):
        build_fusion_model(audio_backbone, None, FUSION, N_CLASSES, modalities=("video",))
    with pytest.raises(ValueError, match="text_backbone is None"):
        build_fusion_model(audio_backbone, None, FUSION, N_CLASSES)
    with pytest.raises(ValueError, match="audio_backbone"):
        build_fusion_model(models["text"].get_layer("text_backbone"), None, FUSION, N_CLASSES, ("audio",))
    with pytest.raises(ValueError, match="rate"):
        ModalityDropout(rate=1.0)


# --- presets -------------------------------------------------------------------------------


def test_paper_preset_builds_and_takes_a_training_step():
    cfg = make_config("paper")
    keras.utils.set_random_seed(0)
    audio = build_audio_encoder(cfg.audio, cfg.features)
    text = build_text_encoder(cfg.text, cfg.features)
    fusion = build_fusion_model(
        audio.get_layer("audio_backbone"), text.get_layer("text_backbone"), cfg.fusion, len(cfg.data.classes)
    )
    assert audio.get_layer("audio_backbone").output.shape[-1] == 768
    assert len([l for l in audio.get_layer("audio_backbone").layers if l.name.startswith("attention_block")]) == 7
    assert len([l for l in text.get_layer("text_backbone").layers if l.name.startswith("attention_block")]) == 5
    rng = np.random.default_rng(0)
    frame_mask = np.arange(32)[None, :] < np.array([[32], [20]])
    token_ids = rng.integers(1, cfg.features.vocab_size, (2, cfg.features.max_tokens)).astype("int32")
    token_ids[1, 10:] = 0
    batch = {
        "log_mel": (rng.normal(-40.0, 12.0, (2, 32, cfg.features.n_mels)) * frame_mask[..., None]).astype("float32"),
        "frame_mask": frame_mask,
        "token_ids": token_ids,
    }
    with tf.GradientTape() as tape:
        loss = _loss(fusion(batch, training=True))
    gradients = tape.gradient(loss, fusion.trainable_variables)
    assert len(gradients) == len(fusion.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in gradients)
    assert np.all(np.isfinite(run(audio, batch))) and np.all(np.isfinite(run(text, batch)))


# --- the text recipe's additions -------------------------------------------------------------

BAG_TEXT = TextEncoderConfig(d_model=16, n_layers=1, n_heads=2, ff_dim=32, gru_units=8, token_dropout=0.2,
                             bag_of_tokens=True, bigram_buckets=31)


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
def test_bag_of_tokens_backbone_keeps_the_contract(tmp_path):
    """Bag-of-tokens + hashed bigrams: padding changes nothing, pad row 0 gets no gradient, archive loads."""
    keras.utils.set_random_seed(0)
    encoder = build_text_encoder(BAG_TEXT, FEATURES, VOCAB)
    backbone = encoder.get_layer("text_backbone")
    assert {"bag_pool", "bigram_embedding", "add_bag", "token_dropout"} <= {l.name for l in backbone.layers}
    batch = make_batch()
    together = run(encoder, batch)
    for i, tokens in enumerate(TOKEN_LENGTHS):
        alone = run(encoder, {"token_ids": batch["token_ids"][i : i + 1, : max(tokens, 1)]})
        np.testing.assert_allclose(alone, together[i : i + 1], atol=ATOL)
    embedding = token_embedding(encoder).embeddings
    with tf.GradientTape() as tape:
        loss = _loss(encoder(tf.constant(batch["token_ids"]), training=False))
    assert np.all(tf.convert_to_tensor(tape.gradient(loss, embedding)).numpy()[0] == 0.0)
    classifier = build_fusion_model(None, backbone, FUSION, N_CLASSES, modalities=("text",))
    path = tmp_path / "bag.keras"
    classifier.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(run(loaded, batch), run(classifier, batch))


def test_hashed_bigrams_and_masked_pool():
    from kemdy_tf.models.text_encoder import HashedTokenBigrams, MaskedMeanMaxPool

    ids = np.array([[5, 9, 5, 9, 0, 0]], "int32")
    bigrams = HashedTokenBigrams(1000)(ids).numpy()
    assert bigrams[0, 0] == bigrams[0, 2] != 0 and bigrams[0, 1] != 0
    assert np.all(bigrams[0, 3:] == 0), "a pair with a pad is no bigram"
    x = np.array([[[1.0], [3.0], [np.inf]], [[7.0], [7.0], [7.0]]], "float32")
    mask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(MaskedMeanMaxPool()(x, mask).numpy(), [[2.0, 3.0], [0.0, 0.0]])


def test_train_warmup_share_schedules_the_default_optimizer():
    from kemdy_tf import stages
    from kemdy_tf.config import RunConfig

    cfg = RunConfig()
    assert float(stages.get("audio_clf").make_optimizer(cfg, 100).learning_rate) == pytest.approx(1e-3)
    cfg.train.warmup_share, cfg.train.learning_rate = 0.1, 2e-3
    assert float(stages.get("audio_clf").make_optimizer(cfg, 100).learning_rate) == 0.0  # warming up
    from kemdy_tf.models.schedules import warmup_cosine

    schedule = warmup_cosine(2e-3, 0.1, 100)
    assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(2e-3)
    assert float(schedule(55)) == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5), rel=1e-3)
    assert float(schedule(100)) == pytest.approx(1e-4, rel=1e-3)


def test_text_recipe_optimizer_and_smoothed_loss():
    from kemdy_tf.models.text_encoder import text_classification_loss, text_optimizer

    cfg = TextEncoderConfig(label_smoothing=0.1, weight_decay=0.01, warmup_share=0.1)
    optimizer = text_optimizer(cfg, 1e-3, total_steps=100)
    assert float(optimizer.learning_rate) == 0.0  # warmup starts at zero
    loss = text_classification_loss(cfg, 2)
    value = float(loss(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]], "float32")))
    assert value > 0.0, "label smoothing penalises certain predictions"
    assert keras.losses.deserialize(keras.losses.serialize(loss)).label_smoothing == 0.1
    plain = text_classification_loss(TextEncoderConfig(label_smoothing=0.0), 2)
    assert float(plain(np.array([0]), np.array([[0.9, 0.1]], "float32"))) == pytest.approx(-np.log(0.9), rel=1e-5)
