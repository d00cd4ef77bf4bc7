"""A trained run as a LiteRT (TensorFlow Lite) model for devices.

    python -m kemdy_tf.export --workdir runs/small --litert [--out saved_models/kemdy_litert]

writes `OUT/<version>/` (atomically, like the SavedModel export):

    kemdy.tflite      the fusion model, both encoders and the log-mel front-end
    kemdy_tf.json     class names, the signature, the window and tokenizer settings
    tokenizer.model   the run's SentencePiece model (tokenize on the device)

Signature `serving_default` (batch 1, static shapes):
    inputs  `waveform` float32 [1, window_samples]: mono at the run's sample rate,
            zero padded (or cut) to the model's window (`window_samples`, 262,656
            samples = 16.4 s at the default 512 frames); `waveform_length` int32 [1],
            the real samples; `token_ids` int32 [1, max_tokens]: the transcript's
            SentencePiece ids, cut at max_tokens, padded with 0 (all 0 = no transcript).
    outputs `emotion_probs` float32 [1, classes], `arousal`, `valence` float32 [1].

Why these choices (measured with ai-edge-litert 2.3):
* Static shapes: with a variable number of samples the XNNPACK delegate fails to
  reshape ("failed to prepare"), and without it a BATCH_MATMUL fails to prepare, so
  the front-end returns the whole window (`whole_window=True`), masked past the clip.
* Token ids in, not text: TF Text's SentencePiece ops are not LiteRT builtins (they
  would need the Flex delegate, which ai-edge-litert does not ship). SentencePiece has
  its own small C++ / Android / iOS library; `token_ids` shows what to compute.
* Only builtin ops (`TFLITE_BUILTINS`): the STFT converts to LiteRT's RFFT2D, the
  recurrent layers to WHILE loops.
* float32 weights: no quantization, so the probabilities match Keras (tests: 1e-3).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kemdy_tf import speaker_statistics
from kemdy_tf.config import FeatureConfig, RunConfig
from kemdy_tf.export_folders import ExportError, provenance, versions, write_version
from kemdy_tf.trained_run import TrainedRun

MODEL_FILE = "kemdy.tflite"
METADATA_FILE = "kemdy_tf.json"
TOKENIZER_FILE = "tokenizer.model"
SIGNATURE = "serving_default"
DEFAULT_OUT = "saved_models/kemdy_litert"


def window_samples(features: FeatureConfig) -> int:
    """The `waveform` width of the LiteRT model: the samples of `max_frames` frames."""
    from kemdy_tf.data.audio import samples_for_frames

    return samples_for_frames(features.max_frames, features)


def export_litert(trained: TrainedRun, out: str | os.PathLike = DEFAULT_OUT, version: int | None = None) -> Path:
    """Write a trained run's three Keras models (and the log-mel front-end) as
    `out/<version>/kemdy.tflite`.

    Args: as `kemdy_tf.export.export_models` (an encoder may be None: its output is NaN).

    Returns:
        The new version folder.

    Raises:
        ExportError: the version exists, or the models do not convert to builtin LiteRT ops.
    """
    config = trained.config
    classes = [str(c) for c in config.data.classes]

    fallback = speaker_statistics.for_export(trained)

    def write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(convert(trained.audio, trained.text, trained.fusion, config.features,
                                                  fallback))
        shutil.copyfile(trained.tokenizer_path, folder / TOKENIZER_FILE)
        metadata = _metadata(config, classes, trained.source, untrained=[
            name for name, model in (("arousal", trained.audio), ("valence", trained.text)) if model is None])
        metadata["speaker_statistics"] = {"reads": fallback is not None, "used": (
            "the training split's, pooled (baked in: the device model takes no enrolment)"
            if fallback is not None else None)}
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")

    return write_version(out, version, write)


def convert(audio_encoder, text_encoder, fusion, features: FeatureConfig, speaker_fallback=None) -> bytes:
    """The `.tflite` flatbuffer of the front-end and the three models (signature above);
    models that read speaker statistics get `speaker_fallback` [2, F], a constant.

    Raises:
        ExportError: the converter failed (e.g. an op without a LiteRT builtin).
    """
    import tensorflow as tf

    from kemdy_tf.frontend import waveform_to_log_mel
    from kemdy_tf.inference_graph import InferenceGraph

    models = InferenceGraph(audio_encoder, text_encoder, fusion, features.max_frames)

    @tf.function(input_signature=[
        tf.TensorSpec([1, window_samples(features)], tf.float32, name="waveform"),
        tf.TensorSpec([1], tf.int32, name="waveform_length"),
        tf.TensorSpec([1, features.max_tokens], tf.int32, name="token_ids"),
    ])
    def serve(waveform, waveform_length, token_ids):
        log_mel, frame_count = waveform_to_log_mel(waveform, waveform_length, features, whole_window=True)
        speaker = None if speaker_fallback is None else tf.constant(np.asarray(speaker_fallback)[np.newaxis])
        return models(log_mel, frame_count, token_ids, speaker)

    function = serve.get_concrete_function()
    root = tf.Module()
    root.weights = list(function.variables)  # tracked, so the SavedModel can hold them
    with tempfile.TemporaryDirectory() as saved:
        # Through a SavedModel: the converter keeps its signature (inputs and outputs by name).
        tf.saved_model.save(root, saved, signatures={SIGNATURE: function})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as error:
            raise ExportError(f"the models do not convert to LiteRT builtin ops: {type(error).__name__}: "
                              f"{str(error)[:2000]}") from error


def load(path: str | os.PathLike, threads: int | None = None):
    """`(signature runner, metadata)` of a LiteRT export (a version folder or its base folder).

    Raises:
        ExportError: no `kemdy.tflite` with its `kemdy_tf.json` there.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not (path / MODEL_FILE).is_file() and versions(path):
        path = path / str(versions(path)[-1])
    if not (path / MODEL_FILE).is_file() or not (path / METADATA_FILE).is_file():
        raise ExportError(f"{path} is not a kemdy_tf LiteRT export (no {MODEL_FILE} and {METADATA_FILE}; "
                          "write one with python -m kemdy_tf.export --workdir RUN --litert)")
    metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    interpreter = Interpreter(model_path=str(path / MODEL_FILE), num_threads=threads)
    return interpreter.get_signature_runner(SIGNATURE), metadata


def predict(runner, metadata: dict, waveform: np.ndarray, token_ids: np.ndarray) -> dict:
    """Run one clip: `waveform` float32 [samples] (mono, the run's sample rate), `token_ids`
    int32 [max_tokens]. Clips longer than the window are cut to it, as in training."""
    width = metadata["signature"]["window_samples"]
    waveform = np.asarray(waveform, np.float32)[:width]
    padded = np.zeros((1, width), np.float32)
    padded[0, : len(waveform)] = waveform
    return runner(waveform=padded, waveform_length=np.array([len(waveform)], np.int32),
                  token_ids=np.asarray(token_ids, np.int32).reshape(1, -1))


def token_ids(text: str, tokenizer_path: str | os.PathLike, max_tokens: int) -> np.ndarray:
    """What the device computes for `token_ids`: SentencePiece ids, cut at max_tokens, 0-padded."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    ids = processor.encode(text)[:max_tokens] if text else []
    return np.pad(np.asarray(ids, np.int32), (0, max_tokens - len(ids)))


def _metadata(config: RunConfig, classes, source, untrained) -> dict:
    features = config.features
    return {
        **provenance("kemdy_tf LiteRT export", config, classes, source, untrained),
        "features": config.to_dict()["features"],
        "signature": {
            "name": SIGNATURE,
            "window_samples": window_samples(features),
            "inputs": {
                "waveform": f"float32 [1, {window_samples(features)}]: mono at {features.sample_rate} Hz, "
                            "zero padded to the window",
                "waveform_length": "int32 [1]: real samples",
                "token_ids": f"int32 [1, {features.max_tokens}]: SentencePiece ids of {TOKENIZER_FILE}, "
                             "cut at max_tokens, pad 0",
            },
            "outputs": {
                "emotion_probs": f"float32 [1, {len(classes)}]: softmax over `classes`",
                "arousal": "float32 [1]: 1 (relaxed) .. 5 (aroused)"
                           + ("; always NaN: no arousal labels" if "arousal" in untrained else ""),
                "valence": "float32 [1]: 1 (negative) .. 5 (positive)"
                           + ("; always NaN: no valence labels" if "valence" in untrained else ""),
            },
        },
    }
