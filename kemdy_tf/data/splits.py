"""Train / val / test splits whose groups never cross, and k session-disjoint folds.

KEMDy20 sessions are pairs of speakers; a random utterance split would put the same
voices and the same conversation on both sides and flatter every score. So splits
are made of whole groups: sessions by default (`DataConfig.split_by="session"`),
speakers, or any other column (e.g. a script id). Groups are shuffled with the seed
and dealt out by count: `test_fraction` of the groups go to test, `val_fraction` to
val, the rest to train, and with 3 or more groups each split gets at least one.

A table that already has a `split` column (a manifest that defines it) keeps it
exactly. In every case rows with no target label (see `target_emotion`) get
`split="excluded"`: they stay in the table so the split report can count them.

Augmented rows (`augmented_from` names their original) are made from the training
split after splitting; `assert_augmented_in_train` checks that none comes from an
utterance outside train.
"""

from __future__ import annotations

import os
import typing

import numpy as np
import pandas as pd

from kemdy_tf.config import DataConfig
from kemdy_tf.data import labels as labels_lib
from kemdy_tf.data.schema import FLOAT_COLUMNS, STRING_COLUMNS  # the table's column types (read_split)

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"
SPLIT_VALUES = SPLITS + (EXCLUDED,)


# === Labels ===

def target_emotion(table: pd.DataFrame, classes: typing.Sequence[str]) -> pd.Series:
    """Each row's training label among `classes`, "" when it has none.

    Taken from the `labels` column with `labels.primary_label` (ties resolved for
    these classes), or from `emotion` where `labels` is absent or empty.
    """
    def one(row_labels: str, row_emotion: str) -> str:
        source = row_labels if row_labels.strip() else row_emotion
        return labels_lib.primary_label(source, classes) or ""

    row_labels = _text_column(table, "labels")
    row_emotion = _text_column(table, "emotion")
    return pd.Series([one(a, b) for a, b in zip(row_labels, row_emotion)],
                     index=table.index, dtype=str)


# === Splitting ===

def split_table(table: pd.DataFrame, cfg: DataConfig, seed: int = 0) -> pd.DataFrame:
    """A copy of `table` with a `split` column: train / val / test / excluded.

    Args:
        table: the utterance table.
        cfg: `split_by`, `val_fraction`, `test_fraction`, `classes`; with `folds > 0`
            the split is fold `cfg.fold` of `k_folds`.
        seed: shuffles the groups.

    Returns:
        The table with `emotion` set to `target_emotion(table, cfg.classes)` and
        `split` filled; groups of `cfg.split_by` never span two of train/val/test.

    Raises:
        ValueError: unknown split column values, a missing group column, too few
            groups, or augmented rows in a table that is not split yet.
    """
    if cfg.folds > 0:
        if not 0 <= cfg.fold < cfg.folds:
            raise ValueError(f"data.fold={cfg.fold} must be in [0, data.folds={cfg.folds})")
        return k_folds(table, cfg.folds, seed, cfg)[cfg.fold]

    out, eligible = _labelled_copy(table, cfg.classes)
    if _has_given_split(table):
        given = _text_column(table, "split").str.strip()
        _check_given_split(given)
        out["split"] = given.where(eligible, EXCLUDED)
        assert_augmented_in_train(out)
        return out

    _refuse_augmented(out)
    groups = _group_values(out, cfg.split_by)
    names = sorted(set(groups[eligible]))
    n_test, n_val = _split_counts(len(names), cfg.test_fraction, cfg.val_fraction, cfg.split_by)
    order = np.random.default_rng(seed).permutation(len(names))
    assignment = {}
    for rank, position in enumerate(order):
        assignment[names[position]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train")
    out["split"] = [assignment[g] if ok else EXCLUDED for g, ok in zip(groups, eligible)]
    return out


def k_folds(table: pd.DataFrame, k: int, seed: int = 0,
            cfg: DataConfig | None = None) -> list[pd.DataFrame]:
    """k copies of `table`, fold i having group set i as its test split.

    Groups (`cfg.split_by`, sessions by default) are shuffled with the seed and dealt
    round-robin into k folds, so every group is the test split of exactly one fold.
    Each fold's val split is `cfg.val_fraction` of all groups (at least one), drawn
    from the groups outside its test fold; the rest are train. A `split` column the
    table already has (a manifest's) is replaced.

    Args:
        table: the utterance table.
        k: number of folds (>= 2).
        seed: shuffles the groups.
        cfg: classes, split_by and val_fraction (defaults: DataConfig()).

    Returns:
        A list of k tables, each with `emotion` and `split` as in `split_table`.
    """
    cfg = cfg or DataConfig()
    if k < 2:
        raise ValueError(f"k_folds needs k >= 2, got {k}")
    base, eligible = _labelled_copy(table, cfg.classes)
    _refuse_augmented(base)
    groups = _group_values(base, cfg.split_by)
    names = sorted(set(groups[eligible]))
    rng = np.random.default_rng(seed)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    n_val = max(1, round(cfg.val_fraction * len(names))) if cfg.val_fraction > 0 else 0
    smallest_rest = len(names) - -(-len(names) // k)  # groups left beside the largest fold
    if len(names) < k or smallest_rest < n_val + 1:
        raise ValueError(
            f"{len(names)} {cfg.split_by!r} groups cannot make {k} folds with {n_val} val "
            f"group(s) and at least one train group each; lower k or data.val_fraction")
    folds = []
    for fold in range(k):
        test = set(shuffled[fold::k])
        rest = [g for g in shuffled if g not in test]
        val = set(rest[i] for i in np.random.default_rng([seed, fold]).permutation(len(rest))[:n_val])
        out = base.copy()
        out["split"] = [
            EXCLUDED if not ok else "test" if g in test else "val" if g in val else "train"
            for g, ok in zip(groups, eligible)]
        folds.append(out)
    return folds


# === Checks ===

def assert_disjoint(table: pd.DataFrame, by: str) -> None:
    """Raise ValueError if any value of column `by` occurs in two of train/val/test."""
    if by not in table.columns:
        raise ValueError(f"cannot check disjointness: the table has no column {by!r}")
    used = table[table["split"].isin(SPLITS)]
    spans = used.groupby(by)["split"].agg(lambda s: sorted(set(s)))
    crossing = spans[spans.map(len) > 1]
    if len(crossing):
        shown = "; ".join(f"{group!r} in {', '.join(s)}" for group, s in crossing.head(5).items())
        raise ValueError(f"{len(crossing)} {by!r} group(s) span several splits: {shown}")


def assert_augmented_in_train(table: pd.DataFrame) -> None:
    """Raise ValueError if an augmented row is outside train or comes from a non-train row.

    A row is augmented when `augmented_from` is not empty; its original must be in
    the table (else the origin cannot be checked) and in the training split.
    """
    if "augmented_from" not in table.columns:
        return
    origin = _text_column(table, "augmented_from")
    augmented = table[origin != ""]
    if augmented.empty:
        return
    split_of = dict(zip(table["segment_id"], table["split"]))
    problems = []
    for segment_id, source, split in zip(
            augmented["segment_id"], augmented["augmented_from"], augmented["split"]):
        if split != "train":
            problems.append(f"{segment_id} is augmented but in split {split!r}")
        elif source not in split_of:
            problems.append(f"{segment_id} comes from {source}, which is not in the table")
        elif split_of[source] != "train":
            problems.append(f"{segment_id} comes from {source}, which is in {split_of[source]!r}")
    if problems:
        raise ValueError(
            f"{len(problems)} augmented row(s) leak outside the training split: "
            + "; ".join(problems[:5]))


def split_report(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per emotion (rows) and split (columns), with totals; "(none)" for no label."""
    emotion = _text_column(table, "emotion").replace("", "(none)")
    return pd.crosstab(emotion, table["split"], margins=True, margins_name="total")


# === Storage ===

def write_split(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the whole table, `split` included, as UTF-8 CSV (atomically)."""
    if "split" not in table.columns:
        raise ValueError(f"refusing to write {path}: the table has no 'split' column")
    tmp = f"{path}.tmp"
    table.to_csv(tmp, index=False, encoding="utf-8")
    os.replace(tmp, path)


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by `write_split`, with its column types restored.

    The contract's text columns stay text ("001" stays "001", empty stays ""), its
    float columns are float (empty -> NaN); any other column becomes numeric or
    boolean when every value reads as such, and stays text otherwise.
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read split table {path}: {error}") from error
    if "split" not in raw.columns:
        raise ValueError(f"{path} has no 'split' column; it was not written by write_split")
    for column in raw.columns:
        if column in STRING_COLUMNS:
            continue
        values = raw[column]
        if column in FLOAT_COLUMNS:
            try:
                raw[column] = pd.to_numeric(values.replace("", np.nan)).astype(float)
            except ValueError as error:
                raise ValueError(f"{path}: column {column!r} is not numeric ({error})") from None
        elif len(values) and values.isin(["True", "False"]).all():
            raw[column] = values == "True"
        else:
            try:
                raw[column] = pd.to_numeric(values.replace("", np.nan))
            except ValueError:
                pass  # text it is
    return raw


# === Helpers ===

def _text_column(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table.columns:
        return pd.Series([""] * len(table), index=table.index, dtype=str)
    return table[column].fillna("").astype(str)


def _labelled_copy(table: pd.DataFrame, classes) -> tuple[pd.DataFrame, np.ndarray]:
    if "segment_id" not in table.columns:
        raise ValueError("the utterance table has no 'segment_id' column")
    out = table.copy()
    out["emotion"] = target_emotion(table, classes)
    return out, (out["emotion"] != "").to_numpy()


def _has_given_split(table: pd.DataFrame) -> bool:
    return "split" in table.columns and bool((_text_column(table, "split").str.strip() != "").any())


def _check_given_split(given: pd.Series) -> None:
    bad = given[~given.isin(SPLIT_VALUES)]
    if len(bad):
        shown = ", ".join(f"row {i}: {v!r}" for i, v in bad.head(5).items())
        raise ValueError(
            f"{len(bad)} row(s) have a split value other than {', '.join(SPLIT_VALUES)} "
            f"({shown}); fill the split column for every row or for none")


def _refuse_augmented(table: pd.DataFrame) -> None:
    if (_text_column(table, "augmented_from") != "").any():
        raise ValueError(
            "the table holds augmented rows but no split: split first, then augment "
            "the training split only")


def _group_values(table: pd.DataFrame, by: str) -> np.ndarray:
    if by not in table.columns:
        raise ValueError(
            f"cannot split by {by!r}: the table has no such column "
            f"(columns: {', '.join(table.columns)})")
    return _text_column(table, by).to_numpy()


def _split_counts(n_groups: int, test_fraction: float, val_fraction: float, by: str) -> tuple[int, int]:
    """Groups for test and val: the fractions rounded, at least one each, one left for train."""
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"data.{name}={value} must be in [0, 1)")
    wanted = [test_fraction > 0, val_fraction > 0]
    needed = 1 + sum(wanted)
    if n_groups < needed:
        raise ValueError(
            f"only {n_groups} distinct {by!r} value(s) among labelled rows; a "
            f"{by}-disjoint train/val/test split needs at least {needed}. Split by another "
            f"column (data.split_by=speaker) or give the manifest a 'split' column")
    n_test = max(1, round(test_fraction * n_groups)) if wanted[0] else 0
    n_val = max(1, round(val_fraction * n_groups)) if wanted[1] else 0
    while n_test + n_val > n_groups - 1:  # keep one group for train, shrink the larger share
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    return n_test, n_val
