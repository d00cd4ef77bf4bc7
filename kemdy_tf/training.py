"""One runner for every training stage.

    prepare_run(...)  reads the dataset once, splits it, augments the training split,
                      trains the tokenizer and fills the feature cache; writes it all
                      into the workdir so every later step (and every rerun) uses it.
    train_stage(...)  trains one stage: audio (-> arousal), text (-> valence),
                      fusion (-> emotion), or a single-modality emotion classifier
                      (audio_clf, text_clf) used as the comparison baseline.

A stage is resumable: `BackupAndRestore` keeps the last finished epoch, so a killed
run continues when the same command runs again. A stage whose `summary.json` exists
is finished and is skipped unless `retrain=True`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kemdy_tf.config import RunConfig

log = logging.getLogger("kemdy_tf.training")

ENCODER_STAGES = ("audio", "text")
CLASSIFIER_STAGES = ("fusion", "audio_clf", "text_clf")
STAGES = ENCODER_STAGES + CLASSIFIER_STAGES
# What `--stage all` runs, in order: encoders first, the fusion and its baselines on top.
ALL_STAGES = ("audio", "text", "fusion", "audio_clf", "text_clf")
TARGET_OF_STAGE = {"audio": "arousal", "text": "valence", "fusion": "emotion",
                   "audio_clf": "emotion", "text_clf": "emotion"}
_AUDIO_INPUTS, _TEXT_INPUTS = ("log_mel", "frame_mask"), ("token_ids",)
INPUTS_OF_STAGE = {"audio": _AUDIO_INPUTS, "text": _TEXT_INPUTS, "fusion": _AUDIO_INPUTS + _TEXT_INPUTS,
                   "audio_clf": _AUDIO_INPUTS, "text_clf": _TEXT_INPUTS}
MODALITIES_OF_STAGE = {"fusion": ("audio", "text"), "audio_clf": ("audio",), "text_clf": ("text",)}


class TrainingError(RuntimeError):
    """A training run cannot go on (missing encoders, mismatched workdir, ...)."""


@dataclasses.dataclass
class Run:
    """What `prepare_run` leaves in a workdir, loaded."""

    workdir: Path
    config: RunConfig
    table: pd.DataFrame  # the utterance table with its `split` column (augmented rows included)
    cache: object  # features.FeatureCache
    tokenizer_path: Path

    def tokenizer(self):
        from kemdy_tf.models.tokenizer import load_tokenizer

        return load_tokenizer(str(self.tokenizer_path), self.config.features.max_tokens)

    def vocab_size(self) -> int:
        return int(self.tokenizer().vocabulary_size())

    def split(self, name: str) -> pd.DataFrame:
        return self.table[self.table["split"] == name]


# === Preparing a run ===

def read_source(source: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The utterance table and skip report of `{"data": DIR}` or `{"manifest": CSV}`."""
    if "manifest" in source:
        from kemdy_tf.data.manifest import read_manifest

        return read_manifest(source["manifest"])
    from kemdy_tf.data.kemdy20 import read_kemdy20

    return read_kemdy20(source["data"])


def prepare_run(workdir, source: dict, config: RunConfig, cache_dir=None, tokenizer_from=None) -> Run:
    """Read, split, augment, tokenize and cache once; later calls reuse the workdir.

    `tokenizer_from`: reuse that SentencePiece model instead of training one (fine-tuning
    a model from another run must keep that run's token ids).
    """
    from kemdy_tf.data import features, splits

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_json, table_csv = workdir / "run.json", workdir / "table.csv"
    tokenizer_path = workdir / "tokenizer.model"
    _check_same_data(run_json, source, config)
    cache_dir = Path(cache_dir or workdir.parent / "cache").resolve()

    if table_csv.exists() and tokenizer_path.exists():
        table = splits.read_split(table_csv)
    else:
        table, skips = read_source(source)
        skips.to_csv(workdir / "skips.csv", index=False)
        if len(skips):
            log.warning("%d rows skipped while reading; see %s", len(skips), workdir / "skips.csv")
        table = _split(table, config)
        table = _augment_train(table, config)
        if tokenizer_from:
            shutil.copyfile(tokenizer_from, tokenizer_path)
        else:
            _train_tokenizer(table, tokenizer_path, config)
        _atomic_write(table_csv, lambda tmp: splits.write_split(table, tmp))
        _atomic_write(run_json, lambda tmp: Path(tmp).write_text(json.dumps(
            {"config": config.to_dict(), "source": _portable(source), "cache_dir": str(cache_dir)},
            indent=2, ensure_ascii=False)))

    cache = features.FeatureCache(cache_dir, config.features)
    failures = cache.build(table, workers=min(2, os.cpu_count() or 1))
    if failures:
        failed = {str(Path(p).resolve()) for p, _ in failures}
        bad = table["wav_path"].map(lambda p: str(Path(p).resolve()) in failed)
        for path, reason in failures:
            log.warning("feature extraction failed for %s: %s", path, reason)
        table = table[~bad].reset_index(drop=True)
    return Run(workdir, config, table, cache, tokenizer_path)


def load_run(workdir, cache_dir=None) -> Run:
    """The Run a workdir was prepared with (its stored config, source and cache folder)."""
    run_json = Path(workdir) / "run.json"
    if not run_json.exists():
        raise TrainingError(f"{run_json} is missing: {workdir} is not a prepared run "
                            f"(train it first with `python train.py --workdir {workdir}`)")
    stored = json.loads(run_json.read_text(encoding="utf-8"))
    return prepare_run(workdir, stored["source"], RunConfig.from_dict(stored["config"]),
                       cache_dir=cache_dir or stored.get("cache_dir"))


def _split(table: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    from kemdy_tf.data import splits

    seed = config.train.seed
    if config.data.folds > 0:
        folds = splits.k_folds(table, config.data.folds, seed, config.data)
        return folds[config.data.fold]
    return splits.split_table(table, config.data, seed)


def _augment_train(table: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Text-augmented copies of training rows only (after splitting, never before)."""
    from kemdy_tf.data import augment

    table = table.assign(augmented_from="")
    train = table[table["split"] == "train"]
    extra = []
    if config.data.text_augment > 0:
        extra.append(augment.augment_table(train, config.data.text_augment, config.train.seed))
    if config.data.balance_target > 0:
        extra.append(augment.balance_table(train, config.data.balance_target, config.train.seed))
    extra = [e.assign(split="train") for e in extra if len(e)]
    return pd.concat([table, *extra], ignore_index=True) if extra else table


def _train_tokenizer(table: pd.DataFrame, path: Path, config: RunConfig) -> None:
    from kemdy_tf.models.tokenizer import train_sentencepiece

    texts = table.loc[(table["split"] == "train") & (table["augmented_from"] == ""), "text"]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise TrainingError("the training split has no transcripts to train the tokenizer on")
    train_sentencepiece(texts, str(path), config.features.vocab_size, seed=config.train.seed)


def find_tokenizer(model_path) -> Path:
    """The tokenizer.model of the run a `.keras` file belongs to (its folder or a parent)."""
    model_path = Path(model_path).resolve()
    if not model_path.exists():
        raise TrainingError(f"--init-from {model_path}: no such file")
    for folder in model_path.parents:
        if (folder / "tokenizer.model").exists():
            return folder / "tokenizer.model"
    raise TrainingError(f"no tokenizer.model found beside or above {model_path}: the model's "
                        f"token ids need the tokenizer of the run that trained it")


def _check_same_data(run_json: Path, source: dict, config: RunConfig) -> None:
    """A workdir belongs to one dataset and one data/feature setting."""
    if not run_json.exists():
        return
    stored = json.loads(run_json.read_text())
    mine = config.to_dict()
    for section in ("data", "features"):
        if RunConfig.from_dict(stored["config"]).to_dict()[section] != mine[section]:
            raise TrainingError(
                f"{run_json.parent} was prepared with different {section} settings "
                f"({stored['config'][section]}); use a new --workdir or the same settings")
    if stored.get("source") != _portable(source):
        raise TrainingError(f"{run_json.parent} was prepared from {stored.get('source')}, "
                            f"not {_portable(source)}; use a new --workdir")


def _portable(source: dict) -> dict:
    return {key: str(Path(value).resolve()) for key, value in source.items()}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


# === Datasets ===

def stage_dataset(run: Run, stage: str, split: str, training: bool, tokenizer=None, class_weights=None,
                  replicas: int = 1):
    """(inputs, {target: y}[, sample_weight]) batches holding only what the stage's model uses.

    `class_weights` (a list indexed by class) becomes a per-example sample weight: the
    same as Keras' `class_weight`, but also valid for dict outputs and distributed fits.
    """
    import tensorflow as tf

    from kemdy_tf.data.features import make_dataset

    target = TARGET_OF_STAGE[stage]
    table = run.split(split)
    if stage in ENCODER_STAGES:  # manifests may leave arousal/valence empty
        table = table[table[target].notna()]
    inputs = INPUTS_OF_STAGE[stage]
    # Under MirroredStrategy Keras sums a sample batch across replicas, which fails on bool.
    int_mask = replicas > 1
    weights = tf.constant(class_weights or [1.0], tf.float32)

    def select(features, targets):
        x = {k: features[k] for k in inputs}
        if int_mask and "frame_mask" in x:
            x["frame_mask"] = tf.cast(x["frame_mask"], tf.int32)
        if len(x) == 1:  # a single-input functional model wants the tensor itself
            (x,) = x.values()
        y = {target: targets[target]}
        if class_weights is None:
            return x, y
        return x, y, tf.gather(weights, targets[target])

    ds = make_dataset(table, run.cache, tokenizer or run.tokenizer(), run.config, training=training)
    return ds.map(select)


# === Models ===

def build_stage_model(run: Run, stage: str, unfreeze: bool = False, from_scratch: bool = False):
    """A fresh model for `stage`; classifiers reuse the encoders trained in this workdir."""
    import keras

    from kemdy_tf.models import audio_encoder, fusion, text_encoder

    cfg = run.config
    if stage == "audio":
        return audio_encoder.build_audio_encoder(cfg.audio, cfg.features)
    if stage == "text":
        return text_encoder.build_text_encoder(cfg.text, cfg.features, run.vocab_size())

    modalities = MODALITIES_OF_STAGE[stage]
    backbones = {}
    for modality in ("audio", "text"):
        if modality not in modalities:
            backbones[modality] = None
            continue
        path = run.workdir / modality / "model.keras"
        if path.exists() and not from_scratch:
            encoder = keras.saving.load_model(path, compile=False)
            backbone = encoder.get_layer(f"{modality}_backbone")
            backbone.trainable = unfreeze
        elif from_scratch:
            backbone = (audio_encoder.build_audio_backbone(cfg.audio, cfg.features) if modality == "audio"
                        else text_encoder.build_text_backbone(cfg.text, cfg.features, run.vocab_size()))
        else:
            raise TrainingError(
                f"stage {stage} starts from the {modality} encoder, but {path} is missing: "
                f"run `python train.py --stage {modality} --workdir {run.workdir}` first, "
                f"or pass --from-scratch")
        backbones[modality] = backbone
    return fusion.build_fusion_model(backbones["audio"], backbones["text"], cfg.fusion,
                                     len(cfg.data.classes), modalities=modalities)


def compile_stage_model(model, stage: str, config: RunConfig) -> None:
    import keras

    from kemdy_tf.models.metrics import SparseMacroF1

    optimizer = keras.optimizers.Adam(config.train.learning_rate, clipnorm=1.0)
    if stage in ENCODER_STAGES:
        model.compile(optimizer, loss="mse", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    else:
        model.compile(optimizer, loss="sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                               SparseMacroF1(len(config.data.classes), name="f1")])


def class_weights(run: Run) -> list[float]:
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


# === Training ===

def train_stage(run: Run, stage: str, *, epochs=None, strategy=None, unfreeze=False,
                from_scratch=False, init_from=None, retrain=False, verbose=None) -> dict:
    """Train one stage in `run.workdir / stage`; returns its validation summary."""
    import keras
    import tensorflow as tf

    if stage not in STAGES:
        raise TrainingError(f"unknown stage {stage!r}; choose one of {STAGES}")
    cfg = run.config
    stage_dir = run.workdir / stage
    summary_path = stage_dir / "summary.json"
    if summary_path.exists() and not retrain:
        log.info("stage %s already trained (%s); pass --retrain to train it again", stage, summary_path)
        return json.loads(summary_path.read_text())
    if retrain:
        for name in ("summary.json", "history.csv", "model.keras"):
            (stage_dir / name).unlink(missing_ok=True)
        shutil.rmtree(stage_dir / "backup", ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if init_from:
            model = keras.saving.load_model(init_from, compile=False)
        else:
            model = build_stage_model(run, stage, unfreeze=unfreeze, from_scratch=from_scratch)
        compile_stage_model(model, stage, cfg)
    (stage_dir / "config.json").write_text(json.dumps(
        {"stage": stage, "config": cfg.to_dict(), "init_from": str(init_from or ""),
         "unfreeze": unfreeze, "from_scratch": from_scratch}, indent=2, ensure_ascii=False))

    tokenizer = run.tokenizer()
    weights = None
    if stage in CLASSIFIER_STAGES and cfg.train.class_weighting == "weights":
        weights = class_weights(run)
    replicas = strategy.num_replicas_in_sync
    train_ds = stage_dataset(run, stage, "train", training=True, tokenizer=tokenizer, class_weights=weights,
                             replicas=replicas)
    val_ds = stage_dataset(run, stage, "val", training=False, tokenizer=tokenizer, replicas=replicas)
    history_csv = stage_dir / "history.csv"
    checkpoint = keras.callbacks.ModelCheckpoint(stage_dir / "model.keras", monitor="val_loss",
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
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(train_ds, validation_data=val_ds, epochs=epochs or cfg.train.epochs,
              callbacks=callbacks, verbose=verbose)
    if not (stage_dir / "model.keras").exists():  # no epoch improved on a resumed best: keep last
        model.save(stage_dir / "model.keras")

    best = keras.saving.load_model(stage_dir / "model.keras", compile=False)
    summary = validation_summary(run, stage, best, tokenizer)
    _atomic_write(summary_path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    print(format_summary(summary))
    return summary


def _best_logged(history_csv: Path, column: str):
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return None
    history = pd.read_csv(history_csv)
    return float(history[column].min()) if column in history and len(history) else None


# === Summaries ===

def validation_summary(run: Run, stage: str, model, tokenizer=None) -> dict:
    """The stage's metrics on the validation split next to the majority/mean baseline.

    Uses the same metric code and baseline definition as `evaluate.py`.
    """
    from kemdy_tf.evaluation import metrics

    target = TARGET_OF_STAGE[stage]
    ds = stage_dataset(run, stage, "val", training=False, tokenizer=tokenizer)
    y_true = np.concatenate([y[target].numpy().reshape(-1) for _, y in ds])
    y_pred = model.predict(ds.map(lambda x, y: x), verbose=0)[target]
    train = run.split("train")
    train = train[train["augmented_from"].fillna("") == ""] if "augmented_from" in train else train
    summary = {"stage": stage, "split": "val", "n": int(len(y_true)), "target": target}
    if stage in ENCODER_STAGES:
        summary["model"] = metrics.regression_metrics(y_true, np.asarray(y_pred).reshape(-1))
        summary["baseline"] = metrics.mean_baseline(y_true, float(train[target].mean()))
        summary["baseline_name"] = "training-split mean"
    else:
        classes = list(run.config.data.classes)
        train_labels = train["emotion"][train["emotion"].isin(classes)].map(classes.index)
        majority = metrics.majority_class(train_labels.to_numpy(), len(classes))
        summary["model"] = metrics.classification_metrics(y_true.astype(int), np.argmax(y_pred, -1), classes)
        summary["baseline"] = metrics.majority_baseline(y_true.astype(int), majority, classes)
        summary["baseline_name"] = f"majority class ({classes[majority]})"
    return summary


def format_summary(summary: dict) -> str:
    head = f"\n== {summary['stage']}: validation split ({summary['n']} utterances) =="
    model, baseline = summary["model"], summary["baseline"]
    if "rmse" in model:
        return (f"{head}\n{'':28s}{'RMSE':>8s}{'CCC':>8s}\n"
                f"{summary['stage'] + ' ' + summary['target']:28s}{model['rmse']:8.3f}{model['ccc']:8.3f}\n"
                f"{summary['baseline_name']:28s}{baseline['rmse']:8.3f}{baseline['ccc']:8.3f}\n")
    rows = [f"{'':28s}{'WA':>8s}{'UA':>8s}{'macro-F1':>10s}{'wF1':>8s}"]
    for m, label in ((model, summary["stage"]), (baseline, summary["baseline_name"])):
        rows.append(f"{label:28s}{m['accuracy']:8.3f}{m['balanced_accuracy']:8.3f}"
                    f"{m['macro_f1']:10.3f}{m['weighted_f1']:8.3f}")
    return "\n".join([head, *rows, "(WA flatters a majority-class model: read UA and macro-F1)\n"])
