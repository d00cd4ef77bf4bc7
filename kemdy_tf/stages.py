"""The one list of training stages: what each trains, on what, and how it is scored.

A stage is one model in one folder of a run (`WORKDIR/<name>/`). Everything that
names stages reads `STAGES`: `train.py --stage` choices and `all`, the training loop,
the evaluation's table order and descriptions, the export, the benchmarks.

    >>> from kemdy_tf import stages
    >>> [s.name for s in stages.all_stages()]
    ['audio', 'text', 'audio_clf', 'text_clf', 'fusion']
    >>> stages.get("fusion").requires
    ('audio', 'text')

Adding a stage is one `register(Stage(...))` call (its builder returns an uncompiled
Keras model whose inputs are named after `inputs` and whose output is `{target: ...}`);
the training loop, the evaluation and `train.py` pick it up from here.

This module imports neither Keras nor TensorFlow at import time; builders and
metric factories import them when called.
"""

from __future__ import annotations

import dataclasses
import typing

from kemdy_tf.config import reads_functionals

AUDIO_INPUTS = ("log_mel", "frame_mask")
TEXT_INPUTS = ("token_ids",)
REGRESSION_TARGETS = ("arousal", "valence")


class StageError(RuntimeError):
    """A stage cannot be built (unknown name, a missing encoder it starts from, ...)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: the stage folder and `--stage` value.
        target: the output it predicts: `emotion` (class probabilities) or `arousal` /
            `valence` (one value in 1..5).
        inputs: the model inputs it reads (names of `features.make_dataset` features).
        modalities: `("audio",)`, `("text",)` or both.
        build: `build(run, stage, unfreeze=False, from_scratch=False) -> keras.Model`
            (uncompiled).
        loss: the Keras loss name.
        metrics: `metrics(config) -> [keras.metrics.Metric]` logged during training.
        description: how reports name it.
        requires: stages whose trained models `build` starts from (trained first).
        optimizer: `optimizer(config, total_steps) -> keras.optimizers.Optimizer`;
            None: Adam at `train.learning_rate`, clipnorm 1.
        loss_factory: `loss_factory(config) -> keras.losses.Loss` replacing `loss`
            when given (e.g. a label-smoothed loss).
    """

    name: str
    target: str
    inputs: tuple[str, ...]
    modalities: tuple[str, ...]
    build: typing.Callable
    loss: str
    metrics: typing.Callable
    description: str
    requires: tuple[str, ...] = ()
    optimizer: typing.Callable | None = None
    loss_factory: typing.Callable | None = None

    def make_optimizer(self, config, total_steps: int):
        import keras

        if self.optimizer is not None:
            return self.optimizer(config, total_steps)
        from kemdy_tf.models.schedules import warmup_cosine

        learning_rate = config.train.learning_rate
        if config.train.warmup_share > 0:
            learning_rate = warmup_cosine(learning_rate, config.train.warmup_share, total_steps)
        return keras.optimizers.Adam(learning_rate, clipnorm=1.0)

    def make_loss(self, config):
        return self.loss_factory(config) if self.loss_factory is not None else self.loss

    @property
    def is_classifier(self) -> bool:
        return self.target == "emotion"


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage (registration order is the order `--stage all` trains in)."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is already registered")
    unknown = [r for r in stage.requires if r not in STAGES]
    if unknown:
        raise ValueError(f"stage {stage.name!r} requires unregistered stage(s) {unknown}")
    STAGES[stage.name] = stage
    return stage


def get(name: str) -> Stage:
    """The registered stage called `name`; StageError names the choices otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r}; choose one of {tuple(STAGES)}") from None


def all_stages() -> list[Stage]:
    """Every stage, in training order (what `--stage all` runs)."""
    return list(STAGES.values())


def names() -> tuple[str, ...]:
    return tuple(STAGES)


def with_requirements(name: str) -> tuple[str, ...]:
    """`name` and the stages it starts from, in training order: fusion -> (audio, text, fusion)."""
    needed, todo = set(), [name]
    while todo:
        stage = get(todo.pop())
        if stage.name not in needed:
            needed.add(stage.name)
            todo.extend(stage.requires)
    return tuple(n for n in STAGES if n in needed)


def report_order() -> list[str]:
    """How reports order the stages: single-modality classifiers (the comparisons), then
    multimodal classifiers, then the regression encoders; registration order within each."""
    ranked = sorted(STAGES.values(), key=lambda s: (not s.is_classifier, len(s.modalities) if s.is_classifier else 0))
    return [s.name for s in ranked]


# === Loss and metrics ===

def _regression_metrics(config) -> list:
    import keras

    return [keras.metrics.RootMeanSquaredError(name="rmse")]


def _classification_metrics(config) -> list:
    import keras

    from kemdy_tf.models.metrics import SparseBalancedAccuracy, SparseMacroF1

    n_classes = len(config.data.classes)
    # "ua" is also what `train.monitor=val_ua` selects the epoch by (training.monitored).
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            SparseMacroF1(n_classes, name="f1"), SparseBalancedAccuracy(n_classes, name="ua")]


def _text_optimizer(config, total_steps):
    """The text recipe measured on NSMC (docs/text_real.md): AdamW, warmup, cosine decay."""
    from kemdy_tf.models.text_encoder import text_optimizer

    return text_optimizer(config.text, config.train.learning_rate, total_steps)


def _text_classification_loss(config):
    from kemdy_tf.models.text_encoder import text_classification_loss

    return text_classification_loss(config.text, len(config.data.classes))


def has_targets(run, target: str) -> bool:
    """Whether the training split holds any value of `target` (emotion labels always do;
    arousal/valence are missing from most speech-emotion corpora)."""
    train = run.split("train")
    if target == "emotion":
        return bool(len(train))
    return target in train and bool(train[target].notna().any())


# === Builders ===

def _build_audio_encoder(run, stage, unfreeze=False, from_scratch=False):
    from kemdy_tf.models import audio_encoder

    return audio_encoder.build_audio_encoder(run.config.audio, run.config.features,
                                             backbone=_new_backbone(run, "audio", unfreeze))


def _build_text_encoder(run, stage, unfreeze=False, from_scratch=False):
    from kemdy_tf.models import text_encoder

    return text_encoder.build_text_encoder(run.config.text, run.config.features,
                                           backbone=_new_backbone(run, "text", unfreeze))


def _new_backbone(run, modality: str, unfreeze: bool):
    """The backbone `<modality>.backbone` names (models.backbones: the seed architecture, or a
    pretrained keras-hub preset, frozen unless `unfreeze`)."""
    from kemdy_tf.models import backbones

    backbone = backbones.new_backbone(run, modality)
    if unfreeze:
        backbones.set_trainable(backbone, True)
    return backbone


def starts_from_scratch(run, modality: str, from_scratch: bool = False) -> bool:
    """Whether a classifier's `modality` backbone is new rather than its trained encoder's: with
    `from_scratch`, or when the corpus has emotion labels only (no encoder to start from: the
    classifier then learns its backbone from the emotion labels)."""
    return from_scratch or (not run.model_path(modality).exists() and not has_targets(run, get(modality).target))


def _build_classifier(run, stage, unfreeze=False, from_scratch=False):
    """An emotion classifier on the backbones of the encoders trained in this run.

    The encoders' backbones are frozen unless `unfreeze`; `from_scratch` starts from
    new backbones instead of the trained encoders (random for the seed architecture,
    the preset's weights, frozen unless `unfreeze`, for a pretrained one).
    """
    import keras

    from kemdy_tf.models import backbones as backbones_lib, fusion

    cfg = run.config
    stage = get(stage) if isinstance(stage, str) else stage
    backbones = {"audio": None, "text": None}
    for modality in stage.modalities:
        path = run.model_path(modality)
        if starts_from_scratch(run, modality, from_scratch):
            backbones[modality] = _new_backbone(run, modality, unfreeze)
            continue
        if not path.exists():
            raise StageError(
                f"stage {stage.name} starts from the {modality} encoder, but {path} is missing: "
                f"run `python train.py --stage {modality} --workdir {run.workdir}` first, "
                f"or pass --from-scratch")
        encoder = keras.saving.load_model(path, compile=False)
        backbone = encoder.get_layer(f"{modality}_backbone")
        backbones_lib.set_trainable(backbone, unfreeze)
        backbones[modality] = backbone
    pieces = _ngram_pieces(run) if stage.modalities == ("text",) and cfg.fusion.char_ngrams > 0 else None
    return fusion.build_fusion_model(backbones["audio"], backbones["text"], cfg.fusion,
                                     len(cfg.data.classes), modalities=stage.modalities, pieces=pieces)


def _ngram_pieces(run) -> list[str]:
    """The run's SentencePiece pieces for the character n-gram bag (`fusion.char_ngrams`)."""
    from kemdy_tf.models.char_ngrams import ngram_pieces

    if run.tokenizer_path.is_dir():
        raise StageError(f"fusion.char_ngrams reads the run's SentencePiece pieces, but {run.workdir} uses the "
                         f"text backbone's own tokenizer ({run.tokenizer_path}); set fusion.char_ngrams=0")
    return ngram_pieces(run.tokenizer_path.read_bytes())


# === The registry ===

register(Stage("audio", "arousal", AUDIO_INPUTS, ("audio",), _build_audio_encoder, "mse",
               _regression_metrics, "audio encoder"))
register(Stage("text", "valence", TEXT_INPUTS, ("text",), _build_text_encoder, "mse",
               _regression_metrics, "text encoder", optimizer=_text_optimizer))
register(Stage("audio_clf", "emotion", AUDIO_INPUTS, ("audio",), _build_classifier,
               "sparse_categorical_crossentropy", _classification_metrics, "audio only",
               requires=("audio",)))
register(Stage("text_clf", "emotion", TEXT_INPUTS, ("text",), _build_classifier,
               "sparse_categorical_crossentropy", _classification_metrics, "text only",
               requires=("text",), optimizer=_text_optimizer, loss_factory=_text_classification_loss))
# Last: its final model combines its cross-modal network with the classifiers above (fusion_experts).
register(Stage("fusion", "emotion", AUDIO_INPUTS + TEXT_INPUTS, ("audio", "text"), _build_classifier,
               "sparse_categorical_crossentropy", _classification_metrics, "fusion (audio + text)",
               requires=("audio", "text")))


# === Datasets ===

def inputs_for(model, features: dict):
    """`features` in the structure `model` was built with: a dict keyed by its input
    names, a list, or the one tensor of a single-input model (no Keras structure warning)."""
    spec = model.input
    if isinstance(spec, dict):
        return {name: features[name] for name in spec}
    if isinstance(spec, (list, tuple)):
        return [features[t.name] for t in spec]
    return features[spec.name]


def stage_dataset(run, stage, split: str, training: bool, tokenizer=None, class_weights=None,
                  replicas: int = 1, model=None):
    """(inputs, {target: y}[, sample_weight]) batches holding only what the stage's model reads.

    Inputs are a dict of the stage's `inputs`; with `model`, they take that model's own
    input structure (`inputs_for`), which Keras wants to see exactly.
    `class_weights` (a list indexed by class) becomes a per-example sample weight: the
    same as Keras' `class_weight`, but also valid for dict outputs and distributed fits.
    """
    import tensorflow as tf

    from kemdy_tf.data.features import make_dataset
    from kemdy_tf.speaker_statistics import run_fallback

    stage = get(stage) if isinstance(stage, str) else stage
    target, inputs = stage.target, stage.inputs
    table = run.split(split)
    if not stage.is_classifier:  # manifests may leave arousal/valence empty
        table = table[table[target].notna()]
    # Under MirroredStrategy Keras sums a sample batch across replicas, which fails on bool.
    int_mask = replicas > 1
    weights = tf.constant(class_weights or [1.0], tf.float32)
    # Optional model inputs the data pipeline fills (fusion.functionals_speaker_norm, fusion.pitch).
    cfg = run.config
    extra = ()
    optional = ("speaker_functionals", "pitch_statistics")
    if model is not None:  # what the model reads (a fusion model's classifier experts may read more)
        extra = tuple(name for name in optional if name in {t.name for t in model.inputs})
    elif stage.is_classifier and reads_functionals(cfg.fusion, stage.modalities):
        extra = tuple(name for name, wanted in (("speaker_functionals", cfg.fusion.functionals_speaker_norm),
                                                ("pitch_statistics", cfg.fusion.pitch)) if wanted)

    def select(features, targets):
        x = {k: features[k] for k in inputs + extra}
        if int_mask and "frame_mask" in x:
            x["frame_mask"] = tf.cast(x["frame_mask"], tf.int32)
        if model is not None:
            x = inputs_for(model, x)
        y = {target: targets[target]}
        if class_weights is None:
            return x, y
        return x, y, tf.gather(weights, targets[target])

    fallback = run_fallback(run) if "speaker_functionals" in extra else None
    ds = make_dataset(table, run.cache, tokenizer or run.tokenizer(), run.config, training=training,
                      speaker_fallback=fallback, optional_inputs=extra)
    return ds.map(select)
