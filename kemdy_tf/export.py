"""A trained run as one SavedModel in TF Serving's layout: `saved_models/kemdy/<version>/`.

    python -m kemdy_tf.export --workdir runs/small [--out saved_models/kemdy] [--version N]
    python -m kemdy_tf.export --workdir runs/small --litert   # LiteRT for devices: kemdy_tf/litert.py

One SavedModel holds the three models of a run (fusion -> emotion, audio encoder ->
arousal, text encoder -> valence) behind two signatures:

`serving_default` (raw input; log-mel and tokenization in the graph)
    inputs  `waveform` float32 [batch, samples], mono at the run's sample rate (16 kHz),
            padded to a common length; `waveform_length` int32 [batch], the real
            samples of each clip; `text` string [batch], UTF-8 transcripts ("" = none).
`features` (precomputed input; no TF Text op, see below)
    inputs  `log_mel` float32 [batch, frames, n_mels] (as `kemdy_tf.data.audio.log_mel`),
            `frame_count` int32 [batch], `token_ids` int32 [batch, max_tokens] (pad 0).
Both return `emotion_probs` float32 [batch, classes], `emotion` string [batch] (the
most probable class name), `arousal` and `valence` float32 [batch] (1..5 scale).

`assets/kemdy_tf.json` (class names, preset, feature and log-mel settings, signature
descriptions) and `assets/tokenizer.model` (the SentencePiece model; a run on a
pretrained text backbone has `tokenizer.json` and its vocabulary file instead) travel
with it, so a client needs nothing else. A run on pretrained backbones
(docs/backbones.md) runs their tokenizer and audio converter in `serving_default`
(`serving_front_end`).

Design notes:
* Written with `tf.saved_model.save` of a plain trackable, the object
  `keras.export.ExportArchive` builds, minus its double bookkeeping: ExportArchive
  tracks the Keras variable wrappers *and* the `tf.Variable`s its endpoints capture,
  so every weight is written twice (keras-team/keras#23553). Here only the captured
  `tf.Variable`s are tracked, each once. `saved_variable_bytes` measures it.
* The SentencePiece resource is created inside the `serving_default` function (the
  keras-hub tokenizer is built while tracing), so no TF Text op sits in the main graph
  or in `features`. TF still registers every function of a SavedModel at load time,
  so loading this SavedModel needs `import tensorflow_text` (stock TF Serving has TF
  Text ops built in). Where TF Text is missing, `features_only=True` writes a
  SavedModel with only the `features` signature, loadable by bare TensorFlow.
* Each backbone runs once per request, its sequence feeding the fusion head and its
  encoder's head (`kemdy_tf.inference_graph`); `xla_bucket` (`--xla-bucket 32`)
  compiles the log-mel and the models with XLA on frames padded to buckets, keeping the
  audio convolution stem in graph mode. The metadata records each (`inference`).
* Atomic: the SavedModel is written to a hidden temporary folder next to the target
  and renamed into place, so TF Serving (which polls the base folder) never sees a
  partial version and an interrupted export leaves no version folder. An existing
  version is never overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import typing
from pathlib import Path

import numpy as np

from kemdy_tf import run as run_lib, speaker_statistics, stages as stages_lib
from kemdy_tf.config import RunConfig
from kemdy_tf.export_folders import ExportError, next_version, provenance, versions, write_version  # noqa: F401  (re-exported)
from kemdy_tf.trained_run import TrainedRun, trained_run_of

SERVING_SIGNATURE = "serving_default"
FEATURES_SIGNATURE = "features"
# Models that standardise their functionals per speaker (kemdy_tf.speaker_statistics) get
# the same two signatures with a `speaker_functionals` input, and the enrolment signature.
SERVING_SPEAKER_SIGNATURE = "serving_speaker"
FEATURES_SPEAKER_SIGNATURE = "features_speaker"
ENROL_SIGNATURE = "speaker_statistics"
METADATA_ASSET = "kemdy_tf.json"
TOKENIZER_ASSET = "tokenizer.model"
# The registered stages (kemdy_tf.stages) the SavedModel is made of: the fusion stage and
# the encoders it requires (audio -> arousal, text -> valence, fusion -> emotion).
EXPORTED_STAGE = "fusion"
# With xla_bucket: the seed log-mel is compiled by XLA too (frontend.bucketed_log_mel).
XLA_FRONTEND = True


def find_export(path: str | os.PathLike) -> Path:
    """The version folder to load: `path` itself if it holds a SavedModel, else its highest version.

    Raises:
        ExportError: `path` is neither a version folder nor a base folder with one.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        raise ExportError(f"{path} does not exist (expected an export folder such as saved_models/kemdy)")
    for number in reversed(versions(path)):
        if (path / str(number) / "saved_model.pb").is_file():
            return path / str(number)
    raise ExportError(
        f"{path} is not a kemdy_tf export: no saved_model.pb in it and no numbered version "
        "folder holding one (export a run with python -m kemdy_tf.export --workdir RUN)")


def read_metadata(export_dir: str | os.PathLike) -> dict:
    """`assets/kemdy_tf.json` of a version folder (class names, feature settings, ...).

    Raises:
        ExportError: the file is missing or not valid JSON.
    """
    path = Path(export_dir) / "assets" / METADATA_ASSET
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{export_dir} is a SavedModel but not a kemdy_tf export (no assets/{METADATA_ASSET})") from None
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {path}: {error}") from None


# === Export ===


def export_run(
    workdir: str | os.PathLike,
    out: str | os.PathLike = "saved_models/kemdy",
    version: int | None = None,
    features_only: bool = False,
    xla_bucket: int | None = None,
) -> Path:
    """Export a trained run (`audio/`, `text/`, `fusion/` model.keras, tokenizer.model, run.json).

    Args:
        workdir: the run's folder (layout in docs/architecture.md).
        out: the base folder; the SavedModel goes to `out/<version>/`.
        version: version number; default the next free one.
        features_only: write only the `features` signature (no TF Text op anywhere).
        xla_bucket: compile the models with XLA, frames padded to a multiple of this
            (see `kemdy_tf.inference_graph`); the TF Serving binary then needs
            `--xla_cpu_compilation_enabled=true`. None: plain graph mode.

    Returns:
        The new version folder.

    Raises:
        ExportError: a run file is missing or unreadable, or the version exists.
    """
    return export_models(load_served_run(workdir), out, version=version, features_only=features_only,
                         xla_bucket=xla_bucket)


def load_served_run(workdir: str | os.PathLike) -> TrainedRun:
    """The run's fusion model and the encoders it requires, as an export needs them
    (`trained_run.load_trained_run`; an encoder is None when its model is absent and the
    corpus has no ratings for it).

    Raises:
        ExportError: a run file is missing or unreadable, or the run cannot be served.
    """
    workdir = Path(workdir)
    try:  # read-only: the export needs the config, the tokenizer and three models
        run = run_lib.open_run(workdir, with_features=False)
        refuse_unservable(run.config, workdir)
        trained = trained_run_of(run, stages_lib.with_requirements(EXPORTED_STAGE))
    except run_lib.RunError as error:
        raise ExportError(str(error)) from None
    if "pitch_statistics" in {t.name for t in trained.fusion.inputs}:  # functionals_in_fusion=auto decided "true"
        config = dataclasses.replace(run.config, fusion=dataclasses.replace(run.config.fusion,
                                                                            functionals_in_fusion="true"))
        refuse_unservable(config, workdir)
    return trained


def refuse_unservable(config: RunConfig, workdir) -> None:
    """ExportError when the run's models read something a served clip does not carry."""
    if config.features.speaker_norm:
        # The models saw log-mels normalised with each speaker's statistics; a served
        # clip has no speaker statistics, so in-graph features would not match training.
        raise ExportError(f"{workdir} was trained with features.speaker_norm=true; the SavedModel "
                          "cannot normalise an unknown speaker, so this run cannot be exported")
    if config.fusion.functionals and config.fusion.pitch and str(config.fusion.functionals_in_fusion) == "true":
        raise ExportError(f"{workdir} was trained with fusion.pitch=true; its models read pitch statistics "
                          "that the data pipeline tracks (librosa's YIN) and the SavedModel's in-graph front end "
                          "does not compute, so this run cannot be exported (retrain with fusion.pitch=false)")


def export_models(
    trained: TrainedRun,
    out: str | os.PathLike,
    version: int | None = None,
    features_only: bool = False,
    xla_bucket: int | None = None,
) -> Path:
    """Write a trained run's three Keras models as one SavedModel version under `out` (atomically).

    Args:
        trained: the models (`audio`: log_mel, frame_mask -> {"arousal": [B, 1]}; `text`:
            token_ids -> {"valence": [B, 1]}; `fusion`: log_mel, frame_mask, token_ids ->
            {"emotion": [B, classes]}), the run's config and tokenizer (its SentencePiece
            model, or its backbone tokenizer folder), the audio backbone's front end (None:
            the seed's log-mel) and their source, recorded in the metadata.
        out: base folder.
        version: version number; default the next free one.
        features_only: only the `features` signature (see the module docstring).
        xla_bucket: XLA with frames padded to a multiple of this (see `export_run`).

    Returns:
        The new version folder `out/<version>`.

    Raises:
        ExportError: the version exists, or the fusion model's classes differ from the config's.
    """
    import tensorflow as tf

    def write(folder: Path) -> None:
        with tempfile.TemporaryDirectory() as staging:
            root, signatures = build_serving_module(trained, staging=Path(staging), features_only=features_only,
                                                    xla_bucket=xla_bucket)
            tf.saved_model.save(root, str(folder), signatures=signatures)
        _check_written(folder)

    return write_version(out, version, write)


def build_serving_module(trained: TrainedRun, staging: Path, features_only: bool = False,
                         xla_bucket: int | None = None):
    """The trackable to save and its signatures `{name: concrete function}`.

    `staging` is a folder for the asset files until `tf.saved_model.save` copies them.
    """
    import tensorflow as tf

    from kemdy_tf.inference_graph import InferenceGraph

    audio_encoder, text_encoder, fusion = trained.audio, trained.text, trained.fusion
    config, audio_front_end, source = trained.config, trained.audio_front_end, trained.source

    front = serving_front_end(config, trained.tokenizer_path, audio_front_end, xla_bucket=xla_bucket)
    features = config.features
    classes = [str(c) for c in config.data.classes]
    n_classes = _output_width(fusion, "emotion")
    if n_classes != len(classes):
        raise ExportError(f"the fusion model predicts {n_classes} classes, the run config names "
                          f"{len(classes)}: {classes}")
    class_names = tf.constant(classes)
    models = InferenceGraph(audio_encoder, text_encoder, fusion, features.max_frames, xla_bucket=xla_bucket)
    fallback = speaker_statistics.for_export(trained)

    def predict(log_mel, frame_count, token_ids, speaker_functionals=None):
        if fallback is not None and speaker_functionals is None:  # not enrolled: the training split's
            speaker_functionals = tf.tile(tf.constant(fallback)[tf.newaxis], [tf.shape(log_mel)[0], 1, 1])
        outputs = models(log_mel, frame_count, token_ids, speaker_functionals)
        return {**outputs, "emotion": tf.gather(class_names, tf.argmax(outputs["emotion_probs"], axis=-1))}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, features.n_mels], tf.float32, name="log_mel"),
        tf.TensorSpec([None], tf.int32, name="frame_count"),
        tf.TensorSpec([None, features.max_tokens], tf.int32, name="token_ids"),
    ])
    def features_fn(log_mel, frame_count, token_ids):
        return predict(log_mel, frame_count, token_ids)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int32, name="waveform_length"),
        tf.TensorSpec([None], tf.string, name="text"),
    ])
    def serving_fn(waveform, waveform_length, text):
        log_mel, frame_count = front.audio(waveform, waveform_length)
        # Built while tracing, so its SentencePiece resource lives inside this function only.
        tokenizer = front.tokenizer()
        return predict(log_mel, frame_count, tokenizer(text))

    signatures = {FEATURES_SIGNATURE: features_fn.get_concrete_function()}
    if not features_only:
        signatures[SERVING_SIGNATURE] = serving_fn.get_concrete_function()
    if fallback is not None:
        signatures.update(_speaker_signatures(fusion, front, features, predict, fallback, features_only))

    untrained = [name for name, encoder in (("arousal", audio_encoder), ("valence", text_encoder)) if encoder is None]
    metadata = _metadata(config, classes, front, features_only, source, untrained,
                         None if fallback is None else fallback.shape[-1])
    metadata["inference"] = {"xla_bucket": xla_bucket, "backbone_run_once": models.shared,
                             "stem_outside_xla": bool(models.stems), "text_program": bool(models.text_programs),
                             "token_bucket": models.token_bucket,
                             "log_mel_xla": bool(xla_bucket and XLA_FRONTEND and audio_front_end is None)}
    (staging / METADATA_ASSET).write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")
    for name, path in front.assets.items():
        shutil.copyfile(path, staging / name)

    root = tf.__internal__.tracking.AutoTrackable()
    # Each captured tf.Variable once (ExportArchive's attribute names, so
    # keras.layers.TFSMLayer finds them), never the Keras wrappers as well.
    captured = _unique(v for fn in signatures.values() for v in fn.variables)
    root.variables = captured
    root.trainable_variables = [v for v in captured if v.trainable]
    root.non_trainable_variables = [v for v in captured if not v.trainable]
    root.metadata_file = tf.saved_model.Asset(str(staging / METADATA_ASSET))
    root.tokenizer_files = [tf.saved_model.Asset(str(staging / name)) for name in front.assets]
    # The functions are saved as signatures only: attached as attributes too, TF
    # would trace and store each a second time.
    return root, signatures


def saved_variable_bytes(export_dir: str | os.PathLike) -> int:
    """Bytes of the tensors stored in a SavedModel's variables checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(Path(export_dir) / "variables" / "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return sum(
        int(np.prod(shape, dtype=np.int64)) * dtypes[name].size
        for name, shape in shapes.items() if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    )


def weight_bytes(*models) -> int:
    """Bytes of the distinct weights of Keras models (a weight shared by two models counts once)."""
    seen = {}
    for model in models:
        for weight in model.weights:
            seen[id(getattr(weight, "value", weight))] = weight
    return sum(int(np.prod(w.shape, dtype=np.int64)) * np.dtype(w.dtype).itemsize for w in seen.values())


# === Speaker statistics (kemdy_tf.speaker_statistics) ===


def _speaker_signatures(fusion, front, features, predict, fallback, features_only: bool) -> dict:
    """`features_speaker` and `serving_speaker` (the models with a speaker's statistics) and
    `speaker_statistics` (one speaker's clips -> their statistics, the fallback below 2 clips)."""
    import tensorflow as tf

    width = fallback.shape[-1]
    stats_spec = tf.TensorSpec([None, 2, width], tf.float32, name="speaker_functionals")
    functionals = _nested_layer(fusion, "utterance_functionals")  # the fusion model's or its audio expert's

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, features.n_mels], tf.float32, name="log_mel"),
        tf.TensorSpec([None], tf.int32, name="frame_count"),
        tf.TensorSpec([None, features.max_tokens], tf.int32, name="token_ids"),
        stats_spec,
    ])
    def features_speaker_fn(log_mel, frame_count, token_ids, speaker_functionals):
        return predict(log_mel, frame_count, token_ids, speaker_functionals)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int32, name="waveform_length"),
        tf.TensorSpec([None], tf.string, name="text"),
        stats_spec,
    ])
    def serving_speaker_fn(waveform, waveform_length, text, speaker_functionals):
        log_mel, frame_count = front.audio(waveform, waveform_length)
        return predict(log_mel, frame_count, front.tokenizer()(text), speaker_functionals)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int32, name="waveform_length"),
    ])
    def enrol_fn(waveform, waveform_length):
        # The model's own functionals of each clip (its first max_frames frames), then their
        # mean and floored deviation over the clips, as the data pipeline computes them.
        log_mel, frame_count = front.audio(waveform, waveform_length)
        log_mel = log_mel[:, : features.max_frames]
        frame_mask = tf.range(tf.shape(log_mel)[1])[tf.newaxis, :] < frame_count[:, tf.newaxis]
        rows = tf.cast(functionals(log_mel, frame_mask), tf.float64)
        mean = tf.reduce_mean(rows, axis=0)
        std = tf.maximum(tf.sqrt(tf.reduce_mean(tf.square(rows - mean), axis=0)), speaker_statistics.MIN_STD)
        clips = tf.shape(rows)[0]
        enrolled = tf.cast(tf.stack([mean, std]), tf.float32)
        return {"speaker_functionals": tf.where(clips >= 2, enrolled, tf.constant(fallback)),
                "clips": clips, "enrolled": clips >= 2}

    signatures = {FEATURES_SPEAKER_SIGNATURE: features_speaker_fn.get_concrete_function(),
                  ENROL_SIGNATURE: enrol_fn.get_concrete_function()}
    if not features_only:
        signatures[SERVING_SPEAKER_SIGNATURE] = serving_speaker_fn.get_concrete_function()
    return signatures


# === Helpers ===


def _nested_layer(model, name: str):
    """The first layer called `name` in `model` or in the models nested in it (depth first)."""
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            try:
                return _nested_layer(layer, name)
            except ValueError:
                continue
    raise ValueError(f"{model.name} holds no layer {name!r}")


def _output_width(model, output: str) -> int:
    spec = model.output
    spec = spec[output] if isinstance(spec, dict) else spec
    return int(spec.shape[-1])


def _unique(variables) -> list:
    seen = {}
    for variable in variables:
        seen.setdefault(id(variable), variable)
    return list(seen.values())


def _metadata(config: RunConfig, classes, front, features_only, source, untrained=(),
              speaker_width: int | None = None) -> dict:
    features = config.features
    numeric_outputs = {
        "emotion_probs": f"float32 [batch, {len(classes)}]: softmax over `classes`",
        "emotion": "string [batch]: the most probable class name",
        "arousal": "float32 [batch]: 1 (relaxed) .. 5 (aroused), from the audio encoder",
        "valence": "float32 [batch]: 1 (negative) .. 5 (positive), from the text encoder",
    }
    for name in untrained:
        numeric_outputs[name] = f"float32 [batch]: always NaN: the training data had no {name} labels"
    signatures = {
        FEATURES_SIGNATURE: {
            "inputs": {
                "log_mel": f"float32 [batch, frames <= {features.max_frames}, {features.n_mels}]: "
                           f"{front.log_mel_doc}, zero padded",
                "frame_count": "int32 [batch]: real frames per clip",
                "token_ids": f"int32 [batch, {features.max_tokens}]: {front.token_ids_doc}, pad 0",
            },
            "outputs": numeric_outputs,
        },
    }
    if not features_only:
        signatures[SERVING_SIGNATURE] = {
            "inputs": {
                "waveform": f"float32 [batch, samples]: mono at {features.sample_rate} Hz, padded",
                "waveform_length": "int32 [batch]: real samples per clip",
                "text": "string [batch]: UTF-8 transcript, empty for none",
            },
            "outputs": numeric_outputs,
            "needs": "TF Text ops (import tensorflow_text before tf.saved_model.load)",
        }
    speaker = {"reads": False}
    if speaker_width is not None:
        from kemdy_tf.speaker_statistics import MIN_CLIPS

        stats_doc = (f"float32 [batch, 2, {speaker_width}]: each clip's speaker's mean (row 0) and standard "
                     f"deviation (row 1) of the utterance functionals, from the `{ENROL_SIGNATURE}` signature")
        for name, base in ((FEATURES_SPEAKER_SIGNATURE, FEATURES_SIGNATURE), (SERVING_SPEAKER_SIGNATURE, SERVING_SIGNATURE)):
            if base in signatures:
                signatures[name] = {**signatures[base], "inputs": {**signatures[base]["inputs"],
                                                                   "speaker_functionals": stats_doc}}
        signatures[ENROL_SIGNATURE] = {
            "inputs": {"waveform": f"float32 [clips, samples]: clips of ONE speaker, mono at {features.sample_rate} Hz",
                       "waveform_length": "int32 [clips]: real samples per clip"},
            "outputs": {"speaker_functionals": f"float32 [2, {speaker_width}]: the speaker's statistics "
                                               "(the training split's below 2 clips)",
                        "clips": "int32: clips used", "enrolled": "bool: false when the fallback was returned"},
        }
        speaker = {"reads": True, "width": speaker_width, "min_clips": MIN_CLIPS,
                   "fallback": "the training split's statistics, pooled over its clips: used by the "
                               "signatures without speaker_functionals (a clip of no enrolled speaker)"}
    return {
        **provenance("kemdy_tf export", config, classes, source, untrained),
        "speaker_statistics": speaker,
        "features": {**config.to_dict()["features"], "log_mel": front.log_mel_settings},
        "window_seconds": features.max_frames * features.hop_length / features.sample_rate,
        "tokenizer": front.tokenizer_metadata,
        "backbones": {"audio": config.audio.backbone, "text": config.text.backbone},
        "signatures": signatures,
    }


def _check_written(folder: Path) -> None:
    missing = [name for name in ("saved_model.pb", "variables", f"assets/{METADATA_ASSET}")
               if not (folder / name).exists()]
    missing += [f"assets/{name}" for name in read_metadata(folder)["tokenizer"]["assets"]
                if not (folder / "assets" / name).exists()] if not missing else []
    if missing:
        raise ExportError(f"the SavedModel written to {folder} lacks {missing}")


# === Front ends: raw audio and text -> model inputs, in the serving graph ===


class ServingFrontEnd(typing.NamedTuple):
    """What `serving_default` runs before the models, and how the export describes it.

    `audio(waveform, waveform_length) -> (log_mel, frame_count)` and `tokenizer()` (built
    while tracing) are the same front ends training used: the seed's log-mel and
    SentencePiece model, or a pretrained backbone's converter and tokenizer.
    """

    audio: typing.Callable
    tokenizer: typing.Callable
    log_mel_settings: dict
    log_mel_doc: str
    token_ids_doc: str
    tokenizer_metadata: dict
    assets: dict  # asset file name -> source file


def serving_front_end(config: RunConfig, tokenizer_path, audio_front_end=None,
                      xla_bucket: int | None = None) -> ServingFrontEnd:
    """The run's front ends (`audio_front_end`: `Run.audio_front_end()`; None: the seed log-mel,
    compiled with XLA on frames padded to multiples of `xla_bucket` when given)."""
    from kemdy_tf.frontend import bucketed_log_mel, check_recipe, waveform_to_log_mel
    from kemdy_tf.models.tokenizer import PRESET_TOKENIZER_CONFIG, load_run_tokenizer

    features, tokenizer_path = config.features, Path(tokenizer_path)
    tokenizer = load_run_tokenizer(tokenizer_path, features.max_tokens)
    if tokenizer_path.is_dir():  # a backbone's own tokenizer: its config and vocabulary files
        assets = {PRESET_TOKENIZER_CONFIG: tokenizer_path / PRESET_TOKENIZER_CONFIG,
                  **{p.name: p for p in sorted((tokenizer_path / "assets").iterdir())}}
        kind = f"{type(tokenizer.tokenizer).__name__} ids (the backbone's, its pad id {tokenizer.pad_id} traded with 0)"
        backbone_pad = {"backbone": config.text.backbone, "backbone_pad_id": tokenizer.pad_id}
    else:
        assets, kind, backbone_pad = {TOKENIZER_ASSET: tokenizer_path}, "SentencePiece ids", {}
    tokenizer_metadata = {"assets": list(assets), "max_tokens": features.max_tokens,
                          "vocabulary_size": tokenizer.vocabulary_size(), "pad_id": 0, **backbone_pad}
    if audio_front_end is None:
        return ServingFrontEnd(
            (lambda wave, length: bucketed_log_mel(wave, length, features, xla_bucket)) if xla_bucket and XLA_FRONTEND
            else (lambda wave, length: waveform_to_log_mel(wave, length, features)),
            lambda: load_run_tokenizer(tokenizer_path, features.max_tokens),
            check_recipe(features), "kemdy_tf.data.audio.log_mel", kind, tokenizer_metadata, assets)
    return ServingFrontEnd(
        audio_front_end.in_graph, lambda: load_run_tokenizer(tokenizer_path, features.max_tokens),
        audio_front_end.settings, f"{audio_front_end.settings['front_end']} features ({config.audio.backbone})", kind, tokenizer_metadata, assets)


# === Command line ===


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kemdy_tf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="a trained run's folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="base folder of the versions (default saved_models/kemdy, with --litert "
                             "saved_models/kemdy_litert)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    parser.add_argument("--features-only", action="store_true",
                        help="only the `features` signature: no TF Text op, loads without tensorflow_text")
    parser.add_argument("--xla-bucket", type=int, default=None, metavar="FRAMES",
                        help="compile the models with XLA, frames padded to a multiple of FRAMES (e.g. 64); "
                             "TF Serving then needs --xla_cpu_compilation_enabled=true (docs/serving.md)")
    parser.add_argument("--litert", action="store_true",
                        help="write a LiteRT (.tflite) model for devices instead (kemdy_tf/litert.py)")
    args = parser.parse_args(argv)
    try:
        if args.litert:
            from kemdy_tf import litert

            if args.features_only or args.xla_bucket:
                raise ExportError("--litert takes neither --features-only nor --xla-bucket")
            trained = load_served_run(args.workdir)
            if trained.audio_front_end is not None or trained.config.text.backbone:
                raise ExportError("--litert supports the from-scratch seed models only, not pretrained backbones")
            target = litert.export_litert(trained, args.out or litert.DEFAULT_OUT, args.version)
            print(f"exported {args.workdir} to {target / litert.MODEL_FILE} "
                  f"({(target / litert.MODEL_FILE).stat().st_size:,} bytes)")
            return 0
        target = export_run(args.workdir, args.out or Path("saved_models/kemdy"), args.version,
                            features_only=args.features_only, xla_bucket=args.xla_bucket)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.workdir} to {target} (variables: {saved_variable_bytes(target):,} bytes)")
    return 0


if __name__ == "__main__":
    from kemdy_tf.logs import quiet_logs

    quiet_logs()
    sys.exit(main())
