"""How far utterance functionals go on real speech: the ceiling the deep audio model is held to.

    PYTHONPATH=. python bench/speech_functionals.py
    PYTHONPATH=. python bench/speech_functionals.py --manifest my_corpus.csv --classes a,b,c

Data: a manifest (default: ../shared/data/ravdess_speech_16k/manifest.csv; skips with a
message and exit code 0 when it is absent). The folds are exactly `train.py --folds 6
--set data.split_by=speaker`'s (`splits.k_folds`, seed 0); the models fit on the train
and val speakers of each fold and are scored (UA, balanced accuracy) on its test
speakers. Not part of CI (about a minute on 2 cores).

Features, all from the project's own log-mel recipe (`data.audio.log_mel_file`):

* `functionals`: per mel band mean, std, std of the frame-to-frame difference, max,
  min over the clip (what `layers.UtteranceFunctionals` computes in the model);
* `+ cepstra`: the same statistics of each frame's first 20 cepstral coefficients
  (orthonormal DCT-II of the log-mel frame: MFCCs; `fusion.functional_cepstra`);
* `pitch`: log-F0 statistics from `librosa.yin` on the louder frames (mean, std,
  percentiles 10/50/90 and their range, mean |delta|, delta std, voiced share) and
  frame-energy statistics: `data.prosody.PITCH_STATISTICS`, what `fusion.pitch` feeds
  the models.

Normalisation: `frames` standardises the log-mel per speaker before the functionals
(what `features.speaker_norm` does for the models); `functionals` standardises the
functionals per speaker (over that speaker's clips; no label used). Classifier:
standard scaling + class-balanced logistic regression (C=0.03).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kemdy_tf.config import make_config
from kemdy_tf.data import audio, prosody, splits
from kemdy_tf.data.manifest import read_manifest

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/ravdess_speech_16k/manifest.csv"
RAVDESS_CLASSES = "neutral,calm,happy,sad,angry,fear,disgust,surprise"


def clip_features(path: str, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [frames, n_mels], pitch statistics [12]) of one clip: what the models read."""
    return audio.log_mel_file(path, cfg), prosody.clip_pitch_statistics(path, cfg)


def per_speaker(values: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    out = values.astype(np.float64).copy()
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows] = (out[rows] - out[rows].mean(0)) / (out[rows].std(0) + 1e-6)
    return out


def frames_per_speaker(mels: list, speakers: np.ndarray) -> list:
    out = list(mels)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        frames = np.concatenate([mels[i] for i in rows])
        mean, std = frames.mean(0), np.maximum(frames.std(0), 1e-3)
        for i in rows:
            out[i] = (mels[i] - mean) / std
    return out


def fold_scores(features: np.ndarray, labels: np.ndarray, folds: list) -> list[float]:
    scores = []
    for split in folds:
        fit, test = split != "test", split == "test"
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(C=0.03, max_iter=5000, class_weight="balanced"))
        model.fit(features[fit], labels[fit])
        scores.append(balanced_accuracy_score(labels[test], model.predict(features[test])))
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--classes", default=RAVDESS_CLASSES)
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path(args.manifest).is_file():
        print(f"skipped: {args.manifest} does not exist")
        return 0
    cfg = make_config("small", ["data.split_by=speaker", f"data.classes={args.classes}"])
    table, _ = read_manifest(args.manifest)
    folds = splits.k_folds(table, args.folds, seed=0, cfg=cfg.data)
    keep = (folds[0]["split"] != splits.EXCLUDED).to_numpy()
    classes = list(cfg.data.classes)
    labels = np.array([classes.index(e) if e in classes else -1 for e in folds[0]["emotion"]])[keep]
    fold_splits = [f["split"].to_numpy()[keep] for f in folds]
    speakers = table["speaker"].to_numpy()[keep]
    paths = table["wav_path"].to_numpy()[keep]
    clips = Parallel(n_jobs=args.workers)(delayed(clip_features)(p, cfg.features) for p in paths)
    mels = [c[0] for c in clips]
    # The model's own functionals (`data.audio.utterance_functionals`, the layer's twin).
    functionals = audio.utterance_functionals
    cepstra = cfg.fusion.functional_cepstra
    raw = np.array([functionals(m) for m in mels])
    normed_mels = frames_per_speaker(mels, speakers)
    frame_normed = np.array([functionals(m) for m in normed_mels])
    with_cepstra = np.array([functionals(m, cepstra) for m in mels])
    # What the RAVDESS recipe's model reads: frames per speaker, then functionals per speaker.
    recipe = np.array([functionals(m, cepstra) for m in normed_mels])
    pitch = np.array([c[1] for c in clips])
    rows = [
        ("functionals, frames per speaker (the models' speaker_norm)", frame_normed),
        ("functionals, functionals per speaker", per_speaker(raw, speakers)),
        ("pitch + energy statistics, per speaker", per_speaker(pitch, speakers)),
        ("functionals + pitch, per speaker", per_speaker(np.hstack([raw, pitch]), speakers)),
        (f"functionals + {cepstra} cepstra, per speaker", per_speaker(with_cepstra, speakers)),
        (f"functionals + {cepstra} cepstra, frames and functionals per speaker (the recipe's wide input)",
         per_speaker(recipe, speakers)),
        (f"functionals + {cepstra} cepstra + pitch, per speaker", per_speaker(np.hstack([with_cepstra, pitch]),
                                                                              speakers)),
    ]
    print(f"{len(labels)} clips, {len(np.unique(speakers))} speakers, {args.folds} speaker-disjoint folds, UA")
    print("| features (logistic regression) | " + " | ".join(str(i) for i in range(args.folds)) + " | mean ± sd |")
    print("|---|" + "---|" * args.folds + "---|")
    for name, features in rows:
        scores = fold_scores(features, labels, fold_splits)
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores)
              + f" | {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
