"""Evaluation: sklearn metrics, plots and reports of a trained run.

    metrics.py  classification / regression metrics, CCC, majority and mean baselines
    predict.py  a run's models over one split -> one predictions table
    sweeps.py   training histories and hyperparameter sweeps
    plots.py    confusion matrices, per-class recall, training curves, sweeps (PNG)
    report.py   report.json, report.md, predictions.csv
    runs.py     a whole workdir: models, curves, sweeps, folds (what evaluate.py calls)

Definitions of every figure: docs/metrics.md.
"""

from kemdy_tf.evaluation.metrics import (
    classification_metrics,
    concordance_correlation,
    majority_baseline,
    majority_class,
    mean_baseline,
    regression_metrics,
    score_predictions,
)
from kemdy_tf.evaluation.predict import predict_split
from kemdy_tf.evaluation.report import render_markdown, write_report
from kemdy_tf.evaluation.runs import EvaluationError, evaluate_workdir

__all__ = [
    "EvaluationError",
    "classification_metrics",
    "concordance_correlation",
    "evaluate_workdir",
    "majority_baseline",
    "majority_class",
    "mean_baseline",
    "predict_split",
    "regression_metrics",
    "render_markdown",
    "score_predictions",
    "write_report",
]
