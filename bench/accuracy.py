"""Accuracy vs cost: training time per epoch and the synthetic test macro-F1, per preset.

Time per epoch is extrapolated from the measured train steps of this run: the
training split's utterances / samples per second, summed over the three stages a
run trains (audio, text, fusion). Where the lead's main run exists (default
`runs/synthetic`), its measured epoch times (wall-clock gaps between the epoch
summaries in its TensorBoard logs) are shown beside the extrapolation, and its test
macro-F1 (evaluate.py's `eval_test/report.json`, else the validation macro-F1 of
`fusion/summary.json`) is used; otherwise a short run is trained here.
"""

from __future__ import annotations

import glob
import json
import statistics
import time
from pathlib import Path

from kemdy_tf import stages as stages_lib
from kemdy_tf.config import RunConfig

# The fusion stage and the encoders it starts from, from the stage registry.
STAGES = stages_lib.with_requirements("fusion")


def main_run_f1(workdir: Path) -> dict | None:
    """The fusion model's macro-F1 from a finished run, or None when it has none."""
    report = workdir / "eval_test" / "report.json"
    if report.is_file():
        scores = json.loads(report.read_text(encoding="utf-8"))
        emotion = scores.get("models", {}).get("fusion", {}).get("emotion", {})
        if emotion.get("macro_f1") is not None:
            return {"macro_f1": float(emotion["macro_f1"]), "split": "test", "n": scores.get("n"),
                    "source": str(report)}
    summary = workdir / "fusion" / "summary.json"
    if summary.is_file():
        scores = json.loads(summary.read_text(encoding="utf-8"))
        return {"macro_f1": float(scores["model"]["macro_f1"]), "split": scores.get("split", "val"),
                "n": scores.get("n"), "source": str(summary)}
    return None


def main_run_train_utterances(workdir: Path) -> int | None:
    table = workdir / "table.csv"
    if not table.is_file():
        return None
    import pandas as pd

    return int((pd.read_csv(table, usecols=["split"])["split"] == "train").sum())


def logged_epoch_seconds(stage_dir: Path) -> float | None:
    """Median wall-clock seconds between epoch summaries in a stage's TensorBoard train logs."""
    import tensorflow as tf

    times = []
    for path in sorted(glob.glob(str(stage_dir / "logs" / "train" / "events.out.tfevents.*"))):
        stamps = []
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                if any(v.tag == "epoch_loss" for v in event.summary.value):
                    stamps.append(event.wall_time)
        except Exception:  # a log cut short by an interrupted run: use what was read
            pass
        times += [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(times) if times else None


def epoch_estimate(train_utterances: int, rates: dict[str, float]) -> dict:
    """Seconds per epoch of each stage (utterances / samples per s) and their sum."""
    per_stage = {stage: train_utterances / rate for stage, rate in rates.items()}
    return {"train_utterances": train_utterances, "per_stage_s": per_stage, "total_s": sum(per_stage.values())}


def short_run(data: Path, workdir: Path, cache: Path, config: RunConfig, epochs: int) -> dict:
    """Train audio, text and fusion for `epochs` each (train.py's path); score fusion on the test split."""
    import contextlib
    import io

    import keras
    import numpy as np

    from kemdy_tf import run as run_lib, training
    from kemdy_tf.scoring import classification_metrics

    run = run_lib.prepare_run(workdir, {"data": str(data)}, config, cache_dir=cache)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # train_stage prints its validation summary
        for stage in STAGES:
            training.train_stage(run, stage, epochs=epochs, verbose=0, retrain=True)
    seconds = time.perf_counter() - start
    model = keras.saving.load_model(Path(workdir) / "fusion" / "model.keras", compile=False)
    test = stages_lib.stage_dataset(run, "fusion", "test", training=False, model=model)
    y_true = np.concatenate([y["emotion"].numpy().reshape(-1) for _, y in test]).astype(int)
    y_pred = np.argmax(model.predict(test.map(lambda x, y: x), verbose=0)["emotion"], axis=-1)
    scores = classification_metrics(y_true, y_pred, list(config.data.classes))
    train_utterances = int((run.table["split"] == "train").sum())
    return {"macro_f1": float(scores["macro_f1"]), "split": "test", "n": int(len(y_true)),
            "source": f"short run here: {epochs} epoch(s) per stage on {train_utterances} "
                      "training utterances", "epochs": epochs, "train_s": seconds,
            "train_utterances": train_utterances}


def main_run_epoch_seconds(workdir: Path) -> dict:
    """{stage: median logged seconds per epoch} of a finished run's audio, text and fusion stages."""
    out = {}
    for stage in STAGES:
        if (workdir / stage).is_dir():
            seconds = logged_epoch_seconds(workdir / stage)
            if seconds is not None:
                out[stage] = seconds
    return out
