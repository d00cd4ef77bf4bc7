"""Evaluate a run's workdir: its models on one split, its training curves, sweeps and folds.

    evaluate_workdir("runs/synthetic")     # -> runs/synthetic/eval_test/report.md ...

Opens the run read-only through `kemdy_tf.run.open_run` (run.json, table.csv,
tokenizer.model, the feature cache as training left it: nothing is recomputed), one
folder per registered stage (`kemdy_tf.stages`) with `model.keras` and `history.csv`,
`sweeps/<field>/<value>/` and `folds/fold<k>/` (each a workdir).
A workdir that holds only sweeps or folds (as `train.py --sweep` / `--folds` leave
the top level) gets a report of those alone.
"""

from __future__ import annotations

import logging
import pathlib
import re

import pandas as pd

from kemdy_tf import classical, run as run_lib, scoring as metrics
from kemdy_tf.evaluation import plots, report as report_lib, sweeps as sweeps_lib
from kemdy_tf.evaluation.predict import predict_split
from kemdy_tf.trained_run import load_trained_run

log = logging.getLogger("kemdy_tf.evaluation")

SPLITS = ("test", "val")
LABEL_POLICY = (
    "Each utterance is scored against its primary label (`emotion`): the first annotated "
    "label that is a target class and not `neutral`, else `neutral` "
    "(`kemdy_tf.data.labels.primary_label`; ties such as `happy;neutral` count as `happy`). "
    "`predictions.csv` also lists every tied label (`labels`). The majority baseline "
    "predicts the training split's most frequent primary label for every utterance.")


class EvaluationError(RuntimeError):
    """A workdir cannot be evaluated (missing files, empty split, ...)."""


# === Loading a run ===

def load_trained(workdir: str | pathlib.Path, cache_dir=None):
    """The finished run in `workdir` with every stage model it holds, opened read-only
    (`kemdy_tf.trained_run.load_trained_run`, with the feature cache as training left it).

    Raises:
        EvaluationError: when `run.json`, `table.csv` or `tokenizer.model` is missing,
            the feature cache is gone (evaluation never recomputes features), or a
            model cannot be loaded.
    """
    try:
        return load_trained_run(workdir, with_features=True, cache_dir=cache_dir)
    except run_lib.RunError as error:
        raise EvaluationError(str(error)) from None


def stage_folders(workdir: str | pathlib.Path, filename: str) -> dict[str, pathlib.Path]:
    """`{stage: folder}` for every registered stage whose folder holds `filename`, in report order."""
    return run_lib.stage_folders(workdir, filename)


# === Evaluating ===

def evaluate_workdir(workdir: str | pathlib.Path, split: str = "test", out_dir=None, cache_dir=None,
                     with_sweeps: bool = True, with_folds: bool = True, transcribe=None) -> dict:
    """Evaluate everything a workdir holds and write the report into `out_dir`.

    Args:
        workdir: a run folder (docs/architecture.md).
        split: `test` or `val`.
        out_dir: where report.json, report.md, predictions.csv and the PNGs go;
            default `WORKDIR/eval_<split>`.
        cache_dir: the feature cache, when training used `--cache-dir`.
        with_sweeps, with_folds: also report `sweeps/` and `folds/`.
        transcribe: `wav path -> transcript` (`transcribed.vosk_transcriber()`): adds the
            deployment rows `<model>_stt` (audio+text models fed these transcripts) and
            the transcripts' character error rate (`report["stt"]`); None: left out.

    Returns:
        The report (as written to report.json), with `"paths"` of the files written.

    Raises:
        EvaluationError: the workdir is missing or holds nothing to evaluate, or the
            split is empty.
    """
    workdir = pathlib.Path(workdir)
    if split not in SPLITS:
        raise EvaluationError(f"split must be one of {SPLITS}, got {split!r}")
    if not workdir.is_dir():
        raise EvaluationError(f"{workdir}: no such workdir")
    out_dir = pathlib.Path(out_dir) if out_dir else workdir / f"eval_{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"workdir": str(workdir), "split": split, "notes": []}
    predictions = None

    if stage_folders(workdir, run_lib.MODEL):
        predictions, scores = evaluate_models(workdir, split, cache_dir, transcribe)
        report.update(scores, label_policy=LABEL_POLICY)
        if report.get("stt", {}).get("models"):
            report["notes"].append(
                f"{', '.join(report['stt']['models'])}: fed speech-recognition transcripts instead of the "
                f"references (the deployment case); their character error rate against the references is "
                f"{report['stt']['cer']:.3f} over {report['stt']['clips']} clips (spaces and punctuation stripped).")
        report["plots"] = _model_plots(predictions, scores, out_dir)
    elif (workdir / run_lib.RUN_JSON).exists():
        report["notes"].append(f"{workdir} holds no trained model (no <stage>/model.keras).")
    for stage, folder in stage_folders(workdir, run_lib.STAGE_CONFIG).items():
        if not (folder / run_lib.MODEL).exists():
            report["notes"].append(f"{stage}: {folder / run_lib.MODEL} is missing (training not finished?); "
                                   f"the stage is left out.")

    report["curves"] = _curve_plots(workdir, out_dir, report["notes"])
    if with_sweeps:
        report["sweeps"] = _sweep_section(workdir, out_dir)
    if with_folds:
        report["folds"] = evaluate_folds(workdir, split, out_dir / "folds", cache_dir)
    if not (report.get("models") or report.get("curves") or report.get("sweeps") or report.get("folds")):
        raise EvaluationError(f"{workdir} holds nothing to evaluate: no stage models, histories, "
                              f"sweeps/ or folds/")
    report["paths"] = {k: str(v) for k, v in report_lib.write_report(report, out_dir, predictions).items()}
    return report


def evaluate_models(workdir: pathlib.Path, split: str, cache_dir=None, transcribe=None) -> tuple[pd.DataFrame, dict]:
    """Predict with every stage model on the split and score it next to the baselines
    (and, given `transcribe`, the deployment rows: see `transcribed.py`)."""
    trained = load_trained(workdir, cache_dir)
    run, models = trained.run, trained.models
    table = run.split(split)
    if table.empty:
        raise EvaluationError(f"{workdir / run_lib.TABLE_CSV} has no rows in the {split} split")
    try:
        table = run.require_features(table, f"{split} split")
    except run_lib.RunError as error:
        raise EvaluationError(str(error)) from None
    classes = list(run.config.data.classes)
    predictions = predict_split(models, split_dataset(run, table), classes, table=table)
    reference = predictions[predictions["model"] == predictions["model"].iloc[0]]
    predictions = pd.concat([predictions, *classical.prediction_frames(workdir, reference, table, classes)],
                            ignore_index=True)
    stt_summary = None
    if transcribe is not None:
        from kemdy_tf.evaluation.transcribed import stt_predictions

        frame, stt_summary = stt_predictions(models, table, lambda t: split_dataset(run, t), classes, transcribe)
        predictions = pd.concat([predictions, frame], ignore_index=True)
    train = original_rows(run.split("train"))
    if train.empty:
        raise EvaluationError(f"{workdir / run_lib.TABLE_CSV} has no training rows: the baselines need them")
    scores = metrics.score_predictions(
        predictions, classes, train_emotions=list(train["emotion"]),
        train_means={t: float(train[t].mean()) for t in ("arousal", "valence") if t in train})
    if stt_summary is not None:
        scores["stt"] = stt_summary
    return predictions, scores


def split_dataset(run, table: pd.DataFrame):
    """Evaluation batches of `table` (no augmentation, no shuffling, with segment ids)."""
    from kemdy_tf.data.features import make_dataset
    from kemdy_tf.config import reads_functionals
    from kemdy_tf.speaker_statistics import run_fallback

    cfg = run.config
    fallback = (run_fallback(run) if reads_functionals(cfg.fusion, ("audio",)) and cfg.fusion.functionals_speaker_norm
                else None)
    return make_dataset(table, run.cache, run.tokenizer(), cfg, training=False, with_ids=True,
                        speaker_fallback=fallback)


def original_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that are not augmented copies (`augmented_from` empty or absent)."""
    if "augmented_from" not in table:
        return table
    return table[table["augmented_from"].fillna("").astype(str) == ""]


def evaluate_folds(workdir: pathlib.Path, split: str, out_dir: pathlib.Path, cache_dir=None) -> dict:
    """Evaluate each `folds/fold<k>/` on its own split; mean ± std of every figure.

    Returns `{}` when the workdir has no folds, else `{"split", "folds": [names],
    "majority_baseline": {metric: mean_and_std}, "models": {model: {output: {metric:
    mean_and_std}}}, "reports": {fold: report.md path relative to the parent report}}`.
    """
    fold_dirs = find_folds(workdir)
    if not fold_dirs:
        return {}
    reports = {}
    for name, fold_dir in fold_dirs.items():
        log.info("evaluating %s on its %s split", fold_dir, split)
        reports[name] = evaluate_workdir(fold_dir, split, out_dir / name, cache_dir,
                                         with_sweeps=False, with_folds=False)
    summary = aggregate_folds(reports)
    pooled = pool_folds(reports)
    if pooled:
        summary["pooled"] = pooled
    summary["split"] = split
    summary["reports"] = {name: f"folds/{name}/report.md" for name in reports}
    return summary


def find_folds(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """`{"fold0": path, ...}` of `WORKDIR/folds/fold<k>/`, in fold order."""
    root = pathlib.Path(workdir) / run_lib.FOLDS_DIR
    if not root.is_dir():
        return {}
    found = {p.name: p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"fold\d+", p.name)}
    return {name: found[name] for name in sorted(found, key=lambda n: int(n[4:]))}


def aggregate_folds(reports: dict[str, dict]) -> dict:
    """Mean ± sample std over folds of every headline figure, per model and for the baseline.

    A model missing from some fold is averaged over the folds that have it (`n` says how many).
    """
    summary: dict = {"folds": list(reports), "majority_baseline": {}, "models": {}}
    baselines = [r["majority_baseline"] for r in reports.values() if r.get("majority_baseline")]
    if baselines:
        summary["majority_baseline"] = {k: metrics.mean_and_std([b[k] for b in baselines])
                                        for k in metrics.HEADLINE}
    models = report_lib.ordered({m for r in reports.values() for m in r.get("models", {})})
    for model in models:
        entries = [r["models"][model] for r in reports.values() if model in r.get("models", {})]
        out = {}
        emotion = [e["emotion"] for e in entries if "emotion" in e]
        if emotion:
            out["emotion"] = {k: metrics.mean_and_std([e[k] for e in emotion]) for k in metrics.HEADLINE}
            if all("ece" in e for e in emotion):
                out["emotion"]["ece"] = metrics.mean_and_std([e["ece"] for e in emotion])
        for target in ("arousal", "valence"):
            values = [e[target] for e in entries if target in e]
            if values:
                out[target] = {k: metrics.mean_and_std([v[k] for v in values]) for k in ("rmse", "ccc")}
        summary["models"][model] = out
    return summary


def pool_folds(reports: dict[str, dict]) -> dict:
    """Every fold's emotion predictions scored as one set (each test utterance counted once).

    Reads the `predictions.csv` each fold's report names in its `paths`.

    Under heavy imbalance a fold's test split holds two or three utterances of a rare
    class, so one of them moves that fold's UA by a whole class's recall share; pooled,
    the rare classes have every fold's utterances. Models missing from a fold are left
    out; the majority baseline predicts each fold's own training majority.

    Returns `{}` without emotion predictions, else `{"n", "majority_baseline": headline,
    "models": {model: headline}}` (headline: `scoring.HEADLINE` figures).
    """
    classes = next((r["classes"] for r in reports.values() if r.get("classes")), None)
    frames, majority = [], []
    for name, report in reports.items():
        path = report.get("paths", {}).get("predictions")
        if path is None or not pathlib.Path(path).exists() or "majority_baseline" not in report:
            return {}
        frame = pd.read_csv(path)
        if "emotion_pred" not in frame:
            return {}
        frames.append(frame.assign(fold=name))
        reference = frame[frame["model"] == frame["model"].iloc[0]]
        majority.append(reference.assign(model="majority", emotion_pred=report["majority_baseline"]["class"]))
    if not classes or not frames:
        return {}
    table = pd.concat(frames, ignore_index=True)
    index = {c: i for i, c in enumerate(classes)}

    def headline(rows: pd.DataFrame) -> dict:
        scores = metrics.classification_metrics(rows["emotion_true"].map(index), rows["emotion_pred"].map(index),
                                                classes)
        return {k: scores[k] for k in (*metrics.HEADLINE, "n")}

    models = [m for m in report_lib.ordered(set(table["model"]))
              if table.loc[table["model"] == m, "fold"].nunique() == len(frames)
              and table.loc[table["model"] == m, "emotion_pred"].notna().all()]
    majority_rows = pd.concat(majority, ignore_index=True)
    return {"n": int(len(majority_rows)), "majority_baseline": headline(majority_rows),
            "models": {m: headline(table[table["model"] == m]) for m in models}}


# === Figures ===

def _model_plots(predictions: pd.DataFrame, scores: dict, out_dir: pathlib.Path) -> dict:
    classes = scores["classes"]
    index = {name: i for i, name in enumerate(classes)}
    confusion, recalls = {}, {}
    for model in report_lib.ordered(scores["models"]):
        emotion = scores["models"][model].get("emotion")
        if emotion is None:
            continue
        rows = predictions[predictions["model"] == model]
        path = plots.plot_confusion(rows["emotion_true"].map(index), rows["emotion_pred"].map(index),
                                    classes, out_dir / f"confusion_{model}.png", model)
        confusion[model] = path.name
        recalls[model] = [emotion["per_class"][c]["recall"] for c in classes]
    result = {"confusion": confusion}
    if recalls:
        result["recall"] = plots.plot_recall_bars(recalls, classes, out_dir / "recall_per_class.png").name
    return result


def _curve_plots(workdir: pathlib.Path, out_dir: pathlib.Path, notes: list) -> dict:
    curves = {}
    for stage, folder in stage_folders(workdir, run_lib.HISTORY).items():
        try:
            history = sweeps_lib.read_history(folder / run_lib.HISTORY)
            curves[stage] = plots.plot_history(history, out_dir / f"curves_{stage}.png", stage).name
        except ValueError as err:
            notes.append(f"no training curves for {stage}: {err}")
    return curves


def _sweep_section(workdir: pathlib.Path, out_dir: pathlib.Path) -> dict:
    section = {}
    for field, rows in sweeps_lib.find_sweeps(workdir).items():
        path = plots.plot_sweep(rows, out_dir / f"sweep_{field}.png", f"sweep of {field}")
        section[field] = {"rows": rows.to_dict(orient="records"), "plot": path.name}
    return section
