"""Each supported pretrained backbone at its real size: parameters, a CPU training step, serving latency.

    nice -n 10 python -m bench.backbones                  # every row (minutes on 2 cores)
    nice -n 10 python -m bench.backbones --only whisper_tiny_multi xlm_roberta_base_multi seed_small

No download: each keras-hub backbone is built from its preset's config values with
random weights (the same shapes, so the same cost); the parameter count is checked
against keras-hub's own preset metadata. Each row wraps the backbone the way a run
does (`models.backbones.wrap_*_backbone`) inside its stage's encoder (`text` ->
valence, `audio` -> arousal), and measures

* params: the project's backbone (Whisper: its encoder only; the decoder is left out),
* train step: one `train_on_batch` at `--train-batch` (median of `--steps`), frozen
  backbone (the fusion default) and unfrozen (`--unfreeze`),
* serve: one batch-1 call of the encoder in a `tf.function` (inference), with the
  audio converter in the graph for Whisper (a `--seconds` clip) and `--tokens` token
  ids for text (the tokenizer, a string lookup, is not timed: its real vocabulary
  needs the download).

The seed architectures (`small`, `paper` presets) are the last rows, for scale.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import numpy as np

# keras-hub preset -> (backbone class, config values of the real preset, params in keras-hub's metadata)
TEXT_PRESETS = {
    "xlm_roberta_base_multi": ("XLMRobertaBackbone", dict(
        vocabulary_size=250002, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
        max_sequence_length=512), 277450752),
    "bert_base_multi": ("BertBackbone", dict(
        vocabulary_size=119547, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
        max_sequence_length=512, num_segments=2), 177853440),
    "distil_bert_base_multi": ("DistilBertBackbone", dict(
        vocabulary_size=119547, num_layers=6, num_heads=12, hidden_dim=768, intermediate_dim=3072,
        max_sequence_length=512), 134734080),
}
AUDIO_PRESETS = {
    "whisper_tiny_multi": ("WhisperBackbone", dict(
        vocabulary_size=51865, num_layers=4, num_heads=6, hidden_dim=384, intermediate_dim=1536,
        num_mels=80, max_encoder_sequence_length=3000, max_decoder_sequence_length=448), 37760640),
    "whisper_base_multi": ("WhisperBackbone", dict(
        vocabulary_size=51865, num_layers=6, num_heads=8, hidden_dim=512, intermediate_dim=2048,
        num_mels=80, max_encoder_sequence_length=3000, max_decoder_sequence_length=448), 72593920),
    "whisper_small_multi": ("WhisperBackbone", dict(
        vocabulary_size=51865, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
        num_mels=80, max_encoder_sequence_length=3000, max_decoder_sequence_length=448), 241734912),
}
PAD_IDS = {"XLMRobertaBackbone": 1}  # BERT and DistilBERT pad with 0


def _median_seconds(call, steps: int) -> float:
    call()  # trace / warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step(model, inputs, target: str, steps: int) -> float:
    import keras

    model.compile(keras.optimizers.Adam(1e-5), loss={target: "mse"})
    batch = len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)
    y = {target: np.full((batch, 1), 3.0, "float32")}
    return _median_seconds(lambda: model.train_on_batch(inputs, y), steps)


def text_row(name: str, backbone, args, config) -> dict:
    """Measure a text backbone (already wrapped) inside the valence encoder."""
    import tensorflow as tf

    from kemdy_tf.models import backbones
    from kemdy_tf.models.text_encoder import build_text_encoder

    rng = np.random.default_rng(0)
    tokens = args.tokens

    def ids(batch):
        return rng.integers(5, 1000, size=(batch, tokens)).astype("int32")

    row = {"modality": "text", "backbone": name, "params": int(backbone.count_params())}
    encoder = build_text_encoder(config.text, config.features, backbone=backbone)
    serve = tf.function(lambda x: encoder(x, training=False)["valence"])
    one = tf.constant(ids(1))
    row["serve_ms"] = 1000 * _median_seconds(lambda: serve(one).numpy(), args.steps)
    for frozen in (True, False):
        backbones.set_trainable(backbone, not frozen)
        key = "train_frozen_s" if frozen else "train_unfrozen_s"
        row[key] = _train_step(encoder, ids(args.train_batch), "valence", args.steps)
    return row


def audio_row(name: str, backbone, args, config, front_end=None) -> dict:
    """Measure an audio backbone (already wrapped) inside the arousal encoder."""
    import tensorflow as tf

    from kemdy_tf.frontend import waveform_to_log_mel
    from kemdy_tf.models import backbones
    from kemdy_tf.models.audio_encoder import build_audio_encoder

    rate = config.features.sample_rate
    samples = int(args.seconds * rate)
    wave = tf.constant(np.random.default_rng(0).normal(0, 0.1, (1, samples)).astype("float32"))
    length = tf.constant([samples])
    encoder = build_audio_encoder(config.audio, config.features, backbone=backbone)

    @tf.function
    def serve(wave, length):
        if front_end is None:
            log_mel, frames = waveform_to_log_mel(wave, length, config.features)
        else:
            log_mel, frames = front_end.in_graph(wave, length)
        mask = tf.range(tf.shape(log_mel)[1])[tf.newaxis] < frames[:, tf.newaxis]
        return encoder({"log_mel": log_mel, "frame_mask": mask}, training=False)["arousal"]

    row = {"modality": "audio", "backbone": name, "params": int(backbone.count_params()),
           "frames": int(min(config.features.max_frames, 1 + samples // (front_end.stride if front_end else
                                                                          config.features.hop_length)))}
    row["serve_ms"] = 1000 * _median_seconds(lambda: serve(wave, length).numpy(), args.steps)
    frames = row["frames"]
    inputs = {"log_mel": np.random.default_rng(1).normal(size=(args.train_batch, frames, config.features.n_mels))
              .astype("float32"), "frame_mask": np.ones((args.train_batch, frames), bool)}
    for frozen in (True, False):
        backbones.set_trainable(backbone, not frozen)
        key = "train_frozen_s" if frozen else "train_unfrozen_s"
        row[key] = _train_step(encoder, inputs, "arousal", args.steps)
    return row


def seed_rows(args) -> list[dict]:
    from kemdy_tf.config import make_config
    from kemdy_tf.models.audio_encoder import build_audio_backbone
    from kemdy_tf.models.text_encoder import build_text_backbone

    rows = []
    for preset in ("small", "paper"):
        if args.only and f"seed_{preset}" not in args.only:
            continue
        config = make_config(preset, [f"features.max_tokens={args.tokens}"])
        vocab = config.features.vocab_size or 8000
        rows.append(text_row(f"seed ({preset})", build_text_backbone(config.text, config.features, vocab),
                             args, config))
        config.features.max_frames = int(1 + args.seconds * config.features.sample_rate // config.features.hop_length)
        rows.append(audio_row(f"seed ({preset})", build_audio_backbone(config.audio, config.features), args, config))
        print(*(json.dumps(r) for r in rows[-2:]), sep="\n", flush=True)
    return rows


def preset_rows(args) -> list[dict]:
    import keras_hub

    from kemdy_tf.config import make_config
    from kemdy_tf.models import backbones

    rows = []
    for name, (cls, values, expected) in {**TEXT_PRESETS, **AUDIO_PRESETS}.items():
        if args.only and name not in args.only:
            continue
        hub = getattr(keras_hub.models, cls)(**values)
        if hub.count_params() != expected:
            raise SystemExit(f"{name}: built {hub.count_params():,} parameters, keras-hub's preset has {expected:,}")
        config = make_config("small", [f"features.max_tokens={args.tokens}"])
        if name in TEXT_PRESETS:
            backbone = backbones.wrap_text_backbone(hub, PAD_IDS.get(cls, 0), args.tokens, source=name)
            row = text_row(name, backbone, args, config)
        else:
            front_end = backbones.ConverterFeatures(keras_hub.layers.WhisperAudioConverter(
                num_mels=values["num_mels"]), max_frames=int(args.seconds * 100) + 1)
            config.features.n_mels, config.features.max_frames = values["num_mels"], front_end.max_frames
            backbone = backbones.wrap_audio_backbone(hub, values["num_mels"], front_end.max_frames, source=name)
            row = audio_row(name, backbone, args, config, front_end)
        row["preset_params"] = expected
        rows.append(row)
        print(json.dumps(row), flush=True)
        del hub, backbone
        gc.collect()
    return rows


def table(rows: list[dict], args) -> str:
    lines = [f"| modality | backbone | parameters (backbone) | train step, batch {args.train_batch}, frozen | "
             f"unfrozen | serving, batch 1 |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['modality']} | {r['backbone']} | {r['params'] / 1e6:.1f} M | "
                     f"{r['train_frozen_s'] * 1000:.0f} ms | {r['train_unfrozen_s'] * 1000:.0f} ms | "
                     f"{r['serve_ms']:.0f} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[],
                        help="rows to measure: preset names, seed_small, seed_paper (default: all)")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed architecture rows")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64, help="token ids per text (features.max_tokens)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length for audio")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per figure (median)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    from kemdy_tf.logs import quiet_logs

    quiet_logs()
    rows = preset_rows(args) + ([] if args.no_seed else seed_rows(args))
    print(table(rows, args))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
