"""Training one stage of a prepared run.

    run = kemdy_tf.run.prepare_run(workdir, {"data": DIR}, config)   # the run on disk
    train_stage(run, "audio")                                         # -> WORKDIR/audio/

What a stage is (target, inputs, builder, loss, metrics) comes from the registry in
`kemdy_tf.stages`; what a workdir holds from `kemdy_tf.run`; the class balance from
`kemdy_tf.class_balance`; the kill-safe files from `kemdy_tf.checkpoints`; the printed
summary from `kemdy_tf.summaries`. This module is the loop around them: build and
compile, one resumable fit sequence (`_fit_resumably`, shared by the first fit and the
refit), summarise.

The stage's model is built and trained under the Keras dtype policy `train.precision`
(`kemdy_tf.models.precision`; the global policy is restored afterwards); the finished
`model.keras` is float32 whatever it was trained in.

A stage is resumable: each finished epoch is committed (`checkpoints`), so a run killed
at any instant continues when the same command runs again, and ends as the
uninterrupted run would. A stage whose `summary.json` exists is finished and is
skipped unless `retrain=True`.
"""

from __future__ import annotations

import dataclasses
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

from kemdy_tf import (classical, fusion_experts, ngram_choice, run as run_lib, speaker_statistics,
                      stages as stages_lib, summaries)
from kemdy_tf.checkpoints import (BACKUP_DIR, AtomicBackupAndRestore, AtomicModelCheckpoint,
                                  AveragedWeightsAtEpochEnd, atomic_save_model, atomic_text, logged,
                                  read_backup, rollback_to_backup, skip_finished_epochs)
from kemdy_tf.class_balance import class_balance, class_weight_values, training_labels
from kemdy_tf.config import MONITOR_MODES, RunConfig, check_monitor
from kemdy_tf.models import functionals_logistic, ngram_logistic, precision as precision_lib
from kemdy_tf.models.losses import LogitAdjustedLoss

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
    if retrain:  # the n-gram choice too: it was made for the config that ran before
        for name in (run_lib.SUMMARY, run_lib.HISTORY, run_lib.MODEL, run_lib.NGRAM_CHOICE):
            (stage_dir / name).unlink(missing_ok=True)
        shutil.rmtree(stage_dir / BACKUP_DIR, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)

    strategy = strategy or tf.distribute.get_strategy()
    fit_epochs = epochs or cfg.train.epochs
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else "line"
    start = dict(init_from=init_from, unfreeze=unfreeze, from_scratch=from_scratch)
    run, functionals_decision = _functionals_in_fusion(run, spec, from_scratch, init_from)
    cfg = run.config
    ngram_report = None
    if ngram_choice.wants_choice(run, spec) and not init_from:  # fusion.char_ngram_model=auto
        run, ngram_report = ngram_choice.choose(
            run, spec, lambda r: build_stage_model(r, stage, unfreeze=unfreeze, from_scratch=from_scratch),
            _fitted_path_weights(run, weighting, weights))
        cfg = run.config
        keras.utils.set_random_seed(cfg.train.seed)  # the candidates drew from it: the deep path starts as without
    model = _compiled_stage_model(run, stage, strategy, fit_epochs, prior, **start)
    if speaker_statistics.reads_speaker_statistics(model):  # what an export answers an unenrolled clip with
        speaker_statistics.ensure_fallback(run)
    atomic_text(stage_dir / run_lib.STAGE_CONFIG, json.dumps(
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
    fit_weights = _fitted_path_weights(run, weighting, weights)  # what a fitted path and its share are weighed by
    wide_rows = _fit_ngram_logistic(run, spec, model, tokenizer, fit_weights)
    functionals_fit = _fit_functionals_logistic(run, spec, model, tokenizer, fit_weights)
    # Resume from the last committed epoch; history.csv and model.keras are rolled back to it.
    backup = read_backup(stage_dir / BACKUP_DIR)
    if backup is not None and backup.get("monitor", "val_loss") != monitor:
        # Its best and EarlyStopping's counters measure another figure: start afresh.
        log.warning("the resume backup of stage %s followed %s, this run follows %s; the stage "
                    "starts again from epoch 1", stage, backup.get("monitor", "val_loss"), monitor)
        backup = None
    if backup is None:  # the first fit starts afresh: so does any refit a killed earlier run left
        shutil.rmtree(stage_dir / REFIT_DIR, ignore_errors=True)
    model_path = _fit_resumably(model, stage_dir, train_ds, backup, cfg, epochs=fit_epochs, label=stage,
                                verbose=verbose, val_ds=val_ds, monitor=monitor, mode=mode)

    best = keras.saving.load_model(model_path, compile=False)
    if precision_lib.is_mixed(best):  # trained in mixed precision: kept, scored and served in float32
        best = precision_lib.with_policy(best, "float32")
        atomic_save_model(best, model_path)
    share = None
    if ngram_logistic.has_wide_share(best):  # the fitted path's share of each answer, chosen on the validation split
        share = ngram_logistic.choose_share_for(best, stages_lib.stage_dataset(
            run, spec, "val", training=False, tokenizer=tokenizer, model=best), fit_weights)
        kept = keras.saving.load_model(model_path)  # compiled: the saved model keeps its loss and metrics
        ngram_logistic.set_share(kept, share)
        atomic_save_model(kept, model_path)
    experts = None
    if spec.is_classifier and len(spec.modalities) == 2:  # the fusion model: cross-modal network x classifiers
        best, experts = _with_experts(run, stage, best, model_path, prior, tokenizer)
    if spec.is_classifier:  # the classical baseline beside the summary (fitted once per run)
        classical.fit_for_run(refit_view(run) if cfg.train.refit else run)
    # Scored before any refit: the early-stopped model never saw the validation split.
    summary = summaries.validation_summary(run, stage, best, tokenizer, classical_row=not cfg.train.refit)
    if weighting:
        summary["class_weighting"] = weighting
    if wide_rows:
        summary["char_ngram_logistic"] = {"rows": wide_rows, "share": share}
    if functionals_fit:
        summary["functionals_logistic"] = {**functionals_fit, "share": share}
    if ngram_report is not None:
        summary["char_ngram_choice"] = ngram_report
    if functionals_decision is not None:
        summary["functionals_in_fusion"] = functionals_decision
    if experts is not None:
        summary["experts"] = experts
    if cfg.train.refit:
        kept = kept_epochs(stage_dir / run_lib.HISTORY, monitor, mode)
        summary["refit"] = refit_stage(run, stage, epochs=kept, fit_epochs=fit_epochs, strategy=strategy,
                                       verbose=verbose, wide_share=share,
                                       functionals_c=(functionals_fit or {}).get("c"), **start)
    atomic_text(summary_path, json.dumps(summary, indent=2))
    shutil.rmtree(stage_dir / BACKUP_DIR, ignore_errors=True)  # finished: nothing left to resume
    shutil.rmtree(stage_dir / REFIT_DIR / BACKUP_DIR, ignore_errors=True)
    print(summaries.format_summary(summary))
    return summary


def _with_experts(run, stage: str, trained, model_path: Path, prior, tokenizer):
    """The fusion stage's final model: its cross-modal network (`trained`, or the network of
    an `--init-from` fusion model) combined with the run's classifiers (`fusion_experts`),
    saved compiled as the stage's model; `(model, report)`."""
    network = fusion_experts.cross_modal_part(trained)
    combined, report = fusion_experts.combine_for_run(run, network, tokenizer)
    if combined is not trained:
        compile_stage_model(combined, stage, run.config, class_prior=prior)
        atomic_save_model(combined, model_path)
        if speaker_statistics.reads_speaker_statistics(combined):  # its audio expert may read them
            speaker_statistics.ensure_fallback(run)
    return combined, report


def _fit_resumably(model, folder: Path, train_ds, backup: dict | None, cfg: RunConfig, *, epochs: int,
                   label: str, verbose, val_ds=None, monitor: str = "loss", mode: str = "min") -> Path:
    """The fit sequence of a stage and of its refit: `model.fit` into `folder` (model.keras,
    history.csv, backup/), resumed from the committed `backup` (None: from epoch 1).

    With `val_ds` the fit keeps the best epoch of `monitor` and stops early (train.patience);
    without it (the refit), every epoch is saved and the last one is the model. Returns
    the path of the model it leaves (float32 or not, as trained).
    """
    best_so_far = rollback_to_backup(folder, backup, monitor, mode)
    early_stopping = val_ds is not None
    # mode is explicit: Keras' "auto" guesses min for any name without "acc" in it
    checkpoint = AtomicModelCheckpoint(folder / run_lib.MODEL, monitor=monitor, mode=mode,
                                       save_best_only=early_stopping)
    stopper = None
    if early_stopping:
        if best_so_far is not None:  # a resumed run keeps the best it already saved
            checkpoint.best = best_so_far
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience,
                                                restore_best_weights=True)
    callbacks = [  # in this order: the average first, the backup commits what the others did
        *([AveragedWeightsAtEpochEnd(resumed=backup is not None)] if cfg.train.ema_epochs > 0 else []),
        checkpoint,
        *([stopper] if stopper else []),
        keras.callbacks.CSVLogger(str(folder / run_lib.HISTORY), append=True),
        AtomicBackupAndRestore(folder / BACKUP_DIR, backup, checkpoint, stopper),
        *([keras.callbacks.TensorBoard(str(folder / run_lib.LOGS_DIR), write_graph=False)] if early_stopping else []),
    ]
    if verbose == "line":
        callbacks.append(EpochLine(label, epochs))
        verbose = 0
    if backup is not None:  # a resumed fit continues the datasets' seed sequence
        skip_finished_epochs(train_ds, backup["epoch"])
    # The datasets shuffle themselves (seeded); shuffle=False only stops Keras warning about it.
    with precision_lib.dtype_policy(cfg.train.precision):
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    model_path = folder / run_lib.MODEL
    if not model_path.exists():  # no epoch improved on a resumed best: keep the last
        atomic_save_model(model, model_path)
    return model_path


def _compiled_stage_model(run, stage: str, strategy, fit_epochs: int, prior, *, init_from=None,
                          unfreeze=False, from_scratch=False):
    """The stage's model, built (or loaded from `init_from`) and compiled for a fit of
    `fit_epochs` over `run`'s training split, under the run's dtype policy
    (train.precision; the global policy is restored after the block, also on error)."""
    spec, cfg = stages_lib.get(stage), run.config
    with precision_lib.dtype_policy(cfg.train.precision), strategy.scope():
        try:
            if init_from:  # a fusion model trains its cross-modal network; its experts are fitted after
                model = fusion_experts.cross_modal_part(keras.saving.load_model(init_from, compile=False))
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

REFIT_DIR, EARLY_STOPPED = run_lib.REFIT_DIR, run_lib.EARLY_STOPPED


def refit_view(run):
    """`run` with its validation rows moved into the training split (none left in val)."""
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
    values = logged(history_csv, monitor)
    if values is None:
        raise TrainingError(f"{history_csv} has no {monitor!r} column to find the kept epoch in; "
                            f"train.refit needs the stage's history (train it again with --retrain)")
    return best_epoch(values, mode)


def refit_stage(run, stage: str, *, epochs: int, fit_epochs: int, strategy=None, init_from=None,
                unfreeze=False, from_scratch=False, verbose=0, wide_share=None, functionals_c=None) -> dict:
    """Train `stage` again from its initial weights on training + validation rows for
    `epochs` epochs, on the schedule of a `fit_epochs` fit (the learning rate of each epoch
    is the early-stopped fit's), then make it the stage's model.keras and keep the
    early-stopped model beside it as early_stopped.keras. Resumable like the first fit
    (the same fit sequence, its own backup in `STAGE/refit/`). A text classifier's n-gram
    logistic regression is fitted again on the same rows and keeps the early-stopped
    model's `wide_share` (no validation split is left to choose it on); an audio classifier's
    functionals regression likewise, with the early-stopped model's strength `functionals_c`. Returns what the
    summary records of it."""
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
    fit_weights = _fitted_path_weights(merged, weighting, weights)
    _fit_ngram_logistic(merged, spec, model, tokenizer, fit_weights)
    _fit_functionals_logistic(merged, spec, model, tokenizer, fit_weights, c=functionals_c)
    refitted = _fit_resumably(model, folder, train_ds, read_backup(folder / BACKUP_DIR), cfg, epochs=epochs,
                              label=f"{stage} refit", verbose=verbose)
    if precision_lib.is_mixed(model) or wide_share is not None:
        final = keras.saving.load_model(refitted, compile=False)
        if precision_lib.is_mixed(final):  # trained in mixed precision: kept in float32, as the first fit
            final = precision_lib.with_policy(final, "float32")
        if wide_share is not None and ngram_logistic.has_wide_share(final):
            ngram_logistic.set_share(final, wide_share)
        atomic_save_model(final, refitted)
    if spec.is_classifier and len(spec.modalities) == 2:  # the fusion model: its experts, as fitted on validation
        early_stopped = keras.saving.load_model(stage_dir / run_lib.MODEL, compile=False)
        if fusion_experts.has_experts(early_stopped):
            network = fusion_experts.cross_modal_part(keras.saving.load_model(refitted, compile=False))
            atomic_save_model(fusion_experts.recombine(network, early_stopped, run), refitted)
    # The early-stopped model first (a copy, renamed into place), then the refitted one
    # by one rename: a kill in between leaves the main backup, which restores the first.
    tmp = stage_dir / f".{EARLY_STOPPED}.partial.keras"
    shutil.copy2(stage_dir / run_lib.MODEL, tmp)
    os.replace(tmp, stage_dir / EARLY_STOPPED)
    os.replace(refitted, stage_dir / run_lib.MODEL)
    rows = len(dataset_rows_of(merged, spec))
    log.info("stage %s refitted on %d training + validation rows for %d epochs", stage, rows, epochs)
    return {"epochs": epochs, "rows": rows, "early_stopped_model": EARLY_STOPPED}


# === Helpers ===

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


def _fit_ngram_logistic(run, spec, model, tokenizer, weights) -> int:
    """Fit a text classifier's n-gram logistic regression (fusion.char_ngram_model nblr or
    tfidf_lr) on the run's training split with these class weights (`_fitted_path_weights`); returns
    the rows, 0 (nothing done) for other models. Deterministic, so a resumed run fits the
    same weights again."""
    if not ngram_logistic.has_ngram_logistic(model):
        return 0
    train = stages_lib.stage_dataset(run, spec, "train", training=False, tokenizer=tokenizer,
                                     class_weights=weights, model=model)
    start = time.perf_counter()
    rows = ngram_logistic.fit_ngram_logistic(model, train, run.config.fusion.char_ngram_c)
    log.info("stage %s: character n-gram logistic regression fitted on %d rows in %.0fs", spec.name, rows,
             time.perf_counter() - start)
    return rows


def _fit_functionals_logistic(run, spec, model, tokenizer, weights, c=None) -> dict | None:
    """Fit an audio classifier's functionals logistic regression (fusion.functionals_logistic)
    on the run's training split with these class weights (`_fitted_path_weights`), its strength `c`
    or, without one, the one of the lowest validation log loss; None, nothing done, for other
    models. Returns its report (`functionals_logistic.fit_functionals_logistic`).
    Deterministic, so a resumed run fits the same weights again."""
    if not functionals_logistic.has_functionals_logistic(model):
        return None
    train = stages_lib.stage_dataset(run, spec, "train", training=False, tokenizer=tokenizer,
                                     class_weights=weights, model=model)
    val_ds = (stages_lib.stage_dataset(run, spec, "val", training=False, tokenizer=tokenizer, model=model)
              if c is None and len(run.split("val")) else None)
    start = time.perf_counter()
    report = functionals_logistic.fit_functionals_logistic(model, train, val_ds, c=c, class_weights=weights)
    log.info("stage %s: functionals logistic regression (C %g) fitted on %d rows in %.0fs", spec.name,
             report["c"], report["rows"], time.perf_counter() - start)
    return report


def _functionals_in_fusion(run, spec, from_scratch: bool, init_from) -> tuple[object, dict | None]:
    """Decide `fusion.functionals_in_fusion=auto` for a fusion stage: `(run with "true" or
    "false", {"value", "why"})`; `(run, None)` for other stages or a value already given."""
    fusion = run.config.fusion
    if not (spec.is_classifier and len(spec.modalities) == 2 and fusion.functionals
            and str(fusion.functionals_in_fusion).lower() == "auto"):
        return run, None
    if init_from:  # the model it continues decides
        model = keras.saving.load_model(init_from, compile=False)
        value = any(layer.name == "utterance_functionals" for layer in model.layers)
        why = "as the model of --init-from"
    else:
        value = stages_lib.starts_from_scratch(run, "audio", from_scratch)
        why = ("its audio backbone starts from scratch (no trained audio encoder): the functionals give it "
               "a path a few hundred clips can train" if value else
               "its audio backbone is the trained audio encoder's: the functionals would outweigh the transcript")
    print(f"stage {spec.name}: utterance functionals {'read' if value else 'not read'} by the fusion model ({why})",
          flush=True)
    config = run.config
    run = dataclasses.replace(run, config=dataclasses.replace(config, fusion=dataclasses.replace(
        fusion, functionals_in_fusion="true" if value else "false")))
    return run, {"value": bool(value), "why": why}


def _fitted_path_weights(run, weighting, weights):
    """The class weights a fitted path (an n-gram or functionals regression) fits with, and
    its share is chosen with: the deep path's, or under logit_adjust, which weighs no
    example, the balanced ones (the same prior-free decision)."""
    if weighting == "logit_adjust":
        return class_weight_values(training_labels(run), len(run.config.data.classes), "weights")
    return weights


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
