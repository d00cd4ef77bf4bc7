"""The export answers what the evaluation scored, on a real corpus's test split.

A tiny run on RAVDESS's fold 0 (4 held-out actors, 120 clips; per-speaker statistics and
the product of experts, as the defaults train them), exported and evaluated; the export,
given the statistics the evaluation used, must give the evaluation's probabilities within
1e-4 (`kemdy_tf.evaluation.served`). CI checks the synthetic main job's export the same way
after the main job (.ci/run). Skipped where ../shared/data/ravdess_speech_16k is absent.
"""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import REPO, set_args

RAVDESS = REPO.parent / "shared" / "data" / "ravdess_speech_16k" / "manifest.csv"
CLASSES = "neutral,calm,happy,sad,angry,fear,disgust,surprise"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RAVDESS.is_file(), reason=f"RAVDESS is not here ({RAVDESS})"),
]


def test_the_export_answers_what_the_evaluation_scored_on_a_ravdess_fold(tmp_path, tiny_model_overrides, capsys):
    from evaluate import main as evaluate
    from kemdy_tf.evaluation import served
    from train import main as train

    workdir, exports = tmp_path / "run", tmp_path / "saved"
    assert train(["--manifest", str(RAVDESS), "--workdir", str(workdir), "--stage", "all",
                  "--export-dir", str(exports), "--epochs", "1",
                  *set_args([*tiny_model_overrides, f"data.classes={CLASSES}", "data.folds=6", "data.fold=0"])]) == 0
    assert evaluate(["--workdir", str(workdir), "--no-stt", "--no-sweeps", "--no-folds"]) == 0

    frame = served.served_differences(workdir, exports)
    assert len(frame) == 120 and frame["speaker_statistics"].all()  # 4 actors x 30 clips, enrolled
    assert frame["max_abs_diff"].max() <= served.TOLERANCE
    assert served.main(["--workdir", str(workdir), "--export", str(exports)]) == 0
    assert "equal within 0.0001" in capsys.readouterr().out

    # The check can fail: one probability off by 1e-3 is reported, with exit status 1.
    predictions = workdir / "eval_test" / "predictions.csv"
    scored = pd.read_csv(predictions)
    row = scored.index[scored["model"] == "fusion"][0]
    scored.loc[row, "prob_neutral"] += 1e-3
    scored.to_csv(predictions, index=False)
    assert served.main(["--workdir", str(workdir), "--export", str(exports)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
