"""A stage's validation summary: what `train.py` prints and writes to `summary.json`.

Scored with `kemdy_tf.scoring` and the same majority-class definition (training
split's originals, lowest index on a tie) as `evaluate.py`'s report; a classifier's
summary also holds the classical baseline (`kemdy_tf.classical`) of its modalities,
trained on the same training split.
"""

from __future__ import annotations

import numpy as np

from kemdy_tf import classical, scoring, stages as stages_lib


def validation_summary(run, stage: str, model, tokenizer=None, classical_row: bool = True) -> dict:
    """The stage's metrics on the validation split next to the majority/mean baseline (and,
    unless `classical_row` is False, e.g. a classical model fitted on this split, the
    classical baseline)."""
    spec = stages_lib.get(stage)
    target = spec.target
    ds = stages_lib.stage_dataset(run, spec, "val", training=False, tokenizer=tokenizer, model=model)
    y_true = np.concatenate([y[target].numpy().reshape(-1) for _, y in ds])
    y_pred = model.predict(ds.map(lambda x, y: x), verbose=0)[target]
    train = run.split("train")
    train = train[train["augmented_from"].fillna("") == ""] if "augmented_from" in train else train
    summary = {"stage": stage, "split": "val", "n": int(len(y_true)), "target": target}
    if not spec.is_classifier:
        summary["model"] = scoring.regression_metrics(y_true, np.asarray(y_pred).reshape(-1))
        summary["baseline"] = scoring.mean_baseline(y_true, float(train[target].mean()))
        summary["baseline_name"] = "training-split mean"
    else:
        classes = list(run.config.data.classes)
        train_labels = train["emotion"][train["emotion"].isin(classes)].map(classes.index)
        majority = scoring.majority_class(train_labels.to_numpy(), len(classes))
        summary["model"] = scoring.classification_metrics(y_true.astype(int), np.argmax(y_pred, -1), classes)
        summary["baseline"] = scoring.majority_baseline(y_true.astype(int), majority, classes)
        summary["baseline_name"] = f"majority class ({classes[majority]})"
        val = classical.labelled_rows(run.table, classes, "val")
        try:
            probs = classical.predict_for_run(run.workdir, val, spec.modalities) if classical_row else None
        except ValueError:  # no classical model for this modality (e.g. no transcripts)
            probs = None
        if probs is not None and len(val):
            summary["classical"] = scoring.classification_metrics(
                val["emotion"].map(classes.index).to_numpy(), probs.argmax(axis=1), classes)
            summary["classical_name"] = f"classical ({'+'.join(spec.modalities)})"
    return summary


def format_summary(summary: dict) -> str:
    head = f"\n== {summary['stage']}: validation split ({summary['n']} utterances) =="
    model, baseline = summary["model"], summary["baseline"]
    if "rmse" in model:
        rows = [f"{'':28s}{'RMSE':>8s}{'CCC':>8s}",
                f"{summary['stage'] + ' ' + summary['target']:28s}{model['rmse']:8.3f}{model['ccc']:8.3f}",
                f"{summary['baseline_name']:28s}{baseline['rmse']:8.3f}{baseline['ccc']:8.3f}"]
        return "\n".join([head, *rows, *_refit_note(summary)]) + "\n"
    rows = [f"{'':28s}{'WA':>8s}{'UA':>8s}{'macro-F1':>10s}{'wF1':>8s}"]
    others = [(baseline, summary["baseline_name"])]
    if summary.get("classical"):
        others.append((summary["classical"], summary["classical_name"]))
    for m, label in ((model, summary["stage"]), *others):
        rows.append(f"{label:28s}{m['accuracy']:8.3f}{m['balanced_accuracy']:8.3f}"
                    f"{m['macro_f1']:10.3f}{m['weighted_f1']:8.3f}")
    notes = ["(WA flatters a majority-class model: read UA and macro-F1)", *_ngram_note(summary),
             *_functionals_note(summary), *_experts_note(summary),
             *_refit_note(summary)]
    return "\n".join([head, *rows, *notes]) + "\n"


def _ngram_note(summary: dict) -> list[str]:
    fitted = summary.get("char_ngram_logistic")
    if not fitted:
        return []
    return [f"(the character n-gram logistic regression, fitted on {fitted['rows']} training rows, gives "
            f"{fitted['share']:.0%} of each answer: the share chosen on this split)"]


def _functionals_note(summary: dict) -> list[str]:
    fitted = summary.get("functionals_logistic")
    if not fitted:
        return []
    return [f"(the functionals logistic regression, fitted on {fitted['rows']} training rows with C {fitted['c']:g}"
            + (" (the lowest validation log loss)" if "validation_log_loss" in fitted else "")
            + f", gives {fitted['share']:.0%} of each answer: the share chosen on this split)"]


def _experts_note(summary: dict) -> list[str]:
    experts = summary.get("experts")
    if not experts or not experts.get("weights"):
        return []
    ua = experts["val_ua"]
    alone = ", ".join(f"{name} {value:.3f}" for name, value in zip(experts["weights"], ua["alone"]))
    return [f"(the answer is a product of experts fitted on this split: "
            f"{', '.join(f'{n} x{w:.2f}' for n, w in experts['weights'].items())}; "
            f"UA alone: {alone}; combined {ua['combined']:.3f}"
            + (f"; sharpness {experts['sharpness']:.2f}, ECE {experts['val_ece']['before']:.3f} -> "
               f"{experts['val_ece']['after']:.3f}" if experts.get("val_ece") else "") + ")"]


def _refit_note(summary: dict) -> list[str]:
    refit = summary.get("refit")
    if not refit:
        return []
    return [f"(the early-stopped model's figures; model.keras is its refit on training + validation: "
            f"{refit['rows']} rows, {refit['epochs']} epochs)"]
