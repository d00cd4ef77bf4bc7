"""The report's figures (matplotlib, Agg backend, PNG).

Plot text is ASCII only (emotion names, tags, ids): no CJK font is guaranteed on the
machines this runs on, and Korean without one renders as empty boxes. Korean words
go in the markdown report instead (`cjk_font()` says whether a font exists).
Each function draws one figure, saves it to `path` and returns `path`.
"""

from __future__ import annotations

import typing
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from kemdy_tf.config import ALL_EMOTIONS  # noqa: E402

_PALETTE = plt.get_cmap("tab10").colors
EMOTION_COLORS = {name: _PALETTE[i] for i, name in enumerate(ALL_EMOTIONS)}
DPI = 110


def color(emotion: str):
    """A fixed colour per emotion, so every figure agrees; grey for anything else."""
    return EMOTION_COLORS.get(emotion, (0.6, 0.6, 0.6))


def cjk_font() -> str | None:
    """Name of an installed font that can draw Korean (CJK, Nanum, Noto CJK), or None."""
    for font in font_manager.fontManager.ttflist:
        name = font.name.lower()
        if "cjk" in name or "nanum" in name or ("noto" in name and ("kr" in name or "korean" in name)):
            return font.name
    return None


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def emotion_bars(counts: dict[str, int], path: str | Path, title: str = "Primary emotion") -> Path:
    """Bar chart of utterances per emotion, with the count and share on each bar."""
    names, values = list(counts), np.array(list(counts.values()))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(names, values, color=[color(n) for n in names])
    total = max(values.sum(), 1)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value}\n{100 * value / total:.1f}%", (bar.get_x() + bar.get_width() / 2, value),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("utterances")
    ax.set_title(f"{title} (n={values.sum()})")
    ax.margins(y=0.25)
    return _save(fig, path)


def emotion_shares(crosstab: pd.DataFrame, path: str | Path, title: str, horizontal: bool = False) -> Path:
    """Stacked bars of emotion shares per group (rows of `crosstab`), group sizes in labels."""
    shares = crosstab.div(crosstab.sum(axis=1).replace(0, 1), axis=0)
    labels = [f"{g} ({n})" for g, n in crosstab.sum(axis=1).items()]
    height = max(3.0, 0.22 * len(shares) + 1.5)
    fig, ax = plt.subplots(figsize=(8, height) if horizontal else (max(6, 0.35 * len(shares) + 3), 4))
    bottom = np.zeros(len(shares))
    for name in shares.columns:
        values = shares[name].to_numpy()
        if horizontal:
            ax.barh(labels, values, left=bottom, color=color(name), label=name)
        else:
            ax.bar(labels, values, bottom=bottom, color=color(name), label=name)
        bottom += values
    if horizontal:
        ax.invert_yaxis()
        ax.set_xlabel("share of utterances")
    else:
        ax.set_ylabel("share of utterances")
        ax.tick_params(axis="x", rotation=90)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return _save(fig, path)


def histograms(panels: typing.Sequence[tuple[str, np.ndarray, str]], path: str | Path, bins: int = 40) -> Path:
    """One histogram per `(title, values, x label)` panel, median marked."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, values, xlabel) in zip(axes[0], panels):
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            edges = bins
            if np.all(values == np.round(values)) and np.ptp(values) <= 200:
                edges = np.arange(values.min(), values.max() + 2) - 0.5  # counts: one bar per integer
            ax.hist(values, bins=edges, color="#4c72b0")
            ax.axvline(np.median(values), color="k", linestyle="--", linewidth=1,
                       label=f"median {np.median(values):.1f}")
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("utterances")
    return _save(fig, path)


def valence_arousal(table: pd.DataFrame, emotion_names: typing.Sequence[str], bins: np.ndarray,
                    path: str | Path) -> Path:
    """Valence and arousal histograms, one row per emotion (counts; 1..5 axis)."""
    labels = table["emotion"].fillna("").astype(str).replace("", "(none)")
    fig, axes = plt.subplots(len(emotion_names), 2, figsize=(8, 1.6 * len(emotion_names) + 0.8),
                             squeeze=False, sharex=True)
    for row, name in enumerate(emotion_names):
        rows = table[labels == name]
        for col, column in enumerate(("valence", "arousal")):
            ax = axes[row, col]
            values = pd.to_numeric(rows[column], errors="coerce").dropna().to_numpy()
            ax.hist(values, bins=bins, color=color(name))
            if values.size:
                ax.axvline(values.mean(), color="k", linewidth=1)
            ax.set_ylabel(f"{name}\n(n={len(rows)})", fontsize=8)
            if row == 0:
                ax.set_title(f"{column} (line: mean)")
    for ax in axes[-1]:
        ax.set_xlabel("1 = negative / relaxed ... 5 = positive / aroused")
    return _save(fig, path)


def ranked_bars(names: typing.Sequence[str], values: typing.Sequence[int], path: str | Path,
                title: str, xlabel: str) -> Path:
    """Horizontal bars, largest first (noise tags, tie combinations, skip reasons)."""
    fig, ax = plt.subplots(figsize=(7, max(2.2, 0.32 * len(names) + 1.2)))
    ax.barh(list(names), list(values), color="#4c72b0")
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.annotate(str(value), (value, i), va="center", fontsize=8, xytext=(2, 0), textcoords="offset points")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15)
    return _save(fig, path)


def bio_session(signals: dict[str, pd.DataFrame], utterances: pd.DataFrame, path: str | Path, title: str) -> Path:
    """EDA and TEMP of one speaker's session over time, utterances shaded by emotion.

    Args:
        signals: {"eda": frame, "temp": frame}, each with `minutes` and `value` (and
            `script`, drawn as separate lines so gaps between scripts show).
        utterances: `start`, `end` (minutes) and `emotion` per utterance.
    """
    kinds = [k for k in ("eda", "temp") if k in signals]
    units = {"eda": "EDA (uS)", "temp": "TEMP (C)"}
    fig, axes = plt.subplots(len(kinds), 1, figsize=(11, 2.6 * len(kinds) + 0.6), sharex=True, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        frame = signals[kind]
        for _, part in frame.groupby("script", sort=True):
            ax.plot(part["minutes"], part["value"], color="k", linewidth=0.7)
        for start, end, name in zip(utterances["start"], utterances["end"], utterances["emotion"]):
            ax.axvspan(start, end, color=color(name), alpha=0.35, linewidth=0)
        ax.set_ylabel(units[kind])
    handles = [plt.Rectangle((0, 0), 1, 1, color=color(n), alpha=0.5)
               for n in dict.fromkeys(utterances["emotion"])]
    if handles:
        axes[0, 0].legend(handles, list(dict.fromkeys(utterances["emotion"])), fontsize=8,
                          loc="center left", bbox_to_anchor=(1.0, 0.5), title="utterance")
    axes[-1, 0].set_xlabel("minutes since the first sample")
    axes[0, 0].set_title(title)
    return _save(fig, path)


def k_selection(selection: dict, path: str | Path, title: str) -> Path:
    """Elbow (inertia) and DTW silhouette against k, the chosen k marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(selection["ks"], selection["inertia"], marker="o")
    left.set_xlabel("k")
    left.set_ylabel("inertia (DTW)")
    left.set_title("elbow")
    right.plot(selection["ks"], selection["silhouette"], marker="o", color="#dd8452")
    right.set_xlabel("k")
    right.set_ylabel("silhouette (DTW)")
    right.set_title("silhouette")
    for ax in (left, right):
        ax.axvline(selection["best_k"], color="k", linestyle="--", linewidth=1)
        ax.set_xticks(selection["ks"])
    fig.suptitle(title)
    return _save(fig, path)


def cluster_profiles(centroids: np.ndarray, crosstab: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Cluster centroids (z-normalised shape) beside the cluster x emotion row shares."""
    centroids = np.asarray(centroids)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for k, centroid in enumerate(centroids):
        left.plot(centroid, label=f"cluster {k}")
    left.set_xlabel("resampled time step")
    left.set_ylabel("z-score")
    left.set_title("centroids")
    left.legend(fontsize=8)
    shares = crosstab.div(crosstab.sum(axis=1).replace(0, 1), axis=0)
    image = right.imshow(shares.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    right.set_xticks(range(shares.shape[1]), list(shares.columns), rotation=45, ha="right")
    right.set_yticks(range(shares.shape[0]), [f"cluster {c} ({n})" for c, n in crosstab.sum(axis=1).items()])
    for (i, j), value in np.ndenumerate(crosstab.to_numpy()):
        right.text(j, i, str(value), ha="center", va="center", fontsize=7,
                   color="w" if shares.to_numpy()[i, j] < 0.5 else "k")
    right.set_title("emotion share per cluster (counts)")
    fig.colorbar(image, ax=right, fraction=0.04)
    fig.suptitle(title)
    return _save(fig, path)
