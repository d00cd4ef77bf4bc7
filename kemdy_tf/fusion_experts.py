"""The fusion stage's final model: its cross-modal network and the run's single-modality
classifiers, combined by a product of experts fitted on the validation split.

    combined, report = combine_for_run(run, cross_modal)   # after the fusion stage's fit

The cross-modal network (`models.fusion`: both sequences along time, attention, LSTM)
learns what the two modalities say together; `audio_clf` and `text_clf` are each the
best reading of one modality. `models.experts.ExpertProduct` weighs the three answers'
log-probabilities and adds a class bias; weights and biases are fitted on the
validation split (class-balanced log loss; how far the biases may move, by
cross-validation on the same rows), so how much each modality counts is
learned per run, then one sharpness (a temperature, plain log loss) calibrates the
answer's confidence without changing its class. Each set of modalities an example can
have (both, audio only, text only, neither) gets its own fit, so a clip without a
transcript is answered by weights fitted for that case. The classifiers are frozen
copies inside the fusion model: evaluation, export and serving see one Keras model.

The weights are fitted on models that never saw the validation split: with
`train.refit`, a classifier's early-stopped model (`early_stopped.keras`) gives the
validation predictions and its refitted model is the one combined.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.special import softmax
from sklearn.metrics import balanced_accuracy_score, log_loss

from kemdy_tf import run as run_lib, stages as stages_lib
from kemdy_tf.models.experts import (EXPERT_PRODUCT, ExpertProduct, balanced_weights, choose_bias_penalty,
                                     clipped_log, expert_logits, fit_expert_weights, fit_sharpness)
from kemdy_tf.scoring import expected_calibration_error
from kemdy_tf.models.known_transcripts import KnownTranscriptMask, fingerprints
from kemdy_tf.models.layers import TokenPaddingMask
from kemdy_tf.models.text_encoder import PAD_ID

CROSS_MODAL = "cross_modal"
# The single-modality classifiers that join the cross-modal network, and the input whose
# mask says an example has that modality (a blank transcript: the text expert abstains).
CLASSIFIERS = {"audio_clf": "frame_mask", "text_clf": "token_ids"}
MODALITY = {"audio_clf": "audio", "text_clf": "text"}
# Fewer validation transcripts than this that the training split lacks: validation cannot
# say how the text expert reads a new sentence, so only known transcripts get its vote
# (models.known_transcripts).
MIN_NEW_TRANSCRIPTS = 10


def classifiers_of(run) -> dict[str, object]:
    """`{stage: path}` of the run's trained single-modality classifiers, in `CLASSIFIERS` order."""
    return {name: run.model_path(name) for name in CLASSIFIERS if run.model_path(name).exists()}


def has_experts(model) -> bool:
    return any(layer.name == EXPERT_PRODUCT for layer in model.layers)


def cross_modal_part(model):
    """The cross-modal network of a combined fusion model (the model itself when it has no
    experts): the inputs its answer reads, to the first expert's answer."""
    if not has_experts(model):
        return model
    answer = model.get_layer(EXPERT_PRODUCT).input[0]
    reached = _inputs_reaching(answer)
    inputs = {t.name: t for t in model.inputs if id(t) in reached}
    return keras.Model(inputs, {"emotion": answer}, name=model.name)


def _inputs_reaching(tensor) -> set[int]:
    """ids of the Keras tensors `tensor` is computed from, walking its graph back (Keras keeps
    each symbolic tensor's producing operation and call in `_keras_history`)."""
    seen, todo = set(), [tensor]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        operation, node_index, _ = current._keras_history
        todo.extend(operation._inbound_nodes[node_index].input_tensors)
    return seen


def combine(cross_modal, classifiers: dict, weights, bias, sharpness=None, name: str = "fusion",
            known_transcripts=None):
    """One Keras model: `cross_modal` and the frozen `classifiers` ({stage: model}) answer
    the same inputs; `ExpertProduct(weights, bias, sharpness)` (rows per pattern of modalities)
    combines their probabilities (the cross-modal network's first). Built on the network's
    own graph, so its backbones stay top-level layers (the export's inference graph splits
    the model at them). `known_transcripts` (fingerprints): the text expert votes only on
    those transcripts (`KnownTranscriptMask`); None: on every non-blank one."""
    inputs = {t.name: t for t in cross_modal.inputs}
    answers, masks = [cross_modal.output["emotion"]], []
    for stage, classifier in classifiers.items():
        classifier.trainable = False
        for tensor in classifier.inputs:
            if tensor.name not in inputs:
                inputs[tensor.name] = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=tensor.name)
        feed = {t.name: inputs[t.name] for t in classifier.inputs}
        answers.append(classifier(feed if isinstance(classifier.input, dict) else feed[classifier.inputs[0].name])
                       ["emotion"])
        evidence = CLASSIFIERS[stage]
        if evidence == "frame_mask":
            masks.append(inputs[evidence])
        elif known_transcripts is not None:
            known = KnownTranscriptMask(len(known_transcripts), pad_id=PAD_ID, name=f"{stage}_evidence")
            masks.append(known(inputs[evidence]))
            known.set_known(known_transcripts)
        else:
            masks.append(TokenPaddingMask(pad_id=PAD_ID, name=f"{stage}_evidence")(inputs[evidence]))
    product = ExpertProduct([[float(w) for w in row] for row in weights], [[float(b) for b in row] for row in bias],
                            masked=[False] + [True] * len(classifiers), expert_names=[CROSS_MODAL, *classifiers],
                            sharpness=None if sharpness is None else [float(v) for v in sharpness],
                            name=EXPERT_PRODUCT)
    return keras.Model(inputs, {"emotion": product(answers, masks)}, name=name)


def combine_for_run(run, cross_modal, tokenizer=None) -> tuple[object, dict]:
    """Fit the expert weights on the validation split and combine (`combine`).

    Each pattern of modalities (both, audio only, text only, neither) gets its own fit:
    the cross-modal network's validation answers with the missing modalities blanked, and
    the classifiers of the modalities present. Returns `(model, report)`; `model` is
    `cross_modal` itself, and the report says why, when the run has no trained classifier
    or no labelled validation row.
    """
    paths = classifiers_of(run)
    if not paths:
        return cross_modal, {"experts": [CROSS_MODAL], "why": "no single-modality classifier trained in this run"}
    classifiers = list(paths)
    answers, presence, labels, combined_models = {}, {}, None, {}
    for name, path in paths.items():  # scored by models that never saw the validation split
        scoring_path = _never_saw_validation(path)
        model = keras.saving.load_model(scoring_path, compile=False)
        answers[name], presence[name], labels = _validation_answers(run, name, model, tokenizer, (), labels)
        # Without a refit the scoring model is the one combined: loaded once.
        combined_models[name] = model if scoring_path == path else keras.saving.load_model(path, compile=False)
    if labels.size == 0:
        return cross_modal, {"experts": [CROSS_MODAL], "why": "no validation rows to fit the expert weights on"}
    known, transcripts = None, None
    if "text_clf" in paths:  # does validation measure reading new sentences? (models.known_transcripts)
        known, transcripts, presence["text_clf"] = _known_transcripts(run, tokenizer, presence["text_clf"])
    n_classes = answers[classifiers[0]].shape[-1]
    weights, bias, sharpness, by_modalities = [], [], [], {}
    for pattern in range(2 ** len(classifiers)):
        present = [name for k, name in enumerate(classifiers) if pattern >> k & 1]
        blank = tuple(MODALITY[n] for n in classifiers if n not in present)
        network, _, _ = _validation_answers(run, "fusion", cross_modal, tokenizer, blank, labels)
        rows = np.all([presence[n] for n in present], axis=0) if present else np.ones(labels.size, bool)
        experts = [CROSS_MODAL, *present]
        log_probs = np.stack([clipped_log(a[rows]) for a in (network, *(answers[n] for n in present))], axis=1)
        fitted = _fit(log_probs, labels[rows], n_classes)
        row = np.zeros(1 + len(classifiers))
        row[[0, *(1 + classifiers.index(n) for n in present)]] = fitted["weights"]
        weights.append(row)
        bias.append(fitted["bias"])
        sharpness.append(fitted["sharpness"])
        label = "+".join(MODALITY[n] for n in present) or "neither"
        by_modalities[label] = {"weights": {n: round(float(w), 4) for n, w in zip(experts, fitted["weights"])},
                                "class_bias": [round(float(b), 4) for b in fitted["bias"]],
                                "sharpness": round(float(fitted["sharpness"]), 4),
                                "bias_penalty": fitted["bias_penalty"],
                                "rows": int(rows.sum()), "val_log_loss": fitted["loss"], "val_ua": fitted["ua"],
                                "val_ece": fitted["ece"]}
    full = by_modalities["+".join(MODALITY[n] for n in classifiers)]
    report = {"experts": [CROSS_MODAL, *classifiers], **full,
              "fitted_on": f"validation split ({labels.size} utterances): weights and biases by class-balanced "
                           f"log loss (the biases' penalty by cross-validation on those rows), then the sharpness "
                           f"(a temperature) by log loss; one fit per set of modalities an example has",
              "by_modalities": by_modalities}
    if transcripts is not None:
        report["transcripts"] = transcripts
        print(f"stage fusion: the text expert votes on {transcripts['votes_on']} ({transcripts['why']})", flush=True)
    combined = combine(cross_modal, combined_models, weights, bias, sharpness, known_transcripts=known)
    print(f"stage fusion: the answer is the product of experts {describe(report)} (fitted on the validation "
          f"split; without the transcript: {describe(by_modalities.get('audio', {}))})", flush=True)
    return combined, report


def _fit(log_probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """`fit_expert_weights` with each class weighing the same (the loss follows UA, not the
    majority), and the validation figures of the result and of each expert alone."""
    if not labels.size:  # no row has these modalities: the network alone
        weights = np.eye(log_probs.shape[1])[0]
        return {"weights": weights, "bias": np.zeros(n_classes), "sharpness": 1.0, "loss": None, "ua": None,
                "ece": None, "bias_penalty": None}
    balanced = balanced_weights(labels, n_classes)
    # How far the class biases may move, by cross-validation on these rows (models.experts).
    penalty, held_out = choose_bias_penalty(log_probs, labels)
    weights, bias, loss = fit_expert_weights(log_probs, labels, balanced, penalty)
    logits = expert_logits(log_probs, weights, bias)
    sharpness = fit_sharpness(logits, labels)  # the confidence, once the weights have decided
    alone = np.eye(log_probs.shape[1])
    no_bias = np.zeros(n_classes)
    return {"weights": weights, "bias": bias, "sharpness": sharpness,
            "bias_penalty": {"chosen": penalty, "held_out_log_loss": {f"{k:g}": round(v, 4) for k, v in
                                                                      held_out.items()}},
            "ece": {"before": round(expected_calibration_error(labels, softmax(logits, axis=1)), 4),
                    "after": round(expected_calibration_error(labels, softmax(sharpness * logits, axis=1)), 4)},
            "loss": {"combined": round(loss, 4), "alone": [
                round(log_loss(labels, softmax(expert_logits(log_probs, alone[i], no_bias), axis=1),
                               sample_weight=balanced, labels=range(n_classes)), 4)
                for i in range(len(alone))]},
            "ua": {"combined": _ua(expert_logits(log_probs, weights, bias), labels),
                   "alone": [_ua(log_probs[:, i], labels) for i in range(len(alone))]}}


def recombine(cross_modal, combined_before, run):
    """`cross_modal` combined with the run's classifiers by the weights `combined_before`
    holds (the refit: no validation split is left to fit them on)."""
    layer = combined_before.get_layer(EXPERT_PRODUCT)
    paths = classifiers_of(run)
    names = layer.expert_names[1:]
    if list(paths) != names:
        raise RuntimeError(f"the fusion model's experts {names} are not the run's classifiers {list(paths)}")
    classifiers = {name: keras.saving.load_model(paths[name], compile=False) for name in names}
    known = next((np.asarray(found.known) for found in combined_before.layers
                  if isinstance(found, KnownTranscriptMask)), None)
    return combine(cross_modal, classifiers, layer.weights_per_expert, layer.class_bias, layer.sharpness,
                   known_transcripts=known)


def describe(report: dict) -> str:
    weights = report.get("weights")
    if not weights:
        return f"(none: {report.get('why', '')})"
    experts = ", ".join(f"{name} x{weight:.2f}" for name, weight in weights.items())
    penalty = (report.get("bias_penalty") or {}).get("chosen")
    return (experts + (f", sharpness {report['sharpness']:.2f}" if "sharpness" in report else "")
            + (f", class-bias penalty {penalty:g}" if penalty is not None else ""))


def _never_saw_validation(path):
    """A classifier's early-stopped model when a refit replaced it (train.refit), else its model."""
    early = path.parent / run_lib.EARLY_STOPPED
    return early if early.exists() else path


def _validation_answers(run, stage: str, model, tokenizer, blank: tuple = (), labels=None):
    """`model`'s `[N, C]` validation probabilities (the modalities in `blank` blanked: no
    frames, or all pad tokens), whether each example holds the modality of a classifier
    stage (None for the network), and the labels, checked against `labels` (the datasets
    of a split come in the same order)."""
    ds = stages_lib.stage_dataset(run, stages_lib.get(stage), "val", training=False, tokenizer=tokenizer,
                                  model=model)
    evidence = CLASSIFIERS.get(stage)
    probs, present, truth = [], [], []
    for x, y in ds:
        x = {t.name: np.asarray(x[t.name] if isinstance(x, dict) else x) for t in model.inputs}
        if "text" in blank:
            x["token_ids"] = np.zeros_like(x["token_ids"])
        if "audio" in blank:
            x["frame_mask"] = np.zeros_like(x["frame_mask"])
            x["log_mel"] = np.zeros_like(x["log_mel"])
        probs.append(np.asarray(model.predict_on_batch(x)["emotion"]))
        truth.append(np.asarray(y["emotion"]).reshape(-1))
        if evidence is not None:
            present.append((x[evidence] != 0).any(axis=-1))
    if not probs:
        return np.zeros((0, 0)), None, np.zeros(0, int)
    truth = np.concatenate(truth).astype(int)
    if labels is not None and not np.array_equal(labels, truth):
        raise RuntimeError("the validation datasets of the fusion stage's experts differ in order")
    return np.concatenate(probs), (np.concatenate(present) if present else None), truth


def _split_fingerprints(run, split: str, tokenizer) -> np.ndarray:
    """Fingerprints of the token ids of a split's text classifier rows, in dataset order."""
    ds = stages_lib.stage_dataset(run, stages_lib.get("text_clf"), split, training=False, tokenizer=tokenizer)
    found = [fingerprints(np.asarray(x["token_ids"])) for x, _ in ds]
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _known_transcripts(run, tokenizer, present: np.ndarray):
    """`(fingerprints or None, report, validation presence of the text expert)`: with
    fewer than `MIN_NEW_TRANSCRIPTS` validation transcripts the training split lacks, the
    training transcripts' fingerprints (the text expert votes on those only, in validation
    as at serving); else None (it votes on every transcript)."""
    train = np.unique(_split_fingerprints(run, "train", tokenizer))
    val = _split_fingerprints(run, "val", tokenizer)
    seen = np.isin(val, train)
    new = int((present & ~seen).sum())
    if new >= MIN_NEW_TRANSCRIPTS or not len(train):
        return None, {"new_in_validation": new, "votes_on": "every transcript",
                      "why": f"{new} validation transcripts are new sentences: validation measured reading"}, present
    return train, {"new_in_validation": new, "known": int(len(train)), "votes_on": "training transcripts only",
                   "why": f"only {new} validation transcripts are new sentences: validation measured recall of the "
                          f"script, not reading; a new sentence is answered by the voice"}, present & seen


def _ua(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(float(balanced_accuracy_score(labels, logits.argmax(axis=1))), 4)
