"""The LiteRT export: `python -m kemdy_tf.export --litert` runs in the ai-edge-litert
interpreter and answers what the Keras models answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_export import build_tiny_run, clips, keras_reference

from kemdy_tf import export, litert


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    root = tmp_path_factory.mktemp("litert")
    config, models, tokenizer = build_tiny_run(root / "run")
    assert export.main(["--workdir", str(root / "run"), "--litert", "--out", str(root / "lite")]) == 0
    return {"root": root, "config": config, "models": models, "tokenizer": tokenizer,
            "export": root / "lite" / "1"}


def test_writes_a_version_folder_with_model_metadata_and_tokenizer(lite):
    target = lite["export"]
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [litert.MODEL_FILE, litert.METADATA_FILE, litert.TOKENIZER_FILE])
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # no temporary folder left
    metadata = json.loads((target / litert.METADATA_FILE).read_text(encoding="utf-8"))
    assert metadata["classes"] == list(lite["config"].data.classes)
    assert metadata["signature"]["window_samples"] == litert.window_samples(lite["config"].features)


def test_interpreter_matches_the_keras_models(lite):
    config = lite["config"]
    waves = clips(config.features.sample_rate)
    texts = ["정말 화가 나요", "", "오늘 날씨가 좋네요 깜짝"]
    reference = keras_reference(lite["models"], lite["tokenizer"], config, waves, texts)
    tokenizer_file = lite["export"] / litert.TOKENIZER_FILE
    runner, metadata = litert.load(lite["export"].parent)  # the base folder: its highest version
    for i, (wave, text) in enumerate(zip(waves, texts)):
        ids = litert.token_ids(text, tokenizer_file, config.features.max_tokens)
        np.testing.assert_array_equal(ids, reference["token_ids"][i])  # the device-side tokenization
        out = litert.predict(runner, metadata, wave, ids)
        np.testing.assert_allclose(out["emotion_probs"][0], reference["emotion_probs"][i], atol=1e-3)
        np.testing.assert_allclose(out["arousal"][0], reference["arousal"][i], atol=1e-3)
        np.testing.assert_allclose(out["valence"][0], reference["valence"][i], atol=1e-3)


def test_refuses_options_it_does_not_take_and_folders_without_a_model(lite, tmp_path, capsys):
    assert export.main(["--workdir", str(lite["root"] / "run"), "--litert", "--features-only",
                        "--out", str(tmp_path / "x")]) == 1
    assert "--litert takes neither" in capsys.readouterr().err
    with pytest.raises(export.ExportError, match="not a kemdy_tf LiteRT export"):
        litert.load(tmp_path)
