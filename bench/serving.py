"""How fast the exports answer, against Keras' `model.predict` in the same run.

A run of each preset (untrained weights: timing does not depend on them) is exported
with `kemdy_tf.export.export_models` twice, in plain graph mode (the default) and with
`xla_bucket=32` (`--xla-bucket 32`), loaded back with `tf.saved_model.load` the way
`predict.py` and TF Serving load it, and its `serving_default` signature (waveform
and transcript in; log-mel, tokenization and the models in the graph, each backbone
run once) is called at batch 1 on a 5 s clip with a 10-word Korean transcript. The
LiteRT export (`kemdy_tf.litert`) of the small preset runs the same clip in the
ai-edge-litert interpreter. The reference is `fusion.predict` on the same example's
precomputed features: the emotion model alone, without feature extraction, so the
ratio is if anything unfair to the export. Every export's probabilities are compared
with the Keras model's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bench.machine import percentile, timed_calls
from kemdy_tf.config import RunConfig
from kemdy_tf.trained_run import TrainedRun

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


# name -> xla_bucket: the default export and --xla-bucket 32 (issue 17: 32 pads a 5 s clip's 157
# frames to 160 where 64 padded to 192; docs/benchmarks.md, serving verdict).
EXPORTS = {"graph": None, "xla": 32}


def measure(config: RunConfig, tokenizer_path, work: Path, *, calls: int, batch: int, batch_calls: int,
            predict_calls: int, seconds: float = 5.0, paper_config: RunConfig | None = None, paper_calls: int = 0,
            litert_calls: int = 0) -> dict:
    """p50/p99 latency at batch 1 of each export, throughput at `batch`, and `fusion.predict` for reference."""
    import tensorflow as tf

    from kemdy_tf import export
    from kemdy_tf.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_path), config.features.max_tokens)
    vocabulary = int(tokenizer.vocabulary_size())
    models = build_models(config, vocabulary)
    wave = clip(seconds, config.features.sample_rate)
    example = Example(wave, tokenizer, config)
    exports, serves, predict_p50 = compare_exports(models, tokenizer_path, config, work, example, calls=calls,
                                                   predict_calls=predict_calls)

    many = {k: tf.repeat(v, batch, axis=0) for k, v in example.serving_inputs.items()}
    batch_rates = {}
    for name, serve in serves.items():
        serve(**many)  # an XLA export compiles a program for this batch size first
        batched = timed_calls(lambda: serve(**many)["emotion_probs"].numpy(), batch_calls, warmup=1)
        batch_rates[name] = batch * batch_calls / sum(batched)

    loaded = tf.saved_model.load(exports["graph"]["path"])
    profile = component_latency(models, tokenizer_path, config, wave, serve_features=loaded.signatures[
        export.FEATURES_SIGNATURE], features=example.features, calls=max(calls // 4, 5))
    best = exports["xla"]
    result = {
        "profile_p50_ms": profile, "exports": exports,
        "weights": "untrained (random init, seed 0): latency does not depend on them",
        "preset": config.preset, "clip_seconds": seconds, "transcript_words": len(TRANSCRIPT.split()),
        "calls": calls, "target_export": "xla",
        # The target rows: the fastest export of the small preset (--xla-bucket, EXPORTS["xla"]).
        "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
        "speedup_vs_keras_predict": best["speedup_vs_keras_predict"],
        "keras_predict_calls": predict_calls, "keras_predict_p50_ms": 1e3 * predict_p50,
        "batch": batch, "batch_calls": batch_calls, "batch_clips_per_s": batch_rates,
        "batch1_clips_per_s": {name: 1e3 / e["mean_ms"] for name, e in exports.items()},
    }
    if litert_calls:
        result["litert"] = litert_latency(models, tokenizer_path, config, work / "litert", example, litert_calls)
    if paper_config is not None and paper_calls:
        paper_models = build_models(paper_config, vocabulary)
        paper_example = Example(clip(seconds, paper_config.features.sample_rate), load_tokenizer(
            str(tokenizer_path), paper_config.features.max_tokens), paper_config)
        paper_exports, _, paper_predict = compare_exports(
            paper_models, tokenizer_path, paper_config, work / "paper", paper_example, calls=paper_calls,
            predict_calls=max(paper_calls // 4, 3), warmup=2)
        result["paper"] = {"exports": paper_exports, "keras_predict_p50_ms": 1e3 * paper_predict,
                           "calls": paper_calls}
    return result


class Example:
    """One clip and transcript as each interface takes it."""

    def __init__(self, wave: np.ndarray, tokenizer, config: RunConfig):
        import tensorflow as tf

        from kemdy_tf.data.audio import log_mel

        self.wave = wave
        self.serving_inputs = {"waveform": tf.constant(wave[np.newaxis]),
                               "waveform_length": tf.constant([len(wave)], tf.int32),
                               "text": tf.constant([TRANSCRIPT.encode("utf-8")])}
        self.features = {"log_mel": log_mel(wave, config.features)[np.newaxis],
                         "token_ids": np.asarray(tokenizer([TRANSCRIPT]), np.int32)}
        self.features["frame_mask"] = np.ones(self.features["log_mel"].shape[:2], bool)


def compare_exports(models: dict, tokenizer_path, config: RunConfig, work: Path, example: Example, *, calls: int,
                    predict_calls: int, warmup: int = 10):
    """Each export of `EXPORTS` and `fusion.predict`, timed in turns (one call of each per round,
    `predict` every few rounds), so a neighbour's load falls on all of them alike.

    Returns:
        ({name: figures}, {name: serving signature}, fusion.predict p50 seconds).
    """
    exports, serves = {}, {}
    for name, bucket in EXPORTS.items():
        exports[name], serves[name] = load_export(models, tokenizer_path, config, work / name, example,
                                                  xla_bucket=bucket)
    fusion = models["fusion"]
    functions = {name: (lambda serve=serve: serve(**example.serving_inputs)["emotion_probs"].numpy())
                 for name, serve in serves.items()}
    functions["predict"] = lambda: fusion.predict(example.features, verbose=0)
    times = interleaved_calls(functions, {**{name: calls for name in serves}, "predict": predict_calls}, warmup)
    predict_p50 = percentile(times["predict"], 50)
    for name, figures in exports.items():
        figures.update(calls=calls, p50_ms=1e3 * percentile(times[name], 50),
                       p99_ms=1e3 * percentile(times[name], 99), mean_ms=1e3 * statistics.mean(times[name]))
        figures["speedup_vs_keras_predict"] = predict_p50 / (figures["p50_ms"] / 1e3)
    return exports, serves, predict_p50


def interleaved_calls(functions: dict, repeats: dict, warmup: int) -> dict:
    """{name: seconds of each timed call}: rounds of one call of each function, a function with
    fewer repeats called every few rounds; `warmup` untimed calls of each first."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    rounds = max(repeats.values())
    times = {name: [] for name in functions}
    for index in range(rounds):
        for name, function in functions.items():
            if index % max(rounds // repeats[name], 1) == 0 and len(times[name]) < repeats[name]:
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    return times


def load_export(models: dict, tokenizer_path, config: RunConfig, out: Path, example: Example, *,
                xla_bucket: int | None):
    """Export, load and call once (an XLA export compiles then): (figures, the serving signature)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the SentencePiece ops of serving_default

    from kemdy_tf import export

    start = time.perf_counter()
    trained = TrainedRun(config, tokenizer_path, models, source="bench (untrained weights)")
    version = export.export_models(trained, out, version=1, xla_bucket=xla_bucket)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    serve = tf.saved_model.load(str(version)).signatures[export.SERVING_SIGNATURE]
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    probs = serve(**example.serving_inputs)["emotion_probs"].numpy()
    first_s = time.perf_counter() - start
    reference = np.asarray(models["fusion"](example.features, training=False)["emotion"])
    return {"path": str(version), "xla_bucket": xla_bucket, "export_s": export_s, "load_s": load_s,
            "first_call_s": first_s, "max_abs_diff_vs_keras": float(np.max(np.abs(probs - reference)))}, serve


def litert_latency(models: dict, tokenizer_path, config: RunConfig, out: Path, example: Example, calls: int) -> dict:
    """The LiteRT export: file size, conversion time, p50/p99 at batch 1 in the interpreter."""
    from kemdy_tf import litert

    start = time.perf_counter()
    version = litert.export_litert(TrainedRun(config, tokenizer_path, models), out)
    convert_s = time.perf_counter() - start
    runner, metadata = litert.load(version)
    ids = example.features["token_ids"][0]
    probs = litert.predict(runner, metadata, example.wave, ids)["emotion_probs"]
    latency = timed_calls(lambda: litert.predict(runner, metadata, example.wave, ids), calls, warmup=3)
    reference = np.asarray(models["fusion"](example.features, training=False)["emotion"])
    return {"bytes": (version / litert.MODEL_FILE).stat().st_size, "convert_s": convert_s, "calls": calls,
            "window_frames": config.features.max_frames,
            "p50_ms": 1e3 * percentile(latency, 50), "p99_ms": 1e3 * percentile(latency, 99),
            "max_abs_diff_vs_keras": float(np.max(np.abs(probs - reference)))}


def component_latency(models: dict, tokenizer_path, config: RunConfig, wave, serve_features, features: dict,
                      calls: int) -> dict:
    """p50 ms at batch 1 of each part of the graph-mode `serving_default`, each in its own tf.function.

    The export runs each backbone once and the three heads after it
    (`kemdy_tf.inference_graph`); the whole models are timed for comparison.
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
        "audio backbone": _model_call(models["audio"].get_layer("audio_backbone"),
                                      {k: feeds[k] for k in ("log_mel", "frame_mask")}),
        "text backbone": _model_call(models["text"].get_layer("text_backbone"), feeds["token_ids"]),
        "features signature, graph mode (no frontend, no tokenizer)": lambda: serve_features(
            log_mel=feeds["log_mel"], frame_count=tf.constant([features["log_mel"].shape[1]], tf.int32),
            token_ids=feeds["token_ids"])["emotion_probs"].numpy(),
    }
    parts.update(xla_parts(models, tokenizer_path, config, waveform, length, text, EXPORTS["xla"]))
    return {name: 1e3 * percentile(timed_calls(call, calls, warmup=3), 50) for name, call in parts.items()}


def xla_parts(models: dict, tokenizer_path, config: RunConfig, waveform, length, text, bucket: int) -> dict:
    """The parts of the `--xla-bucket` export's `serving_default`, each called on its own:
    the XLA log-mel, the tokenizer, the audio stem (graph mode, real frames), the text
    backbone's XLA program and the XLA program of everything else."""
    import tensorflow as tf

    from kemdy_tf.frontend import bucketed_log_mel
    from kemdy_tf.inference_graph import AUDIO_BACKBONE, InferenceGraph
    from kemdy_tf.models.tokenizer import load_tokenizer

    graph = InferenceGraph(models["audio"], models["text"], models["fusion"], config.features.max_frames,
                           xla_bucket=bucket)
    frontend = tf.function(lambda w, n: bucketed_log_mel(w, n, config.features, bucket))
    tokenize = tf.function(lambda t: load_tokenizer(str(tokenizer_path), config.features.max_tokens)(t))
    log_mel, frames = frontend(waveform, length)
    ids = tokenize(text)
    padded = -(-int(log_mel.shape[1]) // bucket) * bucket
    mask = tf.range(log_mel.shape[1])[tf.newaxis] < frames[:, tf.newaxis]
    backbone = graph.fusion.backbones[AUDIO_BACKBONE]
    stem = graph.stems.get(id(backbone), (None,))[0]
    if stem is None:
        return {}
    stem_call = tf.function(lambda x, m: stem({"log_mel": x, "frame_mask": m}, training=False))
    stems = {id(backbone): tf.pad(stem_call(log_mel, mask), [[0, 0], [0, padded - log_mel.shape[1]], [0, 0]])}
    ready = {key: program(ids) for key, program in graph.text_programs.items()}
    padded_mel = tf.pad(log_mel, [[0, 0], [0, padded - log_mel.shape[1]], [0, 0]])
    padded_mask = tf.range(padded)[tf.newaxis] < frames[:, tf.newaxis]
    whole = tf.function(lambda w, n, t: graph(*frontend(w, n), tokenize(t)))
    label = f"--xla-bucket {bucket}:"
    return {
        f"{label} log_mel (XLA)": lambda: frontend(waveform, length)[0].numpy(),
        f"{label} audio stem, graph mode (convolutions + frame projection)": lambda: stem_call(log_mel, mask).numpy(),
        f"{label} text backbone (XLA)": lambda: [program(ids).numpy() for program in graph.text_programs.values()],
        f"{label} rest of the models (XLA)": lambda: [t.numpy() for t in tf.nest.flatten(graph._models(
            padded_mel, padded_mask, ids, stems, ready, {}))],
        f"{label} all of it in one tf.function (no signature call)": lambda: [
            t.numpy() for t in tf.nest.flatten(whole(waveform, length, text))],
    }


def _model_call(model, inputs):
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    return lambda: [t.numpy() for t in tf.nest.flatten(function(inputs))]
