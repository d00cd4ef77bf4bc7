"""Training histories, and hyperparameter sweeps read from them.

`train.py --sweep section.field=v1,v2` writes one workdir per value under
`WORKDIR/sweeps/<field>/<value>/`. A sweep is judged on the training and validation
splits only (choosing a value on the test split would leak it), so this module reads
each stage's `history.csv` (Keras CSVLogger) and takes the epoch `ModelCheckpoint`
kept: the lowest `val_loss`, or the highest `val_ua` / `val_f1` for a classifier trained
with `train.monitor=val_ua` / `val_f1` (read from the stage's `config.json`). A stage without a history
falls back to its `summary.json` (validation figures only).
"""

from __future__ import annotations

import json
import math
import pathlib

import pandas as pd

from kemdy_tf import run as run_lib
from kemdy_tf.config import MONITOR_MODES

# The figure a sweep is read by, in order of preference: RMSE for the encoders
# (regression), macro-F1 for the classifiers, accuracy when F1 was not logged.
SWEEP_METRICS = ("rmse", "f1", "accuracy")


def read_history(path: str | pathlib.Path) -> pd.DataFrame:
    """A CSVLogger history; raises ValueError naming the file when it is empty or unreadable."""
    path = pathlib.Path(path)
    try:
        history = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV history ({err})") from None
    if history.empty:
        raise ValueError(f"{path}: the history has no epochs")
    return history


def best_epoch(history: pd.DataFrame, monitor: str = "val_loss", mode: str = "min") -> pd.Series:
    """The row of the epoch with the lowest (mode "min") or highest ("max") `monitor`; the
    first such row on ties, as the checkpoint keeps it; the last row when it was not logged."""
    if monitor in history and history[monitor].notna().any():
        column = history[monitor]
        return history.loc[column.idxmax() if mode == "max" else column.idxmin()]
    return history.iloc[-1]


def stage_monitor(stage_dir: pathlib.Path, history: pd.DataFrame) -> tuple[str, str]:
    """(column, mode) the stage's checkpoint followed: the highest `val_ua` (or `val_f1`)
    when its config.json says train.monitor=val_ua (val_f1) and the history logged it (a
    classifier), else the lowest `val_loss`."""
    try:
        config = json.loads((stage_dir / run_lib.STAGE_CONFIG).read_text())["config"]
        monitor = config["train"].get("monitor", "val_loss")
    except (OSError, ValueError, KeyError, TypeError):
        monitor = "val_loss"
    if monitor not in MONITOR_MODES or monitor not in history:  # a rating stage logs no UA
        monitor = "val_loss"
    return monitor, MONITOR_MODES[monitor]


def sweep_metric(columns) -> str | None:
    """The first of `SWEEP_METRICS` logged for both training and validation."""
    columns = set(columns)
    for name in SWEEP_METRICS:
        if name in columns and f"val_{name}" in columns:
            return name
    return None


def stage_result(stage_dir: str | pathlib.Path) -> dict | None:
    """`{"stage", "metric", "train", "val", "epoch", "epochs", "source"}` of one trained stage.

    None when the folder holds neither a history with a known metric nor a summary.
    """
    stage_dir = pathlib.Path(stage_dir)
    history_csv = stage_dir / run_lib.HISTORY
    if history_csv.exists():
        history = read_history(history_csv)
        metric = sweep_metric(history.columns)
        if metric is not None:
            monitor, mode = stage_monitor(stage_dir, history)
            row = best_epoch(history, monitor, mode)
            epoch = int(row["epoch"]) + 1 if "epoch" in row else int(row.name) + 1
            which = "highest" if mode == "max" else "lowest"
            return {"stage": stage_dir.name, "metric": metric, "train": float(row[metric]),
                    "val": float(row[f"val_{metric}"]), "epoch": epoch, "epochs": int(len(history)),
                    "source": f"history.csv (epoch with the {which} {monitor})"}
    summary_json = stage_dir / run_lib.SUMMARY
    if summary_json.exists():
        summary = json.loads(summary_json.read_text())
        if "rmse" in summary:
            metric, val = "rmse", summary["rmse"]
        elif "macro_f1" in summary.get("model", {}):
            metric, val = "f1", summary["model"]["macro_f1"]
        else:
            return None
        return {"stage": stage_dir.name, "metric": metric, "train": math.nan, "val": float(val),
                "epoch": math.nan, "epochs": math.nan, "source": "summary.json (validation only)"}
    return None


def collect_sweep(field_dir: str | pathlib.Path) -> pd.DataFrame:
    """One row per (value, stage) of a sweep folder `sweeps/<field>/`, values in order.

    Columns: `field, value, stage, metric, train, val, epoch, epochs, source`. Values sort
    numerically when every value is a number, as text otherwise.
    """
    field_dir = pathlib.Path(field_dir)
    rows = []
    for value_dir in sorted(p for p in field_dir.iterdir() if p.is_dir()):
        for stage_dir in sorted(p for p in value_dir.iterdir() if p.is_dir()):
            result = stage_result(stage_dir)
            if result is not None:
                rows.append({"field": field_dir.name, "value": value_dir.name, **result})
    columns = ["field", "value", "stage", "metric", "train", "val", "epoch", "epochs", "source"]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = pd.to_numeric(frame["value"], errors="coerce")
    key = numeric if numeric.notna().all() else frame["value"]
    order = sorted(range(len(frame)), key=lambda i: (key.iloc[i], frame["stage"].iloc[i]))
    return frame.iloc[order].reset_index(drop=True)


def find_sweeps(workdir: str | pathlib.Path) -> dict[str, pd.DataFrame]:
    """`{field: collect_sweep(...)}` for every `WORKDIR/sweeps/<field>/` with results."""
    root = pathlib.Path(workdir) / run_lib.SWEEPS_DIR
    if not root.is_dir():
        return {}
    sweeps = {}
    for field_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        rows = collect_sweep(field_dir)
        if len(rows):
            sweeps[field_dir.name] = rows
    return sweeps
