"""Benchmarks: how fast kemdy_tf trains, serves and feeds itself, as ratios measured in one run.

    python bench/run.py --quick                 # < 10 min on 2 cores; writes docs/benchmarks.{md,json}
    python bench/run.py                         # full sizes (paper preset at 512 frames: much longer)
    python bench/run.py --tiny --out /tmp/b.md  # every section at toy sizes (the CI smoke test)

Sections (each speed is printed beside a reference measured in the same run):
  1. ceiling    float32 (and bfloat16) matmul GFLOP/s of this machine
  2. training   samples/s of one compiled train step per stage and preset; FLOPs per
                sample counted from the traced graph; share of the ceiling; variants
                (XLA, bfloat16, larger batch) and a profile (GRU share, new lengths)
  3. pipeline   feature-cache build (2 workers) vs a one-process librosa loop; a cached
                tf.data epoch vs the train step's consumption
  4. serving    exported serving_default p50/p99 at batch 1, throughput at batch 32,
                vs keras predict
  5. memory     peak RSS of a training epoch at N vs 4N utterances (subprocesses)
  6. accuracy   time per epoch and synthetic test macro-F1 per preset

The markdown file keeps hand-written text outside its generated block (bench/report.py);
the JSON beside it (same name, .json) holds every number. No figure here is a
timed assertion: tests/test_bench.py only checks that the --tiny run produces them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import report  # noqa: E402  (light: no TensorFlow at import, see Mode)

# Model sizes of --tiny: every code path, seconds of compute (the test suite's TINY sizes).
TINY_MODEL = [
    "audio.conv_filters=4,4,4,4", "audio.d_model=16", "audio.n_layers=1", "audio.n_heads=2",
    "audio.ff_dim=32", "audio.gru_units=16", "text.d_model=16", "text.n_layers=1", "text.n_heads=2",
    "text.ff_dim=32", "text.gru_units=16", "fusion.n_heads=2", "fusion.lstm_units=16",
    "features.vocab_size=200",
]


@dataclasses.dataclass(frozen=True)
class Mode:
    """Every size a benchmark mode uses.

    Spawned feature workers re-import this script, so nothing at module level may
    import TensorFlow; the sections import it when they run.
    """

    name: str
    ceiling_n: int
    ceiling_repeats: int
    batch: int
    frames: dict  # preset -> frames of the training batch
    steps: dict  # preset -> (warm-up steps, timed steps)
    model_overrides: dict  # preset -> config overrides
    variant_stages: tuple  # stages timed with the variants below
    variants: dict  # preset -> variants of VARIANTS to time
    long_set: dict  # synthetic.generate kwargs of the cache-build set (real-length clips)
    memory_sessions: int  # N's sessions; 4N has four times as many
    utterances: tuple  # per speaker and script, for the memory sets
    serving_calls: int
    serving_batch: int
    serving_batch_calls: int
    predict_calls: int
    accuracy_epochs: int
    note: dict  # preset -> what this mode changes


MODES = {
    "tiny": Mode(
        name="tiny", ceiling_n=256, ceiling_repeats=3, batch=4, frames={"small": 16, "paper": 24},
        steps={"small": (1, 2), "paper": (1, 2)},
        model_overrides={"small": TINY_MODEL, "paper": TINY_MODEL},
        variant_stages=("audio",), variants={"small": ("xla", "bf16", "batch"), "paper": ("xla", "bf16", "batch")},
        long_set=dict(sessions=1, scripts=1, utterances=(3, 3), duration=(0.5, 1.0)),
        memory_sessions=3, utterances=(2, 2),
        serving_calls=20, serving_batch=4, serving_batch_calls=2, predict_calls=3, accuracy_epochs=1,
        note={"small": "tiny mode: toy model sizes, 16 frames, batch 4 (smoke test only)",
              "paper": "tiny mode: toy model sizes, 24 frames, batch 4 (smoke test only)"}),
    "quick": Mode(
        name="quick", ceiling_n=2048, ceiling_repeats=10, batch=16, frames={"small": 94, "paper": 128},
        steps={"small": (2, 10), "paper": (1, 2)},
        model_overrides={"small": [], "paper": []},
        variant_stages=("audio",), variants={"small": ("xla", "bf16", "batch"), "paper": ("bf16",)},
        long_set=dict(sessions=3, scripts=3, utterances=(16, 20), duration=(3.0, 8.0)),
        memory_sessions=4, utterances=(16, 20),
        serving_calls=200, serving_batch=32, serving_batch_calls=8, predict_calls=30, accuracy_epochs=2,
        note={"paper": "--quick: paper batches have 128 frames, not the preset's 512 (4 s of audio, not 16 s), "
                       "and only the bfloat16 variant; run without --quick for 512 frames and every variant"}),
    "full": Mode(
        name="full", ceiling_n=2048, ceiling_repeats=20, batch=16, frames={"small": 94, "paper": 512},
        steps={"small": (3, 20), "paper": (1, 3)},
        model_overrides={"small": [], "paper": []},
        variant_stages=("audio", "text", "fusion"),
        variants={"small": ("xla", "bf16", "batch"), "paper": ("xla", "bf16", "batch")},
        long_set=dict(sessions=3, scripts=3, utterances=(16, 20), duration=(3.0, 8.0)),
        memory_sessions=4, utterances=(16, 20),
        serving_calls=500, serving_batch=32, serving_batch_calls=20, predict_calls=50, accuracy_epochs=4,
        note={}),
}
PRESETS = ("small", "paper")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sizes that finish in < 10 min on 2 cores")
    size.add_argument("--tiny", action="store_true", help="toy sizes, every section (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file to write (the JSON goes beside it, same name .json)")
    parser.add_argument("--main-run", default=str(REPO / "runs" / "synthetic"),
                        help="the lead's trained run to take small-preset accuracy from ('none': train a short run)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep-work", action="store_true", help="do not delete the scratch folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = MODES["tiny" if args.tiny else "quick" if args.quick else "full"]
    main_run = None if args.tiny or args.main_run.lower() == "none" else Path(args.main_run)
    work = Path(args.work or tempfile.mkdtemp(prefix="kemdy_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        results = run_all(mode, work, main_run)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    results["meta"]["duration_s"] = time.perf_counter() - started
    results["meta"]["command"] = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results["verdicts"] = report.verdicts(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(_finite(results), indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    report.write_markdown(args.out, report.render(results))
    print(report.headline(results))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def run_all(mode: Mode, work: Path, main_run: Path | None) -> dict:
    from bench import machine

    monitor = machine.LoadMonitor()
    results: dict = {"meta": {"mode": mode.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": machine.machine_info()}}
    data = make_datasets(mode, work)
    _log("ceiling")
    results["ceiling"] = ceiling(mode)
    results["training"] = training_section(mode, data, results["ceiling"])
    _log("pipeline")
    results["pipeline"] = pipeline_section(mode, data, work, results["training"])
    _log("serving")
    results["serving"] = serving_section(mode, data, work)
    _log("memory")
    results["memory"] = memory_section(mode, data, work)
    _log("accuracy")
    results["accuracy"] = accuracy_section(mode, data, work, main_run, results["training"])
    results["meta"]["load"] = monitor.report()
    return results


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def config_of(mode: Mode, preset: str, extra=()):
    from kemdy_tf.config import make_config

    return make_config(preset, [*mode.model_overrides[preset], *extra])


# === Data sets ===

def make_datasets(mode: Mode, work: Path) -> dict:
    """The synthetic sets: real-length clips for the cache build, N and 4N for memory/epochs."""
    from kemdy_tf.data import synthetic
    from kemdy_tf.data.kemdy20 import read_kemdy20
    from kemdy_tf.models.tokenizer import train_sentencepiece

    _log("generating synthetic data sets")
    long_set = synthetic.generate(work / "data_long", seed=1, **mode.long_set)
    small_set = synthetic.generate(work / "data_n", seed=0, sessions=mode.memory_sessions,
                                   utterances=mode.utterances)
    large_set = synthetic.generate(work / "data_4n", seed=0, sessions=4 * mode.memory_sessions,
                                   utterances=mode.utterances)
    table, _ = read_kemdy20(large_set)
    config = config_of(mode, "small")
    tokenizer = train_sentencepiece(table["text"].tolist(), work / "tokenizer.model", config.features.vocab_size)
    return {"long": long_set, "n": small_set, "4n": large_set, "table_4n": table, "tokenizer": Path(tokenizer)}


# === 1. Ceiling ===

def ceiling(mode: Mode) -> dict:
    """float32 matmul GFLOP/s (the reference of every training figure), and bfloat16's for the variant."""
    import tensorflow as tf

    from bench.machine import matmul_ceiling, timed_calls

    out = matmul_ceiling(mode.ceiling_n, mode.ceiling_repeats)
    a = tf.cast(tf.random.stateless_normal([mode.ceiling_n] * 2, seed=[7, 8]), tf.bfloat16)
    times = sorted(timed_calls(lambda: tf.linalg.matmul(a, a).numpy(), mode.ceiling_repeats, warmup=2))
    out["bf16_gflops"] = 2.0 * mode.ceiling_n ** 3 / times[len(times) // 2] / 1e9
    return out


# === 2. Training step ===

def training_section(mode: Mode, data: dict, ceiling_result: dict) -> dict:
    from bench import training_speed as ts

    ceiling_gflops = ceiling_result["gflops"]
    out = {}
    for preset in PRESETS:
        config = config_of(mode, preset)
        vocab = config.features.vocab_size  # an embedding of the preset's full vocabulary
        frames, (warmup, steps) = mode.frames[preset], mode.steps[preset]
        block: dict = {"frames": frames, "batch": mode.batch, "note": mode.note.get(preset, ""), "stages": {}}
        for stage in ts.STAGES:
            _log(f"training step: {preset} {stage}")
            r = ts.measure_stage(config, stage, batch=mode.batch, frames=frames, vocab_size=vocab, warmup=warmup,
                                 steps=steps, new_lengths=1 if stage == "audio" else 0)
            r.update(ts.achieved(r, ceiling_gflops))
            r["gflop_fwd"] = r["flops"]["forward_per_sample"] / 1e9
            r["gflop_train"] = r["flops"]["train_per_sample"] / 1e9
            block["stages"][stage] = r
        stages = block["stages"].values()
        total_flops = sum(s["flops"]["train_per_sample"] * s["batch"] for s in stages)
        total_time = sum(s["step_s"] for s in stages)
        block["total"] = {"gflops": total_flops / total_time / 1e9,
                          "fraction_of_ceiling": total_flops / total_time / 1e9 / ceiling_gflops}
        audio = block["stages"]["audio"]
        if audio.get("new_length_call_s"):
            block["retrace"] = {"mode": "graph", "new_length_call_s": audio["new_length_call_s"][0],
                                "vs_steady": audio["new_length_call_s"][0] / audio["step_s"]}
        if mode.variants.get(preset):
            block["variants"] = {stage: _variants(mode, config, block["stages"][stage], vocab, frames, warmup, steps,
                                                  ceiling_result) for stage in mode.variant_stages}
        _log(f"training step: {preset} GRU")
        gru = ts.measure_gru(config.audio.gru_units, config.audio.d_model, batch=mode.batch, frames=frames,
                             warmup=warmup, steps=steps)
        gru.update(ts.achieved(gru, ceiling_gflops))
        gru["share_of_audio_step"] = gru["step_s"] / audio["step_s"]
        gru["share_of_audio_flops"] = gru["flops"]["train_per_sample"] / audio["flops"]["train_per_sample"]
        block["gru"] = gru
        out[preset] = block
    return out


def _variants(mode, config, base: dict, vocab, frames, warmup, steps, ceiling_result) -> dict:
    """The stage again with XLA, bfloat16 or a doubled batch; speed-up over `base`."""
    from bench import training_speed as ts

    stage, out = base["stage"], {}
    for key in mode.variants[config.preset]:
        name, kwargs = {"xla": ("XLA (jit_compile=True)", {"jit": True}),
                        "bf16": ("mixed_bfloat16", {"policy": "mixed_bfloat16"}),
                        "batch": (f"batch {2 * mode.batch}", {"batch": 2 * mode.batch})}[key]
        _log(f"training step: {config.preset} {stage} {name}")
        kwargs.setdefault("batch", mode.batch)
        # Under XLA a new padded length means a new compilation: time one.
        new_lengths = 1 if key == "xla" and stage != "text" else 0
        r = ts.measure_stage(config, stage, frames=frames, vocab_size=vocab, warmup=warmup, steps=steps,
                             count=False, new_lengths=new_lengths, **kwargs)
        r["flops"] = base["flops"]
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["fraction_of_ceiling_f32"] = ts.achieved(r, ceiling_result["gflops"])["fraction_of_ceiling"]
        if r.get("new_length_call_s"):
            r["new_length_call_s"] = r["new_length_call_s"][0]
        out[name] = r
    return out


# === 3. Input pipeline ===

def pipeline_section(mode: Mode, data: dict, work: Path, training: dict) -> dict:
    from bench import pipeline
    from kemdy_tf.data.features import FeatureCache
    from kemdy_tf.models.tokenizer import load_tokenizer

    config = config_of(mode, "small", [f"train.batch_size={mode.batch}"])
    _log("pipeline: cache build vs plain loop")
    build = pipeline.measure_build(data["long"], config, work / "pipeline")
    _log("pipeline: cached epoch")
    cache = FeatureCache(work / "memory_cache_large", config.features)
    table = data["table_4n"]
    failures = cache.build(table, workers=2, progress=False)
    if failures:
        raise RuntimeError(f"feature extraction failed: {failures[:3]}")
    tokenizer = load_tokenizer(str(data["tokenizer"]), config.features.max_tokens)
    epoch = pipeline.measure_cached_epoch(table, cache, tokenizer, config)
    # The fastest consumer is the strictest reference.
    stages = training["small"]["stages"]
    fastest = max(stages.values(), key=lambda s: s["samples_per_s"])
    epoch["train_stage"] = fastest["stage"]
    epoch["train_batches_per_s"] = 1.0 / fastest["step_s"]
    epoch["ratio"] = epoch["batches_per_s"] / epoch["train_batches_per_s"]
    return {"build": build, "cached_epoch": epoch}


# === 4. Serving ===

def serving_section(mode: Mode, data: dict, work: Path) -> dict:
    from bench import serving

    return serving.measure(config_of(mode, "small"), data["tokenizer"], work / "serving",
                           calls=mode.serving_calls, batch=mode.serving_batch,
                           batch_calls=mode.serving_batch_calls, predict_calls=mode.predict_calls)


# === 5. Memory ===

def memory_section(mode: Mode, data: dict, work: Path) -> dict:
    from bench import memory
    from kemdy_tf.data.features import FeatureCache
    from kemdy_tf.data.kemdy20 import read_kemdy20

    config = config_of(mode, "small")
    sizes = {}
    for name, key in (("small", "n"), ("large", "4n")):
        cache = FeatureCache(work / f"memory_cache_{name}", config.features)
        table = data["table_4n"] if key == "4n" else read_kemdy20(data[key])[0]
        failures = cache.build(table, workers=2, progress=False)
        if failures:
            raise RuntimeError(f"feature extraction failed: {failures[:3]}")
        sizes[name] = sum(cache.entry(p).file.stat().st_size for p in set(table["wav_path"]))
    return memory.measure(data["n"], data["4n"], work, "small", mode.model_overrides["small"], sizes)


# === 6. Accuracy vs cost ===

def accuracy_section(mode: Mode, data: dict, work: Path, main_run: Path | None, training: dict) -> dict:
    from bench import accuracy

    out = {}
    main_train = accuracy.main_run_train_utterances(main_run) if main_run else None
    f1 = accuracy.main_run_f1(main_run) if main_run else None
    note = ""
    if f1 is None:
        _log("accuracy: short small run")
        config = config_of(mode, "small")
        f1 = accuracy.short_run(data["n"], work / "accuracy_run", work / "memory_cache_small", config,
                                mode.accuracy_epochs)
        note = (f"no main run found{'' if main_run is None else f' at {main_run}'}: trained a short run here "
                f"({mode.accuracy_epochs} epoch(s) per stage), far from converged")
    train_utterances = main_train or f1.get("train_utterances")
    for preset in PRESETS:
        rates = {stage: s["samples_per_s"] for stage, s in training[preset]["stages"].items()}
        epoch = accuracy.epoch_estimate(train_utterances, rates)
        entry = {"epoch": epoch}
        if preset == "small":
            entry["f1"] = f1
            entry["note"] = note
            if main_run:
                entry["main_run_epoch_s"] = accuracy.main_run_epoch_seconds(main_run)
        else:
            epochs = config_of(mode, preset).train.epochs
            frames_note = training[preset].get("note") or ""
            entry["f1"] = {"macro_f1": None, "reason": (
                f"one epoch of the three stages takes ~{epoch['total_s'] / 3600:.1f} h here (extrapolated from "
                f"{training[preset]['frames']}-frame steps), {epochs} epochs ~{epochs * epoch['total_s'] / 3600:.0f} h "
                "on these 2 shared cores: not trained")}
            entry["note"] = ("epoch time extrapolated from the measured steps" + (f"; {frames_note}" if frames_note
                                                                                  else ""))
        out[preset] = entry
    return out


def _finite(value):
    """JSON-safe: NaN/inf become None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _finite(value.item())
    return value


if __name__ == "__main__":
    sys.exit(main())
