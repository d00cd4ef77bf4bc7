"""What the fusion model's fitted sharpness does to runs trained before it had one.

    python bench/sharpness.py runs/rav_experts runs/share_default runs/sc_short runs/sc_normal

The product of experts now ends with one sharpness (a temperature, `models.experts.fit_sharpness`)
fitted on the validation split after its weights. For a run evaluated on both splits
(`evaluate.py --split val` and `--split test`; each fold of a `--folds` run), this fits it on
the fusion model's validation predictions and applies it to its test predictions, which is
what the layer computes (`softmax(s · logits)` of its own output) for every utterance that has
both modalities. Prints, per run (mean over folds): the sharpness, the test ECE before and
after, the classical late fusion's ECE, and the test UA (unchanged by construction).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def probabilities(path: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities [N, C], labels [N])` of one model in an evaluation's predictions.csv."""
    frame = pd.read_csv(path)
    columns = [c for c in frame.columns if c.startswith("prob_")]
    rows = frame[frame["model"] == model]
    labels = rows["emotion_true"].map({c[len("prob_"):]: i for i, c in enumerate(columns)}).to_numpy()
    return np.clip(rows[columns].to_numpy(np.float64), 1e-12, 1.0), labels


def evaluations(workdir: Path) -> list[tuple[Path, Path]]:
    """(validation, test) predictions.csv pairs of a run: its folds' or its own."""
    folds = sorted((workdir / "eval_test" / "folds").glob("fold*/predictions.csv"))
    if folds:
        return [(workdir / "eval_val" / "folds" / f.parent.name / f.name, f) for f in folds]
    return [(workdir / "eval_val" / "predictions.csv", workdir / "eval_test" / "predictions.csv")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    from scipy.special import softmax
    from sklearn.metrics import balanced_accuracy_score

    from kemdy_tf.models.experts import fit_sharpness
    from kemdy_tf.scoring import expected_calibration_error as ece

    print("| run | folds | sharpness | fusion ECE before | after | classical fusion ECE | fusion UA |")
    print("|---|---|---|---|---|---|---|")
    for workdir in args.workdirs:
        rows = []
        for val, test in evaluations(workdir):
            if not (val.is_file() and test.is_file()):
                print(f"{workdir}: {val if not val.is_file() else test} is missing (evaluate.py --split val/test)",
                      file=sys.stderr)
                continue
            val_p, val_y = probabilities(val, "fusion")
            test_p, test_y = probabilities(test, "fusion")
            classical_p, classical_y = probabilities(test, "classical_fusion")
            s = fit_sharpness(np.log(val_p), val_y)
            sharpened = softmax(s * np.log(test_p), axis=1)
            rows.append((s, ece(test_y, test_p), ece(test_y, sharpened), ece(classical_y, classical_p),
                         balanced_accuracy_score(test_y, sharpened.argmax(1))))
        if rows:
            values = np.array(rows)
            mean = values.mean(axis=0)
            print(f"| {workdir} | {len(rows)} | {' '.join(f'{v:.2f}' for v in values[:, 0])} | {mean[1]:.3f} | "
                  f"{mean[2]:.3f} | {mean[3]:.3f} | {mean[4]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
