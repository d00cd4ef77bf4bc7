"""Fusion never loses to its own audio when the transcript is a shortcut (slow: real training).

The scenario: training and validation transcripts name the emotion, test transcripts are
one fixed sentence (`kemdy_tf.data.scenarios`), so on the test split only the voice
carries the emotion. The fusion model must stay within 0.02 UA of the audio-only model,
with its transcript and with it blanked; on the normal synthetic split it must beat both
single-modality models.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

ALLOWED_LOSS = 0.02


def _ua(report: dict, model: str) -> float:
    return report["models"][model]["emotion"]["balanced_accuracy"]


def test_fusion_keeps_listening_when_the_training_transcript_is_a_shortcut(tmp_path):
    from evaluate import main as evaluate
    from kemdy_tf.data import scenarios, synthetic
    from train import main as train

    root = synthetic.generate(tmp_path / "synthetic", seed=0, sessions=6)
    manifest = scenarios.write_shortcut_manifest({"data": root}, tmp_path / "shortcut.csv",
                                                 ["neutral", "happy", "sad", "angry", "surprise"])
    workdir = tmp_path / "run"
    assert train(["--stage", "all", "--manifest", str(manifest), "--workdir", str(workdir), "--no-export"]) == 0
    assert evaluate(["--workdir", str(workdir), "--no-stt"]) == 0
    report = json.loads((workdir / "eval_test" / "report.json").read_text())
    audio = _ua(report, "audio_clf")
    assert _ua(report, "fusion") >= audio - ALLOWED_LOSS
    assert _ua(report, "fusion_no_text") >= audio - ALLOWED_LOSS


def test_fusion_beats_both_single_modalities_on_the_normal_split(tmp_path):
    from evaluate import main as evaluate
    from kemdy_tf.data import synthetic
    from train import main as train

    root = synthetic.generate(tmp_path / "synthetic", seed=0, sessions=6)
    workdir = tmp_path / "run"
    assert train(["--stage", "all", "--data", str(root), "--workdir", str(workdir), "--no-export"]) == 0
    assert evaluate(["--workdir", str(workdir), "--no-stt"]) == 0
    report = json.loads((workdir / "eval_test" / "report.json").read_text())
    assert _ua(report, "fusion") > max(_ua(report, "audio_clf"), _ua(report, "text_clf"))
