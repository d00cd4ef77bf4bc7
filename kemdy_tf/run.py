"""A run on disk: the one module that knows what a workdir holds.

    WORKDIR/
      run.json          {"config": RunConfig.to_dict(), "source": {kind: path}, "cache_dir": DIR,
                         "made_with": {"preset", "recipes", "overrides"}} (train.py's command line)
      table.csv         the utterance table with `split` (and `augmented_from`), written once
      skips.csv         the reader's skip report
      tokenizer.model   SentencePiece model trained on the training split's transcripts, or
      tokenizer/        with text.backbone: that preset's own tokenizer (config + vocabulary)
      audio_converter.json  with audio.backbone: that preset's audio converter (its feature recipe)
      <stage>/          one folder per registered stage (kemdy_tf.stages): model.keras,
                        history.csv, config.json, summary.json, backup/, logs/

Two ways in:

    prepare_run(workdir, source, config)  # training: read, split, augment, tokenize, cache (writes)
    open_run(workdir)                     # everything after training: read-only

`open_run` never writes and never computes features: evaluation and export read a
finished run exactly as training left it. When the feature cache is gone, a stage
that needs it says so (`Run.require_features`) and names the command that rebuilds it.

Data sources are registered here too: `{"data": DIR}` is the KEMDy20 reader,
`{"manifest": CSV}` the manifest reader; `register_source` adds another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import typing
from pathlib import Path

import pandas as pd

from kemdy_tf import speaker_statistics, stages as stages_lib
from kemdy_tf.config import RunConfig

log = logging.getLogger("kemdy_tf.run")

RUN_JSON, TABLE_CSV, SKIPS_CSV, TOKENIZER = "run.json", "table.csv", "skips.csv", "tokenizer.model"
# A pretrained backbone's front end, copied into the run so it needs neither the preset nor
# the network again (models.backbones): its tokenizer folder and its audio converter's config.
PRESET_TOKENIZER, AUDIO_CONVERTER = "tokenizer", "audio_converter.json"
MODEL, HISTORY, SUMMARY, STAGE_CONFIG = "model.keras", "history.csv", "summary.json", "config.json"
# Inside a stage folder: the resume backup (kemdy_tf.checkpoints), TensorBoard's logs, and with
# train.refit the refit's own folder and the early-stopped model kept beside the refit.
BACKUP_DIR, LOGS_DIR, REFIT_DIR, EARLY_STOPPED = "backup", "logs", "refit", "early_stopped.keras"
# The run's classical baseline (kemdy_tf.classical), and the runs train.py nests in a workdir.
CLASSICAL_DIR, FOLDS_DIR, SWEEPS_DIR = "classical", "folds", "sweeps"
# Beside run.json, the training split's pooled speaker statistics (kemdy_tf.speaker_statistics);
# in the text classifier's folder, its n-gram regression chosen on validation (kemdy_tf.ngram_choice).
SPEAKER_FALLBACK, NGRAM_CHOICE = speaker_statistics.FALLBACK_FILE, "ngram_choice.json"


class RunError(RuntimeError):
    """A workdir is not a usable run (missing files, other data or settings, no features)."""


# === Data sources ===

def _read_kemdy20(path):
    from kemdy_tf.data.kemdy20 import read_kemdy20

    return read_kemdy20(path)


def _read_manifest(path):
    from kemdy_tf.data.manifest import read_manifest

    return read_manifest(path)


# kind -> reader(path) -> (utterance table, skip report); every reader checks its table
# against kemdy_tf.data.schema before returning it.
SOURCES: dict[str, typing.Callable] = {"data": _read_kemdy20, "manifest": _read_manifest}


def register_source(kind: str, reader: typing.Callable) -> None:
    """Add a data source: `{kind: path}` will be read by `reader(path) -> (table, skips)`."""
    if kind in SOURCES:
        raise ValueError(f"data source {kind!r} is already registered")
    SOURCES[kind] = reader


def read_source(source: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The utterance table and skip report of a source such as `{"data": DIR}`."""
    (kind, path), = source.items()
    if kind not in SOURCES:
        raise RunError(f"unknown data source {kind!r}; known: {tuple(SOURCES)}")
    return SOURCES[kind](path)


# === The run ===

@dataclasses.dataclass
class Run:
    """A workdir, loaded: its config, split table, tokenizer and feature cache."""

    workdir: Path
    config: RunConfig
    table: pd.DataFrame  # the utterance table with its `split` column (augmented rows included)
    cache: object  # features.FeatureCache, or None when opened without features
    tokenizer_path: Path
    source: dict = dataclasses.field(default_factory=dict)

    def tokenizer(self):
        """strings -> int32 ids [batch, max_tokens], pad 0 (SentencePiece or the backbone's own)."""
        from kemdy_tf.models.tokenizer import load_run_tokenizer

        return load_run_tokenizer(self.tokenizer_path, self.config.features.max_tokens)

    def audio_front_end(self):
        """None (the seed's log-mel) or the audio backbone's converter features (`backbones.ConverterFeatures`)."""
        return load_audio_front_end(self.workdir, self.config)

    def vocab_size(self) -> int:
        return int(self.tokenizer().vocabulary_size())

    def split(self, name: str) -> pd.DataFrame:
        return self.table[self.table["split"] == name]

    def stage_dir(self, stage: str) -> Path:
        return stage_dir(self.workdir, stage)

    def model_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / MODEL

    def require_features(self, table: pd.DataFrame, what: str) -> pd.DataFrame:
        """The rows of `table` whose log-mels are cached; RunError when none are.

        Rows whose extraction failed during training were never cached and are left
        out, as training left them out; a cache that is gone is an error naming the fix.
        """
        if self.cache is None:
            raise RunError(f"{self.workdir} was opened without its feature cache")
        cached = self.cache.has(table)
        if len(table) and not cached.any():
            raise RunError(
                f"the feature cache {self.cache.folder} holds none of the {what}'s {len(table)} clips; "
                f"it was moved or deleted. Rebuild it with `python train.py --workdir {self.workdir} "
                f"--stage <a finished stage>` (finished stages are skipped, the cache is refilled) "
                f"or pass --cache-dir")
        if not cached.all():
            log.warning("%d of %d %s clips have no cached features (extraction failed during training); "
                        "they are left out", int((~cached).sum()), len(table), what)
        return table[cached]


def stage_dir(workdir, stage: str) -> Path:
    return Path(workdir) / stage


def stage_folders(workdir, filename: str) -> dict[str, Path]:
    """`{stage: folder}` of the registered stages whose folder holds `filename`, in report order."""
    workdir = Path(workdir)
    return {name: workdir / name for name in stages_lib.report_order()
            if (workdir / name / filename).exists()}


def open_run(workdir, cache_dir=None, with_features: bool = True) -> Run:
    """A finished (or prepared) run, read-only: nothing is written, nothing computed.

    Args:
        workdir: the run folder.
        cache_dir: the feature cache, when it moved (default: the one run.json names).
        with_features: open the feature cache too (evaluation); the export needs none.

    Raises:
        RunError: run.json, table.csv or tokenizer.model is missing or unreadable, or
            the feature cache folder does not exist.
    """
    workdir = Path(workdir)
    for name in (RUN_JSON, TABLE_CSV):
        if not (workdir / name).is_file():
            raise RunError(f"{workdir / name} is missing: {workdir} is not a prepared run "
                           f"(train it first with `python train.py --workdir {workdir}`)")
    stored = read_run_json(workdir)
    tokenizer_path = tokenizer_location(workdir, stored["config"])
    if not tokenizer_path.exists():
        raise RunError(f"{tokenizer_path} is missing: {workdir} is not a prepared run "
                       f"(train it first with `python train.py --workdir {workdir}`)")
    from kemdy_tf.data import splits

    table = splits.read_split(workdir / TABLE_CSV)
    cache = None
    if with_features:
        cache_root = Path(cache_dir or stored.get("cache_dir") or workdir.parent / "cache")
        if not cache_root.is_dir():
            raise RunError(f"the feature cache {cache_root} of {workdir} does not exist; pass --cache-dir, "
                           f"or rebuild it with `python train.py --workdir {workdir} --stage <a finished stage>`")
        from kemdy_tf.data import features

        cache = features.FeatureCache(cache_root, stored["config"].features,
                                      front_end=load_audio_front_end(workdir, stored["config"]))
    return Run(workdir, stored["config"], table, cache, tokenizer_path, stored["source"])


def tokenizer_location(workdir, config: RunConfig) -> Path:
    """Where a run keeps its tokenizer: `tokenizer.model`, or `tokenizer/` with a text backbone."""
    return Path(workdir) / (PRESET_TOKENIZER if config.text.backbone else TOKENIZER)


def load_audio_front_end(workdir, config: RunConfig):
    """The run's audio front end from its `audio_converter.json` (None without an audio backbone)."""
    if not config.audio.backbone:
        return None
    import keras

    from kemdy_tf.models.backbones import ConverterFeatures

    path = Path(workdir) / AUDIO_CONVERTER
    try:
        converter = keras.saving.deserialize_keras_object(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the run names audio.backbone={config.audio.backbone!r} "
                       f"but was not prepared with it") from None
    except Exception as error:
        raise RunError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    return ConverterFeatures(converter, config.features.max_frames)


def _save_audio_converter(workdir: Path, config: RunConfig) -> RunConfig:
    """Copy the audio preset's converter into the run (once) and size the features by it."""
    if not config.audio.backbone:
        return config
    path = workdir / AUDIO_CONVERTER
    if not path.exists():
        import keras

        from kemdy_tf.models.backbones import load_audio_converter

        converter = keras.saving.serialize_keras_object(load_audio_converter(config.audio.backbone))
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(converter, indent=2), encoding="utf-8"))
    front_end = load_audio_front_end(workdir, config)
    features = dataclasses.replace(config.features, **front_end.feature_fields())
    if features != config.features:
        log.info("audio.backbone %s: features %s (its converter's)", config.audio.backbone, front_end.feature_fields())
    return dataclasses.replace(config, features=features)


def read_run_json(workdir) -> dict:
    """`{"config": RunConfig, "source": dict, "cache_dir": str | None}` of a workdir's run.json."""
    path = Path(workdir) / RUN_JSON
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return {"config": RunConfig.from_dict(stored["config"]), "source": stored["source"],
                "cache_dir": stored.get("cache_dir")}
    except FileNotFoundError:
        raise RunError(f"{path} is missing: {path.parent} is not a prepared run "
                       f"(train it first with `python train.py --workdir {path.parent}`)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"cannot read {path}: {type(error).__name__}: {error}") from None


# === Preparing a run (training's way in; writes) ===

def prepare_run(workdir, source: dict, config: RunConfig, cache_dir=None, tokenizer_from=None,
                made_with: dict | None = None) -> Run:
    """Read, split, augment, tokenize and cache once; later calls reuse the workdir.

    `tokenizer_from`: reuse that SentencePiece model instead of training one (fine-tuning
    a model from another run must keep that run's token ids). `made_with`: how the config
    was made (`{"preset", "recipes", "overrides"}`), recorded in run.json.
    """
    from kemdy_tf.data import features, splits

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_json, table_csv = workdir / RUN_JSON, workdir / TABLE_CSV
    _check_same_data(run_json, source, config)  # before the converter is copied: a changed preset is refused
    config = _save_audio_converter(workdir, config)
    tokenizer_path = tokenizer_location(workdir, config)
    cache_dir = Path(cache_dir or workdir.parent / "cache").resolve()

    if run_json.exists() and table_csv.exists() and tokenizer_path.exists():  # run.json is written last
        table = splits.read_split(table_csv)
        _check_labels(table, config)
    else:
        table, skips = read_source(source)
        atomic_write(workdir / SKIPS_CSV, lambda tmp: skips.to_csv(tmp, index=False))
        if len(skips):
            log.warning("%d rows skipped while reading; see %s", len(skips), workdir / SKIPS_CSV)
        table = _split(table, config)
        _check_labels(table, config)
        table = _augment_train(table, config)
        if tokenizer_from:
            _copy_tokenizer(Path(tokenizer_from), tokenizer_path)
        elif config.text.backbone:
            from kemdy_tf.models.backbones import load_preset_tokenizer

            load_preset_tokenizer(config.text.backbone, config.features.max_tokens).save(tokenizer_path)
        else:
            _train_tokenizer(table, tokenizer_path, config)
        write_run_files(workdir, config, source, table, cache_dir, made_with)

    cache = features.FeatureCache(cache_dir, config.features, front_end=load_audio_front_end(workdir, config))
    failures = cache.build(table, workers=min(2, os.cpu_count() or 1))
    if failures:
        from kemdy_tf.data.checks import feature_failure_skips

        _append_skips(workdir / SKIPS_CSV, feature_failure_skips(table, failures))
        failed = {str(Path(p).resolve()) for p, _ in failures}
        bad = table["wav_path"].map(lambda p: str(Path(p).resolve()) in failed)
        for path, reason in failures:
            log.warning("feature extraction failed for %s: %s", path, reason)
        table = table[~bad].reset_index(drop=True)
    return Run(workdir, config, table, cache, tokenizer_path, _portable(source))


def _check_labels(table: pd.DataFrame, config: RunConfig) -> None:
    """Log the split table's label warnings; SingleClassError (a ValueError) on < 2 classes."""
    from kemdy_tf.data.checks import check_training_labels

    for line in check_training_labels(table, config.data.classes):
        log.warning(line)


def _append_skips(path: Path, extra: pd.DataFrame) -> None:
    """Add skip rows to skips.csv (rewritten atomically; a row already listed is not repeated)."""
    if extra.empty:
        return
    old = pd.read_csv(path, keep_default_na=False, dtype=str) if path.exists() and path.stat().st_size else None
    rows = extra.astype(str) if old is None else pd.concat([old, extra.astype(str)], ignore_index=True)
    rows = rows.drop_duplicates(ignore_index=True)
    atomic_write(path, lambda tmp: rows.to_csv(tmp, index=False))
    log.warning("%d clips whose audio cannot be decoded are left out; see %s", len(extra), path)


def write_run_files(workdir, config: RunConfig, source: dict, table: pd.DataFrame, cache_dir,
                    made_with: dict | None = None) -> None:
    """Write `table.csv` and then `run.json` (last: its presence means the run is prepared).

    `table` is the split utterance table (a `split` column); the tokenizer is written
    by the caller first. Tests use this to lay out a stand-in run the way training does.
    """
    from kemdy_tf.data import splits

    workdir = Path(workdir)
    atomic_write(workdir / TABLE_CSV, lambda tmp: splits.write_split(table, tmp))
    atomic_write(workdir / RUN_JSON, lambda tmp: Path(tmp).write_text(json.dumps(
        {"config": config.to_dict(), "source": _portable(source), "cache_dir": str(Path(cache_dir).resolve()),
         **({"made_with": made_with} if made_with else {})},
        indent=2, ensure_ascii=False)))


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
        raise RunError("the training split has no transcripts to train the tokenizer on")
    train_sentencepiece(texts, str(path), config.features.vocab_size, seed=config.train.seed)


def _copy_tokenizer(source: Path, target: Path) -> None:
    if source.is_dir() != (target.name == PRESET_TOKENIZER):
        raise RunError(f"--init-from: the model's tokenizer {source} is not of the kind this run's "
                       "config needs (text.backbone must be the same as the model's run)")
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def find_tokenizer(model_path) -> Path:
    """The tokenizer of the run a `.keras` file belongs to (its folder or a parent):
    `tokenizer.model`, or a backbone's `tokenizer/` folder."""
    model_path = Path(model_path).resolve()
    if not model_path.exists():
        raise RunError(f"--init-from {model_path}: no such file")
    for folder in model_path.parents:
        if (folder / TOKENIZER).exists():
            return folder / TOKENIZER
        if (folder / PRESET_TOKENIZER / "tokenizer.json").exists():
            return folder / PRESET_TOKENIZER
    raise RunError(f"no {TOKENIZER} found beside or above {model_path}: the model's "
                   f"token ids need the tokenizer of the run that trained it")


def _check_same_data(run_json: Path, source: dict, config: RunConfig) -> None:
    """A workdir belongs to one dataset and one data/feature setting."""
    if not run_json.exists():
        return
    stored = json.loads(run_json.read_text())
    mine = config.to_dict()
    for section in ("text", "audio"):  # the backbone decides the tokenizer and the features
        before = stored["config"].get(section, {}).get("backbone", "")
        if before != mine[section]["backbone"]:
            raise RunError(f"{run_json.parent} was prepared with {section}.backbone={before!r}, "
                           f"not {mine[section]['backbone']!r}; use a new --workdir")
    if config.audio.backbone:  # these feature fields are the converter's (_save_audio_converter)
        from kemdy_tf.models.backbones import ConverterFeatures

        mine["features"] = {**mine["features"], **{k: stored["config"]["features"][k]
                                                   for k in ConverterFeatures.FEATURE_FIELDS}}
    for section in ("data", "features"):
        if RunConfig.from_dict(stored["config"]).to_dict()[section] != mine[section]:
            raise RunError(
                f"{run_json.parent} was prepared with different {section} settings "
                f"({stored['config'][section]}); use a new --workdir or the same settings")
    if stored.get("source") != _portable(source):
        raise RunError(f"{run_json.parent} was prepared from {stored.get('source')}, "
                       f"not {_portable(source)}; use a new --workdir")


def _portable(source: dict) -> dict:
    return {key: str(Path(value).resolve()) for key, value in source.items()}


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)`, then rename over `path`: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
