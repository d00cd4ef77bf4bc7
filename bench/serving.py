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
    saved = tf.saved_model.load(str(version))
    serve = saved.signatures[export.SERVING_SIGNATURE]
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

    profile = component_latency(models, tokenizer_path, config, wave, serve_features=saved.signatures[
        export.FEATURES_SIGNATURE], features=features, calls=max(calls // 4, 5))
    xla = xla_latency(models, features, calls=max(calls // 4, 5))
    p50 = percentile(latency, 50)
    return {
        "profile_p50_ms": profile, "xla": xla,
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


def component_latency(models: dict, tokenizer_path, config: RunConfig, wave, serve_features, features: dict,
                      calls: int) -> dict:
    """p50 ms at batch 1 of each part of `serving_default`, each in its own tf.function.

    The export calls the fusion model and both encoders; the fusion model holds both
    backbones, so each backbone runs twice per request (the backbone rows show what
    computing them once would save).
    """
    import tensorflow as tf

    from kemdy_tf.frontend import waveform_to_log_mel
    from kemdy_tf.models.tokenizer import load_tokenizer

    waveform = tf.constant(wave[np.newaxis])
    length = tf.constant([len(wave)], tf.int32)
    text = tf.constant([TRANSCRIPT.encode("utf-8")])
    feeds = {k: tf.constant(v) for k, v in features.items()}
    frontend = tf.function(lambda w, n: waveform_to_log_mel(w, n, config.features)[0])
    # As in the export: the SentencePiece resource must be created inside the function.
    tokenize = tf.function(lambda t: load_tokenizer(str(tokenizer_path), config.features.max_tokens)(t))
    parts = {
        "log_mel (in-graph frontend)": lambda: frontend(waveform, length).numpy(),
        "tokenizer": lambda: tokenize(text).numpy(),
        "fusion model": _model_call(models["fusion"], feeds),
        "audio encoder": _model_call(models["audio"], {k: feeds[k] for k in ("log_mel", "frame_mask")}),
        "text encoder": _model_call(models["text"], feeds["token_ids"]),
        # Both also run inside the fusion model: computed twice per request.
        "audio backbone": _model_call(models["audio"].get_layer("audio_backbone"),
                                      {k: feeds[k] for k in ("log_mel", "frame_mask")}),
        "text backbone": _model_call(models["text"].get_layer("text_backbone"), feeds["token_ids"]),
        "features signature (no frontend, no tokenizer)": lambda: serve_features(
            log_mel=feeds["log_mel"], frame_count=tf.constant([features["log_mel"].shape[1]], tf.int32),
            token_ids=feeds["token_ids"])["emotion_probs"].numpy(),
    }
    return {name: 1e3 * percentile(timed_calls(call, calls, warmup=3), 50) for name, call in parts.items()}


def _model_call(model, inputs):
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    return lambda: [t.numpy() for t in tf.nest.flatten(function(inputs))]


def xla_latency(models: dict, features: dict, calls: int, bucket: int = 64) -> dict:
    """The three models at batch 1 in one tf.function, without and with XLA (`jit_compile=True`).

    XLA compiles one program per input shape, so frames are padded to a multiple of
    `bucket` (masked: the models ignore padded frames), which bounds the compilations
    to max_frames / bucket. Outputs are compared with the unpadded graph's.
    """
    import tensorflow as tf

    frames = features["log_mel"].shape[1]
    padded = -(-frames // bucket) * bucket
    extra = padded - frames
    exact = {k: tf.constant(v) for k, v in features.items()}
    bucketed = {"log_mel": tf.pad(exact["log_mel"], [[0, 0], [0, extra], [0, 0]]),
                "frame_mask": tf.pad(exact["frame_mask"], [[0, 0], [0, extra]]), "token_ids": exact["token_ids"]}

    def predict(x):
        return (models["fusion"](x, training=False)["emotion"],
                models["audio"]({"log_mel": x["log_mel"], "frame_mask": x["frame_mask"]}, training=False)["arousal"],
                models["text"](x["token_ids"], training=False)["valence"])

    graph, compiled = tf.function(predict), tf.function(predict, jit_compile=True)
    reference = [t.numpy() for t in graph(exact)]
    start = time.perf_counter()
    outputs = [t.numpy() for t in compiled(bucketed)]
    compile_s = time.perf_counter() - start
    graph_ms = 1e3 * percentile(timed_calls(lambda: [t.numpy() for t in graph(bucketed)], calls, warmup=3), 50)
    xla_ms = 1e3 * percentile(timed_calls(lambda: [t.numpy() for t in compiled(bucketed)], calls, warmup=3), 50)
    return {"frames": frames, "padded_frames": padded, "graph_p50_ms": graph_ms, "xla_p50_ms": xla_ms,
            "speedup": graph_ms / xla_ms, "xla_compile_s": compile_s,
            "max_abs_diff_vs_unpadded_graph": float(max(np.max(np.abs(a - b)) for a, b in zip(outputs, reference)))}
