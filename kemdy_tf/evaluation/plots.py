"""PNG figures for a report: confusion matrices, per-class recall, training curves, sweeps.

Figures are drawn on `matplotlib.figure.Figure` objects (the Agg canvas) and never
through pyplot, so no display is needed and no global figure state leaks between calls.
Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import pathlib
import typing

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

# CSVLogger columns that are bookkeeping, not metrics.
_NOT_METRICS = {"epoch", "lr", "learning_rate"}


def plot_confusion(y_true: typing.Sequence[int], y_pred: typing.Sequence[int],
                   classes: typing.Sequence[str], path: str | pathlib.Path, title: str) -> pathlib.Path:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    labels = list(range(len(classes)))
    for ax, normalize, fmt, name in ((left, None, "d", "counts"), (right, "true", ".2f", "row-normalised")):
        ConfusionMatrixDisplay.from_predictions(
            y_true, y_pred, labels=labels, display_labels=list(classes), normalize=normalize,
            values_format=fmt, ax=ax, colorbar=False, xticks_rotation=45, cmap="Blues")
        ax.set_title(f"{title}: {name}")
    return _save(figure, path)


def plot_recall_bars(recalls: typing.Mapping[str, typing.Sequence[float]], classes: typing.Sequence[str],
                     path: str | pathlib.Path, title: str = "Per-class recall") -> pathlib.Path:
    """Grouped bars of per-class recall, one group per class and one bar per model.

    The dashed line is chance (1 / number of classes), the recall of a uniform guess.
    """
    if not recalls:
        raise ValueError("plot_recall_bars needs at least one model's recalls")
    figure = Figure(figsize=(max(6, 1.6 * len(classes) + 2), 4.5), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(classes))
    width = 0.8 / len(recalls)
    for i, (model, values) in enumerate(recalls.items()):
        if len(values) != len(classes):
            raise ValueError(f"{model}: {len(values)} recalls for {len(classes)} classes")
        ax.bar(x + (i - (len(recalls) - 1) / 2) * width, values, width, label=model)
    ax.axhline(1 / len(classes), color="black", linestyle="--", linewidth=1,
               label=f"chance (1/{len(classes)})")
    ax.set_xticks(x, list(classes))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(fontsize="small", ncols=2)
    return _save(figure, path)


def metric_pairs(columns: typing.Iterable[str]) -> list[tuple[str, str | None]]:
    """CSVLogger columns grouped as (train metric, its `val_` twin or None), loss first.

    Example: `["epoch", "loss", "f1", "val_loss", "val_f1"]` -> `[("loss", "val_loss"), ("f1", "val_f1")]`.
    """
    columns = list(columns)
    train = [c for c in columns if not c.startswith("val_") and c not in _NOT_METRICS]
    train.sort(key=lambda c: c != "loss")  # stable: loss first, the rest as logged
    pairs = [(c, f"val_{c}" if f"val_{c}" in columns else None) for c in train]
    # A validation column without a training twin still deserves a panel.
    orphans = [c for c in columns if c.startswith("val_") and c[4:] not in train]
    return pairs + [(c, None) for c in orphans]


def plot_history(history: pd.DataFrame, path: str | pathlib.Path, title: str) -> pathlib.Path:
    """Training curves from a CSVLogger table: one panel per metric, train and validation.

    Raises:
        ValueError: when the history has no rows or no metric column.
    """
    pairs = metric_pairs(history.columns)
    if history.empty or not pairs:
        raise ValueError(f"{title}: history has no rows or no metric columns ({list(history.columns)})")
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    n_cols = min(3, len(pairs))
    n_rows = -(-len(pairs) // n_cols)
    figure = Figure(figsize=(4.2 * n_cols, 3.3 * n_rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols)).reshape(-1)
    for ax, (train, val) in zip(axes, pairs):
        ax.plot(epochs, history[train], marker="o", markersize=3, label=train)
        if val is not None:
            ax.plot(epochs, history[val], marker="o", markersize=3, label=val)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(train)
        ax.legend(fontsize="small")
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    figure.suptitle(title)
    return _save(figure, path)


def plot_sweep(rows: pd.DataFrame, path: str | pathlib.Path, title: str) -> pathlib.Path:
    """Train and validation metric against the swept value, one panel per stage.

    Args:
        rows: columns `value`, `stage`, `metric`, `train`, `val` (see `sweeps.collect_sweep`);
            `value` numeric values are plotted on a numeric axis, others as categories.
    """
    if rows.empty:
        raise ValueError(f"{title}: no sweep rows to plot")
    stages = list(dict.fromkeys(rows["stage"]))
    figure = Figure(figsize=(4.5 * len(stages), 3.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(stages))).reshape(-1)
    for ax, stage in zip(axes, stages):
        part = rows[rows["stage"] == stage]
        x = pd.to_numeric(part["value"], errors="coerce")
        x = x if x.notna().all() else part["value"].astype(str)
        for column in ("train", "val"):
            ax.plot(x, part[column], marker="o", label=column)
        ax.set_xlabel("value")
        ax.set_ylabel(part["metric"].iloc[0])
        ax.set_title(stage)
        ax.legend(fontsize="small")
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure: Figure, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
