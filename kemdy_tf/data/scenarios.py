"""Manifests that put a model in a situation real corpora create: the transcript shortcut.

    python -m kemdy_tf.data.scenarios shortcut --manifest corpus.csv --split-by speaker --out shortcut.csv
    python -m kemdy_tf.data.scenarios shortcut --data data/synthetic --out shortcut.csv
    python train.py --manifest shortcut.csv --workdir runs/shortcut --stage all

Scripted corpora read emotion-bearing sentences ("I'm so angry"), so in training the
transcript alone predicts the label; at serving time transcripts are missing, come
from speech recognition, or say nothing about the emotion. A fusion model trained on
the first learns to read and stops listening. The `shortcut` scenario rebuilds that
from any labelled corpus: every training and validation utterance gets a sentence
that names its emotion, every test utterance one fixed neutral sentence, so on the
test split only the voice carries the emotion. The split is written into the
manifest (`split` column), so training uses exactly this split.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

import numpy as np
import pandas as pd

# Korean sentences that name the emotion (three per class, so the text model has a
# little variety to learn from); unknown classes get a sentence built from the name.
EMOTION_SENTENCES = {
    "neutral": ("그냥 평범한 하루였어요", "별일 없이 지냈어요", "특별한 건 없었어요"),
    "happy": ("정말 기뻐요 너무 행복해요", "오늘 너무 신나요", "기분이 정말 좋아요"),
    "sad": ("너무 슬퍼요 눈물이 나요", "마음이 아프고 우울해요", "정말 서글퍼요"),
    "angry": ("정말 화가 나요", "너무 짜증나고 열받아요", "진짜 분해서 참을 수가 없어요"),
    "surprise": ("깜짝 놀랐어요", "세상에 이럴 수가", "정말 뜻밖이에요"),
    "fear": ("너무 무서워요", "두려워서 떨려요", "겁이 나요"),
    "disgust": ("역겨워요", "정말 혐오스러워요", "보기만 해도 싫어요"),
    "calm": ("마음이 차분해요", "편안하고 고요해요", "아주 평온해요"),
}
# What every test utterance says: nothing about the emotion.
NEUTRAL_SENTENCE = "문 옆에서 아이들이 이야기하고 있어요"


def shortcut_transcripts(table: pd.DataFrame, seed: int = 0,
                         test_sentence: str = NEUTRAL_SENTENCE) -> pd.DataFrame:
    """A copy of a split table whose train/val transcripts name the emotion, test ones say nothing.

    Args:
        table: an utterance table with `split` (train/val/test) and `emotion` columns.
        seed: picks which of a class's sentences each utterance gets.
        test_sentence: the one transcript of every test utterance.
    """
    if "split" not in table.columns:
        raise ValueError("shortcut_transcripts needs a split table (a `split` column)")
    rng = np.random.default_rng(seed)
    out = table.copy()
    texts = []
    for split, emotion in zip(out["split"], out["emotion"].fillna("")):
        if split == "test" or not emotion:
            texts.append(test_sentence)
            continue
        choices = EMOTION_SENTENCES.get(emotion, (f"{emotion} 느낌이에요",))
        texts.append(choices[int(rng.integers(len(choices)))])
    out["text"] = texts
    out["text_raw"] = texts
    return out


def write_shortcut_manifest(source: dict, out: str | Path, classes: typing.Sequence[str],
                            split_by: str = "session", seed: int = 0) -> Path:
    """Read `source` ({"data": DIR} or {"manifest": CSV}), split it, write the scenario manifest."""
    from kemdy_tf.config import DataConfig
    from kemdy_tf.data import manifest, splits
    from kemdy_tf.data.kemdy20 import read_kemdy20

    table, _ = (manifest.read_manifest(source["manifest"]) if "manifest" in source
                else read_kemdy20(source["data"]))
    split = splits.split_table(table, DataConfig(classes=tuple(classes), split_by=split_by), seed)
    split = split[split["split"].isin(splits.SPLITS)]
    scenario = shortcut_transcripts(split, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_manifest(scenario, out)
    return out


def main(argv: typing.Sequence[str] | None = None) -> int:
    from kemdy_tf.config import DEFAULT_CLASSES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["shortcut"])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a KEMDy20-layout folder")
    source.add_argument("--manifest", type=Path, help="a CSV manifest")
    p.add_argument("--out", type=Path, required=True, help="the manifest to write")
    p.add_argument("--classes", default=",".join(DEFAULT_CLASSES))
    p.add_argument("--split-by", default="session")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    source = {"manifest": args.manifest} if args.manifest else {"data": args.data}
    try:
        path = write_shortcut_manifest(source, args.out, args.classes.split(","), args.split_by, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
