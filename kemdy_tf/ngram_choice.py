"""Which character n-gram regression the text classifier carries, chosen on validation.

`fusion.char_ngram_model=auto` (the default): before the text classifier trains, each
candidate below is fitted on the training split (scikit-learn, seconds) and scored on
the validation split by its class-weighted log loss alone. The first candidate, TF-IDF
over character 1-4-grams within words (the classical text baseline's features), is kept
unless another one's loss is lower by more than `MIN_STANDARD_ERRORS` standard errors of
the paired per-utterance difference: a validation split of a few hundred utterances
ranks four close regressions by chance (on the synthetic sets the lowest mean loss
picked a regression .04-.06 UA below the TF-IDF one on test, docs/text_real.md), while
a large one tells a real gain apart. The decision becomes the stage's
`fusion.char_ngram_*` settings, printed and recorded in its summary.json with every
candidate's loss. The other candidates are the settings that carried other real text
(docs/text_real.md): NSMC's reviews gained a little from naive-Bayes weights over jamo
n-grams that span words; each weighting is also tried with the other n-grams. The deep
path's share of each answer is then chosen on validation as for any fixed setting
(`models.ngram_logistic`), so a corpus whose words say nothing gives the regression
little weight.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from kemdy_tf import run as run_lib

AUTO = "auto"
# (name, fusion settings): n-gram reach, jamo or characters, bounded by words or not, weighting.
# The first is the default, kept unless validation tells another one apart.
CANDIDATES = (
    ("tfidf_char4_words", {"char_ngram_model": "tfidf_lr", "char_ngrams": 4, "char_ngram_jamo": False,
                           "char_ngram_word_bounded": True}),
    ("nblr_jamo6", {"char_ngram_model": "nblr", "char_ngrams": 6, "char_ngram_jamo": True,
                    "char_ngram_word_bounded": False}),
    ("tfidf_jamo6", {"char_ngram_model": "tfidf_lr", "char_ngrams": 6, "char_ngram_jamo": True,
                     "char_ngram_word_bounded": False}),
    ("nblr_char4_words", {"char_ngram_model": "nblr", "char_ngrams": 4, "char_ngram_jamo": False,
                          "char_ngram_word_bounded": True}),
)
# How many standard errors of the paired per-utterance loss difference a candidate must
# gain over the default to replace it (about a one-sided 2% chance that noise alone does it).
MIN_STANDARD_ERRORS = 2.0
CHOICE_FILE = run_lib.NGRAM_CHOICE  # in the stage folder: a resumed stage reuses the choice


def wants_choice(run, spec) -> bool:
    """Whether `spec` is a text-only classifier whose n-gram regression is to be chosen."""
    return spec.is_classifier and spec.modalities == ("text",) and wants_choice_of(run.config)


def wants_choice_of(config) -> bool:
    """Whether a config leaves its text classifier's n-gram regression to be chosen."""
    return config.fusion.char_ngrams > 0 and config.fusion.char_ngram_model == AUTO


def with_settings(run, settings: dict):
    """`run` whose config carries these `fusion.char_ngram_*` settings."""
    config = run.config
    return dataclasses.replace(run, config=dataclasses.replace(
        config, fusion=dataclasses.replace(config.fusion, **settings)))


def choose(run, spec, build, class_weights=None) -> tuple[object, dict]:
    """`(run with the chosen settings, report)`; the report lists each candidate's validation
    log loss. `build(run)` makes the stage's model for a run (as training would), and
    `class_weights` (indexed by class) weigh the fit and the loss. A run whose tokenizer
    is a pretrained backbone's has no SentencePiece pieces to spell n-grams from: the
    n-gram path is left out (`char_ngrams` 0), said in the report."""
    from kemdy_tf import stages as stages_lib
    from kemdy_tf.checkpoints import atomic_text

    stage_dir = run.stage_dir(spec.name)
    stored = stage_dir / CHOICE_FILE
    if stored.is_file():  # a resumed stage: the same choice, not fitted again
        report = json.loads(stored.read_text(encoding="utf-8"))
        return with_settings(run, report["settings"]), report
    if run.tokenizer_path.is_dir():
        report = {"chosen": "none", "settings": {"char_ngrams": 0},
                  "why": "the text backbone's own tokenizer spells no SentencePiece pieces"}
    elif not len(run.split("val")):
        name, settings = CANDIDATES[0]
        report = {"chosen": name, "settings": settings, "why": "no validation split: the default"}
    else:
        tokenizer = run.tokenizer()

        def losses_of(settings):
            candidate = with_settings(run, settings)
            model = build(candidate)
            return validation_losses(
                model, stages_lib.stage_dataset(candidate, spec, "train", training=False, tokenizer=tokenizer,
                                                class_weights=class_weights, model=model),
                stages_lib.stage_dataset(candidate, spec, "val", training=False, tokenizer=tokenizer, model=model),
                run.config.fusion.char_ngram_c, class_weights)

        report = best(losses_of)
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_text(stored, json.dumps(report, indent=2))
    print(f"stage {spec.name}: character n-grams {report['chosen']} ({report.get('why', 'chosen on validation')}"
          + (f"; validation log loss {report['validation_log_loss']})" if "validation_log_loss" in report
             else ")"), flush=True)
    return with_settings(run, report["settings"]), report


def best(losses_of) -> dict:
    """`decide` on `losses_of(settings)` of every candidate: each validation utterance's
    (weighted) log loss, in the same order for every candidate."""
    return decide({name: losses_of(settings) for name, settings in CANDIDATES})


def decide(losses: dict) -> dict:
    """The report of the chosen candidate from `{name: per-utterance validation losses}`:
    chosen, settings, why, the candidate with the lowest mean, its gain over the default
    and that gain's standard error, every candidate's validation log loss. The default
    (`CANDIDATES[0]`) is kept unless the lowest mean beats it by more than
    `MIN_STANDARD_ERRORS` standard errors of the paired difference."""
    losses = {name: np.asarray(losses[name], np.float64) for name, _ in CANDIDATES}
    means = {name: float(values.mean()) for name, values in losses.items()}
    default, lowest = CANDIDATES[0][0], min(means, key=means.get)
    difference = losses[default] - losses[lowest]
    gain = float(difference.mean())
    error = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else float("inf")
    if lowest == default:
        chosen, why = default, "the lowest validation log loss"
    elif gain > MIN_STANDARD_ERRORS * error:
        chosen, why = lowest, (f"validation log loss {gain:.3f} ± {error:.3f} below {default}'s: more than "
                               f"{MIN_STANDARD_ERRORS:g} standard errors")
    else:
        chosen, why = default, (f"the default: {lowest}'s validation log loss is {gain:.3f} ± {error:.3f} lower, "
                                f"within {MIN_STANDARD_ERRORS:g} standard errors")
    # No timing in it: a resumed run must write the same summary as an uninterrupted one.
    return {"chosen": chosen, "settings": dict(CANDIDATES)[chosen], "why": why, "lowest": lowest,
            "gain": round(gain, 4), "standard_error": round(error, 4),
            "validation_log_loss": {k: round(v, 4) for k, v in means.items()}}


def validation_losses(model, train, val, c: float = 0.0, class_weights=None) -> np.ndarray:
    """Each `val` utterance's class-weighted log loss under `model`'s n-gram regression alone,
    fitted on `train` (both: (inputs, {target: labels}[, sample weights]) batches, as
    `ngram_logistic` reads); the weights are scaled to mean 1, so the mean of the losses is
    the weighted log loss."""
    import keras

    from kemdy_tf.models import ngram_logistic

    ngram_logistic.fit_ngram_logistic(model, train, c)
    scores = keras.Model(model.input, model.get_layer(ngram_logistic.NGRAM_SCORES).output)
    probs, labels = [], []
    for batch in val:
        probs.append(np.asarray(scores.predict_on_batch(batch[0]), np.float64))
        labels.append(np.asarray(next(iter(batch[1].values()))).reshape(-1))
    probs, labels = np.concatenate(probs), np.concatenate(labels).astype(int)
    weights = np.ones(len(labels)) if class_weights is None else np.asarray(class_weights, float)[labels]
    return -np.log(probs[np.arange(len(labels)), labels] + 1e-7) * weights / weights.mean()
