"""Staged training: files each stage writes, resume after SIGKILL, mirrored strategy, seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import set_args

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "happy", "sad", "angry", "surprise"]


def run_train(*args):
    from train import main

    return main([str(a) for a in args])


def test_every_stage_writes_model_history_config_and_summary(trained_run):
    table = pd.read_csv(trained_run / "table.csv")
    assert set(table["split"]) >= {"train", "val", "test"}
    assert (trained_run / "tokenizer.model").exists()
    for stage in ("audio", "text", "fusion", "audio_clf", "text_clf"):
        folder = trained_run / stage
        for name in ("model.keras", "history.csv", "config.json", "summary.json"):
            assert (folder / name).exists(), f"{stage}/{name} missing"
        history = pd.read_csv(folder / "history.csv")
        assert list(history["epoch"]) == [0, 1]
        assert (folder / "logs").is_dir()
        assert not (folder / "backup").exists(), "a finished stage leaves no backup behind"
        summary = json.loads((folder / "summary.json").read_text())
        val = table[(table["split"] == "val") & table["emotion"].isin(CLASSES)]
        assert summary["n"] == len(val)
        if stage in ("audio", "text"):
            assert np.isfinite(summary["model"]["rmse"]) and summary["baseline"]["rmse"] > 0
            assert summary["baseline"]["ccc"] == pytest.approx(0.0)
        else:
            # the majority baseline predicts one class: UA = 1 / classes present in val
            n_present = val["emotion"].nunique()
            assert summary["baseline"]["balanced_accuracy"] == pytest.approx(1 / n_present)
            assert sum(summary["model"]["per_class"][c]["support"] for c in CLASSES) == len(val)


def test_finished_stages_are_skipped_on_rerun(trained_run, train_args, capsys):
    before = (trained_run / "audio" / "model.keras").stat().st_mtime_ns
    assert run_train("--stage", "audio", *train_args(trained_run)) == 0
    assert (trained_run / "audio" / "model.keras").stat().st_mtime_ns == before


def test_fusion_without_encoders_is_a_clear_error(tmp_path, train_args, capsys):
    code = run_train("--stage", "fusion", *train_args(tmp_path / "w"))
    assert code == 2
    err = capsys.readouterr().err
    assert "audio encoder" in err and "--from-scratch" in err


def test_workdir_refuses_different_data_settings(trained_run, train_args, capsys):
    code = run_train("--stage", "audio", *train_args(trained_run, "--set", "features.n_mels=64"))
    assert code == 2
    assert "different features settings" in capsys.readouterr().err


def test_training_resumes_after_sigkill(tmp_path, train_args):
    """Kill the run after its first epoch; the same command continues, it does not restart."""
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage", "audio",
           *train_args(workdir, "--set", "train.epochs=4", "--set", "train.patience=10")]
    history = workdir / "audio" / "history.csv"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().strip().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = len(pd.read_csv(history))
    assert 1 <= killed_after < 4
    assert (workdir / "audio" / "backup").exists()

    subprocess.run(cmd, cwd=tmp_path, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    epochs = list(pd.read_csv(history)["epoch"])
    assert epochs == [0, 1, 2, 3], f"resumed run logged epochs {epochs}"
    assert (workdir / "audio" / "summary.json").exists()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, train_args):
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage", "audio",
           *train_args(workdir, "--strategy", "mirrored", "--logical-cpus", "2", "--set", "train.epochs=1")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas" in out.stdout
    assert len(pd.read_csv(workdir / "audio" / "history.csv")) == 1


def test_same_seed_repeats_a_cpu_run(tmp_path, train_args):
    """The same command and seed twice: the same weights and the same validation metrics,
    for every stage (the README's numbers depend on it)."""
    import keras

    import kemdy_tf  # noqa: F401  registers the custom layers

    summaries, weights = [], []
    for name in ("a", "b"):
        assert run_train("--stage", "all", *train_args(tmp_path / name, "--cache-dir", tmp_path / "cache",
                                                       "--seed", "7", "--epochs", "1")) == 0
        summaries.append({stage: json.loads((tmp_path / name / stage / "summary.json").read_text())["model"]
                          for stage in ("audio", "text", "fusion", "audio_clf", "text_clf")})
        weights.append(keras.saving.load_model(tmp_path / name / "fusion" / "model.keras").get_weights())
    assert summaries[0] == summaries[1]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_init_from_continues_training_on_a_new_manifest(trained_run, tmp_path, tiny_overrides):
    """`--init-from RUN/fusion/model.keras --manifest NEW.csv`: the loss falls, the weights change."""
    import keras

    import kemdy_tf  # noqa: F401
    from kemdy_tf.data.manifest import write_manifest

    table = pd.read_csv(trained_run / "table.csv", keep_default_na=False)
    new = table[table["augmented_from"] == ""].drop(columns=["split"])
    new = new.assign(valence=pd.to_numeric(new["valence"]), arousal=pd.to_numeric(new["arousal"]))
    manifest = write_manifest(new, tmp_path / "new" / "manifest.csv")
    start = trained_run / "fusion" / "model.keras"
    before = keras.saving.load_model(start).get_weights()

    assert run_train("--stage", "fusion", "--init-from", start, "--manifest", manifest,
                     "--workdir", tmp_path / "tuned", "--no-export", *set_args(tiny_overrides),
                     "--set", "train.epochs=3", "--set", "train.patience=10") == 0
    # the old run's token ids are kept
    assert (tmp_path / "tuned" / "tokenizer.model").read_bytes() == \
        (trained_run / "tokenizer.model").read_bytes()
    loss = list(pd.read_csv(tmp_path / "tuned" / "fusion" / "history.csv")["loss"])
    assert loss[-1] < loss[0], f"training loss did not fall: {loss}"
    after = keras.saving.load_model(tmp_path / "tuned" / "fusion" / "model.keras").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_sweep_trains_one_model_per_value(tmp_path, train_args):
    assert run_train("--sweep", "audio.n_layers=1,2", *train_args(tmp_path / "run", "--epochs", "1")) == 0
    for value in ("1", "2"):
        stage = tmp_path / "run" / "sweeps" / "audio.n_layers" / value / "audio"
        config = json.loads((stage / "config.json").read_text())
        assert config["config"]["audio"]["n_layers"] == int(value)
        assert (stage / "summary.json").exists()
    # a sweep of an audio field trains only the audio encoder
    assert not (tmp_path / "run" / "sweeps" / "audio.n_layers" / "1" / "fusion").exists()
    assert (tmp_path / "cache").is_dir(), "sweeps share one feature cache beside the workdir"


@pytest.mark.slow
def test_folds_are_session_disjoint_runs(tmp_path, train_args):
    assert run_train("--stage", "audio", "--folds", "3", *train_args(tmp_path / "run", "--epochs", "1")) == 0
    tested = []
    for fold in range(3):
        table = pd.read_csv(tmp_path / "run" / "folds" / f"fold{fold}" / "table.csv", keep_default_na=False)
        sessions = table.groupby("split")["session"].unique()
        assert not set(sessions["test"]) & set(sessions["train"])
        tested += list(sessions["test"])
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 3


def test_output_is_one_line_per_epoch_and_the_summary(tmp_path, trained_run, train_args):
    """No library chatter: no TensorFlow start-up lines, no Keras input-structure or
    shuffle warnings, no absl INFO; one line per epoch, then the stage summary."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage", "text_clf", "--from-scratch",
           *train_args(tmp_path / "run", "--cache-dir", trained_run.parent / "cache", "--epochs", "2")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("Expected:", "shuffle=True", "cudart_stub", "oneDNN", "absl", "I0000", "UserWarning"):
        assert noise not in done.stdout + done.stderr, f"{noise!r} in the output:\n{done.stderr[-3000:]}"
    epochs = [line for line in done.stdout.splitlines() if line.startswith("text_clf epoch ")]
    assert [line.split()[2] for line in epochs] == ["1/2", "2/2"]
    assert "val_loss" in epochs[0]
    assert "== text_clf: validation split" in done.stdout
    assert len(done.stdout.strip().splitlines()) <= 12, done.stdout
