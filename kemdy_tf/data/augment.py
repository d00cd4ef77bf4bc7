"""Text augmentation (EDA's random swap and random deletion) and class balancing.

The seed kept only the two EDA operations that keep a sentence's meaning: random
swap (RS) and random deletion (RD); synonym replacement and random insertion were
rejected. Augmented rows are copies of training rows with the text changed; they
point at the same wav (audio is augmented on the fly by frequency masking) and carry
`augmented_from = "<original>"` and `segment_id = "<original>#aug<k>"`
(`augment_table`) or `"<original>#bal<k>"` (`balance_table`): distinct suffixes, so
both functions may be run on the same rows and their outputs concatenated without
repeating an id. Only training rows should ever be given to these functions.

    >>> rng = np.random.default_rng(0)
    >>> augment_text("나는 오늘 학교에 갔다", rng)  # doctest: +SKIP
    '오늘 나는 학교에 갔다'
"""

from __future__ import annotations

import math
import typing

import numpy as np
import pandas as pd

AUGMENTED_FROM = "augmented_from"


# === Text operations ===


def random_swap(words: typing.Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """Swaps two distinct random positions, `n` times (fewer than 2 words: unchanged)."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return words


def random_deletion(words: typing.Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drops each word with probability `p`; keeps one random word if all would go.

    A single word is never dropped, so a non-empty input gives a non-empty output.
    """
    words = list(words)
    if len(words) <= 1 or p <= 0:
        return words
    kept = [word for word, drop in zip(words, rng.random(len(words)) < p) if not drop]
    return kept or [words[int(rng.integers(len(words)))]]


def augment_text(text: str, rng: np.random.Generator, n_swaps: int = 1, p_delete: float = 0.1) -> str:
    """Random swap then random deletion on the words of `text`.

    Args:
        text: a cleaned transcript.
        rng: the numpy Generator that makes the result reproducible.
        n_swaps: how many pairs of words to swap.
        p_delete: chance of deleting each word.

    Returns:
        The augmented text; never empty when `text` has a word. One-word texts come
        back unchanged.
    """
    words = str(text).split()
    if not words:
        return text
    return " ".join(random_deletion(random_swap(words, n_swaps, rng), p_delete, rng))


# === Table operations ===


def augment_table(train_table: pd.DataFrame, copies: float, seed: int) -> pd.DataFrame:
    """New rows only: `copies` augmented copies (`#aug<k>`) of each original training row.

    A fractional part is spread at random: `copies=2.5` gives every row 2 copies and
    half of the rows (chosen by `seed`) a third. Rows that are themselves augmented
    (non-empty `augmented_from`) are not copied; copy numbers continue after the
    copies a row already has in `train_table`, so ids stay unique.

    Args:
        train_table: training rows (utterance table columns; `segment_id` and `text`
            at least).
        copies: extra copies per row, >= 0 (0 gives an empty frame).
        seed: seed of the numpy Generator.

    Returns:
        The new rows (same columns plus `augmented_from`), index 0..n-1.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    rng = np.random.default_rng(seed)
    originals = _original_positions(train_table)
    whole, fraction = int(math.floor(copies)), copies - math.floor(copies)
    counts = np.full(len(originals), whole, dtype=int)
    extra = int(round(fraction * len(originals)))
    if extra:
        counts[rng.choice(len(originals), size=extra, replace=False)] += 1
    sources = np.repeat(originals, counts)
    return _copies(train_table, sources, rng, "#aug")


def balance_table(
    train_table: pd.DataFrame,
    target: float,
    seed: int,
    label_col: str = "emotion",
    classes: typing.Sequence[str] | None = None,
) -> pd.DataFrame:
    """New rows only: augmented copies (`#bal<k>`) of minority-class rows up to `target` x the majority.

    Class counts include rows already augmented in `train_table` (e.g. the caller
    concatenated `augment_table`'s output); copies are made from original rows only,
    cycling through a class's rows in a shuffled order so each is copied about
    equally often.

    Args:
        train_table: training rows, with `segment_id`, `text` and `label_col`.
        target: each class is brought to `round(target * majority count)` rows;
            0 gives an empty frame.
        seed: seed of the numpy Generator.
        label_col: the column holding the class.
        classes: only these classes are counted and balanced (default: every
            non-empty value of `label_col`).

    Returns:
        The new rows (same columns plus `augmented_from`), index 0..n-1.
    """
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    if label_col not in train_table.columns:
        raise KeyError(f"balance_table: no column {label_col!r} in the table ({list(train_table.columns)})")
    rng = np.random.default_rng(seed)
    labels = train_table[label_col].fillna("").astype(str)
    in_scope = labels != "" if classes is None else labels.isin(list(classes))
    counts = labels[in_scope].value_counts()
    if target == 0 or counts.empty:
        return _copies(train_table, np.zeros(0, dtype=int), rng, "#bal")
    goal = int(round(target * counts.max()))
    originals = set(_original_positions(train_table).tolist())
    sources = []
    for name in sorted(counts.index):
        need = goal - int(counts[name])
        pool = np.array([i for i in np.flatnonzero((labels == name).to_numpy()) if i in originals])
        if need <= 0 or len(pool) == 0:
            continue
        rounds = math.ceil(need / len(pool))
        order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])
        sources.append(order[:need])
    sources = np.sort(np.concatenate(sources)) if sources else np.zeros(0, dtype=int)
    return _copies(train_table, sources, rng, "#bal")


def _original_positions(table: pd.DataFrame) -> np.ndarray:
    if "segment_id" not in table.columns or "text" not in table.columns:
        raise KeyError(f"augmentation needs columns segment_id and text; the table has {list(table.columns)}")
    if AUGMENTED_FROM not in table.columns:
        return np.arange(len(table))
    return np.flatnonzero((table[AUGMENTED_FROM].fillna("").astype(str) == "").to_numpy())


def _copies(table: pd.DataFrame, sources: np.ndarray, rng: np.random.Generator, suffix: str) -> pd.DataFrame:
    """Copies of `table.iloc[sources]` with augmented text, numbered per original."""
    out = table.iloc[sources].copy().reset_index(drop=True)
    if AUGMENTED_FROM not in out.columns:
        out[AUGMENTED_FROM] = ""
    existing = _existing_copies(table, suffix)
    ids, texts = [], []
    for original, text in zip(out["segment_id"].astype(str), out["text"].astype(str)):
        existing[original] = existing.get(original, 0) + 1
        ids.append(f"{original}{suffix}{existing[original]}")
        texts.append(augment_text(text, rng))
    out[AUGMENTED_FROM] = out["segment_id"].astype(str)
    out["segment_id"] = ids
    out["text"] = texts
    return out


def _existing_copies(table: pd.DataFrame, suffix: str) -> dict[str, int]:
    """The highest copy number `<suffix><k>` each original already has in `table`."""
    if AUGMENTED_FROM not in table.columns:
        return {}
    existing: dict[str, int] = {}
    for source, segment_id in zip(table[AUGMENTED_FROM].fillna("").astype(str), table["segment_id"].astype(str)):
        if source:
            _, _, k = segment_id.rpartition(suffix)
            existing[source] = max(existing.get(source, 0), int(k) if k.isdigit() else 0)
    return existing
