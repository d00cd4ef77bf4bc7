"""Do the E4 signals carry emotion information? DTW clustering and label association.

The seed team cut per-utterance EDA / IBI / TEMP series, clustered them with DTW,
chose k with elbow and silhouette plots, and then left bio data out of the model.
This module repeats that study so the decision rests on numbers:

1. per-utterance EDA and TEMP series are resampled to a common length
   (`TimeSeriesResampler`) and z-normalised (`TimeSeriesScalerMeanVariance`), so
   clusters are about shape, not a person's skin-conductance level;
2. `TimeSeriesKMeans(metric="dtw")` is fitted for k = 2..max_k on at most
   `max_series` series (a seeded subsample: DTW k-means is quadratic in time);
   k is the one with the best DTW silhouette, the inertia (elbow) curve is reported
   beside it;
3. every utterance with bio data is then assigned to its nearest centroid, and the
   clusters are cross-tabulated against the primary emotion: chi-square test,
   mutual information, adjusted mutual information, and a label-permutation
   baseline for MI (the MI you get from clusters that know nothing about emotion);
4. the level information z-normalisation removes is tested separately: per-utterance
   means (EDA, TEMP, heart rate), z-scored within each speaker, against emotion with a
   Kruskal-Wallis test.

Example:
    >>> series = segment_series(table, "eda")
    >>> ids, X = series_matrix(series, length=32)
    >>> study = cluster_study(ids, X, emotions_by_id, max_k=6)
    >>> study["association"]["mutual_info_permutation_p"]
"""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import scipy.stats
from sklearn import metrics
from tslearn.clustering import TimeSeriesKMeans, silhouette_score
from tslearn.metrics import cdist_dtw
from tslearn.preprocessing import TimeSeriesResampler, TimeSeriesScalerMeanVariance
from tslearn.utils import to_time_series_dataset

ProgressFn = typing.Callable[[str, int, int], None]

SERIES_LENGTH = 32  # samples after resampling (8 s of 4 Hz data; most utterances are 3-8 s)
MAX_SERIES = 600  # series the k-means and silhouette are fitted on
N_PERMUTATIONS = 200
_CHUNK = 1000  # series resampled at a time: bounds the NaN-padded array's size


def series_matrix(series: dict[str, np.ndarray], length: int = SERIES_LENGTH,
                  ids: typing.Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Resample and z-normalise per-utterance series into one `[n, length, 1]` array.

    Args:
        series: {segment_id: 1-D values} (see `kemdy_tf.data.bio.segment_series`).
        length: samples per series after linear resampling.
        ids: which ids, in which order (default: every id of `series`, sorted).
            Ids without a non-empty series are left out.

    Returns:
        (ids kept, array). A constant series (or a single sample) z-normalises to zeros.
    """
    wanted = sorted(series) if ids is None else list(ids)
    kept = [seg for seg in wanted if seg in series and np.isfinite(series[seg]).sum() > 0]
    out = np.zeros((len(kept), length, 1))
    resampler = TimeSeriesResampler(sz=length)
    scaler = TimeSeriesScalerMeanVariance()
    for start in range(0, len(kept), _CHUNK):
        chunk = [np.asarray(series[seg], dtype=float) for seg in kept[start:start + _CHUNK]]
        chunk = [values[np.isfinite(values)] for values in chunk]
        out[start:start + len(chunk)] = scaler.fit_transform(
            resampler.fit_transform(to_time_series_dataset(chunk)))
    return kept, np.nan_to_num(out)


def subsample(n: int, max_series: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `max_series` of `n` items, drawn without replacement."""
    if n <= max_series:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_series, replace=False))


def choose_k(ks: typing.Sequence[int], data: np.ndarray, seed: int = 0, max_iter: int = 20,
             progress: ProgressFn | None = None) -> dict:
    """Fit DTW k-means for each k and score it (inertia for the elbow, DTW silhouette).

    The DTW distance matrix is computed once and reused for every k's silhouette.

    Returns:
        {"ks", "inertia", "silhouette", "best_k" (highest silhouette), "models": {k: model}}.
    """
    if len(data) < 3:
        raise ValueError(f"DTW clustering needs at least 3 series, got {len(data)}")
    ks = [k for k in ks if 2 <= k < len(data)]
    if not ks:
        raise ValueError(f"no k in 2..{len(data) - 1} for {len(data)} series")
    distances = cdist_dtw(data)
    inertia, silhouette, models = [], [], {}
    for done, k in enumerate(ks, start=1):
        model = TimeSeriesKMeans(n_clusters=k, metric="dtw", n_init=1, max_iter=max_iter,
                                 random_state=seed).fit(data)
        if not hasattr(model, "cluster_centers_"):
            # tslearn gives up after 10 tries that each left a cluster empty
            # (happens when many series are identical, e.g. flat ones).
            inertia.append(float("nan"))
            silhouette.append(float("nan"))
        else:
            labels = model.labels_
            models[k] = model
            inertia.append(float(model.inertia_))
            # Degenerate fits (one cluster left) have no silhouette.
            silhouette.append(float(silhouette_score(distances, labels, metric="precomputed"))
                              if len(set(labels)) > 1 else float("nan"))
        if progress is not None:
            progress("DTW k-means", done, len(ks))
    if not models:
        raise ValueError(f"DTW k-means failed for every k in {ks} (clusters kept emptying)")
    scores = np.array(silhouette)
    best = ks[int(np.nanargmax(scores))] if np.isfinite(scores).any() else min(models)
    return {"ks": list(ks), "inertia": inertia, "silhouette": silhouette, "best_k": best,
            "models": models}


def _mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    return float(metrics.mutual_info_score(a, b))


def emotion_association(clusters: typing.Sequence, emotion: typing.Sequence[str],
                        n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> dict:
    """How much cluster membership says about the emotion label.

    Args:
        clusters: cluster id per utterance.
        emotion: primary emotion per utterance (same order).
        n_permutations: label shuffles for the MI baseline.
        seed: seed of the shuffles.

    Returns:
        dict with `n`, the contingency `table` ({cluster: {emotion: n}}), `chi2`,
        `chi2_dof`, `chi2_p`, `cramers_v`, `min_expected` (chi-square is rough when
        expected counts fall below 5), `mutual_info` (nats), `adjusted_mutual_info`,
        `mutual_info_permutation_mean`, `mutual_info_permutation_p95` and
        `mutual_info_permutation_p` ((1 + #shuffles with MI >= observed) / (1 + shuffles)).
    """
    clusters = np.asarray(clusters)
    emotion = np.asarray(emotion, dtype=str)
    if len(clusters) != len(emotion):
        raise ValueError(f"{len(clusters)} cluster ids but {len(emotion)} emotions")
    crosstab = pd.crosstab(pd.Series(clusters, name="cluster"), pd.Series(emotion, name="emotion"))
    out: dict = {"n": int(len(clusters)),
                 "table": {str(c): {str(e): int(v) for e, v in row.items()} for c, row in crosstab.iterrows()}}
    if crosstab.shape[0] > 1 and crosstab.shape[1] > 1:
        chi2, p, dof, expected = scipy.stats.chi2_contingency(crosstab.to_numpy())
        out.update(chi2=float(chi2), chi2_dof=int(dof), chi2_p=float(p),
                   cramers_v=float(np.sqrt(chi2 / (len(clusters) * (min(crosstab.shape) - 1)))),
                   min_expected=float(expected.min()))
    else:
        out.update(chi2=float("nan"), chi2_dof=0, chi2_p=float("nan"), cramers_v=float("nan"),
                   min_expected=float("nan"))
    observed = _mutual_info(clusters, emotion)
    rng = np.random.default_rng(seed)
    shuffled = np.array([_mutual_info(clusters, rng.permutation(emotion)) for _ in range(n_permutations)])
    out.update(mutual_info=observed,
               adjusted_mutual_info=float(metrics.adjusted_mutual_info_score(emotion, clusters)),
               n_permutations=int(n_permutations),
               mutual_info_permutation_mean=float(shuffled.mean()) if n_permutations else float("nan"),
               mutual_info_permutation_p95=float(np.percentile(shuffled, 95)) if n_permutations else float("nan"),
               mutual_info_permutation_p=float((1 + (shuffled >= observed - 1e-12).sum()) / (1 + n_permutations)))
    return out


def cluster_study(ids: typing.Sequence[str], data: np.ndarray, emotion_by_id: typing.Mapping[str, str],
                  max_k: int = 6, max_series: int = MAX_SERIES, seed: int = 0,
                  n_permutations: int = N_PERMUTATIONS, progress: ProgressFn | None = None) -> dict:
    """Choose k on a subsample, assign every series to a cluster, test against emotion.

    Args:
        ids: segment id of each row of `data`.
        data: `[n, length, 1]` from `series_matrix`.
        emotion_by_id: primary emotion per segment id; ids mapped to "" or missing
            are clustered but left out of the association.
        max_k: largest k tried (k runs from 2).
        max_series: series the k-means and silhouette are fitted on (seeded subsample).

    Returns:
        {"n_series", "n_fitted", "selection" (choose_k without the models), "k",
         "labels": {segment_id: cluster}, "centroids": [k, length], "sizes",
         "association" (emotion_association)}.
    """
    ids = list(ids)
    fit_rows = subsample(len(ids), max_series, seed)
    selection = choose_k(range(2, max_k + 1), data[fit_rows], seed=seed, progress=progress)
    model = selection.pop("models")[selection["best_k"]]
    # Every series gets a cluster, not only the fitted subsample.
    labels = model.predict(data) if len(fit_rows) < len(ids) else model.labels_
    labels = np.asarray(labels, dtype=int)
    labelled = [i for i, seg in enumerate(ids) if emotion_by_id.get(seg, "")]
    association = emotion_association(labels[labelled], [emotion_by_id[ids[i]] for i in labelled],
                                      n_permutations=n_permutations, seed=seed)
    return {"n_series": len(ids), "n_fitted": int(len(fit_rows)), "selection": selection,
            "k": int(selection["best_k"]), "labels": dict(zip(ids, labels.tolist())),
            "centroids": model.cluster_centers_[..., 0].tolist(),
            "sizes": np.bincount(labels, minlength=selection["best_k"]).tolist(),
            "association": association}


def feature_level_tests(features: pd.DataFrame, table: pd.DataFrame,
                        columns: typing.Sequence[str] = ("eda_mean", "temp_mean", "hr_mean", "eda_slope")) -> dict:
    """Kruskal-Wallis test of per-speaker z-scored bio features across emotions.

    Z-normalised DTW clustering ignores signal levels, and raw levels differ more
    between people than between emotions, so each feature is z-scored within its
    speaker before the emotions are compared.

    Args:
        features: `kemdy_tf.data.bio.bio_features(table)` (same row order as `table`).
        table: the utterance table (`speaker`, `emotion`).

    Returns:
        {feature: {"n", "H", "p", "by_emotion": {emotion: {"n", "mean_z"}}}}; features
        with fewer than two emotions of data have H and p NaN.
    """
    frame = pd.DataFrame({"speaker": table["speaker"].astype(str).to_numpy(),
                          "emotion": table["emotion"].fillna("").astype(str).to_numpy()})
    out: dict = {}
    for column in columns:
        values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype=float)
        frame["value"] = values
        grouped = frame.groupby("speaker")["value"]
        std = grouped.transform("std").replace(0, np.nan)
        frame["z"] = (frame["value"] - grouped.transform("mean")) / std
        usable = frame[np.isfinite(frame["z"]) & (frame["emotion"] != "")]
        groups = {e: g["z"].to_numpy() for e, g in usable.groupby("emotion") if len(g) > 0}
        result = {"n": int(len(usable)),
                  "by_emotion": {e: {"n": int(len(v)), "mean_z": float(v.mean())} for e, v in groups.items()}}
        if len(groups) > 1 and len(usable) > len(groups):
            try:
                h, p = scipy.stats.kruskal(*groups.values())
            except ValueError:  # all values identical
                h, p = float("nan"), float("nan")
            result.update(H=float(h), p=float(p))
        else:
            result.update(H=float("nan"), p=float("nan"))
        out[column] = result
    return out


def session_signals(table: pd.DataFrame, speaker: str,
                    problems: list[dict] | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Whole E4 recordings (EDA, TEMP) of one speaker, and where their utterances sit.

    Every script file of the speaker is read in full (also the rows between
    utterances); time is in minutes since the speaker's first sample.

    Returns:
        ({"eda": frame, "temp": frame} with `minutes`, `value`, `script`, `segment_id`;
        only kinds with data), utterances with `segment_id`, `emotion`, `start`, `end`
        (minutes, from the first to the last sample carrying the id; EDA rows, TEMP
        where EDA has none).
    """
    from kemdy_tf.data.bio import read_e4  # data layer; imported here to keep this module light

    rows = table[table["speaker"].astype(str) == speaker]
    if rows.empty:
        known = sorted(table["speaker"].astype(str).unique())
        raise ValueError(f"speaker {speaker!r} is not in the table (speakers: {known[:10]}"
                         f"{' ...' if len(known) > 10 else ''})")
    frames: dict[str, pd.DataFrame] = {}
    for kind in ("eda", "temp"):
        parts = []
        for path, script_rows in rows.groupby(rows[f"{kind}_path"].fillna("").astype(str), sort=True):
            if not path:
                continue
            frame = read_e4(path, kind, problems)
            frame["script"] = str(script_rows["script"].iloc[0])
            parts.append(frame)
        if parts:
            frames[kind] = pd.concat(parts, ignore_index=True)
    if not frames:
        return {}, pd.DataFrame(columns=["segment_id", "emotion", "start", "end"])
    t0 = min(frame["time"].min() for frame in frames.values())
    for frame in frames.values():
        frame["minutes"] = (frame["time"] - t0) / 60.0
    emotion_by_id = dict(zip(rows["segment_id"].astype(str), rows["emotion"].fillna("").astype(str)))
    spans = []
    for kind in frames:
        inside = frames[kind][frames[kind]["segment_id"].isin(set(emotion_by_id))]
        found = inside.groupby("segment_id")["minutes"].agg(["min", "max"])
        spans.append(found)
    spans_frame = pd.concat(spans)
    spans_frame = spans_frame[~spans_frame.index.duplicated(keep="first")]  # EDA's span wins
    # One 4 Hz sample still gets a visible quarter-second band.
    utterances = pd.DataFrame({"segment_id": spans_frame.index.astype(str),
                               "emotion": [emotion_by_id[s] or "(none)" for s in spans_frame.index],
                               "start": spans_frame["min"].to_numpy(),
                               "end": np.maximum(spans_frame["max"].to_numpy(),
                                                 spans_frame["min"].to_numpy() + 0.25 / 60)})
    return frames, utterances.sort_values("start", ignore_index=True)
