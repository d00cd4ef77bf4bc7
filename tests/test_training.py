"""Staged training: files each stage writes, resume after SIGKILL, mirrored strategy, seeds."""

from __future__ import annotations

import json
import os
import shutil
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


@pytest.mark.slow  # ~35 s; test_a_killed_run_finishes_like_... SIGKILLs at three points
def test_training_resumes_after_sigkill(tmp_path, train_args):
    """Kill the run after its first epoch; the same command continues, it does not restart."""
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage", "audio",
           *train_args(workdir, "--set", "train.epochs=4", "--set", "train.patience=10")]
    history = workdir / "audio" / "history.csv"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        # An epoch logged and its backup written (the two callbacks run one after the other).
        if history.exists() and len(history.read_text().strip().splitlines()) >= 2 \
                and (workdir / "audio" / "backup").exists():
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


@pytest.mark.slow  # ~30 s quiet, 50 s beside other jobs: a job of its own (.ci/slow.sh)
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, train_args):
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage", "audio",
           *train_args(workdir, "--strategy", "mirrored", "--logical-cpus", "2", "--set", "train.epochs=1")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas" in out.stdout
    assert len(pd.read_csv(workdir / "audio" / "history.csv")) == 1


@pytest.mark.slow  # two whole --stage all runs (~2-4 min): a job of its own (.ci/slow.sh)
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


def test_init_from_continues_training_on_a_new_manifest(trained_run, tmp_path, tiny_overrides, shared_cache):
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
                     "--workdir", tmp_path / "tuned", "--no-export", "--cache-dir", shared_cache,
                     *set_args(tiny_overrides), "--set", "train.epochs=5", "--set", "train.patience=10") == 0
    # the old run's token ids are kept
    assert (tmp_path / "tuned" / "tokenizer.model").read_bytes() == \
        (trained_run / "tokenizer.model").read_bytes()
    loss = list(pd.read_csv(tmp_path / "tuned" / "fusion" / "history.csv")["loss"])
    assert loss[-1] < loss[0], f"training loss did not fall: {loss}"
    tuned = keras.saving.load_model(tmp_path / "tuned" / "fusion" / "model.keras")
    after = tuned.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    # the backbones stay frozen without --unfreeze, as when the stage builds the model
    original = keras.saving.load_model(start)
    for name in ("audio_backbone", "text_backbone"):
        for a, b in zip(original.get_layer(name).get_weights(), tuned.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_sweep_trains_one_model_per_value(tmp_path, train_args):
    args = train_args(tmp_path / "run", "--epochs", "1")
    at = args.index("--cache-dir")
    del args[at:at + 2]  # the default cache: beside the workdir
    assert run_train("--sweep", "audio.n_layers=1,2", *args) == 0
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
           *train_args(tmp_path / "run", "--epochs", "2")]
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


# === Issue 13: a kill at any instant loses nothing ===

# Runs train.py and SIGKILLs it at the KILL_NTH os.replace onto a path matching KILL_AT:
# "before" the rename, with the new file cut to half (killed mid-write; every file a run
# writes goes through a temporary file and a rename), or right "after" it.
_KILLER = '''
import fnmatch, os, runpy, signal, sys
pattern, nth, when = os.environ["KILL_AT"], int(os.environ["KILL_NTH"]), os.environ["KILL_WHEN"]
real, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if fnmatch.fnmatch(str(dst), pattern):
        seen[0] += 1
        if seen[0] == nth:
            if when == "before":
                os.truncate(src, os.path.getsize(src) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture
def killable(tmp_path, train_args):
    """`(run(workdir, kill=None, extra=()), files(workdir, stage="text"))`: train.py on the
    text stage (`extra` arguments may name another), 3 epochs, one cache."""
    killer = tmp_path / "killer.py"
    killer.write_text(_KILLER)

    def run(workdir, kill=None, extra=()):
        args = train_args(workdir, "--stage", "text", "--cache-dir", tmp_path / "cache",
                          "--set", "train.epochs=3", "--set", "train.patience=10", *extra)
        env = dict(os.environ)
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
        if kill:
            pattern, nth, when = kill
            env.update(KILL_AT=str(workdir / pattern), KILL_NTH=str(nth), KILL_WHEN=when)
            cmd = [sys.executable, str(killer), *cmd[1:]]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        if kill:
            assert done.returncode == -signal.SIGKILL, f"not killed at {kill}:\n{done.stderr[-2000:]}"
        else:
            assert done.returncode == 0, done.stderr[-3000:]
        return done

    def files(workdir, stage="text"):
        stage = workdir / stage
        assert not (stage / "backup").exists(), "a finished stage leaves no backup behind"
        assert not [p.name for p in stage.glob("*.tmp")] + [p.name for p in stage.glob(".*.partial.*")]
        return {name: (stage / name).read_text() for name in ("history.csv", "summary.json", "config.json")}

    return run, files


@pytest.mark.slow  # ~75 s since the fusion stage fits its experts: the gated slow job (.ci/slow.sh) with the other kill points
def test_a_killed_run_finishes_like_an_uninterrupted_one(tmp_path, killable):
    """Killed while run.json, model.keras and the resume backup are written (each mid-write,
    in one workdir, one after the other), the rerun ends with the uninterrupted run's
    history, summary and model."""
    import keras

    import kemdy_tf  # noqa: F401

    run, files = killable
    run(tmp_path / "ref")
    workdir = tmp_path / "killed"
    run(workdir, ("run.json", 1, "before"))                              # preparing the run
    run(workdir, ("text/model.keras", 2, "before"))                      # the 2nd epoch's best model
    assert keras.saving.load_model(workdir / "text" / "model.keras") is not None  # the 1st one, whole
    run(workdir, ("text/backup/training_metadata.json", 1, "before"))   # the 2nd epoch's backup
    run(workdir)
    assert files(workdir) == files(tmp_path / "ref")
    for a, b in zip(keras.saving.load_model(workdir / "text" / "model.keras").get_weights(),
                    keras.saving.load_model(tmp_path / "ref" / "text" / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    ("table.csv", 1, "before"),
    ("skips.csv", 1, "after"),
    ("text/config.json", 1, "before"),
    ("text/model.keras", 1, "before"),                        # no model saved yet
    ("text/model.keras", 2, "after"),                         # saved, not yet committed
    ("text/history.csv", 1, "after"),                         # never renamed: an epoch row is appended
    ("text/backup/training_metadata.json", 2, "after"),       # between epochs
    ("text/backup/training_metadata.json", 3, "after"),       # after the last epoch
    ("text/summary.json", 1, "before"),
    ("text/summary.json", 1, "after"),                        # the backup is still there
], ids=lambda k: f"{k[0]}#{k[1]}-{k[2]}" if isinstance(k, tuple) else str(k))
def test_a_kill_at_each_point_resumes_to_the_same_result(tmp_path, killable, kill):
    run, files = killable
    run(tmp_path / "ref")
    workdir = tmp_path / "killed"
    if kill[0] == "text/history.csv":  # appended by CSVLogger: kill at the commit right after it
        kill = ("text/backup/training_metadata.json", 2, "before")
    run(workdir, kill)
    run(workdir)
    assert files(workdir) == files(tmp_path / "ref")


@pytest.mark.slow  # ~45 s; test_a_killed_run_finishes_like_... resumes a killed plain run, tests/test_weight_average.py the swap
def test_a_killed_averaged_run_resumes_to_the_uninterrupted_result(tmp_path, killable):
    """A backup is committed while the model holds the average: the resumed fit swaps back
    first and ends with the uninterrupted run's history, summary and model (that the
    average changes what an epoch's end holds: test_weight_average.py)."""
    import keras

    import kemdy_tf  # noqa: F401

    run, files = killable
    ema = ("--set", "train.ema_epochs=1")
    run(tmp_path / "ref", extra=ema)
    workdir = tmp_path / "killed"
    run(workdir, ("text/backup/training_metadata.json", 2, "after"), extra=ema)  # between epochs 2 and 3
    run(workdir, extra=ema)
    assert files(workdir) == files(tmp_path / "ref")

    def weights(path):
        return keras.saving.load_model(path / "text" / "model.keras").get_weights()

    for a, b in zip(weights(workdir), weights(tmp_path / "ref")):
        np.testing.assert_array_equal(a, b)
    assert json.loads(files(workdir)["config.json"])["config"]["train"]["ema_epochs"] == 1


# === train.monitor: the figure the checkpoint and early stopping follow ===

_MONITOR_UA = ("--stage", "text_clf", "--from-scratch", "--set", "train.monitor=val_ua")


def test_monitor_val_ua_keeps_the_epoch_with_the_best_validation_ua(tmp_path, trained_run, train_args,
                                                                     monkeypatch, capsys):
    """With train.monitor=val_ua a classifier's checkpoint keeps the epoch of the highest
    val_ua (not the lowest val_loss), EarlyStopping follows it in mode max, and the
    stage summary still prints."""
    import keras

    from kemdy_tf import training

    stoppers = []

    class Recording(keras.callbacks.EarlyStopping):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stoppers.append(self)

    monkeypatch.setattr(training.keras.callbacks, "EarlyStopping", Recording)
    workdir = tmp_path / "run"
    # No n-gram regression: its share, chosen after training, would move the summary off the logged val_ua.
    assert run_train(*train_args(workdir, *_MONITOR_UA, "--set", "train.epochs=4", "--set", "train.patience=10",
                                 "--set", "fusion.char_ngrams=0")) == 0
    assert "== text_clf: validation split" in capsys.readouterr().out
    [stopper] = stoppers
    assert (stopper.monitor, stopper.mode) == ("val_ua", "max")
    history = pd.read_csv(workdir / "text_clf" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    summary = json.loads((workdir / "text_clf" / "summary.json").read_text())
    # the summary scores the kept model on the same validation split that val_ua was logged on
    assert summary["model"]["balanced_accuracy"] == pytest.approx(history["val_ua"].max(), abs=1e-5)
    assert json.loads((workdir / "text_clf" / "config.json").read_text())["config"]["train"]["monitor"] == "val_ua"


def test_monitor_applies_to_classifiers_only_and_refuses_unknown_values(tmp_path, train_args, capsys):
    from kemdy_tf import stages, training
    from kemdy_tf.config import make_config

    ua = make_config("small", ["train.monitor=val_ua"])
    assert training.monitored(stages.get("fusion"), ua) == ("val_ua", "max")
    f1 = make_config("small", ["train.monitor=val_f1"])
    assert training.monitored(stages.get("audio_clf"), f1) == ("val_f1", "max")
    assert training.monitored(stages.get("audio"), f1) == ("val_loss", "min")
    assert training.monitored(stages.get("text"), ua) == ("val_loss", "min")  # a rating has no UA
    assert training.monitored(stages.get("text_clf"), make_config()) == ("val_loss", "min")
    with pytest.raises(ValueError, match="train.monitor must be one of val_loss, val_ua, val_f1"):
        make_config("small", ["train.monitor=val_accuracy"])  # config.validate
    typo = make_config()
    typo.train.monitor = "val_accuracy"  # a config made by hand, past validate: the runner refuses it too
    with pytest.raises(training.TrainingError, match="train.monitor must be one of val_loss, val_ua, val_f1"):
        training.monitored(stages.get("text_clf"), typo)
    # train.py refuses it before preparing the run
    assert run_train(*train_args(tmp_path / "w", "--stage", "text_clf", "--set", "train.monitor=f1")) == 2
    assert "train.monitor must be one of val_loss, val_ua, val_f1; got 'f1'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # ~100 s; the default run kills and resumes a val_loss run, and reads val_ua backups below
def test_a_killed_val_ua_run_resumes_with_its_best_ua(tmp_path, killable):
    """The resume backup stores the monitored figure and its highest value (mode max): a run
    killed after its 2nd epoch ends as the uninterrupted one. A backup of another monitor
    is not resumed from: the stage starts again."""
    run, files = killable
    run(tmp_path / "ref", extra=_MONITOR_UA)
    workdir = tmp_path / "killed"
    run(workdir, ("text_clf/backup/training_metadata.json", 2, "after"), extra=_MONITOR_UA)
    state = json.loads((workdir / "text_clf" / "backup" / "training_metadata.json").read_text())
    logged = pd.read_csv(workdir / "text_clf" / "history.csv")
    assert state["monitor"] == "val_ua" and state["epoch"] == 2
    assert state["best"] == pytest.approx(logged["val_ua"].max())
    switched = tmp_path / "switched"
    shutil.copytree(workdir, switched)
    run(workdir, extra=_MONITOR_UA)
    assert files(workdir, "text_clf") == files(tmp_path / "ref", "text_clf")

    done = run(switched, extra=("--stage", "text_clf", "--from-scratch"))  # now val_loss
    assert "followed val_ua, this run follows val_loss" in done.stderr
    assert list(pd.read_csv(switched / "text_clf" / "history.csv")["epoch"]) == [0, 1, 2]


def test_legacy_backup_best_is_read_in_the_monitors_direction(tmp_path):
    from kemdy_tf import checkpoints

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss,val_ua\n0,1.0,0.9,0.30\n1,0.9,0.8,0.25\n2,0.8,1.0,0.40\n")
    assert checkpoints.best_logged(history, "val_loss") == pytest.approx(0.8)
    assert checkpoints.best_logged(history, "val_ua", "max") == pytest.approx(0.40)
    assert checkpoints.best_logged(history, "val_f1", "max") is None


def test_an_unreadable_backup_is_ignored_with_a_warning(tmp_path, caplog):
    """A 0-byte latest.weights.h5 (a kill while an older version wrote it in place) no
    longer fails every rerun with 'file signature not found': the stage starts again."""
    from kemdy_tf import checkpoints

    stage = tmp_path / "text"
    (stage / "backup").mkdir(parents=True)
    (stage / "backup" / "latest.weights.h5").write_bytes(b"")
    (stage / "backup" / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (stage / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,1.0\n1,0.9,0.9\n")
    (stage / "model.keras").write_bytes(b"")
    with caplog.at_level("WARNING", logger="kemdy_tf.checkpoints"):
        state = checkpoints.read_backup(stage / "backup")
    assert state is None
    assert "unreadable" in caplog.text and "latest.weights.h5" in caplog.text
    assert checkpoints.rollback_to_backup(stage, state) is None
    assert not (stage / "backup").exists() and not (stage / "history.csv").exists()
    assert not (stage / "model.keras").exists()
    # broken metadata is the same
    (stage / "backup").mkdir()
    (stage / "backup" / "training_metadata.json").write_text('{"epo')
    assert checkpoints.read_backup(stage / "backup") is None


def test_history_rows_after_the_committed_epoch_are_dropped(tmp_path):
    from kemdy_tf import checkpoints

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss\n0,1.0,1.0\n1,0.9,0.9\n2,0.8,0.8\n3,0.7")
    checkpoints._truncate_history(history, 2)
    assert history.read_text() == "epoch,loss,val_loss\n0,1.0,1.0\n1,0.9,0.9\n"


@pytest.mark.slow
def test_a_zero_byte_backup_from_an_in_place_write_is_survived(tmp_path, killable):
    """Issue 13 item 1 as reported: backup/latest.weights.h5 left at 0 bytes."""
    run, files = killable
    run(tmp_path / "ref")
    workdir = tmp_path / "killed"
    run(workdir, ("text/backup/training_metadata.json", 2, "after"))
    backup = workdir / "text" / "backup"
    for leftover in backup.iterdir():
        leftover.unlink()
    (backup / "latest.weights.h5").write_bytes(b"")
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    done = run(workdir)
    assert "unreadable" in done.stderr
    assert files(workdir) == files(tmp_path / "ref")


def _synthetic_manifest(synthetic_root, path, edit=None):
    """The synthetic set as a manifest at `path`; `edit(table)` changes the table first."""
    from kemdy_tf.data.kemdy20 import read_kemdy20
    from kemdy_tf.data.manifest import write_manifest

    table, _ = read_kemdy20(synthetic_root)
    if edit:
        edit(table)
    return Path(write_manifest(table, path)), table


def test_undecodable_audio_is_listed_in_skips_csv(tmp_path, synthetic_root, tiny_config):
    """A wav the feature build cannot decode is a skips.csv row (file, row, reason), once."""
    from kemdy_tf import run as run_lib

    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(b"RIFF but not really a wav file" * 20)
    manifest, table = _synthetic_manifest(synthetic_root, tmp_path / "data" / "manifest.csv",
                                          lambda t: t.__setitem__("wav_path", t["wav_path"].where(
                                              t.index != 3, str(garbage))))
    broken_id = table["segment_id"].iloc[3]
    workdir = tmp_path / "run"
    for _ in range(2):  # a rerun does not list it twice
        run = run_lib.prepare_run(workdir, {"manifest": manifest}, tiny_config, cache_dir=tmp_path / "cache")
        skips = pd.read_csv(workdir / "skips.csv", keep_default_na=False)
        listed = skips[skips["file"] == str(garbage)]
        assert len(listed) == 1, skips
        assert listed["segment_id"].iloc[0] == broken_id
        assert listed["reason"].iloc[0].startswith("undecodable audio: ")
        written = pd.read_csv(workdir / "table.csv", keep_default_na=False)
        assert written["segment_id"].iloc[int(listed["row"].iloc[0]) - 2] == broken_id  # its table.csv line
        assert broken_id not in set(run.table["segment_id"])


def test_one_class_in_training_is_a_one_line_error(tmp_path, synthetic_root, tiny_overrides, capsys):
    from conftest import set_args

    def one_class(table):
        table["labels"], table["emotion"] = "happy", "happy"

    manifest, _ = _synthetic_manifest(synthetic_root, tmp_path / "data" / "manifest.csv", one_class)
    code = run_train("--stage", "text", "--manifest", manifest, "--workdir", tmp_path / "run",
                     "--no-export", *set_args(tiny_overrides))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the training split has 1 class(es)") and "'happy'" in err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_source_without_utterances_is_a_one_line_error(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,text,emotion\n", encoding="utf-8")
    assert run_train("--stage", "text", "--manifest", manifest, "--workdir", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no utterances") and len(err.splitlines()) == 1, err
