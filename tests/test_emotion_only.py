"""A corpus with emotion labels only (no arousal/valence) trains end to end and exports.

The default run checks the two parts cheaply (the rating stages skip themselves; an
export without encoders answers NaN ratings); the whole `--stage all` run is slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import set_args


@pytest.fixture(scope="module")
def emotion_only_manifest(synthetic_root, tmp_path_factory):
    from kemdy_tf.data import kemdy20, manifest

    table, _ = kemdy20.read_kemdy20(synthetic_root)
    table = table.assign(arousal=np.nan, valence=np.nan)
    return manifest.write_manifest(table, tmp_path_factory.mktemp("emotion_only") / "manifest.csv")


def test_the_rating_stages_skip_themselves_without_ratings(emotion_only_manifest, tiny_config, shared_cache,
                                                          tmp_path, capsys):
    from kemdy_tf import run as run_lib, training

    run = run_lib.prepare_run(tmp_path / "run", {"manifest": emotion_only_manifest}, tiny_config,
                              cache_dir=shared_cache)
    for stage, target in (("audio", "arousal"), ("text", "valence")):
        summary = training.train_stage(run, stage)
        assert summary == {"stage": stage, "skipped": f"no {target} values in the training split"}
        assert f"stage {stage} skipped" in capsys.readouterr().out
        assert not (tmp_path / "run" / stage / "model.keras").exists()


def test_an_export_without_encoders_answers_nan_ratings_and_says_so(tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  the serving signature's tokenizer ops

    from kemdy_tf import export
    from test_export import build_tiny_run, tiny_trained

    config, models, _ = build_tiny_run(tmp_path / "run")
    version = export.export_models(tiny_trained(tmp_path / "run", config,
                                                {"audio": None, "text": None, "fusion": models["fusion"]}),
                                   tmp_path / "exports")
    assert export.read_metadata(version)["ratings_trained"] == []
    served = tf.saved_model.load(str(version)).signatures["serving_default"]
    result = served(waveform=tf.zeros([1, 16000]), waveform_length=tf.constant([16000]),
                    text=tf.constant(["그냥 그래요"]))
    assert result["emotion_probs"].shape == (1, 5)
    assert np.isnan(result["arousal"].numpy()).all() and np.isnan(result["valence"].numpy()).all()


@pytest.mark.slow  # ~65 s: three classifier fits and an export; the two tests above check its parts
def test_stage_all_skips_the_rating_encoders_and_exports_emotion_with_nan_ratings(
        emotion_only_manifest, tiny_overrides, shared_cache, tmp_path, capsys):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  the serving signature's tokenizer ops

    from train import main

    workdir, exports = tmp_path / "run", tmp_path / "exports"
    code = main(["--stage", "all", "--manifest", str(emotion_only_manifest), "--workdir", str(workdir),
                 "--export-dir", str(exports), "--cache-dir", str(shared_cache), *set_args(tiny_overrides),
                 "--epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "stage audio skipped" in out and "'arousal'" in out
    assert "stage text skipped" in out and "'valence'" in out
    for stage in ("fusion", "audio_clf", "text_clf"):
        assert (workdir / stage / "model.keras").is_file()
    assert not (workdir / "audio" / "model.keras").exists()
    (version,) = list(exports.iterdir())
    metadata = json.loads((version / "assets" / "kemdy_tf.json").read_text())
    assert metadata["ratings_trained"] == []
    served = tf.saved_model.load(str(version)).signatures["serving_default"]
    result = served(waveform=tf.zeros([1, 16000]), waveform_length=tf.constant([16000]),
                    text=tf.constant(["그냥 그래요"]))
    assert result["emotion_probs"].shape == (1, 5)
    assert np.isnan(result["arousal"].numpy()).all() and np.isnan(result["valence"].numpy()).all()


def test_the_fusion_model_reads_the_functionals_where_its_audio_backbone_starts_from_scratch(
        emotion_only_manifest, tiny_config, shared_cache, trained_run, tmp_path, capsys):
    """fusion.functionals_in_fusion=auto: decided per run and printed. No arousal ratings (no
    audio encoder to start from): the fusion model reads the functionals; on a run whose audio
    encoder was trained: it does not, as on the synthetic main job."""
    from kemdy_tf import run as run_lib, stages, training
    from kemdy_tf.config import reads_functionals

    fusion = stages.get("fusion")
    emotion_only = run_lib.prepare_run(tmp_path / "run", {"manifest": emotion_only_manifest}, tiny_config,
                                       cache_dir=shared_cache)
    decided, why = training._functionals_in_fusion(emotion_only, fusion, False, None)
    assert why["value"] and reads_functionals(decided.config.fusion, fusion.modalities)
    assert "utterance functionals read by the fusion model" in capsys.readouterr().out
    with_encoder = run_lib.open_run(trained_run)
    decided, why = training._functionals_in_fusion(with_encoder, fusion, False, None)
    assert not why["value"] and not reads_functionals(decided.config.fusion, fusion.modalities)
    assert training._functionals_in_fusion(with_encoder, fusion, True, None)[1]["value"]  # --from-scratch
    assert training._functionals_in_fusion(with_encoder, stages.get("audio_clf"), False, None)[1] is None
