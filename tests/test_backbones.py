"""Pretrained keras-hub backbones (models.backbones) from local presets, never the network.

The presets are tiny, randomly initialised backbones of the real keras-hub classes
(XLM-RoBERTa with a SentencePiece proto trained here, BERT with a small WordPiece
vocabulary, Whisper with its audio converter), written with `save_to_preset` into a
temporary folder: the same files a downloaded preset holds, at a size that trains in
seconds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import set_args
from test_export import assert_matches, clips, run_client

TEXTS = ["안녕하세요 반갑습니다", "오늘 날씨가 정말 좋네요", "정말 화가 나요", "너무 슬퍼서 울었어요",
         "깜짝 놀랐어요 진짜", "그냥 그래요", "기분이 좋아요", "왜 그랬어요"]
HIDDEN = 16


def _xlm_roberta_proto() -> bytes:
    import sentencepiece as spm

    buffer = io.BytesIO()
    # XLM-RoBERTa's proto layout: <unk> 0, <s> 1, </s> 2 (the tokenizer shifts ids by one).
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 4), model_writer=buffer, model_type="unigram", vocab_size=60,
        hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """Local preset folders {"xlm_roberta", "bert", "whisper"} of tiny random backbones."""
    import keras_hub

    root = tmp_path_factory.mktemp("presets")
    tokenizer = keras_hub.models.XLMRobertaTokenizer(proto=_xlm_roberta_proto())
    keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=1, num_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=32, max_sequence_length=64).save_to_preset(str(root / "xlm_roberta"))
    tokenizer.save_to_preset(str(root / "xlm_roberta"))

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({c for t in TEXTS for c in t if c != " "})]
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32,
        max_sequence_length=64).save_to_preset(str(root / "bert"))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary).save_to_preset(str(root / "bert"))

    keras_hub.models.WhisperBackbone(
        vocabulary_size=8, num_layers=1, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32,
        max_decoder_sequence_length=8).save_to_preset(str(root / "whisper"))
    keras_hub.layers.WhisperAudioConverter().save_to_preset(str(root / "whisper"))
    return {name: str(root / name) for name in ("xlm_roberta", "bert", "whisper")}


# === Registry and front ends ===


def test_each_preset_finds_its_family_and_an_unsupported_one_is_named(presets):
    import keras_hub

    from kemdy_tf.models import backbones

    assert backbones.family_of(backbones.TEXT_FAMILIES, keras_hub.models.XLMRobertaBackbone).name == "xlm_roberta"
    assert backbones.family_of(backbones.TEXT_FAMILIES, keras_hub.models.DistilBertBackbone).name == "distil_bert"
    with pytest.raises(backbones.BackboneError, match="GPT2Backbone is not a supported backbone.*xlm_roberta"):
        backbones.family_of(backbones.TEXT_FAMILIES, keras_hub.models.GPT2Backbone)
    with pytest.raises(backbones.BackboneError, match="XLMRobertaBackbone is not a supported backbone.*whisper"):
        backbones.build_audio_backbone(presets["xlm_roberta"], n_mels=80, max_frames=100)  # a text preset


def test_a_missing_preset_folder_says_what_a_preset_may_be(tmp_path):
    from kemdy_tf.models import backbones

    with pytest.raises(backbones.BackboneError, match="local preset folder written by save_to_preset"):
        backbones.load_backbone(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("family, pad_id", [("xlm_roberta", 1), ("bert", 0)])
def test_preset_tokenizer_packs_like_the_seed_with_pad_zero(presets, family, pad_id, tmp_path):
    import tensorflow as tf

    from kemdy_tf.models import backbones
    from kemdy_tf.models.tokenizer import PresetTokenizer, load_run_tokenizer, swap_pad_id

    tokenizer = backbones.load_preset_tokenizer(presets[family], 12)
    assert tokenizer.pad_id == pad_id and tokenizer.sequence_length == 12
    ids = tokenizer(tf.constant(["정말 화가 나요", "", "  ", "오늘 날씨가 정말 좋네요 " * 5])).numpy()
    assert ids.shape == (4, 12) and ids.dtype == np.int32
    hub = tokenizer.tokenizer
    own = np.asarray(swap_pad_id(ids, pad_id))  # the backbone's own ids
    assert own[0, 0] == hub.start_token_id and hub.end_token_id in own[0] and ids[0, -1] == 0
    assert not ids[1:3].any()  # no transcript: an all-pad row
    assert ids[3, -1] == (hub.end_token_id if hub.end_token_id != pad_id else 0) and ids[3].all()  # cut, end kept
    saved = PresetTokenizer(hub, 12).save(tmp_path / "tokenizer")
    again = load_run_tokenizer(saved, 12)
    np.testing.assert_array_equal(again(tf.constant(["정말 화가 나요"])).numpy(), ids[:1])


def test_whisper_backbone_ignores_padding_and_keeps_the_frame_rate(presets):
    from kemdy_tf.models import backbones

    backbone = backbones.build_audio_backbone(presets["whisper"], n_mels=80, max_frames=512)
    rng = np.random.default_rng(0)
    log_mel = rng.normal(size=(2, 41, 80)).astype("float32")
    mask = np.zeros((2, 41), bool)
    mask[0, :41], mask[1, :17] = True, True
    batch = np.asarray(backbone({"log_mel": log_mel, "frame_mask": mask}))
    alone = np.asarray(backbone({"log_mel": log_mel[1:, :17], "frame_mask": mask[1:, :17]}))
    assert batch.shape == (2, 41, HIDDEN)
    np.testing.assert_allclose(batch[1, :17], alone[0], atol=1e-5)
    assert not batch[1, 17:].any()
    garbage = log_mel.copy()
    garbage[1, 17:] = 1e6
    np.testing.assert_allclose(np.asarray(backbone({"log_mel": garbage, "frame_mask": mask})), batch, atol=1e-5)
    with pytest.raises(backbones.BackboneError, match="max_frames=4000 exceeds the 3000"):
        backbones.build_audio_backbone(presets["whisper"], n_mels=80, max_frames=4000)


def test_cached_converter_features_equal_the_served_ones(presets, tmp_path):
    import pandas as pd
    import soundfile as sf

    from kemdy_tf.config import FeatureConfig
    from kemdy_tf.data.features import FeatureCache
    from kemdy_tf.models import backbones

    front_end = backbones.ConverterFeatures(backbones.load_audio_converter(presets["whisper"]), max_frames=150)
    waves = clips(16000, seconds=(0.7, 2.0))  # 2 s is past max_frames: cut
    paths = []
    for i, wave in enumerate(waves):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], wave, 16000, subtype="FLOAT")
    cache = FeatureCache(tmp_path / "cache", FeatureConfig(), front_end=front_end)
    assert cache.build(pd.DataFrame({"wav_path": [str(p) for p in paths]}), progress=False) == []
    assert cache.folder.name.startswith("features-") and cache.n_mels == 80
    cached = [cache.read(p) for p in paths]
    assert [len(c) for c in cached] == [71, 150]
    batch = np.zeros((2, 32000), np.float32)
    batch[0, :len(waves[0])], batch[0, len(waves[0]):] = waves[0], 9.0  # garbage past the clip
    batch[1] = waves[1]
    served, frames = front_end.in_graph(batch, np.array([len(waves[0]), len(waves[1])]))
    assert list(np.asarray(frames)) == [71, 150]
    for i in range(2):
        np.testing.assert_allclose(np.asarray(served)[i, : len(cached[i])], cached[i], atol=1e-4)
    assert not np.asarray(served)[0, 71:].any()


# === Stage models on pretrained backbones: export, serve, reload ===


class _StandInRun:
    """What the stage builders read from a run (config, tokenizer, encoder paths), untrained."""

    def __init__(self, config, workdir, tokenizer):
        self.config, self.workdir, self._tokenizer = config, workdir, tokenizer

    def tokenizer(self):
        return self._tokenizer

    def vocab_size(self):
        return self._tokenizer.vocabulary_size()

    def model_path(self, stage):
        return self.workdir / stage / "model.keras"


@pytest.fixture(scope="module")
def stage_models(tmp_path_factory, presets, tiny_model_overrides):
    """The audio, text and fusion models the stage registry builds on the XLM-R and Whisper presets."""
    from kemdy_tf import stages
    from kemdy_tf.config import make_config
    from kemdy_tf.models import backbones

    root = tmp_path_factory.mktemp("backbone_stages")
    config = make_config("small", [*tiny_model_overrides, f"text.backbone={presets['xlm_roberta']}",
                                   f"audio.backbone={presets['whisper']}", "features.max_frames=160",
                                   "features.max_tokens=24"])
    front_end = backbones.ConverterFeatures(backbones.load_audio_converter(config.audio.backbone), 160)
    config.features = dataclasses.replace(config.features, **front_end.feature_fields())  # as prepare_run does
    tokenizer = backbones.load_preset_tokenizer(config.text.backbone, config.features.max_tokens)
    run = _StandInRun(config, root, tokenizer)
    models = {}
    for name in ("audio", "text", "fusion"):
        models[name] = stages.get(name).build(run, name)
        if name != "fusion":
            run.model_path(name).parent.mkdir()
            models[name].save(run.model_path(name))
    return {"run": run, "models": models, "tokenizer_path": tokenizer.save(root / "tokenizer"),
            "front_end": front_end, "root": root}


def test_pretrained_backbones_are_frozen_unless_unfrozen(stage_models):
    from kemdy_tf import stages

    run, fusion = stage_models["run"], stage_models["models"]["fusion"]
    assert not fusion.get_layer("audio_backbone").trainable and not fusion.get_layer("text_backbone").trainable
    assert not stage_models["models"]["text"].get_layer("text_backbone").trainable  # the valence encoder's too
    tuned = stages.get("fusion").build(run, "fusion", unfreeze=True)
    extra = {w.path for w in tuned.trainable_weights} - {w.path for w in fusion.trainable_weights}
    assert "embeddings/token_embedding/embeddings" in extra  # XLM-R
    assert any(p.startswith("transformer_encoder_layer_0/") for p in extra), sorted(extra)  # Whisper
    assert "encoder_position_embedding/embeddings" not in extra  # fixed in every Whisper


def test_export_serves_raw_audio_and_text_through_the_presets_front_ends(stage_models, tmp_path):
    import keras

    from kemdy_tf import export
    from kemdy_tf.trained_run import TrainedRun

    run, models, front_end = stage_models["run"], stage_models["models"], stage_models["front_end"]
    config, classes = run.config, list(run.config.data.classes)
    trained = TrainedRun(config, stage_models["tokenizer_path"], models, audio_front_end=front_end)
    target = export.export_models(trained, tmp_path / "saved")
    metadata = export.read_metadata(target)
    assert metadata["tokenizer"]["backbone_pad_id"] == 1 and metadata["features"]["log_mel"]["num_mels"] == 80
    assert metadata["window_seconds"] == pytest.approx(1.6)  # 160 Whisper frames of 10 ms
    assert (target / "assets" / "vocabulary.spm").is_file()

    waves, texts = clips(config.features.sample_rate), ["정말 화가 나요", "", "오늘 날씨가 좋네요"]
    width = max(len(w) for w in waves)
    padded = np.stack([np.pad(w, (0, width - len(w))) for w in waves])
    log_mel, frames = (np.asarray(t) for t in front_end.in_graph(padded, np.array([len(w) for w in waves])))
    mask = np.arange(log_mel.shape[1])[None] < frames[:, None]
    ids = np.asarray(run.tokenizer()(np.array(texts)))
    audio_in = {"log_mel": log_mel, "frame_mask": mask}
    reference = {"emotion_probs": np.asarray(models["fusion"]({**audio_in, "token_ids": ids})["emotion"]),
                 "arousal": np.asarray(models["audio"](audio_in)["arousal"])[:, 0],
                 "valence": np.asarray(models["text"](ids)["valence"])[:, 0]}
    waveform_body = {"signature_name": "serving_default", "instances": [
        {"waveform": padded[i].tolist(), "waveform_length": len(w), "text": t}
        for i, (w, t) in enumerate(zip(waves, texts))]}
    features_body = {"signature_name": "features", "instances": [
        {"log_mel": log_mel[i].tolist(), "frame_count": int(frames[i]), "token_ids": ids[i].tolist()}
        for i in range(len(waves))]}

    result = run_client(tmp_path, {"export": str(target), "import_tf_text": True,
                                   "requests": [waveform_body, features_body]})

    assert "kemdy_tf" not in result["modules"] and "keras_hub" not in result["modules"]
    for response in result["responses"]:
        assert_matches(response, reference, classes)

    path = tmp_path / "fusion.keras"
    models["fusion"].save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(np.asarray(again({**audio_in, "token_ids": ids})["emotion"]),
                               reference["emotion_probs"], atol=1e-6)


# === A whole run on pretrained backbones (train.py), slow ===


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory, presets, train_args):
    """The fusion stage and the encoders it needs, trained one epoch on the XLM-R and Whisper presets."""
    from train import main

    workdir = tmp_path_factory.mktemp("backbone_run") / "run"
    overrides = [f"text.backbone={presets['xlm_roberta']}", f"audio.backbone={presets['whisper']}",
                 "features.max_frames=160", "features.max_tokens=24", "train.epochs=1"]
    for stage in ("audio", "text", "fusion"):
        assert main(["--stage", stage, *train_args(workdir), *set_args(overrides)]) == 0
    return workdir


@pytest.mark.slow
def test_a_run_trains_exports_and_reloads_on_pretrained_backbones(backbone_run, presets, tmp_path):
    import keras
    import keras_hub

    from kemdy_tf import export, run as run_lib

    run = run_lib.open_run(backbone_run)
    assert run.config.features.n_mels == 80  # the converter's, not the seed's 128
    assert (backbone_run / "tokenizer" / "tokenizer.json").is_file() and not (backbone_run / "tokenizer.model").exists()
    assert json.loads((backbone_run / "audio_converter.json").read_text())["class_name"] == "WhisperAudioConverter"
    assert run.cache.folder.name.startswith("features-")
    fusion = keras.saving.load_model(run.model_path("fusion"), compile=False)
    text = fusion.get_layer("text_backbone").get_layer("xlm_roberta_backbone")
    preset = keras_hub.models.Backbone.from_preset(presets["xlm_roberta"])
    for trained, original in zip(text.weights, preset.weights):  # frozen by default
        np.testing.assert_array_equal(np.asarray(trained), np.asarray(original))

    target = export.export_run(backbone_run, tmp_path / "saved")
    assert export.read_metadata(target)["backbones"]["text"] == presets["xlm_roberta"]
    code = ("import sys, keras, kemdy_tf, numpy as np\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "out = model({'log_mel': np.zeros((1, 9, 80), 'float32'), 'frame_mask': np.ones((1, 9), bool),\n"
            "             'token_ids': np.array([[1, 7, 2, 0]], 'int32')})\n"
            "assert np.isfinite(np.asarray(out['emotion'])).all()\n")
    done = subprocess.run([sys.executable, "-c", code, str(run.model_path("fusion"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
