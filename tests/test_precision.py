"""`train.precision`: mixed_bfloat16 training, float32 probabilities, float32 models on disk and in the export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kemdy_tf.config import check_precision, make_config
from kemdy_tf.models.precision import dtype_policy, is_mixed, with_policy

MIXED = "mixed_bfloat16"


def test_the_policy_is_restored_after_the_block_also_on_error():
    import keras

    before = keras.config.dtype_policy().name
    with dtype_policy(MIXED):
        assert keras.config.dtype_policy().name == MIXED
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError, match="boom"):
        with dtype_policy(MIXED):
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before
    with pytest.raises(ValueError, match="train.precision must be one of float32, mixed_bfloat16"):
        with dtype_policy("mixed_float16"):
            pass
    assert keras.config.dtype_policy().name == before


def test_bad_precision_is_refused_before_the_run_is_prepared(tmp_path, train_args, capsys):
    from train import main

    assert main(["--stage", "audio_clf", "--from-scratch", *train_args(tmp_path / "run"),
                 "--set", "train.precision=bf16"]) == 2
    err = capsys.readouterr().err
    assert "train.precision must be one of float32, mixed_bfloat16; got 'bf16'" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="got 'float16'"):
        check_precision("float16")


def test_mixed_models_keep_probabilities_ratings_and_positions_in_float32(tiny_config):
    from kemdy_tf.models import build_audio_encoder, build_fusion_model, build_text_encoder

    with dtype_policy(MIXED):
        audio = build_audio_encoder(tiny_config.audio, tiny_config.features)
        text = build_text_encoder(tiny_config.text, tiny_config.features, 50)
        fusion = build_fusion_model(audio.get_layer("audio_backbone"), text.get_layer("text_backbone"),
                                    tiny_config.fusion, len(tiny_config.data.classes))
    backbone = audio.get_layer("audio_backbone")
    assert backbone.get_layer("attention_block_1").compute_dtype == "bfloat16"
    assert backbone.get_layer("position_encoding").compute_dtype == "float32"
    for name in ("emotion", "voice_vote"):
        assert fusion.get_layer(name).compute_dtype == "float32"
    assert audio.get_layer("arousal").compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in fusion.weights)  # variables stay float32

    rng = np.random.default_rng(0)
    frames = 300  # above 256: a bfloat16 frame index or frame count would no longer be exact
    inputs = {"log_mel": rng.normal(size=(2, frames, tiny_config.features.n_mels)).astype("float32"),
              "frame_mask": np.arange(frames)[None] < np.array([[frames], [120]]),
              "token_ids": np.array([[5, 7, 9] + [0] * 61, [0] * 64], "int32")}
    probs = fusion(inputs)["emotion"]
    assert probs.dtype == "float32"
    probs = np.asarray(probs)
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    arousal = np.asarray(audio({k: inputs[k] for k in ("log_mel", "frame_mask")})["arousal"])
    assert arousal.dtype == np.float32 and np.all(np.isfinite(arousal))

    full = with_policy(fusion, "float32")  # same weights, float32 compute
    assert is_mixed(fusion) and not is_mixed(full)
    np.testing.assert_allclose(np.asarray(full(inputs)["emotion"]), probs, atol=0.05)


def test_statistics_pooling_is_exact_over_hundreds_of_bfloat16_frames():
    from kemdy_tf.models.layers import MaskedStatisticsPooling, UtteranceFunctionals
    from kemdy_tf.models.text_encoder import MaskedMeanMaxPool

    values = np.full((1, 300, 2), 0.5, "float32")
    values[0, ::2] = 1.5  # mean 1, std .5 over all 300 steps (exact in bfloat16)
    mask = np.ones((1, 300), bool)
    with dtype_policy(MIXED):
        pooled = MaskedStatisticsPooling()(values, mask)
        mean_max = MaskedMeanMaxPool()(values, mask)
        functionals = UtteranceFunctionals()(values, mask)
    assert pooled.dtype == "bfloat16" and functionals.dtype == "bfloat16"
    # mean, std, std of the +-1 steps (their mean is ~0), max, min
    np.testing.assert_allclose(np.asarray(functionals, "float32")[0, ::2], [1.0, 0.5, 1.0, 1.5, 0.5], atol=1e-2)
    np.testing.assert_allclose(np.asarray(pooled, "float32")[0], [1.0, 1.0, 0.5, 0.5], atol=1e-2)
    np.testing.assert_allclose(np.asarray(mean_max, "float32")[0], [1.0, 1.0, 1.5, 1.5], atol=1e-2)


@pytest.mark.slow  # a 35 s training run under mixed_bfloat16: the slow job runs it
def test_a_mixed_precision_run_trains_a_classifier_and_saves_it_float32(tmp_path, train_args):
    import keras

    from train import main

    workdir = tmp_path / "run"
    before = keras.config.dtype_policy().name
    assert main(["--stage", "audio_clf", "--from-scratch", *train_args(workdir),
                 "--set", f"train.precision={MIXED}"]) == 0
    assert keras.config.dtype_policy().name == before == "float32"

    stage = workdir / "audio_clf"
    assert json.loads((stage / "config.json").read_text())["config"]["train"]["precision"] == MIXED
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["split"] == "val" and 0.0 <= summary["model"]["macro_f1"] <= 1.0
    model = keras.saving.load_model(stage / "model.keras", compile=False)
    assert not is_mixed(model)  # the finished model is float32 on disk
    config = make_config("small", [])
    rng = np.random.default_rng(1)
    inputs = {"log_mel": rng.normal(size=(3, 80, config.features.n_mels)).astype("float32"),
              "frame_mask": np.arange(80)[None] < np.array([[80], [40], [5]])}
    if "speaker_functionals" in model.input:  # functionals standardised per speaker (the default)
        width = model.input["speaker_functionals"].shape[-1]
        inputs["speaker_functionals"] = np.stack([np.zeros((3, width)), np.ones((3, width))], axis=1).astype("float32")
    probs = np.asarray(model(inputs)["emotion"])
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_mixed_precision_checkpoint_exports_and_serves_in_float32(tmp_path):
    import tensorflow as tf

    from kemdy_tf import export
    from test_export import build_tiny_run, clips, keras_reference

    with dtype_policy(MIXED):  # the checkpoints of a run killed mid-training are mixed
        config, models, tokenizer = build_tiny_run(tmp_path / "run")
    assert all(is_mixed(m) for m in models.values())
    loaded = export.load_served_run(tmp_path / "run").models
    assert not any(is_mixed(m) for m in loaded.values())
    for stage, model in models.items():  # the weights came through
        for ours, theirs in zip(model.get_weights(), loaded[stage].get_weights()):
            np.testing.assert_array_equal(ours, theirs)

    target = export.export_run(tmp_path / "run", tmp_path / "saved")
    waves = clips(config.features.sample_rate, seconds=(0.6, 1.2))
    reference = keras_reference(loaded, tokenizer, config, waves, ["기분이 좋아요", ""])
    serve = tf.saved_model.load(str(target)).signatures["features"]
    out = serve(log_mel=tf.constant(reference["log_mel"]), frame_count=tf.constant(reference["frame_count"]),
                token_ids=tf.constant(reference["token_ids"]))
    assert out["emotion_probs"].dtype == tf.float32
    np.testing.assert_allclose(out["emotion_probs"], reference["emotion_probs"], atol=1e-4)
    np.testing.assert_allclose(out["arousal"], reference["arousal"], atol=1e-4)
    np.testing.assert_allclose(out["valence"], reference["valence"], atol=1e-4)
