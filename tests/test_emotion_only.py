"""A corpus with emotion labels only (no arousal/valence) trains end to end and exports."""

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


def test_stage_all_skips_the_rating_encoders_and_exports_emotion_with_nan_ratings(
        emotion_only_manifest, tiny_overrides, tmp_path, capsys):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  the serving signature's tokenizer ops

    from train import main

    workdir, exports = tmp_path / "run", tmp_path / "exports"
    code = main(["--stage", "all", "--manifest", str(emotion_only_manifest), "--workdir", str(workdir),
                 "--export-dir", str(exports), *set_args(tiny_overrides), "--epochs", "1"])
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
