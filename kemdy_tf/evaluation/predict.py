"""Run a run's models over one split and collect every prediction in one table.

The table is long: one row per (model, utterance). Columns:

    model, segment_id, labels, emotion_true, emotion_pred, prob_<class>...,
    arousal_true, arousal_pred, valence_true, valence_pred

`labels` holds every tied annotation (`happy;neutral`), `emotion_true` the primary
label the model was trained on (`labels.primary_label`). Columns a model does not
predict are empty (NaN). A model that reads both audio and transcript is also run
with the transcript blanked (all token ids 0, the pad id), under the name
`<model>_no_text`: the missing-modality case.
"""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd

# speaker_functionals: each clip's speaker's functional statistics, which make_dataset
# adds under fusion.functionals_speaker_norm; pitch_statistics: fusion.pitch's (the
# classifiers then read them).
MODEL_INPUTS = ("log_mel", "frame_mask", "token_ids", "speaker_functionals", "pitch_statistics")
TARGETS = ("emotion", "arousal", "valence")
NO_TEXT_SUFFIX = "_no_text"


def input_names(model) -> list[str]:
    """The names of a Keras model's inputs (`log_mel`, `frame_mask`, `token_ids`)."""
    return [tensor.name for tensor in model.inputs]


def model_variants(models: typing.Mapping[str, object], blank_variants: bool = True) -> dict[str, tuple[object, bool]]:
    """`{name: (model, blank_transcript)}`: every model, plus `<name>_no_text` for audio+text models."""
    variants = {}
    for name, model in models.items():
        variants[name] = (model, False)
        names = input_names(model)
        if blank_variants and "token_ids" in names and "log_mel" in names:
            variants[name + NO_TEXT_SUFFIX] = (model, True)
    return variants


def predict_split(models: typing.Mapping[str, object], dataset: typing.Iterable,
                  classes: typing.Sequence[str], table: pd.DataFrame | None = None,
                  blank_variants: bool = True) -> pd.DataFrame:
    """Predictions of every model (and no-text variant) on every element of `dataset`.

    Args:
        models: `{name: keras.Model}` with inputs named as in `MODEL_INPUTS` and outputs
            named `emotion` (probabilities over `classes`), `arousal`, `valence`.
        dataset: batches `(features, targets)` as `features.make_dataset(..., with_ids=True)`
            yields: features carry `segment_id`; targets `emotion` (class index),
            `arousal`, `valence`.
        classes: the run's class names (`config.data.classes`).
        table: the split's utterance table; supplies the tied `labels` of each segment.
        blank_variants: also run `<name>_no_text` for the models that read both inputs.

    Returns:
        The long predictions table described in the module docstring, models in the
        order given, utterances in dataset order.

    Raises:
        ValueError: when a model has an input the features lack, an output of unknown
            name, or an emotion output whose width differs from `len(classes)`.
    """
    variants = model_variants(models, blank_variants)
    for name, (model, _) in variants.items():
        missing = [n for n in input_names(model) if n not in MODEL_INPUTS]
        if missing:
            raise ValueError(f"model {name!r} has inputs {missing} that no dataset feature provides "
                             f"(known: {MODEL_INPUTS})")
    columns: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in variants}
    truth: list[dict[str, np.ndarray]] = []
    for features, targets in dataset:
        if "segment_id" not in features:
            raise ValueError("dataset features lack segment_id: build it with with_ids=True")
        batch_truth = {"segment_id": _strings(features["segment_id"])}
        for target in TARGETS:
            if target in targets:
                batch_truth[target] = np.asarray(targets[target]).reshape(len(batch_truth["segment_id"]), -1)[:, 0]
        truth.append(batch_truth)
        for name, (model, blank) in variants.items():
            inputs = _model_inputs(model, features, blank)
            columns[name].append(_named_outputs(model, model.predict_on_batch(inputs), name, len(classes)))
    if not truth:
        raise ValueError("the dataset is empty: nothing to predict")
    truth_frame = _truth_frame(truth, classes, table)
    frames = [_model_frame(name, parts, truth_frame, classes) for name, parts in columns.items()]
    frame = pd.concat(frames, ignore_index=True)
    return frame[[c for c in _column_order(classes) if c in frame]]


def _model_inputs(model, features, blank_transcript: bool):
    """The features in the structure the model was built with (dict, list or one tensor)."""
    def feature(tensor):
        if blank_transcript and tensor.name == "token_ids":
            return np.zeros_like(np.asarray(features["token_ids"]))  # 0 is the pad id
        return features[tensor.name]

    structure = model.input
    if isinstance(structure, dict):
        return {key: feature(tensor) for key, tensor in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [feature(tensor) for tensor in structure]
    return feature(structure)


def _strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


def _named_outputs(model, outputs, name: str, n_classes: int) -> dict[str, np.ndarray]:
    """Any Keras output structure (array, list, dict) as `{output name: array}`."""
    if isinstance(outputs, dict):
        named = dict(outputs)
    elif isinstance(outputs, (list, tuple)):
        named = dict(zip(model.output_names, outputs))
    else:
        named = {model.output_names[0]: outputs}
    unknown = [k for k in named if k not in TARGETS]
    if unknown:
        raise ValueError(f"model {name!r} has outputs {unknown}; expected names among {TARGETS}")
    named = {k: np.asarray(v) for k, v in named.items()}
    if "emotion" in named and named["emotion"].shape[-1] != n_classes:
        raise ValueError(f"model {name!r} predicts {named['emotion'].shape[-1]} emotion classes, "
                         f"the run has {n_classes}")
    return named


def _truth_frame(truth: list[dict[str, np.ndarray]], classes, table) -> pd.DataFrame:
    frame = pd.DataFrame({key: np.concatenate([np.asarray(b[key]) for b in truth])
                          for key in truth[0]})
    if "emotion" in frame:
        index = frame.pop("emotion").astype(int)
        frame["emotion_true"] = [classes[i] for i in index]
    labels = None
    if table is not None and "labels" in table:
        lookup = table.drop_duplicates("segment_id").set_index("segment_id")["labels"]
        labels = frame["segment_id"].map(lookup)
    frame.insert(1, "labels", labels if labels is not None else frame.get("emotion_true"))
    return frame.rename(columns={"arousal": "arousal_true", "valence": "valence_true"})


def _model_frame(name: str, parts: list[dict[str, np.ndarray]], truth: pd.DataFrame, classes) -> pd.DataFrame:
    frame = truth.copy()
    frame.insert(0, "model", name)
    outputs = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if "emotion" in outputs:
        probabilities = outputs["emotion"].reshape(len(frame), len(classes))
        frame["emotion_pred"] = [classes[i] for i in probabilities.argmax(axis=-1)]
        for i, cls in enumerate(classes):
            frame[f"prob_{cls}"] = probabilities[:, i]
    else:
        frame["emotion_pred"] = None
    for target in ("arousal", "valence"):
        frame[f"{target}_pred"] = outputs[target].reshape(len(frame), -1)[:, 0] if target in outputs else np.nan
    return frame[[c for c in _column_order(classes) if c in frame]]


def _column_order(classes) -> list[str]:
    return (["model", "segment_id", "labels", "emotion_true", "emotion_pred"]
            + [f"prob_{c}" for c in classes]
            + ["arousal_true", "arousal_pred", "valence_true", "valence_pred"])
