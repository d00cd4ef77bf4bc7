"""The dataset analysis report: figures, `stats.json` and `report.md` in one folder.

`analyse(table, skips, out)` computes every number (`dataset_stats`, `bio_study`),
draws the figures (`plots`) and writes:

    OUT/report.md          what each figure shows, with the numbers behind it
    OUT/stats.json         every number in the report (and more), machine-readable
    OUT/*.png              the figures
    OUT/bio_features.csv   per-utterance E4 features (`kemdy_tf.data.bio.bio_features`)
    OUT/problems.csv       malformed E4 rows and unreadable wav headers (file, row, segment_id, reason)
    OUT/tokenizer.model    the SentencePiece model the token counts used (unless one was given)

Example:
    >>> table, skips = read_kemdy20("KEMDy20_v1_1")
    >>> stats = analyse(table, skips, "reports/analysis", max_k=6)
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from kemdy_tf.analysis import bio_study, dataset_stats, plots
from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import bio
from kemdy_tf.data.transcripts import NOISE_TAGS
from kemdy_tf.json_safe import to_json_safe

ProgressFn = typing.Callable[[str, int, int], None]
CLUSTER_KINDS = ("eda", "temp")  # IBI rows are irregular and often missing: summarised, not clustered
ALPHA = 0.05


def _quiet(label: str, done: int, total: int) -> None:
    pass


def train_count_tokenizer(texts: typing.Sequence[str], out_dir: Path, vocab_size: int) -> Path:
    """A SentencePiece model trained on `texts`, for counting pieces only.

    Uses the project's `kemdy_tf.models.tokenizer.train_sentencepiece`, so counts match
    what training sees.
    """
    from kemdy_tf.models.tokenizer import train_sentencepiece

    path = out_dir / "tokenizer.model"
    train_sentencepiece(list(texts), path, vocab_size)
    return path


def analyse(table: pd.DataFrame, skips: pd.DataFrame | None, out: str | Path, *,
            speaker: str | None = None, max_k: int = 6, max_series: int = bio_study.MAX_SERIES,
            series_length: int = bio_study.SERIES_LENGTH, tokenizer: str | Path | None = None,
            vocab_size: int = FeatureConfig.vocab_size, n_permutations: int = bio_study.N_PERMUTATIONS,
            seed: int = 0, source: str = "", progress: ProgressFn | None = None,
            note: typing.Callable[[str], None] | None = None) -> dict:
    """Compute the statistics, draw the figures, write report.md and stats.json.

    Args:
        table: the utterance table (docs/architecture.md).
        skips: the reader's skip report (or None).
        out: output folder (created).
        speaker: whose session the bio figure shows (default: the table's first
            speaker with E4 data).
        max_k: DTW k-means is tried for k = 2..max_k.
        max_series: series the k-means and silhouette are fitted on.
        series_length: samples per resampled series.
        tokenizer: a SentencePiece model to count tokens with (e.g. a run's
            `tokenizer.model`); default: train one on the transcripts.
        vocab_size: size of that trained model.
        n_permutations: label shuffles for the mutual-information baseline.
        seed: subsampling, k-means and permutation seed.
        source: where the table came from (written in the report).
        progress: progress(label, done, total) callback.
        note: called with a line when a stage starts.

    Returns:
        The statistics written to stats.json.
    """
    if len(table) == 0:
        raise ValueError("the utterance table is empty: nothing to analyse")
    if speaker is not None and speaker not in set(table["speaker"].astype(str)):
        known = sorted(table["speaker"].astype(str).unique())
        raise ValueError(f"speaker {speaker!r} is not in the table (speakers: {', '.join(known[:10])}"
                         f"{' ...' if len(known) > 10 else ''})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or _quiet
    note = note or (lambda message: None)
    problems: list[dict] = []
    figures: dict[str, str] = {}
    stats: dict = {"source": source, "utterances": int(len(table)),
                   "sessions": int(table["session"].nunique()), "speakers": int(table["speaker"].nunique())}

    note("transcripts and labels")
    words = dataset_stats.word_counts(table)
    if tokenizer is None:
        tokenizer_path = train_count_tokenizer(table["text"].astype(str).tolist(), out, vocab_size)
        tokenizer_note = f"trained on these {len(table)} transcripts (vocabulary {vocab_size})"
    else:
        tokenizer_path = Path(tokenizer)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"tokenizer model {tokenizer_path} does not exist")
        tokenizer_note = f"given: {tokenizer_path}"
    tokens = dataset_stats.token_counts(table["text"].astype(str), tokenizer_path)
    stats["words"] = dataset_stats.describe(words)
    stats["tokens"] = {**dataset_stats.describe(tokens), "tokenizer": str(tokenizer_path),
                       "over_max_tokens": int((tokens > FeatureConfig.max_tokens).sum()),
                       "max_tokens": FeatureConfig.max_tokens}
    note("wav headers")
    durations = dataset_stats.wav_durations(table, problems, progress)
    stats["duration_s"] = {**dataset_stats.describe(durations), "total_hours": float(np.nansum(durations) / 3600)}
    figures["lengths"] = _name(plots.histograms(
        [("transcript length", words.to_numpy(), "words (tags removed)"),
         ("SentencePiece tokens", tokens, "tokens"),
         ("utterance duration", durations.to_numpy(), "seconds (wav header)")], out / "lengths.png"))

    stats["emotions"] = dataset_stats.emotion_counts(table)
    by_session = dataset_stats.emotion_crosstab(table, "session")
    by_sex = dataset_stats.emotion_crosstab(table, "sex")
    stats["emotions_by_session"] = _crosstab_dict(by_session)
    stats["emotions_by_sex"] = _crosstab_dict(by_sex)
    figures["emotions"] = _name(plots.emotion_bars(stats["emotions"], out / "emotions.png"))
    figures["emotions_by_session"] = _name(plots.emotion_shares(
        by_session, out / "emotions_by_session.png", "Emotion share per session (utterances)"))
    figures["emotions_by_sex"] = _name(plots.emotion_shares(
        by_sex, out / "emotions_by_sex.png", "Emotion share per speaker sex (utterances)", horizontal=True))
    stats["ties"] = dataset_stats.tie_stats(table)
    if stats["ties"]["combinations"]:
        combos = stats["ties"]["combinations"]
        figures["ties"] = _name(plots.ranked_bars(list(combos), list(combos.values()), out / "ties.png",
                                                  "Tied labels (several emotions)", "utterances"))
    stats["valence_arousal"] = dataset_stats.valence_arousal_by_emotion(table)
    figures["valence_arousal"] = _name(plots.valence_arousal(
        table, list(stats["emotions"]), dataset_stats.VA_BINS, out / "valence_arousal.png"))
    tags = dataset_stats.noise_tag_counts(table["text_raw"].astype(str))
    stats["noise_tags"] = {tag: {"occurrences": int(row.occurrences), "transcripts": int(row.transcripts)}
                           for tag, row in tags.iterrows()}
    figures["noise_tags"] = _name(plots.ranked_bars(
        list(tags.index), tags["occurrences"].tolist(), out / "noise_tags.png",
        "Noise tags in raw transcripts", "occurrences"))
    stats["top_words"] = dataset_stats.top_words(table)
    stats["skips"] = dataset_stats.skip_summary(skips)

    note("bio signals")
    stats["bio"], bio_figures = _bio_section(table, out, problems, speaker=speaker, max_k=max_k,
                                             max_series=max_series, series_length=series_length,
                                             n_permutations=n_permutations, seed=seed, progress=progress,
                                             note=note)
    figures.update(bio_figures)
    # A file read twice (segments, then the session figure) reports its bad rows once.
    problems = list({(p["file"], p["row"], p["reason"]): p for p in problems}.values())
    stats["problems"] = {"count": len(problems),
                         "reasons": pd.Series([p["reason"] for p in problems], dtype=str)
                         .str.partition(":")[0].value_counts().to_dict() if problems else {}}
    pd.DataFrame(problems, columns=["file", "row", "segment_id", "reason"]).to_csv(out / "problems.csv", index=False)
    stats["figures"] = figures
    stats["cjk_font"] = plots.cjk_font()
    (out / "stats.json").write_text(json.dumps(to_json_safe(stats), indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    (out / "report.md").write_text(render_markdown(stats, tokenizer_note), encoding="utf-8")
    return stats


def _name(path: Path) -> str:
    return path.name


def _crosstab_dict(crosstab: pd.DataFrame) -> dict:
    return {str(group): {str(e): int(n) for e, n in row.items()} for group, row in crosstab.iterrows()}


def _bio_section(table: pd.DataFrame, out: Path, problems: list[dict], *, speaker, max_k, max_series,
                 series_length, n_permutations, seed, progress, note) -> tuple[dict, dict]:
    """Bio features, the session figure and the DTW cluster study."""
    section: dict = {"series_length": series_length, "max_series": max_series, "max_k": max_k, "seed": seed,
                     "n_permutations": n_permutations}
    figures: dict[str, str] = {}
    samples = {kind: bio.segment_samples(table, kind, problems, progress) for kind in bio.BIO_KINDS}
    features = bio.bio_features(table, problems, samples=samples)
    features.to_csv(out / "bio_features.csv", index=False)
    section["coverage"] = {"utterances": int(len(features)), "with_bio": int(features["bio_coverage"].sum()),
                           "with_ibi": int((features["ibi_n"] > 0).sum()),
                           "e4_files": {kind: int(table[f"{kind}_path"].fillna("").astype(str)
                                                  .replace("", np.nan).nunique()) for kind in bio.BIO_KINDS}}
    section["features"] = {column: dataset_stats.describe(features[column])
                           for column in features.columns if column.endswith(("_mean", "_std", "_slope"))}
    if section["coverage"]["with_bio"] == 0:
        section["skipped"] = "no utterance has EDA and TEMP samples"
        return section, figures

    with_e4 = table.loc[features["bio_coverage"].to_numpy(), "speaker"].astype(str)
    chosen = speaker if speaker is not None else with_e4.iloc[0]
    signals, utterances = bio_study.session_signals(table, chosen, problems)
    section["session_plot"] = {"speaker": chosen, "utterances_shaded": int(len(utterances))}
    if signals:
        session_name = str(table.loc[table["speaker"].astype(str) == chosen, "session"].iloc[0])
        figures["bio_session"] = _name(plots.bio_session(
            signals, utterances, out / "bio_session.png", f"E4 signals of {chosen} ({session_name})"))

    emotion_by_id = dict(zip(table["segment_id"].astype(str), table["emotion"].fillna("").astype(str)))
    section["clusters"] = {}
    for kind in CLUSTER_KINDS:
        series = {seg: values for seg, (_, values) in samples[kind].items()}
        ids, data = bio_study.series_matrix(series, series_length, ids=table["segment_id"].astype(str).tolist())
        if len(ids) < 3:
            section["clusters"][kind] = {"skipped": f"only {len(ids)} utterances with {kind.upper()} data"}
            continue
        note(f"DTW k-means on {kind.upper()} ({min(len(ids), max_series)} of {len(ids)} series)")
        study = bio_study.cluster_study(ids, data, emotion_by_id, max_k=max_k, max_series=max_series,
                                        seed=seed, n_permutations=n_permutations, progress=progress)
        labels = study.pop("labels")
        pd.DataFrame({"segment_id": list(labels), "cluster": list(labels.values())}).to_csv(
            out / f"clusters_{kind}.csv", index=False)
        section["clusters"][kind] = study
        figures[f"bio_k_{kind}"] = _name(plots.k_selection(
            study["selection"], out / f"bio_k_{kind}.png",
            f"{kind.upper()}: choosing k ({study['n_fitted']} series, length {series_length})"))
        crosstab = pd.DataFrame(study["association"]["table"]).T.fillna(0).astype(int)
        crosstab = crosstab.reindex(columns=dataset_stats.emotion_order(crosstab.columns), fill_value=0)
        figures[f"bio_clusters_{kind}"] = _name(plots.cluster_profiles(
            np.asarray(study["centroids"]), crosstab, out / f"bio_clusters_{kind}.png",
            f"{kind.upper()} clusters (k={study['k']}) against emotion"))
    section["feature_tests"] = bio_study.feature_level_tests(features, table)
    return section, figures


# === Markdown ===


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}"


def _table(header: typing.Sequence[str], rows: typing.Iterable[typing.Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _describe_row(name: str, d: dict) -> list:
    if not d.get("count"):
        return [name, 0] + ["n/a"] * 6
    return [name, d["count"], _fmt(d["mean"]), _fmt(d["min"]), _fmt(d["p25"]), _fmt(d["median"]),
            _fmt(d["p75"]), _fmt(d["max"])]


def verdict(association: dict, alpha: float = ALPHA) -> str:
    """One sentence: does cluster membership carry emotion information beyond chance?"""
    mi, p = association.get("mutual_info"), association.get("mutual_info_permutation_p")
    if mi is None or p is None or not math.isfinite(p):
        return "not testable (a single cluster or a single emotion)"
    base = association["mutual_info_permutation_p95"]
    shuffles = association.get("n_permutations", 0)
    if p < alpha:
        floor = f", the smallest {shuffles} shuffles can give" if p <= 1 / (shuffles + 1) + 1e-12 else ""
        return (f"yes, above chance: MI {mi:.4f} nats > permutation 95th percentile {base:.4f} "
                f"(p = {p:.3g}{floor}); AMI {association['adjusted_mutual_info']:.4f} "
                "(0 = chance, 1 = the clusters are the emotions)")
    return (f"no evidence: MI {mi:.4f} nats is within the permutation baseline "
            f"(95th percentile {base:.4f}, p = {p:.3g}); AMI {association['adjusted_mutual_info']:.4f}")


def render_markdown(stats: dict, tokenizer_note: str = "") -> str:
    """The report: one section per figure, each with the numbers behind it."""
    figures = stats["figures"]
    lines = ["# KEMDy20 dataset analysis", ""]
    if stats.get("source"):
        lines += [f"Source: {stats['source']}", ""]
    lines += [f"{stats['utterances']} utterances, {stats['sessions']} sessions, {stats['speakers']} speakers, "
              f"{_fmt(stats['duration_s'].get('total_hours'))} hours of audio. All numbers are in "
              "`stats.json`; problems met while reading are in `problems.csv` "
              f"({stats['problems']['count']}).", ""]
    if not stats.get("cjk_font"):
        lines += ["No CJK font is installed, so figures carry no Korean text (Korean appears only in "
                  "this markdown).", ""]

    lines += ["## Lengths", "", f"![lengths]({figures['lengths']})", ""]
    lines += _table(["", "n", "mean", "min", "p25", "median", "p75", "max"], [
        _describe_row("words (tags removed)", stats["words"]),
        _describe_row("SentencePiece tokens", stats["tokens"]),
        _describe_row("duration (s, wav header)", stats["duration_s"])])
    lines += [f"Tokenizer: {tokenizer_note}. Transcripts longer than the model's "
              f"{stats['tokens']['max_tokens']} tokens: {stats['tokens']['over_max_tokens']}.", ""]

    lines += ["## Emotions", "", f"![emotions]({figures['emotions']})", ""]
    total = sum(stats["emotions"].values())
    lines += _table(["primary emotion", "utterances", "share"],
                    [[e, n, f"{100 * n / total:.1f}%"] for e, n in stats["emotions"].items()])
    lines += ["The primary emotion is `labels.primary_label` over all seven KEMDy20 emotions "
              "(a tie with neutral counts as the other emotion).", ""]
    lines += [f"![per session]({figures['emotions_by_session']})", "",
              f"![per sex]({figures['emotions_by_sex']})", ""]
    sexes = stats["emotions_by_sex"]
    emotions = list(stats["emotions"])
    lines += _table(["sex"] + emotions, [[s] + [row.get(e, 0) for e in emotions] for s, row in sexes.items()])

    ties = stats["ties"]
    lines += ["## Tied labels", "",
              f"{ties['tied']} utterances ({100 * ties['share']:.1f}%) carry several emotions.", ""]
    if "ties" in figures:
        lines += [f"![ties]({figures['ties']})", ""]
        lines += _table(["emotions", "utterances"], list(ties["combinations"].items()))

    lines += ["## Valence and arousal per emotion", "", f"![valence and arousal]({figures['valence_arousal']})", ""]
    va = stats["valence_arousal"]
    lines += _table(["emotion", "n", "valence mean", "valence std", "arousal mean", "arousal std"],
                    [[e, va[e]["valence"].get("count", 0), _fmt(va[e]["valence"].get("mean")),
                      _fmt(va[e]["valence"].get("std")), _fmt(va[e]["arousal"].get("mean")),
                      _fmt(va[e]["arousal"].get("std"))] for e in emotions if e in va])

    lines += ["## Noise tags in raw transcripts", "", f"![noise tags]({figures['noise_tags']})", ""]
    lines += _table(["tag", "meaning", "occurrences", "transcripts"],
                    [[f"`{t}`", _tag_meaning(t), v["occurrences"], v["transcripts"]]
                     for t, v in stats["noise_tags"].items()])
    lines += ["Most frequent words after cleaning: " +
              ", ".join(f"{w} ({n})" for w, n in stats["top_words"]) + ".", ""]

    skips = stats["skips"]
    lines += ["## Reader's skip report", "", f"{skips['skipped']} annotation rows skipped."
              + (f" {skips.get('remapped', 0)} segment ids found under another session prefix." if skips.get("remapped") else ""), ""]
    if skips["reasons"]:
        lines += _table(["reason", "rows"], list(skips["reasons"].items()))

    lines += _bio_markdown(stats["bio"], figures)
    return "\n".join(lines).rstrip() + "\n"


def _tag_meaning(tag: str) -> str:
    return NOISE_TAGS.get(tag, "")


def _bio_markdown(section: dict, figures: dict) -> list[str]:
    coverage = section["coverage"]
    lines = ["## Bio signals (E4: EDA, IBI, TEMP)", "",
             f"{coverage['with_bio']} of {coverage['utterances']} utterances have EDA and TEMP samples "
             f"(`bio_coverage`), {coverage['with_ibi']} have at least one IBI row. E4 files: "
             + ", ".join(f"{k.upper()} {n}" for k, n in coverage["e4_files"].items()) + ".", ""]
    if "skipped" in section:
        return lines + [f"Bio study skipped: {section['skipped']}.", ""]
    lines += _table(["feature", "n", "mean", "min", "p25", "median", "p75", "max"],
                    [_describe_row(name, d) for name, d in section["features"].items()])
    if "bio_session" in figures:
        plot = section["session_plot"]
        lines += [f"![session]({figures['bio_session']})", "",
                  f"Speaker {plot['speaker']}: the whole E4 recording of each script, "
                  f"{plot['utterances_shaded']} utterances shaded by primary emotion.", ""]
    lines += ["### DTW clustering of per-utterance series", "",
              f"Each utterance's EDA and TEMP rows are resampled to {section['series_length']} samples "
              "(tslearn `TimeSeriesResampler`) and z-normalised (`TimeSeriesScalerMeanVariance`), so a "
              "cluster is a shape, not a person's level. `TimeSeriesKMeans(metric=\"dtw\", n_init=1)` is "
              f"fitted for k = 2..{section['max_k']} on at most {section['max_series']} series (seeded "
              f"subsample, seed {section['seed']}; DTW k-means is quadratic), k is the best DTW "
              "silhouette, and every utterance is then assigned to its nearest centroid. Clusters are "
              "cross-tabulated against the primary emotion: chi-square test, mutual information (MI, "
              f"nats), adjusted MI, and MI after {section['n_permutations']} label permutations "
              "(what clusters that know nothing about emotion score).", ""]
    rows = []
    for kind, study in section["clusters"].items():
        if "skipped" in study:
            lines += [f"{kind.upper()}: skipped, {study['skipped']}.", ""]
            continue
        a = study["association"]
        rows.append([kind.upper(), f"{study['n_fitted']} / {study['n_series']}", study["k"],
                     _fmt(max((s for s in study["selection"]["silhouette"] if s is not None and math.isfinite(s)),
                              default=float("nan")), 3),
                     _fmt(a["chi2"], 1), a["chi2_dof"], _p(a["chi2_p"]), _fmt(a["cramers_v"], 3),
                     _fmt(a["mutual_info"], 4), _fmt(a["mutual_info_permutation_mean"], 4),
                     _fmt(a["mutual_info_permutation_p95"], 4), _p(a["mutual_info_permutation_p"]),
                     _fmt(a["adjusted_mutual_info"], 4)])
    if rows:
        lines += _table(["signal", "fitted / all", "k", "silhouette", "chi2", "dof", "chi2 p", "Cramer's V",
                         "MI", "MI shuffled (mean)", "MI shuffled (p95)", "MI p", "AMI"], rows)
    for kind, study in section["clusters"].items():
        if "skipped" in study:
            continue
        selection = study["selection"]
        lines += [f"#### {kind.upper()}", "", f"![k selection]({figures[f'bio_k_{kind}']})", "",
                  f"![clusters]({figures[f'bio_clusters_{kind}']})", ""]
        lines += _table(["k", "inertia", "silhouette"],
                        [[k, _fmt(i, 2), _fmt(s, 3)] for k, i, s in
                         zip(selection["ks"], selection["inertia"], selection["silhouette"])])
        a = study["association"]
        small = a["min_expected"] is not None and math.isfinite(a["min_expected"]) and a["min_expected"] < 5
        lines += [f"Do {kind.upper()} clusters carry emotion information? {verdict(a)}."
                  + (f" Some expected counts are below 5 (min {a['min_expected']:.2f}), so the chi-square "
                     "p-value is rough; the permutation test does not rely on it." if small else ""), ""]
    tests = section.get("feature_tests", {})
    if tests:
        lines += ["### Signal levels against emotion", "",
                  "Z-normalised clustering ignores levels, so per-utterance features are also compared "
                  "across emotions directly, each z-scored within its speaker (levels differ far more "
                  "between people than between emotions): Kruskal-Wallis H test.", ""]
        emotions = sorted({e for t in tests.values() for e in t["by_emotion"]})
        lines += _table(["feature", "n", "H", "p"] + [f"mean z {e}" for e in emotions],
                        [[name, t["n"], _fmt(t["H"]), _p(t["p"])]
                         + [_fmt(t["by_emotion"].get(e, {}).get("mean_z")) for e in emotions]
                         for name, t in tests.items()])
    return lines
