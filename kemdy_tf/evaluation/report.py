"""An evaluation, written down: `report.json`, `report.md` and `predictions.csv`.

`report.json` is the whole evaluation as data (NaN written as null); `report.md`
renders it as tables a person reads top to bottom, the first table being the
emotion classifiers next to the majority-class baseline.
"""

from __future__ import annotations

import json
import math
import pathlib
import typing

import pandas as pd

from kemdy_tf import classical, stages as stages_lib
from kemdy_tf.evaluation.predict import NO_TEXT_SUFFIX
from kemdy_tf.evaluation.transcribed import STT_SUFFIX
from kemdy_tf.json_safe import to_json_safe  # noqa: F401  (part of this module's API)
from kemdy_tf.scoring import HEADLINE, HEADLINE_NAMES

REGRESSION_NAMES = {"rmse": "RMSE", "ccc": "CCC"}


def _descriptions() -> dict[str, str]:
    """How each model is named in tables, in the order of the tables' rows: the stage
    registry's descriptions, each audio+text model followed by its transcript-blanked run."""
    out = {name: description for name, (_, description) in classical.REPORT_MODELS.items()}
    for name in stages_lib.report_order():
        stage = stages_lib.get(name)
        out[name] = stage.description
        if len(stage.modalities) > 1:
            out[name + NO_TEXT_SUFFIX] = f"{name}, transcript blanked (token ids 0)"
    return out


def describe(model: str) -> str:
    """`"audio only (audio_clf)"`: a model's table name with its stage folder."""
    descriptions = _descriptions()
    if model in descriptions:
        return f"{descriptions[model]} (`{model}`)"
    if model.endswith(NO_TEXT_SUFFIX):
        return f"{model[:-len(NO_TEXT_SUFFIX)]}, transcript blanked (`{model}`)"
    if model.endswith(STT_SUFFIX):
        return f"{model[:-len(STT_SUFFIX)]}, speech-recognition transcript (`{model}`)"
    return f"`{model}`"


def ordered(models: typing.Iterable[str]) -> list[str]:
    """Models in the order of `_descriptions()`, unknown ones after them alphabetically."""
    known = list(_descriptions())
    return sorted(models, key=lambda m: (known.index(m) if m in known else len(known), m))


def write_report(report: dict, out_dir: str | pathlib.Path,
                 predictions: pd.DataFrame | None = None) -> dict[str, pathlib.Path]:
    """Write `report.json`, `report.md` and (when given) `predictions.csv` into `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(to_json_safe(report), indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    if predictions is not None:
        paths["predictions"] = out_dir / "predictions.csv"
        predictions.to_csv(paths["predictions"], index=False, float_format="%.6g")
    return paths


# === Markdown ===

def render_markdown(report: dict) -> str:
    """The report as Markdown: headline table first, then details, sweeps and folds."""
    parts = [_header(report)]
    if report.get("models"):
        parts += [_classification_section(report), _regression_section(report),
                  _per_class_section(report), _figures_section(report)]
    if report.get("curves"):
        parts.append(_curves_section(report["curves"]))
    if report.get("sweeps"):
        parts.append(_sweeps_section(report["sweeps"]))
    if report.get("folds"):
        parts.append(_folds_section(report["folds"]))
    if report.get("notes"):
        parts.append("## Notes\n\n" + "\n".join(f"- {note}" for note in report["notes"]))
    return "\n\n".join(p for p in parts if p) + "\n"


def headline_markdown(report: dict) -> str:
    """Only the header and the two headline tables (what evaluate.py prints)."""
    parts = [_header(report)]
    if report.get("models"):
        parts += [_classification_section(report), _regression_section(report)]
    return "\n\n".join(p for p in parts if p) + "\n"


def results_markdown(report: dict) -> str:
    """The README's results: the emotion table (baseline first) and the arousal/valence
    table, from a report.json, with nothing typed by hand (scripts/readme_results.py)."""
    baseline = report["majority_baseline"]
    split = f"{report['split']} split, {report['n']} utterances"
    rows = [[f"majority baseline (`{baseline['class']}`)"] + [_num(baseline[k]) for k in HEADLINE] + [""]]
    for model in ordered(report["models"]):
        scores = report["models"][model].get("emotion")
        if scores is not None:
            rows.append([describe(model)] + [_num(scores[k]) for k in HEADLINE] + [_num(scores.get("ece"))])
    parts = [_table([f"model ({split})"] + [HEADLINE_NAMES[k] for k in HEADLINE] + ["ECE"], rows)]
    regression = []
    for target in ("arousal", "valence"):
        for model in ordered(report["models"]):
            scores = report["models"][model].get(target)
            if scores is not None:
                base = report.get("mean_baseline", {}).get(target, {})
                regression.append([target, describe(model), _num(scores["rmse"]), _num(scores["ccc"]),
                                   _num(base.get("rmse"))])
    if regression:
        parts.append(_table(["target", "model", "RMSE", "CCC", "mean-baseline RMSE"], regression))
    return "\n\n".join(parts) + "\n"


def _header(report: dict) -> str:
    lines = [f"# Evaluation of `{report.get('workdir', '?')}`"]
    if "split" in report and "n" in report:
        lines.append(f"\nSplit: **{report['split']}**, {report['n']} utterances. "
                     f"Classes: {', '.join(report.get('classes', []))}.")
    if report.get("label_policy"):
        lines.append(f"\n{report['label_policy']}")
    return "\n".join(lines)


def _classification_section(report: dict) -> str:
    models = [m for m in ordered(report["models"]) if "emotion" in report["models"][m]]
    baseline = report.get("majority_baseline")
    if not models or baseline is None:
        return ""
    lines = ["## Emotion classification", ""]
    lines.append(f"**Warning: WA (accuracy) flatters a model that predicts the majority class: "
                 f"always answering `{baseline['class']}` (the training split's majority) scores "
                 f"WA {baseline['accuracy']:.3f} here while its UA is chance "
                 f"({baseline['balanced_accuracy']:.3f}). Judge the models by UA and macro-F1 "
                 f"against the baseline row.**")
    lines.append("")
    header = ["model"] + [HEADLINE_NAMES[k] for k in HEADLINE] + ["ECE", "n"]
    rows = [[f"majority baseline (`{baseline['class']}`)"] + [_num(baseline[k]) for k in HEADLINE]
            + ["", str(baseline["n"])]]
    for model in models:
        scores = report["models"][model]["emotion"]
        rows.append([describe(model)] + [_num(scores[k]) for k in HEADLINE] + [_num(scores.get("ece")),
                                                                              str(scores["n"])])
    lines.append(_table(header, rows))
    return "\n".join(lines)


def _regression_section(report: dict) -> str:
    rows = []
    baselines = report.get("mean_baseline", {})
    for target in ("arousal", "valence"):
        for model in ordered(report["models"]):
            scores = report["models"][model].get(target)
            if scores is None:
                continue
            base = baselines.get(target, {})
            rows.append([target, describe(model), _num(scores["rmse"]), _num(scores["ccc"]),
                         _num(base.get("rmse")), _num(base.get("ccc")), str(scores["n"])])
    if not rows:
        return ""
    header = ["target", "model", "RMSE", "CCC", "mean-baseline RMSE", "mean-baseline CCC", "n"]
    note = ("The mean baseline predicts the training split's mean for every utterance "
            "(its CCC is 0 by definition).")
    return "## Arousal and valence\n\n" + _table(header, rows) + "\n\n" + note


def _per_class_section(report: dict) -> str:
    blocks = ["## Per-class scores"]
    for model in ordered(report["models"]):
        scores = report["models"][model].get("emotion")
        if scores is None:
            continue
        rows = [[name, _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), str(c["support"])]
                for name, c in scores["per_class"].items()]
        rows.append(["**total**", "", "", "", str(sum(c["support"] for c in scores["per_class"].values()))])
        blocks.append(f"### {describe(model)}\n\n"
                      + _table(["class", "precision", "recall", "F1", "support"], rows))
        classes = list(scores["per_class"])
        matrix = scores["confusion_matrix"]
        blocks.append("Confusion matrix (rows true, columns predicted):\n\n" + _table(
            ["true \\ predicted"] + classes,
            [[name] + [str(v) for v in row] for name, row in zip(classes, matrix)]))
    return "\n\n".join(blocks) if len(blocks) > 1 else ""


def _figures_section(report: dict) -> str:
    plots = report.get("plots", {})
    lines = []
    for model, path in plots.get("confusion", {}).items():
        lines.append(f"![confusion matrix of {model}]({path})")
    if plots.get("recall"):
        lines.append(f"![per-class recall]({plots['recall']})")
    return "## Figures\n\n" + "\n\n".join(lines) if lines else ""


def _curves_section(curves: dict) -> str:
    lines = ["## Training curves"]
    for stage, path in curves.items():
        lines.append(f"![training curves of {stage}]({path})")
    return "\n\n".join(lines)


def _sweeps_section(sweeps: dict) -> str:
    blocks = ["## Sweeps",
              "Train and validation figures at the epoch with the lowest validation loss "
              "(the checkpoint kept); the test split is not used to choose a value."]
    for field, sweep in sweeps.items():
        rows = [[str(r["value"]), r["stage"], r["metric"], _num(r["train"]), _num(r["val"]),
                 _int(r["epoch"]), _int(r["epochs"])] for r in sweep["rows"]]
        blocks.append(f"### `{field}`\n\n" + _table(
            ["value", "stage", "metric", "train", "validation", "best epoch", "epochs"], rows))
        if sweep.get("plot"):
            blocks.append(f"![sweep of {field}]({sweep['plot']})")
    return "\n\n".join(blocks)


def _folds_section(folds: dict) -> str:
    n = len(folds.get("folds", []))
    blocks = [f"## Cross-validation ({n} folds, {folds.get('split', 'test')} split of each)",
              "Mean ± sample standard deviation over folds."]
    header = ["model"] + [HEADLINE_NAMES[k] for k in HEADLINE]
    rows = []
    if folds.get("majority_baseline"):
        rows.append(["majority baseline"] + [_mean_std(folds["majority_baseline"].get(k)) for k in HEADLINE] + [""])
    for model in ordered(folds.get("models", {})):
        emotion = folds["models"][model].get("emotion")
        if emotion:
            rows.append([describe(model)] + [_mean_std(emotion.get(k)) for k in HEADLINE]
                        + [_mean_std(emotion.get("ece"))])
    if rows:
        blocks.append(_table(header + ["ECE"], rows))
    pooled = folds.get("pooled")
    if pooled and pooled.get("models"):
        blocks.append(f"Pooled: every fold's test predictions scored as one set ({pooled['n']} utterances, "
                      "each once); steadier than the fold mean when a fold holds few utterances of a class.")
        pooled_rows = [["majority baseline"] + [f"{pooled['majority_baseline'][k]:.3f}" for k in HEADLINE]]
        pooled_rows += [[describe(m)] + [f"{scores[k]:.3f}" for k in HEADLINE]
                        for m, scores in pooled["models"].items()]
        blocks.append(_table(header, pooled_rows))
    reg_rows = []
    for model in ordered(folds.get("models", {})):
        for target in ("arousal", "valence"):
            scores = folds["models"][model].get(target)
            if scores:
                reg_rows.append([target, describe(model), _mean_std(scores.get("rmse")),
                                 _mean_std(scores.get("ccc"))])
    if reg_rows:
        blocks.append(_table(["target", "model", "RMSE", "CCC"], reg_rows))
    if folds.get("reports"):
        blocks.append("Per-fold reports: " + ", ".join(
            f"[{name}]({path})" for name, path in folds["reports"].items()))
    return "\n\n".join(blocks)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def _int(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return str(int(value))


def _mean_std(summary: dict | None) -> str:
    if not summary or summary.get("mean") is None or math.isnan(summary["mean"]):
        return "n/a"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"
