"""Fitting one stage of a prepared run.

    run = kemdy_tf.run.prepare_run(workdir, {"data": DIR}, config)   # the run on disk
    train_stage(run, "audio")                                         # -> WORKDIR/audio/

What a stage is (target, inputs, builder, loss, metrics) comes from the registry in
`kemdy_tf.stages`; what a workdir holds from `kemdy_tf.run`; the printed summary from
`kemdy_tf.summaries`. This module is the loop around them: compile, class weights,
callbacks, fit, checkpoint, summarise.

The stage's model is built and trained under the Keras dtype policy `train.precision`
(`kemdy_tf.models.precision`; the global policy is restored afterwards); the finished
`model.keras` is float32 whatever it was trained in.

A stage is resumable: `AtomicBackupAndRestore` commits each finished epoch, so a run
killed at any instant continues when the same command runs again, and ends as the
uninterrupted run would (see "Kill-safe checkpoints" below). A stage whose `summary.json` exists
is finished and is skipped unless `retrain=True`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kemdy_tf import classical, run as run_lib, stages as stages_lib, summaries
from kemdy_tf.config import MONITOR_MODES, RunConfig, check_monitor
from kemdy_tf.models import ngram_logistic, precision as precision_lib
from kemdy_tf.models.losses import LogitAdjustedLoss, class_prior

log = logging.getLogger("kemdy_tf.training")


class TrainingError(run_lib.RunError):
    """A training run cannot go on (missing encoders, mismatched workdir, ...)."""


def compile_stage_model(model, stage: str, config: RunConfig, total_steps: int | None = None,
                        epochs: int | None = None, class_prior=None) -> None:
    """Compile with the stage's registered optimizer, loss and metrics.

    `total_steps` (optimizer steps of the whole fit of `epochs`, default `train.epochs`)
    sizes a stage's learning-rate schedule and, with `train.ema_epochs`, the weight
    average's momentum; default: `train.epochs` x 100. `class_prior` (the training class
    shares, `losses.class_prior`) wraps a classifier's loss in the logit-adjusted one
    (`train.class_weighting=logit_adjust`).
    """
    spec = stages_lib.get(stage)
    epochs = epochs or config.train.epochs
    steps = total_steps or epochs * 100
    optimizer = spec.make_optimizer(config, steps)
    if config.train.ema_epochs:  # a negative value is refused by ema_momentum
        average_weights(optimizer, config.train.ema_epochs, steps / max(1, epochs))
    loss = spec.make_loss(config)
    if class_prior is not None and spec.is_classifier:
        loss = LogitAdjustedLoss(class_prior, base=loss)
    model.compile(optimizer, loss=loss, metrics=spec.metrics(config))


def ema_momentum(ema_epochs: float, steps_per_epoch: float) -> float:
    """The moving average's momentum whose window (1 / (1 - momentum) steps) spans `ema_epochs`."""
    if ema_epochs < 0:
        raise TrainingError(f"train.ema_epochs must be >= 0 (0: no weight average); got {ema_epochs}")
    return max(0.0, 1.0 - 1.0 / (ema_epochs * max(1.0, steps_per_epoch)))


def average_weights(optimizer, ema_epochs: float, steps_per_epoch: float) -> None:
    """Turn on Keras' weight moving average (`use_ema`) on a built-from-the-registry optimizer.

    Set before the optimizer is built: `build` creates the averages when `use_ema` is on.
    The stages' optimizer factories stay free of the option this way.
    """
    target = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    target.use_ema = True
    target.ema_momentum = ema_momentum(ema_epochs, steps_per_epoch)
    target.ema_overwrite_frequency = None  # the swap callback decides what the model holds


def build_stage_model(run, stage: str, unfreeze: bool = False, from_scratch: bool = False):
    """A fresh (uncompiled) model for `stage`, from its registered builder."""
    return stages_lib.get(stage).build(run, stage, unfreeze=unfreeze, from_scratch=from_scratch)


# `train.class_weighting` schemes; docs/imbalance.md has the measurement behind the default.
CLASS_WEIGHTINGS = ("auto", "weights", "capped", "sqrt", "none", "logit_adjust")
WEIGHT_CAP = 10.0  # the "capped" scheme's largest weight


def class_weight_values(labels, n_classes: int, scheme: str = "weights") -> list[float]:
    """Per-class loss weights from the training labels (integer class indices).

    Schemes (n examples, k classes present, n_c of class c):
        auto     `weights`, or `logit_adjust` where a class's balanced weight would exceed
                 WEIGHT_CAP (`resolve_class_weighting`);
        weights  sklearn's 'balanced' n / (k * n_c): every class weighs the same in total;
        capped   the same, clipped at WEIGHT_CAP, so a class of a dozen examples cannot
                 outweigh the rest (KEMDy20's rarest classes get ~15 balanced);
        sqrt     proportional to n_c ** -0.5, scaled so the mean example weight is 1:
                 halfway (in log) between no weighting and balanced;
        none     all 1;
        logit_adjust  all 1: the balance comes from the loss instead (`class_prior`,
                 models.losses.LogitAdjustedLoss), not from weighting examples.
    A class absent from the labels gets weight 1 (it contributes no loss anyway).
    """
    scheme = resolve_class_weighting(labels, scheme)
    out = [1.0] * n_classes
    present, counts = np.unique(np.asarray(labels, dtype=int), return_counts=True)
    if scheme in ("none", "logit_adjust") or len(present) == 0:
        return out
    if scheme == "sqrt":
        weights = counts ** -0.5
        weights = weights * counts.sum() / (counts * weights).sum()
    else:
        weights = counts.sum() / (len(present) * counts)  # = sklearn compute_class_weight("balanced")
        if scheme == "capped":
            weights = np.minimum(weights, WEIGHT_CAP)
    for c, w in zip(present, weights):
        out[int(c)] = float(w)
    return out


def resolve_class_weighting(labels, scheme: str = "auto") -> str:
    """The scheme `auto` stands for on these training labels; any other scheme unchanged.

    Balanced weights where they stay moderate; logit adjustment where a class would weigh
    more than WEIGHT_CAP: then a dozen examples steer every step and the validation
    curves jump from epoch to epoch (KEMDy20's shares: weights up to ~19). Measured in
    docs/imbalance.md: under KEMDy20's shares logit adjustment lifts the fusion model (by
    .03-.10 UA) and the audio classifier above the classical baselines on both session
    partitions measured, the text classifier on one of them; on the default synthetic set
    (weights <= 2.1) balanced weights keep the fusion model .08 UA better.
    """
    if scheme not in CLASS_WEIGHTINGS:
        raise TrainingError(f"train.class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}; got {scheme!r}")
    if scheme != "auto":
        return scheme
    _, counts = np.unique(np.asarray(labels, dtype=int), return_counts=True)
    if len(counts) and counts.sum() / (len(counts) * counts.min()) > WEIGHT_CAP:
        return "logit_adjust"
    return "weights"


def monitored(spec, config: RunConfig) -> tuple[str, str]:
    """(logged figure, "min" or "max") that a stage's checkpoint and early stopping follow.

    `train.monitor=val_ua` / `val_f1` apply to the classifier stages (their compiled "ua"
    and "f1" metrics, highest kept); the rating stages have neither and keep the lowest
    val_loss.
    """
    try:
        monitor = check_monitor(config.train.monitor)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    if not spec.is_classifier:
        monitor = "val_loss"
    return monitor, MONITOR_MODES[monitor]


def _training_labels(run) -> np.ndarray:
    classes = list(run.config.data.classes)
    labels = run.split("train")["emotion"]
    return labels[labels.isin(classes)].map(classes.index).to_numpy()


def class_weights(run) -> list[float]:
    """`class_weight_values` of the training split under the run's `train.class_weighting`."""
    return class_weight_values(_training_labels(run), len(run.config.data.classes),
                               run.config.train.class_weighting)


def class_balance(run) -> tuple[str, list[float] | None, list[float] | None]:
    """(scheme, class weights, class prior) of a classifier stage: the run's
    `train.class_weighting` resolved on its training split (`auto` -> a scheme), the
    per-class sample weights (None when every example weighs one) and the prior the
    logit-adjusted loss needs (None unless the scheme is `logit_adjust`)."""
    labels, n_classes = _training_labels(run), len(run.config.data.classes)
    scheme = resolve_class_weighting(labels, run.config.train.class_weighting)
    if scheme == "logit_adjust":
        return scheme, None, class_prior(labels, n_classes)
    if scheme == "none":
        return scheme, None, None
    return scheme, class_weight_values(labels, n_classes, scheme), None


def train_stage(run, stage: str, *, epochs=None, strategy=None, unfreeze=False,
                from_scratch=False, init_from=None, retrain=False, verbose=None) -> dict:
    """Train one stage in `run.workdir / stage`; returns its validation summary."""
    spec = stages_lib.get(stage)
    cfg = run.config
    try:
        precision_lib.check_precision(cfg.train.precision)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    monitor, mode = monitored(spec, cfg)
    weighting, weights, prior = class_balance(run) if spec.is_classifier else (None, None, None)
    if not stages_lib.has_targets(run, spec.target):
        print(f"stage {stage} skipped: the training split has no {spec.target!r} values (most "
              f"emotion corpora have none); the classifiers learn their {spec.modalities[0]} backbone "
              f"from the emotion labels and the export leaves {spec.target} out")
        return {"stage": stage, "skipped": f"no {spec.target} values in the training split"}
    stage_dir = run.stage_dir(stage)
    summary_path = stage_dir / run_lib.SUMMARY
    if summary_path.exists() and not retrain:
        log.info("stage %s already trained (%s); pass --retrain to train it again", stage, summary_path)
        shutil.rmtree(stage_dir / BACKUP_DIR, ignore_errors=True)  # a kill after the summary left it
        return json.loads(summary_path.read_text())
    if retrain:
        for name in (run_lib.SUMMARY, run_lib.HISTORY, run_lib.MODEL):
            (stage_dir / name).unlink(missing_ok=True)
        shutil.rmtree(stage_dir / BACKUP_DIR, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)

    strategy = strategy or tf.distribute.get_strategy()
    fit_epochs = epochs or cfg.train.epochs
    start = dict(init_from=init_from, unfreeze=unfreeze, from_scratch=from_scratch)
    model = _compiled_stage_model(run, stage, strategy, fit_epochs, prior, **start)
    _atomic_text(stage_dir / run_lib.STAGE_CONFIG, json.dumps(
        {"stage": stage, "config": cfg.to_dict(), "init_from": str(init_from or ""),
         "unfreeze": unfreeze, "from_scratch": from_scratch}, indent=2, ensure_ascii=False))

    tokenizer = run.tokenizer()
    if weighting and weighting != cfg.train.class_weighting:
        log.info("stage %s: train.class_weighting=%s is %s on this training split", stage,
                 cfg.train.class_weighting, weighting)
    replicas = strategy.num_replicas_in_sync
    train_ds = stages_lib.stage_dataset(run, spec, "train", training=True, tokenizer=tokenizer,
                                        class_weights=weights, replicas=replicas, model=model)
    val_ds = stages_lib.stage_dataset(run, spec, "val", training=False, tokenizer=tokenizer,
                                      replicas=replicas, model=model)
    wide_rows, wide_weights = _fit_ngram_logistic(run, spec, model, tokenizer, weighting, weights)
    history_csv = stage_dir / run_lib.HISTORY
    # Resume from the last committed epoch; history.csv and model.keras are rolled back to it.
    backup = read_backup(stage_dir / BACKUP_DIR)
    if backup is not None and backup.get("monitor", "val_loss") != monitor:
        # Its best and EarlyStopping's counters measure another figure: start afresh.
        log.warning("the resume backup of stage %s followed %s, this run follows %s; the stage "
                    "starts again from epoch 1", stage, backup.get("monitor", "val_loss"), monitor)
        backup = None
    if backup is None:  # the first fit starts afresh: so does any refit a killed earlier run left
        shutil.rmtree(stage_dir / REFIT_DIR, ignore_errors=True)
    best_so_far = rollback_to_backup(stage_dir, backup, monitor, mode)
    # mode is explicit: Keras' "auto" guesses min for any name without "acc" in it
    checkpoint = AtomicModelCheckpoint(stage_dir / run_lib.MODEL, monitor=monitor, mode=mode,
                                       save_best_only=True)
    if best_so_far is not None:  # a resumed run keeps the best it already saved
        checkpoint.best = best_so_far
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience,
                                            restore_best_weights=True)
    callbacks = [  # in this order: the average first, the backup commits what the others did
        *([AveragedWeightsAtEpochEnd(resumed=backup is not None)] if cfg.train.ema_epochs > 0 else []),
        checkpoint,
        stopper,
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        AtomicBackupAndRestore(stage_dir / BACKUP_DIR, backup, checkpoint, stopper),
        keras.callbacks.TensorBoard(str(stage_dir / "logs"), write_graph=False),
    ]
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else "line"
    progress = verbose  # the refit reports the same way
    if verbose == "line":
        callbacks.append(EpochLine(stage, epochs or cfg.train.epochs))
        verbose = 0
    if backup is not None:  # a resumed fit continues the datasets' seed sequence
        skip_finished_epochs(train_ds, backup["epoch"])
    # The datasets shuffle themselves (seeded); shuffle=False only stops Keras warning about it.
    with precision_lib.dtype_policy(cfg.train.precision):
        model.fit(train_ds, validation_data=val_ds, epochs=epochs or cfg.train.epochs,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    if not (stage_dir / run_lib.MODEL).exists():  # no epoch improved on a resumed best: keep last
        atomic_save_model(model, stage_dir / run_lib.MODEL)

    best = keras.saving.load_model(stage_dir / run_lib.MODEL, compile=False)
    if precision_lib.is_mixed(best):  # trained in mixed precision: kept, scored and served in float32
        best = precision_lib.with_policy(best, "float32")
        atomic_save_model(best, stage_dir / run_lib.MODEL)
    share = None
    if wide_rows:  # the n-gram path's share of each answer, chosen on the validation split
        share = ngram_logistic.choose_share_for(best, stages_lib.stage_dataset(
            run, spec, "val", training=False, tokenizer=tokenizer, model=best), wide_weights)
        atomic_save_model(best, stage_dir / run_lib.MODEL)
    if spec.is_classifier:  # the classical baseline beside the summary (fitted once per run)
        classical.fit_for_run(refit_view(run) if cfg.train.refit else run)
    # Scored before any refit: the early-stopped model never saw the validation split.
    summary = summaries.validation_summary(run, stage, best, tokenizer, classical_row=not cfg.train.refit)
    if weighting:
        summary["class_weighting"] = weighting
    if wide_rows:
        summary["char_ngram_logistic"] = {"rows": wide_rows, "share": share}
    if cfg.train.refit:
        kept = kept_epochs(history_csv, monitor, mode)
        summary["refit"] = refit_stage(run, stage, epochs=kept, fit_epochs=fit_epochs, strategy=strategy,
                                       verbose=progress, wide_share=share, **start)
    run_lib.atomic_write(summary_path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    shutil.rmtree(stage_dir / BACKUP_DIR, ignore_errors=True)  # finished: nothing left to resume
    shutil.rmtree(stage_dir / REFIT_DIR / BACKUP_DIR, ignore_errors=True)
    print(summaries.format_summary(summary))
    return summary


def _compiled_stage_model(run, stage: str, strategy, fit_epochs: int, prior, *, init_from=None,
                          unfreeze=False, from_scratch=False):
    """The stage's model, built (or loaded from `init_from`) and compiled for a fit of
    `fit_epochs` over `run`'s training split, under the run's dtype policy
    (train.precision; the global policy is restored after the block, also on error)."""
    spec, cfg = stages_lib.get(stage), run.config
    with precision_lib.dtype_policy(cfg.train.precision), strategy.scope():
        try:
            if init_from:
                model = keras.saving.load_model(init_from, compile=False)
                if spec.is_classifier and not (unfreeze or from_scratch):
                    _freeze_backbones(model)
            else:
                model = build_stage_model(run, stage, unfreeze=unfreeze, from_scratch=from_scratch)
        except stages_lib.StageError as error:
            raise TrainingError(str(error)) from None
        compile_stage_model(model, stage, cfg, total_steps=_total_steps(run, spec, fit_epochs), epochs=fit_epochs,
                            class_prior=prior)
    return model


# === Refitting on training + validation (train.refit) ===

REFIT_DIR = "refit"
EARLY_STOPPED = "early_stopped.keras"


def refit_view(run):
    """`run` with its validation rows moved into the training split (none left in val)."""
    import dataclasses

    table = run.table.copy()
    table.loc[table["split"] == "val", "split"] = "train"
    return dataclasses.replace(run, table=table)


def best_epoch(values, mode: str) -> int:
    """The first epoch with the best of the logged `values` (highest for mode "max"),
    counted from one: how many epochs a best-only checkpoint's model had trained."""
    values = np.asarray(values, dtype=float)
    return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values)) + 1


def kept_epochs(history_csv: Path, monitor: str, mode: str) -> int:
    """`best_epoch` of `monitor` in a stage's history.csv."""
    logged = _logged(history_csv, monitor)
    if logged is None:
        raise TrainingError(f"{history_csv} has no {monitor!r} column to find the kept epoch in; "
                            f"train.refit needs the stage's history (train it again with --retrain)")
    return best_epoch(logged, mode)


def refit_stage(run, stage: str, *, epochs: int, fit_epochs: int, strategy=None, init_from=None,
                unfreeze=False, from_scratch=False, verbose=0, wide_share=None) -> dict:
    """Train `stage` again from its initial weights on training + validation rows for
    `epochs` epochs, on the schedule of a `fit_epochs` fit (the learning rate of each epoch
    is the early-stopped fit's), then make it the stage's model.keras and keep the
    early-stopped model beside it as early_stopped.keras. Resumable like the first fit
    (its own backup in `STAGE/refit/`). A text classifier's n-gram logistic regression is
    fitted again on the same rows and keeps the early-stopped model's `wide_share` (no
    validation split is left to choose it on). Returns what the summary records of it."""
    spec, cfg = stages_lib.get(stage), run.config
    merged = refit_view(run)
    stage_dir = run.stage_dir(stage)
    folder = stage_dir / REFIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    strategy = strategy or tf.distribute.get_strategy()
    weighting, weights, prior = class_balance(merged) if spec.is_classifier else (None, None, None)
    model = _compiled_stage_model(merged, stage, strategy, fit_epochs, prior, init_from=init_from,
                                  unfreeze=unfreeze, from_scratch=from_scratch)
    # A tokenizer of its own: the first fit's SentencePiece resource does not outlive that fit's datasets.
    tokenizer = run.tokenizer()
    train_ds = stages_lib.stage_dataset(merged, spec, "train", training=True, tokenizer=tokenizer,
                                        class_weights=weights, replicas=strategy.num_replicas_in_sync,
                                        model=model)
    _fit_ngram_logistic(merged, spec, model, tokenizer, weighting, weights)
    backup = read_backup(folder / BACKUP_DIR)
    rollback_to_backup(folder, backup, "loss", "min")
    # every epoch is saved: the last one is the refitted model
    checkpoint = AtomicModelCheckpoint(folder / run_lib.MODEL, monitor="loss", mode="min", save_best_only=False)
    callbacks = [
        *([AveragedWeightsAtEpochEnd(resumed=backup is not None)] if cfg.train.ema_epochs > 0 else []),
        checkpoint,
        keras.callbacks.CSVLogger(str(folder / run_lib.HISTORY), append=True),
        AtomicBackupAndRestore(folder / BACKUP_DIR, backup, checkpoint),
    ]
    if verbose == "line":
        callbacks.append(EpochLine(f"{stage} refit", epochs))
        verbose = 0
    if backup is not None:
        skip_finished_epochs(train_ds, backup["epoch"])
    with precision_lib.dtype_policy(cfg.train.precision):
        model.fit(train_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    refitted = folder / run_lib.MODEL
    if not refitted.exists():
        atomic_save_model(model, refitted)
    if precision_lib.is_mixed(model) or wide_share is not None:
        final = keras.saving.load_model(refitted, compile=False)
        if precision_lib.is_mixed(final):  # trained in mixed precision: kept in float32, as the first fit
            final = precision_lib.with_policy(final, "float32")
        if wide_share is not None and ngram_logistic.has_ngram_logistic(final):
            ngram_logistic.set_share(final, wide_share)
        atomic_save_model(final, refitted)
    # The early-stopped model first (a copy, renamed into place), then the refitted one
    # by one rename: a kill in between leaves the main backup, which restores the first.
    tmp = stage_dir / f".{EARLY_STOPPED}.partial.keras"
    shutil.copy2(stage_dir / run_lib.MODEL, tmp)
    os.replace(tmp, stage_dir / EARLY_STOPPED)
    os.replace(refitted, stage_dir / run_lib.MODEL)
    rows = len(dataset_rows_of(merged, spec))
    log.info("stage %s refitted on %d training + validation rows for %d epochs", stage, rows, epochs)
    return {"epochs": epochs, "rows": rows, "early_stopped_model": EARLY_STOPPED}


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


def _fit_ngram_logistic(run, spec, model, tokenizer, weighting, weights) -> tuple[int, list[float] | None]:
    """Fit a text classifier's n-gram logistic regression (fusion.char_ngram_model nblr or
    tfidf_lr) on the run's training split; (0, None), nothing done, for other models.
    Returns (rows, the class weights it fitted with, which its share is chosen with too):
    the deep path's, or under logit_adjust, which weighs no example, the balanced weights,
    which reach the same prior-free decision. Deterministic, so a resumed run fits the
    same weights again."""
    if not ngram_logistic.has_ngram_logistic(model):
        return 0, None
    if weighting == "logit_adjust":
        weights = class_weight_values(_training_labels(run), len(run.config.data.classes), "weights")
    train = stages_lib.stage_dataset(run, spec, "train", training=False, tokenizer=tokenizer,
                                     class_weights=weights, model=model)
    start = time.perf_counter()
    rows = ngram_logistic.fit_ngram_logistic(model, train, run.config.fusion.char_ngram_c)
    log.info("stage %s: character n-gram logistic regression fitted on %d rows in %.0fs", spec.name, rows,
             time.perf_counter() - start)
    return rows, weights


def dataset_rows_of(run, spec) -> pd.DataFrame:
    """The training rows a stage's dataset yields (a rating stage: those with its target)."""
    from kemdy_tf.data.features import dataset_rows

    rows = dataset_rows(run.split("train"), run.config)
    if not spec.is_classifier:
        rows = rows[rows[spec.target].notna()] if spec.target in rows else rows.iloc[:0]
    return rows


def _total_steps(run, spec, epochs: int) -> int:
    """Optimizer steps of the whole fit: epochs x training batches of the stage."""
    return max(1, epochs * -(-len(dataset_rows_of(run, spec)) // run.config.train.batch_size))


def _logged(history_csv: Path, column: str) -> pd.Series | None:
    """`column` of a history.csv, one row per epoch; None without the file, column or a value."""
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return None
    history = pd.read_csv(history_csv)
    if column not in history or not history[column].notna().any():
        return None
    return history[column]


def _best_logged(history_csv: Path, column: str, mode: str = "min"):
    logged = _logged(history_csv, column)
    if logged is None:
        return None
    return float(logged.max() if mode == "max" else logged.min())



def _freeze_backbones(model) -> None:
    """Freeze a reloaded classifier's backbones, as `build_stage_model` does.

    `load_model` restores `trainable=False` on a backbone before keras-hub layers build
    their sublayers, so without this an `--init-from` fusion model trains its
    "frozen" backbones (docs/backbones.md).
    """
    from kemdy_tf.models.backbones import set_trainable

    for name in ("audio_backbone", "text_backbone"):
        try:
            backbone = model.get_layer(name)
        except ValueError:
            continue
        set_trainable(backbone, False)

# === Kill-safe checkpoints: every file appears whole or not at all ===
#
# One epoch's end, in callback order: `AtomicModelCheckpoint` replaces model.keras (when
# the epoch improved), `CSVLogger` appends the epoch's row to history.csv, then
# `AtomicBackupAndRestore` commits the epoch: weights under a new name, a hard link to
# the best model, and last `training_metadata.json` by one rename. A kill before that
# rename leaves the previous commit; the next call rolls model.keras and history.csv
# back to it (`rollback_to_backup`) and redoes the epoch.

BACKUP_DIR = "backup"
_BACKUP_META = "training_metadata.json"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def atomic_save_model(model, path) -> None:
    """`model.save(path)` through a temporary `.keras` file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # Keras wants the .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    run_lib.atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
        return _best_logged(history, monitor, mode)
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
        _atomic_text(history, header + "".join(kept))


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
        _atomic_text(self.folder / _BACKUP_META, json.dumps(state))  # the commit
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
