"""Fitting one stage of a prepared run.

    run = kemdy_tf.run.prepare_run(workdir, {"data": DIR}, config)   # the run on disk
    train_stage(run, "audio")                                         # -> WORKDIR/audio/

What a stage is (target, inputs, builder, loss, metrics) comes from the registry in
`kemdy_tf.stages`; what a workdir holds from `kemdy_tf.run`; the printed summary from
`kemdy_tf.summaries`. This module is the loop around them: compile, class weights,
callbacks, fit, checkpoint, summarise.

A stage is resumable: `BackupAndRestore` keeps the last finished epoch, so a killed
run continues when the same command runs again. A stage whose `summary.json` exists
is finished and is skipped unless `retrain=True`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kemdy_tf import classical, run as run_lib, stages as stages_lib, summaries
from kemdy_tf.config import RunConfig

log = logging.getLogger("kemdy_tf.training")


class TrainingError(run_lib.RunError):
    """A training run cannot go on (missing encoders, mismatched workdir, ...)."""


def compile_stage_model(model, stage: str, config: RunConfig) -> None:
    """Compile with the stage's registered loss and metrics (Adam, clipnorm 1)."""
    spec = stages_lib.get(stage)
    optimizer = keras.optimizers.Adam(config.train.learning_rate, clipnorm=1.0)
    model.compile(optimizer, loss=spec.loss, metrics=spec.metrics(config))


def build_stage_model(run, stage: str, unfreeze: bool = False, from_scratch: bool = False):
    """A fresh (uncompiled) model for `stage`, from its registered builder."""
    return stages_lib.get(stage).build(run, stage, unfreeze=unfreeze, from_scratch=from_scratch)


def class_weights(run) -> list[float]:
    """sklearn's 'balanced' weights n / (k * count) over the training split's classes.

    A class absent from the training split gets weight 1 (it contributes no loss anyway).
    """
    from sklearn.utils.class_weight import compute_class_weight

    classes = list(run.config.data.classes)
    labels = run.split("train")["emotion"]
    labels = labels[labels.isin(classes)].map(classes.index).to_numpy()
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = [1.0] * len(classes)
    for c, w in zip(present, weights):
        out[int(c)] = float(w)
    return out


def train_stage(run, stage: str, *, epochs=None, strategy=None, unfreeze=False,
                from_scratch=False, init_from=None, retrain=False, verbose=None) -> dict:
    """Train one stage in `run.workdir / stage`; returns its validation summary."""
    spec = stages_lib.get(stage)
    cfg = run.config
    stage_dir = run.stage_dir(stage)
    summary_path = stage_dir / run_lib.SUMMARY
    if summary_path.exists() and not retrain:
        log.info("stage %s already trained (%s); pass --retrain to train it again", stage, summary_path)
        return json.loads(summary_path.read_text())
    if retrain:
        for name in (run_lib.SUMMARY, run_lib.HISTORY, run_lib.MODEL):
            (stage_dir / name).unlink(missing_ok=True)
        shutil.rmtree(stage_dir / "backup", ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        try:
            if init_from:
                model = keras.saving.load_model(init_from, compile=False)
            else:
                model = build_stage_model(run, stage, unfreeze=unfreeze, from_scratch=from_scratch)
        except stages_lib.StageError as error:
            raise TrainingError(str(error)) from None
        compile_stage_model(model, stage, cfg)
    (stage_dir / run_lib.STAGE_CONFIG).write_text(json.dumps(
        {"stage": stage, "config": cfg.to_dict(), "init_from": str(init_from or ""),
         "unfreeze": unfreeze, "from_scratch": from_scratch}, indent=2, ensure_ascii=False))

    tokenizer = run.tokenizer()
    weights = None
    if spec.is_classifier and cfg.train.class_weighting == "weights":
        weights = class_weights(run)
    replicas = strategy.num_replicas_in_sync
    train_ds = stages_lib.stage_dataset(run, spec, "train", training=True, tokenizer=tokenizer,
                                        class_weights=weights, replicas=replicas, model=model)
    val_ds = stages_lib.stage_dataset(run, spec, "val", training=False, tokenizer=tokenizer,
                                      replicas=replicas, model=model)
    history_csv = stage_dir / run_lib.HISTORY
    checkpoint = keras.callbacks.ModelCheckpoint(stage_dir / run_lib.MODEL, monitor="val_loss",
                                                 save_best_only=True)
    best_so_far = _best_logged(history_csv, "val_loss")
    if best_so_far is not None:  # a resumed run keeps the best it already saved
        checkpoint.best = best_so_far
    callbacks = [
        keras.callbacks.BackupAndRestore(str(stage_dir / "backup")),
        checkpoint,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.patience,
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.TensorBoard(str(stage_dir / "logs"), write_graph=False),
    ]
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else "line"
    if verbose == "line":
        callbacks.append(EpochLine(stage, epochs or cfg.train.epochs))
        verbose = 0
    # The datasets shuffle themselves (seeded); shuffle=False only stops Keras warning about it.
    model.fit(train_ds, validation_data=val_ds, epochs=epochs or cfg.train.epochs,
              callbacks=callbacks, verbose=verbose, shuffle=False)
    if not (stage_dir / run_lib.MODEL).exists():  # no epoch improved on a resumed best: keep last
        model.save(stage_dir / run_lib.MODEL)

    best = keras.saving.load_model(stage_dir / run_lib.MODEL, compile=False)
    if spec.is_classifier:  # the classical baseline beside the summary (fitted once per run)
        classical.fit_for_run(run)
    summary = summaries.validation_summary(run, stage, best, tokenizer)
    run_lib.atomic_write(summary_path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    print(summaries.format_summary(summary))
    return summary


class EpochLine(keras.callbacks.Callback):
    """One line per epoch: `audio epoch 3/12  25s  loss 0.188  rmse 0.433  val_loss 0.138 ...`."""

    def __init__(self, stage: str, epochs: int):
        super().__init__()
        self.stage, self.epochs, self.start = stage, epochs, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        figures = "  ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if k != "learning_rate")
        print(f"{self.stage} epoch {epoch + 1}/{self.epochs}  {time.perf_counter() - self.start:.0f}s  {figures}",
              flush=True)


def _best_logged(history_csv: Path, column: str):
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return None
    history = pd.read_csv(history_csv)
    return float(history[column].min()) if column in history and len(history) else None
