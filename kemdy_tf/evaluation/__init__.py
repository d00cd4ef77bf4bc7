"""Evaluation: sklearn metrics, plots and reports of a trained run.

    metrics     = kemdy_tf.scoring (sklearn metrics, CCC, baselines; shared with training)
    predict.py  a run's models over one split -> one predictions table
    sweeps.py   training histories and hyperparameter sweeps
    plots.py    confusion matrices, per-class recall, training curves, sweeps (PNG)
    report.py   report.json, report.md, predictions.csv
    runs.py     a whole workdir: models, curves, sweeps, folds (what evaluate.py calls)
    transcribed.py  the deployment row: audio+text models fed speech-recognition transcripts, their CER
    served.py   the export against the evaluation: does the SavedModel answer what was scored?

Definitions of every figure: docs/metrics.md.
"""

from kemdy_tf import scoring as metrics  # the old name of kemdy_tf.scoring
from kemdy_tf.scoring import (
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
    "metrics",
    "predict_split",
    "regression_metrics",
    "render_markdown",
    "score_predictions",
    "write_report",
]
