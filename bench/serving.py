"""How fast the exported SavedModel answers, against Keras' `model.predict` in the same run.

A small-preset run (untrained weights: timing does not depend on them) is exported
with `kemdy_tf.export.export_models`, loaded back with `tf.saved_model.load` the way
`predict.py` and TF Serving load it, and its `serving_default` signature (waveform
and transcript in; log-mel, tokenization and all three models in the graph) is called
at batch 1 on a 5 s clip with a 10-word Korean transcript. The reference is
`fusion.predict` on the same example's precomputed features: the emotion model
alone, without feature extraction, so the ratio is if anything unfair to the export.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bench.machine import percentile, timed_calls
from kemdy_tf.config import RunConfig

# Ten words, as a transcript of a 5 s utterance would have.
TRANSCRIPT = "오늘 아침에 친구와 함께 공원에서 산책을 하면서 즐거운 시간을 보냈어요"


def build_models(config: RunConfig, vocab_size: int) -> dict:
    """Untrained audio encoder, text encoder and a fusion model sharing their backbones."""
    import keras

    from kemdy_tf.models import build_audio_encoder, build_fusion_model, build_text_encoder

    keras.utils.set_random_seed(0)
    audio = build_audio_encoder(config.audio, config.features)
    text = build_text_encoder(config.text, config.features, vocab_size)
    fusion = build_fusion_model(audio.get_layer("audio_backbone"), text.get_layer("text_backbone"),
                                config.fusion, len(config.data.classes))
    return {"audio": audio, "text": text, "fusion": fusion}


def clip(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A speech-like test clip (the synthetic set's voice model)."""
    from kemdy_tf.data.synthetic import synthesize_speech

    return np.asarray(synthesize_speech(np.random.default_rng(seed), seconds, 3.0), np.float32)[
        : int(seconds * sample_rate)]


def measure(config: RunConfig, tokenizer_path, work: Path, *, calls: int, batch: int, batch_calls: int,
            predict_calls: int, seconds: float = 5.0) -> dict:
    """p50/p99 latency at batch 1, throughput at `batch`, and `fusion.predict` for reference."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the SentencePiece ops of serving_default

    from kemdy_tf import export
    from kemdy_tf.data.audio import log_mel
    from kemdy_tf.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_path), config.features.max_tokens)
    models = build_models(config, int(tokenizer.vocabulary_size()))
    start = time.perf_counter()
    version = export.export_models(models["audio"], models["text"], models["fusion"], tokenizer_path, config,
                                   work / "saved", version=1, source="bench (untrained weights)")
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    serve = tf.saved_model.load(str(version)).signatures[export.SERVING_SIGNATURE]
    load_s = time.perf_counter() - start

    wave = clip(seconds, config.features.sample_rate)
    one = {"waveform": tf.constant(wave[np.newaxis]), "waveform_length": tf.constant([len(wave)], tf.int32),
           "text": tf.constant([TRANSCRIPT.encode("utf-8")])}
    many = {"waveform": tf.constant(np.repeat(wave[np.newaxis], batch, axis=0)),
            "waveform_length": tf.constant([len(wave)] * batch, tf.int32),
            "text": tf.constant([TRANSCRIPT.encode("utf-8")] * batch)}

    def call(inputs):
        return lambda: serve(**inputs)["emotion_probs"].numpy()

    latency = timed_calls(call(one), calls, warmup=10)
    batched = timed_calls(call(many), batch_calls, warmup=2)

    features = {"log_mel": log_mel(wave, config.features)[np.newaxis],
                "token_ids": np.asarray(tokenizer([TRANSCRIPT]), np.int32)}
    features["frame_mask"] = np.ones(features["log_mel"].shape[:2], bool)
    fusion = models["fusion"]
    predict = timed_calls(lambda: fusion.predict(features, verbose=0), predict_calls, warmup=3)

    p50 = percentile(latency, 50)
    return {
        "weights": "untrained (random init, seed 0): latency does not depend on them",
        "preset": config.preset, "clip_seconds": seconds, "transcript_words": len(TRANSCRIPT.split()),
        "export_s": export_s, "load_s": load_s, "calls": calls,
        "p50_ms": 1e3 * p50, "p99_ms": 1e3 * percentile(latency, 99), "mean_ms": 1e3 * statistics.mean(latency),
        "batch1_clips_per_s": calls / sum(latency),
        "batch": batch, "batch_calls": batch_calls,
        "batch_clips_per_s": batch * batch_calls / sum(batched),
        "batch_speedup_vs_batch1": (batch * batch_calls / sum(batched)) / (calls / sum(latency)),
        "keras_predict_calls": predict_calls,
        "keras_predict_p50_ms": 1e3 * percentile(predict, 50),
        "speedup_vs_keras_predict": percentile(predict, 50) / p50,
    }
