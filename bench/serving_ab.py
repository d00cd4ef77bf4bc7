"""Issue 17: the XLA export's serving_default before and after its latency work, in one process.

    python bench/serving_ab.py [--calls 300]

Exports the untrained small-preset models of `bench/serving.py` four ways and calls
them in turns (one call of each per round, `fusion.predict` every tenth round), so a
neighbour's load falls on all of them alike; on a shared machine only the ratios mean
much. The variants:

* `graph (default)`: the default export, no XLA.
* `main's xla64`: `--xla-bucket 64` as before issue 17's second round: the models in
  one XLA program on frames padded to 64, the log-mel in graph mode.
* `new xla64` / `new xla32`: `--xla-bucket 64` / `32` as exported now: the log-mel under
  XLA, the audio convolution stem in graph mode on the real frames, the text backbone
  as its own XLA program, token ids cut to a multiple of 16 (docs/serving.md, "Latency").

The old path is selected through the switches `kemdy_tf.inference_graph.STEM_LAYER`,
`SEPARATE_TEXT`, `TOKEN_BUCKET` and `kemdy_tf.export.XLA_FRONTEND`. The tokenizer is
trained on the synthetic transcripts as `bench/run.py` trains it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> (xla_bucket, issue 17's second-round paths on)
VARIANTS = {"graph (default)": (None, False), "main's xla64": (64, False), "new xla64": (64, True),
            "new xla32": (32, True)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls of each export")
    args = parser.parse_args(argv)

    import tensorflow_text  # noqa: F401  serving_default's SentencePiece ops

    from bench import run as bench_run, serving
    from bench.machine import percentile
    from kemdy_tf import export, inference_graph
    from kemdy_tf.models.tokenizer import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="kemdy_serving_ab_"))
    try:
        mode = bench_run.MODES["quick"]
        tokenizer_path = bench_run.make_datasets(mode, work)["tokenizer"]
        config = bench_run.config_of(mode, "small")
        tokenizer = load_tokenizer(str(tokenizer_path), config.features.max_tokens)
        models = serving.build_models(config, int(tokenizer.vocabulary_size()))
        example = serving.Example(serving.clip(5.0, config.features.sample_rate), tokenizer, config)
        print(f"transcript: {int((example.features['token_ids'] != 0).sum())} tokens")
        calls = {}
        for index, (name, (bucket, new)) in enumerate(VARIANTS.items()):
            inference_graph.STEM_LAYER = "frame_projection" if new else "none"
            inference_graph.SEPARATE_TEXT = new
            inference_graph.TOKEN_BUCKET = 16 if new else None
            export.XLA_FRONTEND = new
            figures, serve = serving.load_export(models, tokenizer_path, config, work / str(index), example,
                                                 xla_bucket=bucket)
            print(f"{name}: max diff vs keras {figures['max_abs_diff_vs_keras']:.1e}, "
                  f"first call {figures['first_call_s']:.1f} s")
            calls[name] = lambda serve=serve: serve(**example.serving_inputs)["emotion_probs"].numpy()
        fusion = models["fusion"]
        calls["fusion.predict"] = lambda: fusion.predict(example.features, verbose=0)
        times = serving.interleaved_calls(
            calls, {**{name: args.calls for name in calls}, "fusion.predict": max(args.calls // 10, 3)}, warmup=10)
        predict = percentile(times["fusion.predict"], 50)
        before = percentile(times["main's xla64"], 50)
        print("| export | p50 ms | p99 ms | vs predict | p50 / main's xla64 |\n|---|---|---|---|---|")
        for name, seconds in times.items():
            p50 = percentile(seconds, 50)
            print(f"| {name} | {1e3 * p50:.2f} | {1e3 * percentile(seconds, 99):.2f} | {predict / p50:.2f}x "
                  f"| {p50 / before:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
