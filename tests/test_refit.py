"""train.refit: after early stopping, the stage is trained again on training + validation
for the kept model's epochs, and that refit is what model.keras holds."""

import json

import numpy as np
import pandas as pd
import pytest

from kemdy_tf import training


def test_kept_epochs_is_the_first_best_epoch_counted_from_one(tmp_path):
    history = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [0, 1, 2, 3], "val_loss": [1.0, 0.5, 0.5, 0.7],
                  "val_ua": [0.2, 0.4, 0.6, 0.6]}).to_csv(history, index=False)
    assert training.kept_epochs(history, "val_loss", "min") == 2
    assert training.kept_epochs(history, "val_ua", "max") == 3
    with pytest.raises(training.TrainingError, match="val_f1"):
        training.kept_epochs(history, "val_f1", "max")


def test_refit_view_moves_validation_rows_into_training(trained_run):
    from kemdy_tf.run import open_run

    run = open_run(trained_run, with_features=False)
    merged = training.refit_view(run)
    assert len(merged.split("val")) == 0
    assert len(merged.split("train")) == len(run.split("train")) + len(run.split("val"))
    assert merged.split("test").equals(run.split("test"))
    assert len(run.split("val")) > 0  # the run itself is untouched


def _weights(path):
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


def _refit_args(train_args, workdir):
    return ["--stage", "text_clf", "--from-scratch", *train_args(
        workdir, "--epochs", "3", "--set", "train.refit=true")]


@pytest.fixture(scope="module")
def refitted(trained_run, train_args, tmp_path_factory):
    from train import main

    workdir = tmp_path_factory.mktemp("refit") / "refit"
    assert main(_refit_args(train_args, workdir)) == 0
    return workdir


def test_a_refit_stage_trains_its_kept_epochs_on_training_and_validation(refitted):
    stage = refitted / "text_clf"
    summary = json.loads((stage / "summary.json").read_text())
    history = pd.read_csv(stage / "history.csv")
    kept = int(history["val_loss"].idxmin()) + 1
    table = pd.read_csv(refitted / "table.csv", keep_default_na=False)
    train_val = table[table["split"].isin(["train", "val"])]
    assert summary["refit"] == {"epochs": kept, "rows": len(train_val), "early_stopped_model": "early_stopped.keras"}
    assert len(pd.read_csv(stage / "refit" / "history.csv")) == kept
    # the summary's validation figures are the early-stopped model's; the classical row,
    # fitted on the validation split too, is left out
    assert "classical" not in summary
    refit, early = _weights(stage / "model.keras"), _weights(stage / "early_stopped.keras")
    assert any(not np.array_equal(a, b) for a, b in zip(refit, early))
    assert not (stage / "refit" / "backup").exists() and not (stage / "backup").exists()


def test_the_classical_baseline_of_a_refit_run_fits_on_training_and_validation(refitted):
    import joblib

    from kemdy_tf.classical import labelled_rows

    model = joblib.load(refitted / "classical" / "model.joblib")
    rows = labelled_rows(pd.read_csv(refitted / "table.csv", keep_default_na=False), model.classes)
    assert model.models["audio"][0].n_samples_seen_ == rows["split"].isin(["train", "val"]).sum()


def test_a_classical_baseline_fitted_on_training_only_is_fitted_again_for_a_refit(trained_run, tmp_path):
    import joblib

    from conftest import copy_run
    from kemdy_tf import classical
    from kemdy_tf.run import open_run

    workdir = copy_run(trained_run, tmp_path / "run")
    run = open_run(workdir, with_features=False)
    rows = classical.labelled_rows(run.table, list(run.config.data.classes))
    seen = lambda: joblib.load(workdir / "classical" / "model.joblib").models["audio"][0].n_samples_seen_  # noqa: E731
    assert seen() == (rows["split"] == "train").sum()
    classical.fit_for_run(training.refit_view(run))
    assert seen() == rows["split"].isin(["train", "val"]).sum()
    classical.fit_for_run(run)  # and back
    assert seen() == (rows["split"] == "train").sum()


@pytest.mark.slow  # ~40 s: the gated slow job, beside the other killed refit
def test_a_refit_killed_before_its_model_is_in_place_finishes_like_an_uninterrupted_one(
        refitted, trained_run, train_args, monkeypatch, tmp_path):
    from train import main

    workdir = tmp_path / "refit_killed"
    args = _refit_args(train_args, workdir)
    real_copy = training.shutil.copy2

    def killed(*_):
        raise KeyboardInterrupt("killed between the refit and its renames")

    monkeypatch.setattr(training.shutil, "copy2", killed)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(training.shutil, "copy2", real_copy)
    assert not (workdir / "text_clf" / "summary.json").exists()
    assert main(args) == 0
    stage = workdir / "text_clf"
    assert len(pd.read_csv(stage / "refit" / "history.csv")) == json.loads(
        (stage / "summary.json").read_text())["refit"]["epochs"]
    for ours, theirs in zip(_weights(stage / "model.keras"), _weights(refitted / "text_clf" / "model.keras")):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~50 s; the test above resumes a killed refit too
def test_a_retrained_stage_does_not_resume_an_earlier_killed_refit(trained_run, train_args, tmp_path, monkeypatch):
    """--retrain (or any first fit starting afresh) drops what an earlier, killed refit left,
    so the new refit cannot resume from another run's weights."""
    from train import main

    workdir = tmp_path / "run"
    args = _refit_args(train_args, workdir)
    real_copy = training.shutil.copy2
    monkeypatch.setattr(training.shutil, "copy2", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(training.shutil, "copy2", real_copy)
    refit_history = workdir / "text_clf" / "refit" / "history.csv"
    killed = pd.read_csv(refit_history)
    assert (workdir / "text_clf" / "refit" / "backup").is_dir()  # a refit that a rerun would resume
    assert main([*args, "--retrain", "--set", "train.seed=1"]) == 0
    again = pd.read_csv(refit_history)
    summary = json.loads((workdir / "text_clf" / "summary.json").read_text())
    assert len(again) == summary["refit"]["epochs"]
    assert not np.allclose(again["loss"].iloc[: len(killed)], killed["loss"].iloc[: len(again)])  # trained anew
