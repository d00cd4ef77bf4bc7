"""Checks that turn silent data problems into warnings or clear errors.

Readers call `check_not_empty` and `warn_if_many_skipped` before returning a table;
the training code turns the feature build's failures into skip-report rows with
`feature_failure_skips`, and calls `check_training_labels` once the table is split:

    >>> warnings = check_training_labels(table, config.data.classes)  # doctest: +SKIP
    >>> for line in warnings:                                          # doctest: +SKIP
    ...     logger.warning(line)

Each check returns its warnings as sentences (the caller logs or prints them) and
raises a `ValueError` subclass only where the data cannot give a meaningful result.
"""

from __future__ import annotations

import collections
import logging
import typing

import pandas as pd

from kemdy_tf.data import labels as labels_lib

# A reader that skips more than this share of its rows says so as a warning that
# names the share and the commonest reasons (a skip must never halve a corpus quietly).
SKIP_WARN_SHARE = 0.05
# Reasons, examples and labels named in one message.
_SHOWN = 5


class NoUtterancesError(ValueError):
    """A dataset source that yields no usable utterance.

    Attributes:
        where: what was read (a manifest, an annotation folder), in words.
        skips: the skip report of the rows that were read and refused (may be empty).
    """

    def __init__(self, message: str, where: str, skips: pd.DataFrame | None = None):
        super().__init__(message)
        self.where = where
        self.skips = skips


class SingleClassError(ValueError):
    """The training split holds fewer than two classes: no classifier can be trained or judged."""


def skip_reasons(skips: pd.DataFrame, limit: int = _SHOWN) -> str:
    """The commonest skip reasons with counts: `"duplicate id (3), missing wav (2)"`."""
    if skips is None or skips.empty:
        return "none"
    kinds = skips["reason"].astype(str).str.partition(":")[0].value_counts()
    shown = [f"{kind} ({count})" for kind, count in kinds.head(limit).items()]
    more = len(kinds) - limit
    return ", ".join(shown) + (f", and {more} other reason(s)" if more > 0 else "")


def check_not_empty(n_rows: int, skips: pd.DataFrame, where: str) -> None:
    """Raise `NoUtterancesError` when a reader found no row, or refused every row.

    Args:
        n_rows: utterances the reader kept.
        skips: its skip report (`file, row, segment_id, reason`).
        where: what it read, e.g. "manifest /data/m.csv" or "annotation files in /data/annotation".
    """
    if n_rows:
        return
    if skips is None or skips.empty:
        raise NoUtterancesError(f"no utterances: {where} holds no data rows (only headers, or nothing)", where, skips)
    first = skips.iloc[0]
    raise NoUtterancesError(
        f"no utterances: all {len(skips)} row(s) of {where} were skipped ({skip_reasons(skips)}); "
        f"first: {first['file']} line {first['row']}: {first['reason']}", where, skips)


def warn_if_many_skipped(n_rows: int, skips: pd.DataFrame, where: str,
                         logger: logging.Logger | None = None, share: float = SKIP_WARN_SHARE) -> str | None:
    """A warning (logged, and returned) when more than `share` of the rows were skipped.

    Args:
        n_rows: utterances the reader kept.
        skips: its skip report.
        where: what it read.
        logger: where to log the warning (default: this module's logger).
        share: the tolerated skipped share of all rows read.

    Returns:
        The warning, or None when few enough rows were skipped.
    """
    skipped = 0 if skips is None else len(skips)
    total = n_rows + skipped
    if not total or skipped / total <= share:
        return None
    message = (f"{skipped} of {total} rows ({skipped / total:.0%}) of {where} were SKIPPED, more than "
               f"{share:.0%}: {skip_reasons(skips)}. Check the skip report (file, row, reason) before training "
               "on what is left")
    (logger or logging.getLogger(__name__)).warning(message)
    return message


def feature_failure_skips(table: pd.DataFrame, failures: typing.Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Skip-report rows (`file, row, segment_id, reason`) for wavs the feature build could not use.

    `FeatureCache.build` returns `[(wav_path, reason)]`; every table row of such a wav
    becomes one entry: `file` the wav, `row` the row's line in the run's `table.csv`
    (the header is line 1), `reason` "undecodable audio: " + the AudioError's reason.
    Append them to `WORKDIR/skips.csv` so that no dropped utterance goes unlisted.
    """
    reasons = dict(failures)
    records = []
    if reasons:
        for position, (wav, segment_id) in enumerate(zip(table["wav_path"], table["segment_id"])):
            if wav in reasons:
                records.append((wav, position + 2, segment_id, f"undecodable audio: {reasons[wav]}"))
    return pd.DataFrame(records, columns=["file", "row", "segment_id", "reason"]).astype({"row": int})


def check_training_labels(table: pd.DataFrame, classes: typing.Sequence[str]) -> list[str]:
    """Warnings about the class balance of a split table; raises where training means nothing.

    Looks at original rows (`augmented_from` empty, when the column exists). A row's
    class is the primary label of its `labels` among `classes` (its `emotion` when
    `labels` is absent), as the split does.

    Args:
        table: an utterance table with a `split` column (train/val/test/excluded).
        classes: the target classes (`config.data.classes`).

    Returns:
        Warnings, one sentence each: labels outside `classes` (each name with its
        count), classes with no training row but rows in val or test, classes with
        no row at all.

    Raises:
        ValueError: the table has no `split` column.
        SingleClassError: the training split has fewer than two classes (a model
            that always answers that class would score 1.000).
    """
    if "split" not in table.columns:
        raise ValueError("check_training_labels needs a split table (a `split` column)")
    classes = list(classes)
    rows = table
    if "augmented_from" in rows.columns:
        rows = rows[rows["augmented_from"].fillna("").astype(str) == ""]
    source = rows["labels"] if "labels" in rows.columns else rows["emotion"]
    names = source.fillna("").astype(str).map(labels_lib.split_labels)
    target = names.map(lambda n: labels_lib.primary_label(n, classes) or "")
    split = rows["split"].astype(str)
    warnings: list[str] = []

    outside = collections.Counter(name for row in names[target == ""] for name in row)
    unlabelled = int((target == "").sum())
    if unlabelled:
        listed = ", ".join(f"{name!r} ({count})" for name, count in outside.most_common(_SHOWN * 2)) or "no label"
        warnings.append(f"{unlabelled} row(s) have no label among the classes {classes} and are left out: "
                        f"their labels are {listed}")

    train_counts = target[(split == "train") & (target != "")].value_counts()
    if len(train_counts) < 2:
        held = ", ".join(f"{c!r} ({n} rows)" for c, n in train_counts.items()) or "no labelled row"
        raise SingleClassError(
            f"the training split has {len(train_counts)} class(es): {held}, of the classes {classes}. "
            "A classifier needs at least two: every metric would read 1.000 (or be undefined). "
            "Check the labels, the class list (data.classes) and the split")
    for name in classes:
        if name in train_counts.index:
            continue
        elsewhere = {s: int(((split == s) & (target == name)).sum()) for s in ("val", "test")}
        elsewhere = {s: n for s, n in elsewhere.items() if n}
        if elsewhere:
            where = ", ".join(f"{n} in {s}" for s, n in elsewhere.items())
            warnings.append(f"class {name!r} has no training row but {where}: the model cannot predict it, "
                            "and its recall there will be 0")
        else:
            warnings.append(f"class {name!r} has no row at all: its metrics are undefined")
    return warnings
