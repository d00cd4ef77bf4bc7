"""Emotion names and how tied annotations become one training label."""

from __future__ import annotations

import typing

from kemdy_tf.config import ALL_EMOTIONS

# KEMDy20 spells disgust "disqust"; other spellings seen in the wild are folded too.
_ALIASES = {"disqust": "disgust", "disgusted": "disgust", "happiness": "happy",
            "anger": "angry", "sadness": "sad", "surprised": "surprise", "neural": "neutral"}


def canonical(name: str) -> str:
    """A single emotion name in the project's spelling ("disqust" -> "disgust")."""
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def split_labels(raw: str) -> tuple[str, ...]:
    """`"happy;neutral"` -> `("happy", "neutral")`, canonical names, written order, no repeats."""
    out: list[str] = []
    for part in str(raw).split(";"):
        name = canonical(part)
        if name and name not in out:
            out.append(name)
    return tuple(out)


def is_known(name: str) -> bool:
    return name in ALL_EMOTIONS


def primary_label(labels: str | typing.Sequence[str], classes: typing.Sequence[str] = ALL_EMOTIONS) -> str | None:
    """The one label an utterance trains on, or None when no label is a target class.

    The first written label that is a target class and not "neutral"; "neutral" when
    it is the only target label. A neutral/emotion tie means some raters heard the
    emotion, and the rare classes are the ones the model must learn.
    """
    names = split_labels(labels) if isinstance(labels, str) else tuple(labels)
    targets = [n for n in names if n in classes]
    for name in targets:
        if name != "neutral":
            return name
    return targets[0] if targets else None
