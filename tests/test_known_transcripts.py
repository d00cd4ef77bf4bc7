"""The text expert's vote on known transcripts only (models.known_transcripts, fusion_experts):
the in-graph fingerprint equals the numpy one whatever the padding, the mask saves and loads,
and the fusion stage decides from the validation split whether new sentences get a vote."""

import keras
import numpy as np
import pytest

from kemdy_tf import fusion_experts
from kemdy_tf.models.known_transcripts import KnownTranscriptMask, fingerprints


def _mask_model(known_ids):
    layer = KnownTranscriptMask(len(known_ids), name="text_clf_evidence")
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    model = keras.Model(ids, layer(ids))
    layer.set_known(fingerprints(known_ids))
    return model


def test_a_known_transcript_keeps_its_padding_mask_and_a_new_one_loses_it(tmp_path):
    model = _mask_model(np.array([[5, 9, 0], [7, 0, 0]]))
    batch = np.array([[5, 9, 0, 0, 0], [5, 9, 3, 0, 0], [9, 5, 0, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]], "int32")
    expected = np.array([[1, 1, 0, 0, 0], [0] * 5, [0] * 5, [1, 0, 0, 0, 0], [0] * 5], bool)
    np.testing.assert_array_equal(model(batch), expected)  # the order of the ids counts, not only the set
    np.testing.assert_array_equal(model(batch[:, :3]), expected[:, :3])  # any padded length
    model.save(tmp_path / "mask.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "mask.keras")(batch), expected)


def test_fingerprints_ignore_padding_and_tell_long_transcripts_apart():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 8000, (2000, 64))
    padded = np.concatenate([ids, np.zeros((2000, 30), int)], axis=1)
    np.testing.assert_array_equal(fingerprints(ids), fingerprints(padded))
    assert len(np.unique(fingerprints(ids))) == 2000
    with pytest.raises(ValueError, match="holds 2 fingerprints"):
        _mask_model(np.array([[1], [2]])).layers[-1].set_known([1, 2, 3])


def test_the_text_expert_votes_on_new_sentences_only_where_validation_holds_them(monkeypatch):
    train = fingerprints(np.array([[1, 2], [3, 4], [5, 6]]))
    repeats = fingerprints(np.array([[1, 2], [3, 4]] * 10 + [[9, 9]]))  # one new sentence among 21
    new = fingerprints(np.arange(1, 41).reshape(20, 2))
    present = np.ones(21, bool)

    def split(values):
        return lambda run, name, tokenizer: train if name == "train" else values

    monkeypatch.setattr(fusion_experts, "_split_fingerprints", split(repeats))
    known, report, voted = fusion_experts._known_transcripts(None, None, present)
    assert report["votes_on"] == "training transcripts only" and report["new_in_validation"] == 1
    np.testing.assert_array_equal(np.sort(known), np.sort(train))
    assert voted.sum() == 20 and not voted[-1]  # the new sentence is fitted as no transcript too
    monkeypatch.setattr(fusion_experts, "_split_fingerprints", split(new))
    known, report, voted = fusion_experts._known_transcripts(None, None, np.ones(20, bool))
    assert known is None and report["votes_on"] == "every transcript" and voted.all()


def _tiny_experts():
    """A cross-modal stand-in and two classifiers with the inputs and outputs `combine` expects."""
    def softmax_head(x, name):
        return {"emotion": keras.layers.Dense(3, activation="softmax", name=name)(x)}

    mel = keras.Input((None, 4), name="log_mel")
    network = keras.Model({"log_mel": mel}, softmax_head(keras.layers.GlobalAveragePooling1D()(mel), "net"))
    mel = keras.Input((None, 4), name="log_mel")
    frames = keras.Input((None,), dtype="bool", name="frame_mask")
    masked = keras.layers.Lambda(lambda t: t[0] * keras.ops.cast(t[1], "float32")[..., None])([mel, frames])
    audio = keras.Model({"log_mel": mel, "frame_mask": frames},
                        softmax_head(keras.layers.GlobalAveragePooling1D()(masked), "audio"))
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    text = keras.Model({"token_ids": ids},
                       softmax_head(keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4)(ids)), "text"))
    return network, {"audio_clf": audio, "text_clf": text}


def test_a_combined_model_answers_a_new_transcript_with_its_audio_only_weights():
    from scipy.special import softmax

    keras.utils.set_random_seed(0)
    network, classifiers = _tiny_experts()
    weights = [[1.0, 0.0, 0.0], [0.6, 0.9, 0.0], [0.5, 0.0, 0.8], [0.4, 0.7, 1.0]]  # neither, audio, text, both
    bias = [[0.0, 0.1, -0.1], [0.2, 0.0, -0.2], [0.0, -0.3, 0.3], [0.1, 0.1, -0.2]]
    sharpness = [1.0, 1.5, 0.7, 2.0]
    known = np.array([[3, 4, 5, 0]])
    model = fusion_experts.combine(network, classifiers, weights, bias, sharpness,
                                   known_transcripts=fingerprints(known))
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(2, 6, 4)).astype("float32")
    frames = np.ones((2, 6), bool)
    ids = np.array([[3, 4, 5, 0], [3, 4, 6, 0]], "int32")  # the known transcript, a new one
    answer = model.predict({"log_mel": mel, "frame_mask": frames, "token_ids": ids}, verbose=0)["emotion"]
    logs = np.log(np.clip(np.stack([network.predict({"log_mel": mel}, verbose=0)["emotion"],
                                    classifiers["audio_clf"].predict({"log_mel": mel, "frame_mask": frames},
                                                                     verbose=0)["emotion"],
                                    classifiers["text_clf"].predict({"token_ids": ids}, verbose=0)["emotion"]],
                                   axis=1), 1e-7, 1))
    for row, pattern in ((0, 3), (1, 1)):  # both modalities; audio only (the text expert abstains)
        expected = softmax(sharpness[pattern] * (np.asarray(bias[pattern]) + np.asarray(weights[pattern]) @ logs[row]))
        np.testing.assert_allclose(answer[row], expected, rtol=1e-5, atol=1e-6)
    plain = fusion_experts.combine(network, classifiers, weights, bias, sharpness)  # every transcript votes
    voted = plain.predict({"log_mel": mel, "frame_mask": frames, "token_ids": ids}, verbose=0)["emotion"]
    np.testing.assert_allclose(voted[0], answer[0], rtol=1e-5)
    assert np.abs(voted[1] - answer[1]).max() > 1e-3
