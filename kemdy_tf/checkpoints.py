"""Kill-safe checkpoints: every file a fit writes appears whole or not at all.

One epoch's end, in callback order: `AtomicModelCheckpoint` replaces model.keras (when
the epoch improved), `CSVLogger` appends the epoch's row to history.csv, then
`AtomicBackupAndRestore` commits the epoch: weights under a new name, a hard link to
the best model, and last `training_metadata.json` by one rename. A kill before that
rename leaves the previous commit; the next call rolls model.keras and history.csv
back to it (`rollback_to_backup`) and redoes the epoch, and `skip_finished_epochs` puts
the datasets' seed sequence where the uninterrupted fit had it. `AveragedWeightsAtEpochEnd`
is Keras' weight-average swap made resumable. `kemdy_tf.training` puts them together
into one resumable fit; docs/faults.md lists what each kill leaves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kemdy_tf import run as run_lib

log = logging.getLogger("kemdy_tf.checkpoints")

BACKUP_DIR = run_lib.BACKUP_DIR
_BACKUP_META = "training_metadata.json"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def atomic_save_model(model, path) -> None:
    """`model.save(path)` through a temporary `.keras` file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # Keras wants the .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def atomic_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    run_lib.atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# === history.csv ===

def logged(history_csv: Path, column: str) -> pd.Series | None:
    """`column` of a history.csv, one row per epoch; None without the file, column or a value."""
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return None
    history = pd.read_csv(history_csv)
    if column not in history or not history[column].notna().any():
        return None
    return history[column]


def best_logged(history_csv: Path, column: str, mode: str = "min"):
    """The best logged value of `column` (lowest for mode "min", highest for "max"), or None."""
    values = logged(history_csv, column)
    if values is None:
        return None
    return float(values.max() if mode == "max" else values.min())


# === Callbacks and the rollback ===

class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes beside the target and renames: a kill leaves the old file.

    `saved_epoch` is the last epoch it saved (None before the first), for the backup's commit.
    """

    saved_epoch = None

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        if self.save_weights_only:
            raise ValueError("AtomicModelCheckpoint saves whole models only")
        atomic_save_model(self.model, filepath)
        self.saved_epoch = epoch


def read_backup(backup_dir) -> dict | None:
    """The committed state of a stage's `backup/`, or None when there is none or it is unreadable.

    An unreadable backup (a 0-byte or cut weights file, broken metadata: a kill while an
    older kemdy_tf wrote in place) is a warning and counts as absent: the stage restarts
    from epoch 1 instead of failing on every rerun.
    """
    folder = Path(backup_dir)
    meta = folder / _BACKUP_META
    if not folder.is_dir() or not meta.exists():
        return None
    try:
        state = json.loads(meta.read_text(encoding="utf-8"))
        epoch = int(state["epoch"])
        weights = folder / state.get("weights", "latest.weights.h5")  # no "weights": Keras' own layout
        with open(weights, "rb") as handle:
            if handle.read(8) != _HDF5_SIGNATURE:
                raise OSError(f"{weights.name} is not an HDF5 file ({weights.stat().st_size} bytes)")
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("the resume backup %s is unreadable (%s: %s); it is ignored and the stage "
                    "starts again from epoch 1", folder, type(error).__name__, error)
        return None
    state["epoch"], state["weights_path"] = epoch, weights
    state.setdefault("legacy", "weights" not in state)
    return state


def rollback_to_backup(stage_dir: Path, state: dict | None, monitor: str = "val_loss",
                       mode: str = "min") -> float | None:
    """Make history.csv and model.keras agree with the committed backup `state`; the best
    value of `monitor` (lowest for mode "min", highest for "max") saved so far.

    Rows of epochs after the commit (a kill between the row and the commit) are dropped;
    a model.keras saved after the commit is replaced by the committed best (or removed
    when nothing was committed). Without a backup the stage starts afresh: no history,
    no model, no stale backup folder.
    """
    stage_dir = Path(stage_dir)
    history, model_path, backup = stage_dir / run_lib.HISTORY, stage_dir / run_lib.MODEL, stage_dir / BACKUP_DIR
    for partial in [*stage_dir.glob(".*.partial.*"), *stage_dir.glob("*.tmp")]:  # a killed write's leftovers
        partial.unlink(missing_ok=True)
    if state is None:
        history.unlink(missing_ok=True)
        model_path.unlink(missing_ok=True)
        shutil.rmtree(backup, ignore_errors=True)
        return None
    if state["legacy"]:  # a backup of Keras' own layout: keep its files, best from the history
        return best_logged(history, monitor, mode)
    _truncate_history(history, state["epoch"])
    best_model = state.get("best_model")
    if best_model and (backup / best_model).exists():
        if not (model_path.exists() and os.path.samefile(model_path, backup / best_model)):
            tmp = model_path.with_name(f".{model_path.stem}.partial{model_path.suffix}")
            tmp.unlink(missing_ok=True)
            _link_or_copy(backup / best_model, tmp)
            os.replace(tmp, model_path)
    else:
        model_path.unlink(missing_ok=True)
    return state.get("best")


def _truncate_history(history: Path, epochs: int) -> None:
    """Keep the header and the complete rows of epochs < `epochs` (rewritten atomically)."""
    if not history.exists():
        return
    lines = history.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    header, kept = lines[0], []
    width = header.count(",")
    for line in lines[1:]:
        first = line.partition(",")[0]
        if line.endswith("\n") and line.count(",") == width and first.isdigit() and int(first) < epochs:
            kept.append(line)
    if kept != lines[1:]:
        atomic_text(history, header + "".join(kept))


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is committed by one rename, never written in place.

    Each epoch writes `weights-<n>.weights.h5` (a new name), links the best model as
    `best-<n>.keras` when the epoch improved it, then replaces `training_metadata.json`
    (epoch, weights, the monitored figure's name and best value, the best model,
    EarlyStopping's counters, whether it stopped). A kill at any instant leaves the
    previous commit readable. The folder is kept after `fit` (`delete_checkpoint=False`);
    the caller removes it once the stage's summary is written, so a kill in between
    resumes with nothing left to train.

    Place it after the checkpoint, EarlyStopping and CSVLogger: it commits what they did.
    """

    def __init__(self, backup_dir, state: dict | None, checkpoint: AtomicModelCheckpoint,
                 early_stopping: keras.callbacks.EarlyStopping | None = None):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.folder = Path(backup_dir)
        self.state = state
        self.checkpoint, self.early_stopping = checkpoint, early_stopping
        self.model_path = Path(checkpoint.filepath)

    def on_train_begin(self, logs=None):
        state = self.state
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(state["weights_path"])
        epoch = state["epoch"]
        if state.get("stopped"):  # early stopping had ended it: train no further epoch
            epoch = max(epoch, self.params.get("epochs") or epoch)
        self.model._initial_epoch = epoch
        self._current_epoch = epoch
        seeds = _seed_variables(self.model)
        if len(state.get("seeds", ())) == len(seeds):  # dropout masks go on as they would have
            for variable, value in zip(seeds, state["seeds"]):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        stopper = self.early_stopping
        if stopper is not None and "wait" in state:
            stopper.wait = int(state["wait"])
            stopper.best = _from_json_float(state.get("stopper_best"), stopper.best)
            stopper.best_epoch = int(state.get("stopper_best_epoch", 0))

    def _save_model(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch
        previous = self.state or {}
        weights = f"weights-{epoch}.weights.h5"
        (self.folder / weights).unlink(missing_ok=True)
        self.model.save_weights(str(self.folder / weights), overwrite=True)
        best_model = previous.get("best_model")
        if self.checkpoint.saved_epoch == epoch - 1 and self.model_path.exists():
            best_model = f"best-{epoch}.keras"
            (self.folder / best_model).unlink(missing_ok=True)
            _link_or_copy(self.model_path, self.folder / best_model)
        stopper = self.early_stopping
        state = {"epoch": epoch, "batch": 0, "weights": weights, "best_model": best_model,
                 "monitor": self.checkpoint.monitor, "best": _to_json_float(self.checkpoint.best),
                 "stopped": bool(self.model.stop_training),
                 "seeds": [np.asarray(v).tolist() for v in _seed_variables(self.model)]}
        if stopper is not None:
            state.update(wait=int(stopper.wait), stopper_best=_to_json_float(stopper.best),
                         stopper_best_epoch=int(stopper.best_epoch))
        atomic_text(self.folder / _BACKUP_META, json.dumps(state))  # the commit
        for leftover in self.folder.iterdir():
            if leftover.name not in (_BACKUP_META, weights, best_model):
                leftover.unlink(missing_ok=True)
        self.state = dict(state, weights_path=self.folder / weights, legacy=False)

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._save_model()


def _seed_variables(model) -> list:
    """The model's random-seed states (dropout): variables that `save_weights` leaves out."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def skip_finished_epochs(dataset, epochs: int) -> None:
    """Open and drop the iterators `epochs` finished epochs opened, so that a resumed fit
    shuffles (and masks) its next epoch as the uninterrupted fit would: every iterator of
    a reshuffling dataset draws the next seeds. Keras' epoch iterator opens two per epoch
    when the dataset's length is known (one more at each epoch's end, then dropped), one
    otherwise; `test_training.py::test_a_killed_run_finishes_like_an_uninterrupted_one`
    holds this to the uninterrupted run.
    """
    known = int(tf.data.experimental.cardinality(dataset)) > 0
    for _ in range(epochs * (2 if known else 1)):
        iterator = iter(dataset)
        del iterator


def _to_json_float(value):
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _from_json_float(value, default):
    return default if value is None else float(value)


class AveragedWeightsAtEpochEnd(keras.callbacks.SwapEMAWeights):
    """`SwapEMAWeights(swap_on_epoch=True)` that also resumes: put it first.

    At each epoch's end the model holds the averaged weights (validation, the checkpoint,
    early stopping and the backup see them) and the optimizer's averages hold the raw
    ones; the next epoch swaps back and trains on. A backup is committed in that swapped
    state, so a resumed fit starts swapped and its first epoch swaps back.
    """

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = bool(resumed)
