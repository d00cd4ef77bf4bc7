"""Dataclass configs and named presets.

Every size in the project lives here. A run is described by one `RunConfig`;
`python train.py --preset small --set audio.n_layers=3` builds it with
`make_config("small", ["audio.n_layers=3"])`.

Presets:
    small  the default: sized so the whole pipeline trains on 2 CPU cores in minutes.
    paper  the seed's sizes: d_model 768, 512 frames, 64 tokens, audio 7 attention
           layers, text 5 (see ../shared/SEED-NOTES.md).

Recipes (`kemdy_tf/recipes/*.json`, `python train.py --list-recipes`) are named partial
configurations for what the defaults do not cover; a config is made as preset ->
recipes (in order) -> `--set` overrides, and `validate` checks the result before
anything is written: every allowed-value list of the project lives in this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

# The seed keeps the five most frequent KEMDy20 emotions.
DEFAULT_CLASSES = ("neutral", "happy", "sad", "angry", "surprise")
# `train.precision` values: Keras dtype policies a stage may be trained under (models.precision).
PRECISIONS = ("float32", "mixed_bfloat16")
# `fusion.char_ngram_model` values: what the text classifier's character n-grams feed, a
# learned bag or a fitted logistic regression of one of two weightings (models.ngram_logistic).
CHAR_NGRAM_WEIGHTINGS = ("nblr", "tfidf_lr")
# "auto" (the default): one of the weightings and its n-grams, chosen on validation (kemdy_tf.ngram_choice).
CHAR_NGRAM_MODELS = ("auto", "bag", *CHAR_NGRAM_WEIGHTINGS)
# `fusion.functionals_in_fusion` values ("auto": decided by the training runner, kemdy_tf.training).
FUNCTIONALS_IN_FUSION = ("auto", "true", "false")
# `train.class_weighting` schemes (kemdy_tf.class_balance; docs/imbalance.md measured them).
CLASS_WEIGHTINGS = ("auto", "weights", "capped", "sqrt", "none", "logit_adjust")
# `train.monitor` values: the validation figure a stage's checkpoint and early stopping
# follow, and which way is better (the training runner and the sweep reader both use it).
MONITOR_MODES = {"val_loss": "min", "val_ua": "max", "val_f1": "max"}
# Every emotion KEMDy20 annotates, with its spelling fixed ("disqust" -> "disgust").
ALL_EMOTIONS = ("neutral", "happy", "surprise", "angry", "sad", "fear", "disgust")


@dataclass
class FeatureConfig:
    """How audio and text become model inputs. A change to a log-mel field (rate, mels,
    n_fft, hop, max_frames) gives a new feature-cache folder; the others do not."""

    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    max_frames: int = 512  # ~16.4 s at 16 kHz / hop 512; longer clips are truncated
    max_tokens: int = 64
    # SentencePiece vocabulary trained on the training split; 0: sized from that corpus
    # (models.tokenizer.corpus_vocab_size: distinct characters + distinct words / 4, 1k..8k)
    vocab_size: int = 0
    speaker_norm: bool = False  # per-speaker mean/variance normalisation of log-mels


@dataclass
class DataConfig:
    """Which utterances, which classes, which split, which augmentation."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    split_by: str = "session"  # session | speaker | any manifest column
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    folds: int = 0  # >0: k session-disjoint folds (cross-validation)
    fold: int = 0  # which fold is the test fold when folds > 0
    text_augment: float = 0.0  # extra augmented copies per training utterance (0 = off)
    balance_target: float = 0.0  # oversample minority classes toward this share of the majority
    freq_mask_param: int = 15  # max width of the random frequency mask (mel bins), train only
    freq_mask_prob: float = 0.5
    # > 0: stretch each training clip's mel axis by a random factor in [1 - w, 1 + w]
    # (audio.tf_frequency_warp, vocal tract length perturbation): new voices from the
    # training speakers. 0: off. docs/real_speech.md has the measurement.
    freq_warp: float = 0.0


@dataclass
class AudioEncoderConfig:
    conv_filters: tuple[int, ...] = (16, 16, 32, 32)  # four Conv2D layers along frequency
    conv_kernel: int = 5  # kernel size along the mel axis (time kernel is 1)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int = 128
    gru_units: int = 64
    dropout: float = 0.1
    # A pretrained keras-hub audio backbone (models.backbones; docs/backbones.md): a preset
    # name (downloads once, needs the network) or a local preset folder. Empty: the seed
    # architecture above, trained from scratch. With one, the features are the preset's
    # audio converter's (features.n_mels and sample_rate follow it) and conv/d_model/
    # n_layers/n_heads/ff_dim are unused.
    backbone: str = ""


@dataclass
class TextEncoderConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int = 128
    gru_units: int = 64
    dropout: float = 0.1
    token_dropout: float = 0.0  # chance of dropping a whole token embedding in training
    bag_of_tokens: bool = False  # add a masked mean+max pool of the embeddings to every step
    bigram_buckets: int = 0  # hashed token-bigram embeddings in the bag (0 = off)
    # The text stages' optimizer and loss (models.text_encoder.text_optimizer /
    # text_classification_loss). With both 0: Adam at a constant rate. The regularised
    # recipe that lifted NSMC (docs/text_real.md: dropout .3, token_dropout .25,
    # weight_decay .01, warmup_share .05, label_smoothing .1) slowed the synthetic set's
    # valence encoder (val RMSE .75 after 12 epochs against .47), so it is not the default.
    weight_decay: float = 0.0  # AdamW decoupled weight decay (embeddings, biases, norms excluded)
    warmup_share: float = 0.0  # linear warmup over this share of all steps, then cosine decay
    label_smoothing: float = 0.0
    # A pretrained keras-hub text backbone (models.backbones; docs/backbones.md): a preset
    # name (downloads once, needs the network) or a local preset folder; its own tokenizer
    # replaces the run's SentencePiece model. Empty: the seed architecture, from scratch.
    backbone: str = ""


@dataclass
class FusionConfig:
    n_heads: int = 4
    lstm_units: int = 64
    dropout: float = 0.2
    # Chance per example to blank one modality in training (.5: the voice-only answer the
    # vote below relies on is trained on a quarter of the examples; docs/real_speech.md).
    modality_dropout: float = 0.5
    # Mean + std of the attended sequence beside the LSTM state (x-vector pooling):
    # a short gradient path to every frame, so a from-scratch model fits real clips.
    statistics_pooling: bool = True
    # Utterance functionals of the log-mel input (per-band mean, std, delta std, max, min;
    # layers.UtteranceFunctionals), batch-normalised, beside the deep summary of every
    # classifier with audio: the low-variance path that real corpora of a few hundred
    # clips can train (docs/real_speech.md). Dropout on them: functionals_dropout.
    # On by default for the audio classifier (see functionals_in_fusion): they carried every
    # real corpus measured (docs/real_speech.md, docs/real_data.md).
    functionals: bool = True
    functionals_dropout: float = 0.2
    # The functionals in the cross-modal fusion model too (with `functionals`): "true",
    # "false", or "auto" (default), decided by the training runner and printed: "true" when
    # the fusion model's audio backbone starts from scratch (a corpus without arousal
    # ratings, or --from-scratch: a from-scratch deep path on a few hundred clips stays
    # near chance, docs/real_data.md), "false" when it starts from the trained audio
    # encoder (on the synthetic main job the functionals then made the fusion model follow
    # the voice and drop the words: test UA .648 with them, .856 without).
    functionals_in_fusion: str = "auto"
    # With functionals: the same statistics of each frame's first N cepstral coefficients
    # (orthonormal DCT-II of the log-mel frame, i.e. MFCCs) as well; 0: the bands only.
    # +.04 UA for a linear model on RAVDESS (bench/speech_functionals.py).
    functional_cepstra: int = 20
    # With functionals: standardise each clip's functionals by its speaker's mean and std
    # of them (over the speaker's clips in the same split, no label used; a clip without
    # a speaker is left as it is): the classical per-speaker z-normalisation, worth ~.05 UA
    # to a linear model on RAVDESS (docs/real_speech.md). The model then has a third
    # input, `speaker_functionals` [B, 2, 5 (n_mels + functional_cepstra) (+ 12 with pitch)], that `data.features.make_dataset`
    # fills. On by default: the classical baseline beside every run standardises per speaker
    # too. An export takes the statistics as an input (signatures `*_speaker`, enrolment
    # signature `speaker_statistics`) and falls back to the training split's, pooled, for a
    # clip of no enrolled speaker (kemdy_tf.speaker_statistics; docs/serving.md).
    functionals_speaker_norm: bool = True
    # With functionals: the audio-only classifier also carries a logistic regression on them
    # (standardised; models.functionals_logistic), fitted by scikit-learn on the training split
    # before the deep path trains, its L2 strength and its share of each answer chosen on the
    # validation split: the classical baseline's kind of model inside the classifier, so a
    # corpus too small or too shifted for the deep path still gets a convex fit (test UA: the
    # shortcut sessions .547 -> .608 against the classical .581; docs/real_data.md).
    functionals_logistic: bool = True
    # With functionals: 12 pitch and energy statistics of each clip (YIN F0 level, range and
    # movement; data.prosody) beside them, which mel bands 25+ Hz wide barely resolve (+.025 UA
    # for a linear model on RAVDESS, docs/real_speech.md). The data pipeline tracks the pitch
    # (input `pitch_statistics` [B, 12]), so a run whose fusion model reads it cannot be exported.
    pitch: bool = False
    # With functionals or char_ngrams: chance per training example that the deep summary is
    # dropped whole, so the wide features alone must classify it (the deep path over-fits a few
    # hundred clips first and would otherwise carry every training answer).
    summary_branch_dropout: float = 0.5
    # L2 penalty on the emotion classifier's weights (0: none). With functionals it reads ~750
    # standardised statistics from a few hundred clips: a linear model on them needs shrinkage
    # (logistic regression C=0.03 in bench/speech_functionals.py; docs/real_speech.md).
    classifier_l2: float = 0.0
    # The text-only classifier's wide path (models.char_ngrams; docs/text_real.md): a bag of
    # hashed character 1..char_ngrams-grams of the transcript beside the deep summary, the
    # TF-IDF baseline's features inside the model. 0: off. The fusion model does not read
    # it: its transcript goes through modality dropout and the swaps above, a bag would not.
    # With char_ngram_model "auto" the candidates of kemdy_tf.ngram_choice set it.
    char_ngrams: int = 4
    char_ngram_buckets: int = 2**18
    char_ngram_dim: int = 32
    char_ngram_dropout: float = 0.2  # dropout on the bag's vector
    # Chance of leaving each n-gram out of the bag in training. 0: on NSMC the bag alone
    # peaked after one epoch either way, lower with .5 (.839 against .843).
    char_ngram_id_dropout: float = 0.0
    # What the n-grams feed: "bag", the learned bag above, beside the deep summary; or a
    # logistic regression (models.ngram_logistic) that scikit-learn fits on the training
    # split before the deep path trains, frozen, its probabilities mixed with the deep
    # head's by a share chosen on the validation split: "nblr" (naive-Bayes-weighted, best
    # on NSMC) or "tfidf_lr" (the classical baseline's weighting). docs/text_real.md.
    # "auto" (default): a weighting and its n-grams (reach, jamo, word bounds) chosen by the
    # validation log loss of each candidate regression (kemdy_tf.ngram_choice), printed and
    # recorded in the stage's summary.json.
    char_ngram_model: str = "auto"
    char_ngram_c: float = 0.0  # its inverse L2 strength; 0: nblr 0.1, tfidf_lr 10
    # N-grams of jamo (Hangul syllables decomposed, Unicode NFD) instead of characters; n
    # then counts jamo (6 jamo ~ 2-3 syllables). Korean endings change single jamo.
    char_ngram_jamo: bool = False
    # No n-gram reaches into the next word (scikit-learn's char_wb): for transcripts whose
    # adjacent words are unrelated; NSMC's reviews gain from spanning them.
    char_ngram_word_bounded: bool = False
    # Chance per training example to pair its audio with another example's transcript
    # (label stays with the audio): the fusion model learns to follow the voice when
    # the words disagree, so a shortcut transcript cannot make it stop listening.
    text_swap: float = 0.5
    # Chance per training example to replace its transcript by a word salad of the
    # batch's transcripts (label kept): words that name no class must not sway it.
    text_scramble: float = 0.3
    # At inference, the share of every answer given by the same head on the voice alone
    # (the transcript blanked): a transcript moves at most the rest of the probability
    # mass, so a shortcut transcript cannot silence the voice (docs/real_speech.md,
    # models.layers.VoiceVote). 0: off.
    voice_share: float = 0.5


def reads_functionals(fusion: FusionConfig, modalities) -> bool:
    """Whether a classifier of these modalities reads the utterance functionals (and so the
    speaker statistics and pitch statistics that go with them). The fusion model's
    `functionals_in_fusion` "auto" is decided when its stage trains (until then: no)."""
    modalities = tuple(modalities)
    if "audio" not in modalities or not fusion.functionals:
        return False
    return modalities == ("audio",) or str(fusion.functionals_in_fusion).lower() == "true"


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    patience: int = 4
    # Stages without their own optimizer (all but the text stages, which have text.*):
    # > 0 warms the learning rate up linearly over this share of all steps, then decays
    # it by a cosine to 5% at the last epoch; 0: constant train.learning_rate.
    warmup_share: float = 0.0
    # How the classifier stages balance the classes (kemdy_tf.class_balance): "weights"
    # sklearn balanced n / (k * n_c) as sample weights; "capped" the same clipped at 10;
    # "sqrt" proportional to n_c ** -0.5 (mean example weight 1); "none"; "logit_adjust" no
    # weights, the loss sees the outputs times the training class prior (models.losses), so
    # the model itself answers the class-balanced posterior; "auto" "weights", or
    # "logit_adjust" where a balanced weight would exceed 10 (KEMDy20's shares). Balanced sampling
    # instead: data.balance_target oversamples minority classes with augmented copies.
    # docs/imbalance.md compares them under KEMDy20's imbalance.
    class_weighting: str = "auto"
    # The Keras dtype policy a stage is built and trained under (models.precision):
    # "float32" or "mixed_bfloat16" (bfloat16 compute, float32 variables, probabilities
    # and losses). Finished models are saved float32 either way. docs/benchmarks.md
    # ("Training precision") has the speed and macro-F1 measured before choosing the default.
    precision: str = "float32"
    # The validation figure that picks the kept epoch (best-only checkpoint) and stops
    # training (EarlyStopping): "val_loss" (lowest); for the classifier stages also
    # "val_ua" (highest balanced accuracy, models.metrics.SparseBalancedAccuracy) or
    # "val_f1" (highest macro-F1); the rating stages follow val_loss either way. The
    # validation loss is unweighted, so under heavy imbalance it favours the epochs that
    # answer the majority class most; docs/imbalance.md ("Monitoring validation UA or
    # macro-F1") measured the other two and kept val_loss.
    monitor: str = "val_loss"
    # > 0: keep an exponential moving average of the weights over about this many epochs
    # (Keras' optimizer `use_ema`, momentum 1 - 1 / (ema_epochs x steps per epoch)); each
    # epoch is validated, checkpointed and early-stopped on the averaged weights while
    # training goes on from the raw ones (`keras.callbacks.SwapEMAWeights`). 0: off.
    # docs/real_speech.md ("Averaged weights") has the measurement.
    ema_epochs: float = 0.0
    # After early stopping, train the stage again from its initial weights on the training
    # and validation splits together, for as many epochs as the kept model had, on the same
    # learning-rate schedule (training.refit_stage); the refitted model is the stage's
    # model.keras, the early-stopped one stays beside it and gives summary.json its honest
    # validation figures. With it the classical baseline fits on both splits too. Costs
    # about one more fit; on a small corpus the held-out speakers' clips are worth it
    # (docs/real_speech.md, "Refitting on the validation speakers").
    refit: bool = False


@dataclass
class RunConfig:
    preset: str = "small"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        return _from_dict(cls, values)


def _paper() -> RunConfig:
    return RunConfig(
        preset="paper",
        features=FeatureConfig(max_frames=512, max_tokens=64, vocab_size=8000),
        audio=AudioEncoderConfig(
            conv_filters=(32, 32, 64, 64), d_model=768, n_layers=7, n_heads=12,
            ff_dim=3072, gru_units=768,
        ),
        text=TextEncoderConfig(d_model=768, n_layers=5, n_heads=12, ff_dim=3072, gru_units=768),
        fusion=FusionConfig(n_heads=12, lstm_units=768),
        train=TrainConfig(batch_size=16, learning_rate=1e-4),
    )


PRESETS: dict[str, typing.Callable[[], RunConfig]] = {"small": RunConfig, "paper": _paper}


def make_config(preset: str = "small", overrides: typing.Iterable[str] = (),
                recipes: typing.Iterable[str] = ()) -> RunConfig:
    """A preset, then each named recipe's settings (`load_recipe`), then `section.field=value`
    overrides (values parsed by field type); `validate`d.

    Raises:
        ValueError: an unknown preset, recipe or field, a value of the wrong type, or a
            value `validate` refuses.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[preset]()
    for recipe in recipes:
        loaded = load_recipe(recipe)
        for item in loaded["set"]:
            _apply(config, item, f"recipe {loaded['path']}")
    for item in overrides:
        _apply(config, item, "--set")
    return validate(config)


def _apply(config: RunConfig, item: str, where: str) -> None:
    """`set_field` of one `section.field=value`; errors of a recipe name its file (`where`)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"override {item!r} ({where}) must look like section.field=value")
    try:
        set_field(config, key.strip(), value.strip())
    except ValueError as error:
        if where == "--set":
            raise
        raise ValueError(f"{where}: {error}") from None


# === Recipes: named partial configurations, as data ===

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
_RECIPE_KEYS = {"purpose", "set", "command", "measured"}


def recipe_names() -> list[str]:
    """The recipes shipped in kemdy_tf/recipes/, by name."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (kemdy_tf/recipes/NAME.json) or by the path of a JSON file of the
    same shape: `{"purpose": one line, "set": {"section.field": value, ...}}`, optionally
    with "command" (the exact command it was measured with) and "measured" (the figure).

    Returns `{"name", "path", "purpose", "set": ["section.field=value", ...], ...}`.

    Raises:
        ValueError: an unknown name, a file that is not such a recipe (naming the file and
            what is wrong), or a field the config does not have.
    """
    path = Path(name_or_path)
    if not (path.suffix == ".json" and path.is_file()):
        path = RECIPES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(f"unknown recipe {name_or_path!r}: neither a JSON file nor one of "
                             f"{', '.join(recipe_names())} (python train.py --list-recipes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"recipe {path} is not readable JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("purpose"), str) or not data["purpose"].strip() \
            or "\n" in data["purpose"] or not isinstance(data.get("set"), dict) or not data["set"]:
        raise ValueError(f"recipe {path} must be an object with a one-line \"purpose\" and a non-empty "
                         f"\"set\" object of section.field: value")
    unknown = set(data) - _RECIPE_KEYS
    if unknown:
        raise ValueError(f"recipe {path} has unknown keys {sorted(unknown)}; allowed: {sorted(_RECIPE_KEYS)}")
    items = []
    for key, value in data["set"].items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif not isinstance(value, (str, int, float)):
            raise ValueError(f"recipe {path}: {key} must be a string, number, boolean or list, got {value!r}")
        items.append(f"{key}={value}")
    probe = RunConfig()
    for item in items:  # an unknown field or a value of the wrong type names the file
        _apply(probe, item, f"recipe {path}")
    return {**data, "name": path.stem, "path": str(path), "set": items}


# === Validation: every allowed value, checked before a run writes anything ===

def validate(config: RunConfig) -> RunConfig:
    """`config` if every field holds an allowed value; else one ValueError listing each
    field that does not, with what it allows. `train.py` calls it (through `make_config`)
    before it prepares a workdir, so a typo costs no run folder and no feature cache."""
    problems = []

    def one_of(name: str, value, allowed) -> None:
        if value not in allowed:
            problems.append(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")

    def within(name: str, value, low=None, high=None, *, below_high: bool = False, integer: bool = False) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (not integer or float(value).is_integer())
        ok = ok and (low is None or value >= low) and (high is None or (value < high if below_high else value <= high))
        if not ok:
            bounds = [f">= {low}"] if low is not None else []
            if high is not None:
                bounds.append(f"{'<' if below_high else '<='} {high}")
            kind = "an integer" if integer else "a number"
            problems.append(f"{name} must be {kind} {' and '.join(bounds)}; got {value!r}")

    f, d, a, t, fu, tr = config.features, config.data, config.audio, config.text, config.fusion, config.train
    one_of("preset", config.preset, tuple(PRESETS))
    one_of("train.precision", tr.precision, PRECISIONS)
    one_of("train.monitor", tr.monitor, tuple(MONITOR_MODES))
    one_of("train.class_weighting", tr.class_weighting, CLASS_WEIGHTINGS)
    one_of("fusion.char_ngram_model", fu.char_ngram_model, CHAR_NGRAM_MODELS)
    one_of("fusion.functionals_in_fusion", str(fu.functionals_in_fusion).lower(), FUNCTIONALS_IN_FUSION)
    for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "max_frames"):
        within(f"features.{name}", getattr(f, name), 1, integer=True)
    within("features.max_tokens", f.max_tokens, 0, integer=True)
    within("features.vocab_size", f.vocab_size, 0, integer=True)
    if len(set(d.classes)) < 2:
        problems.append(f"data.classes must name at least 2 distinct classes; got {list(d.classes)}")
    within("data.val_fraction", d.val_fraction, 0, 1, below_high=True)
    within("data.test_fraction", d.test_fraction, 0, 1, below_high=True)
    if d.val_fraction + d.test_fraction >= 1:
        problems.append(f"data.val_fraction + data.test_fraction must leave training data (< 1); "
                        f"got {d.val_fraction} + {d.test_fraction}")
    within("data.folds", d.folds, 0, integer=True)
    if d.folds:
        within("data.fold", d.fold, 0, d.folds, below_high=True, integer=True)
    within("data.text_augment", d.text_augment, 0)
    within("data.balance_target", d.balance_target, 0)
    within("data.freq_mask_param", d.freq_mask_param, 0, integer=True)
    within("data.freq_warp", d.freq_warp, 0, 1, below_high=True)
    shares = [("data.freq_mask_prob", d.freq_mask_prob), ("audio.dropout", a.dropout), ("text.dropout", t.dropout),
              ("text.token_dropout", t.token_dropout), ("text.warmup_share", t.warmup_share),
              ("text.label_smoothing", t.label_smoothing), ("fusion.dropout", fu.dropout),
              ("fusion.modality_dropout", fu.modality_dropout), ("fusion.functionals_dropout", fu.functionals_dropout),
              ("fusion.summary_branch_dropout", fu.summary_branch_dropout),
              ("fusion.char_ngram_dropout", fu.char_ngram_dropout),
              ("fusion.char_ngram_id_dropout", fu.char_ngram_id_dropout), ("fusion.text_swap", fu.text_swap),
              ("fusion.text_scramble", fu.text_scramble), ("fusion.voice_share", fu.voice_share),
              ("train.warmup_share", tr.warmup_share)]
    for name, value in shares:
        within(name, value, 0, 1)
    for section, cfg in (("audio", a), ("text", t)):
        for name in ("d_model", "n_layers", "n_heads", "ff_dim", "gru_units"):
            within(f"{section}.{name}", getattr(cfg, name), 1, integer=True)
    if not a.conv_filters or any(n < 1 for n in a.conv_filters):
        problems.append(f"audio.conv_filters must be positive filter counts; got {a.conv_filters}")
    within("audio.conv_kernel", a.conv_kernel, 1, integer=True)
    for name in ("n_heads", "lstm_units"):
        within(f"fusion.{name}", getattr(fu, name), 1, integer=True)
    within("fusion.functional_cepstra", fu.functional_cepstra, 0, integer=True)
    within("fusion.char_ngrams", fu.char_ngrams, 0, integer=True)
    within("fusion.char_ngram_buckets", fu.char_ngram_buckets, 1, integer=True)
    within("fusion.char_ngram_dim", fu.char_ngram_dim, 1, integer=True)
    for name, value in (("text.weight_decay", t.weight_decay), ("fusion.classifier_l2", fu.classifier_l2),
                        ("fusion.char_ngram_c", fu.char_ngram_c), ("train.ema_epochs", tr.ema_epochs)):
        within(name, value, 0)
    within("train.epochs", tr.epochs, 1, integer=True)
    within("train.batch_size", tr.batch_size, 1, integer=True)
    within("train.patience", tr.patience, 0, integer=True)
    within("train.seed", tr.seed, 0, integer=True)
    if not (isinstance(tr.learning_rate, (int, float)) and tr.learning_rate > 0 and math.isfinite(tr.learning_rate)):
        problems.append(f"train.learning_rate must be a number > 0; got {tr.learning_rate!r}")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def set_field(config: RunConfig, dotted: str, raw: str) -> None:
    """Set `config.<section>.<field>` from its string form, e.g. ("audio.n_layers", "3")."""
    section_name, _, field_name = dotted.partition(".")
    section = getattr(config, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise ValueError(f"unknown config section {section_name!r} in {dotted!r}")
    types = typing.get_type_hints(type(section))
    if field_name not in types:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise ValueError(f"unknown field {dotted!r}; {section_name} has: {known}")
    setattr(section, field_name, _parse(raw, types[field_name], dotted))


def _parse(raw: str, kind, name: str):
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if origin is tuple:
            (inner, *_) = typing.get_args(kind)
            return tuple(inner(part) for part in raw.replace(";", ",").split(",") if part)
        return kind(raw)
    except ValueError:
        raise ValueError(f"cannot read {raw!r} as {kind} for {name}") from None


def check_precision(name: str) -> str:
    """`name` if it is a known `train.precision`, else a ValueError naming the choices."""
    if name not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    return name


def check_monitor(name: str) -> str:
    """`name` if it is a known `train.monitor`, else a ValueError naming the choices."""
    if name not in MONITOR_MODES:
        raise ValueError(f"train.monitor must be one of {', '.join(MONITOR_MODES)}; got {name!r}")
    return name


def _from_dict(cls, values: dict):
    types = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, kind = values[f.name], types[f.name]
        if dataclasses.is_dataclass(kind):
            value = _from_dict(kind, value)
        elif typing.get_origin(kind) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
