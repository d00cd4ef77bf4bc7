"""Benchmarks: how fast kemdy_tf trains, serves and feeds itself, as ratios measured in one run.

    python bench/run.py --quick                 # < 10 min on 2 cores; writes docs/benchmarks.{md,json}
    python bench/run.py                         # full sizes (paper preset at 512 frames: an hour or more)
    python bench/run.py --tiny --out /tmp/b.md  # every section at toy sizes (the CI smoke test)
    python bench/run.py --quick --sections serving --out /tmp/serving.md   # one section (and the data sets)

Sections (each speed is printed beside a reference measured in the same run):
  1. ceiling    float32 (and bfloat16) matmul GFLOP/s of this machine
  2. training   samples/s of one compiled train step per stage and preset; FLOPs per
                sample counted from the traced graph; share of the ceiling; variants
                (XLA, bfloat16, larger batch) and a profile (each recurrent layer's
                share of its stage's step; the cost of a batch of a new length)
  3. pipeline   feature-cache build (2 workers) vs a one-process librosa loop; a cached
                tf.data epoch vs the train step's consumption
  4. serving    exported serving_default p50/p99 at batch 1 (graph mode and XLA exports,
                small and paper presets), throughput at batch 32, the LiteRT export's
                size and latency, vs keras predict
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
import statistics
import sys
import tempfile
import time
import traceback
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
    variants: dict  # preset -> variants to time ("xla", "bf16", "batch")
    new_lengths: int  # audio steps timed at a new frame count (retracing / recompiling)
    full_length_flops: tuple  # presets timed at fewer frames than max_frames: count FLOPs at max_frames too
    long_set: dict  # synthetic.generate kwargs of the cache-build set (real-length clips)
    memory_sessions: int  # N's sessions; 4N has four times as many
    utterances: tuple  # per speaker and script, for the memory sets
    serving_calls: int
    serving_batch: int
    serving_batch_calls: int
    paper_serving_calls: int  # the paper preset's exports, beside the small preset's
    litert_calls: int  # the small preset's LiteRT export in the interpreter
    predict_calls: int
    accuracy_epochs: int
    note: dict  # preset -> what this mode changes
    # Run the memory children beside the other sections (only where timings do not matter),
    # and score the small preset with their one-epoch model instead of a short run.
    smoke: bool = False


MODES = {
    "tiny": Mode(
        name="tiny", ceiling_n=256, ceiling_repeats=3, batch=4, frames={"small": 16, "paper": 24},
        steps={"small": (1, 2), "paper": (1, 2)},
        model_overrides={"small": TINY_MODEL, "paper": TINY_MODEL},
        variant_stages=("audio",), variants={"small": ("bf16",)}, new_lengths=0,
        full_length_flops=(),
        long_set=dict(sessions=1, scripts=1, utterances=(3, 3), duration=(0.5, 1.0)),
        memory_sessions=3, utterances=(2, 2),
        serving_calls=20, serving_batch=4, serving_batch_calls=2, paper_serving_calls=0, litert_calls=0,
        predict_calls=3, accuracy_epochs=1,
        note={"small": "tiny mode: toy model sizes, 16 frames, batch 4, bfloat16 variant only (smoke test only)",
              "paper": "tiny mode: toy model sizes, 24 frames, batch 4 (smoke test only)"},
        smoke=True),
    "quick": Mode(
        name="quick", ceiling_n=2048, ceiling_repeats=10, batch=16, frames={"small": 94, "paper": 128},
        steps={"small": (2, 10), "paper": (1, 2)},
        model_overrides={"small": [], "paper": []},
        variant_stages=("audio",), variants={"small": ("xla", "bf16", "batch"), "paper": ("bf16",)}, new_lengths=2,
        full_length_flops=("paper",),
        long_set=dict(sessions=3, scripts=3, utterances=(16, 20), duration=(3.0, 8.0)),
        memory_sessions=3, utterances=(16, 20),
        serving_calls=200, serving_batch=32, serving_batch_calls=8, paper_serving_calls=20, litert_calls=50,
        predict_calls=30, accuracy_epochs=2,
        note={"paper": "--quick: paper batches have 128 frames, not the preset's 512 (4 s of audio, not 16 s), "
                       "and only the bfloat16 variant; run without --quick for 512 frames and more variants"}),
    "full": Mode(
        name="full", ceiling_n=2048, ceiling_repeats=20, batch=16, frames={"small": 94, "paper": 512},
        steps={"small": (3, 20), "paper": (1, 3)},
        model_overrides={"small": [], "paper": []},
        variant_stages=("audio", "text", "fusion"),
        # XLA on the paper audio encoder needed 13 GB at 128 frames here: not tried at 512.
        variants={"small": ("xla", "bf16", "batch"), "paper": ("bf16", "batch")}, new_lengths=2,
        full_length_flops=(),
        long_set=dict(sessions=3, scripts=3, utterances=(16, 20), duration=(3.0, 8.0)),
        memory_sessions=4, utterances=(16, 20),
        serving_calls=500, serving_batch=32, serving_batch_calls=20, paper_serving_calls=50, litert_calls=200,
        predict_calls=50, accuracy_epochs=4,
        note={}),
}
PRESETS = ("small", "paper")
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTIONS = ("ceiling", "training", "pipeline", "serving", "memory", "accuracy")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sizes that finish in < 10 min on 2 cores")
    size.add_argument("--tiny", action="store_true", help="toy sizes, every section (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (the JSON goes beside it, same name .json)")
    parser.add_argument("--main-run", default=str(REPO / "runs" / "synthetic"),
                        help="the lead's trained run to take small-preset accuracy from ('none': train a short run)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep-work", action="store_true", help="do not delete the scratch folder")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)}); the data sets "
                             "are always made; pipeline needs training, accuracy needs training and memory")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if set(args.sections) != set(SECTIONS) and args.out == DEFAULT_OUT:
        # The generated block would hold only these sections: the page's other figures would be lost.
        parser.error("--sections writes a partial report: give it its own --out (not docs/benchmarks.md)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = MODES["tiny" if args.tiny else "quick" if args.quick else "full"]
    main_run = None if args.tiny or args.main_run.lower() == "none" else Path(args.main_run)
    work = Path(args.work or tempfile.mkdtemp(prefix="kemdy_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        results = run_all(mode, work, main_run, args.sections)
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
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:
        print(f"error: section(s) {', '.join(failed)} failed (see above and the JSON)", file=sys.stderr)
        return 1
    return 0


def run_all(mode: Mode, work: Path, main_run: Path | None, sections=SECTIONS) -> dict:
    from bench import machine

    monitor = machine.LoadMonitor()
    results: dict = {"meta": {"mode": mode.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": machine.machine_info(), "section_s": {},
                              "section_cpu_s": {}}}
    seconds = results["meta"]["section_s"]

    def section(name, run):
        """Run one section; a failure is recorded (and fails the run at the end), the others still run."""
        _log(name)
        start, cpu = time.perf_counter(), machine.own_cpu_seconds()
        try:
            value = run()
        except Exception as error:  # noqa: BLE001  a benchmark reports every section it can
            traceback.print_exc()
            value = {"error": f"{type(error).__name__}: {error}"}
        seconds[name] = time.perf_counter() - start
        results["meta"]["section_cpu_s"][name] = machine.own_cpu_seconds() - cpu
        return value

    data = section("data sets", lambda: make_datasets(mode, work))
    try:
        if mode.smoke and "memory" in sections:
            start_memory(mode, data, work)
        steps = {
            "ceiling": lambda: ceiling(mode),
            "training": lambda: training_section(mode, data, results["ceiling"]),
            "pipeline": lambda: pipeline_section(mode, data, work, results["training"]),
            "serving": lambda: serving_section(mode, data, work),
            "memory": lambda: memory_section(mode, data, work),
            "accuracy": lambda: accuracy_section(mode, data, work, main_run, results["training"], results["memory"]),
        }
        for name in SECTIONS:
            if name in sections:
                results[name] = section(name, steps[name])
    finally:
        for child in data.pop("memory_children", {}).values():  # a failed run leaves no child behind
            if child.poll() is None:
                child.kill()
                child.communicate()
    results["meta"]["load"] = monitor.report()
    return results


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def config_of(mode: Mode, preset: str, extra=()):
    from kemdy_tf.config import make_config

    return make_config(preset, [*mode.model_overrides[preset], *extra])


# === Data sets ===

def make_datasets(mode: Mode, work: Path) -> dict:
    """The synthetic sets: real-length clips for the cache build, N and 4N for memory/epochs."""
    from kemdy_tf.data import synthetic
    from kemdy_tf.data.kemdy20 import read_kemdy20
    from kemdy_tf.models.tokenizer import train_sentencepiece

    long_set = synthetic.generate(work / "data_long", seed=1, **mode.long_set)
    sets = {key: synthetic.generate(work / f"data_{key}", seed=0, sessions=sessions, utterances=mode.utterances)
            for key, sessions in (("n", mode.memory_sessions), ("4n", 4 * mode.memory_sessions))}
    tables = {key: read_kemdy20(root)[0] for key, root in sets.items()}
    config = config_of(mode, "small")
    tokenizer = train_sentencepiece(tables["4n"]["text"].tolist(), work / "tokenizer.model",
                                    config.features.vocab_size)
    return {"long": long_set, **sets, "table_n": tables["n"], "table_4n": tables["4n"],
            "tokenizer": Path(tokenizer), "cache_root": work / "cache"}


# === 1. Ceiling ===

def ceiling(mode: Mode) -> dict:
    """float32 matmul GFLOP/s (the reference of every training figure), and bfloat16's for the variant."""
    import tensorflow as tf

    from bench.machine import matmul_ceiling, timed_calls

    out = matmul_ceiling(mode.ceiling_n, mode.ceiling_repeats)
    a = tf.cast(tf.random.stateless_normal([mode.ceiling_n] * 2, seed=[7, 8]), tf.bfloat16)
    times = timed_calls(lambda: tf.linalg.matmul(a, a).numpy(), mode.ceiling_repeats, warmup=2)
    out["bf16_gflops"] = 2.0 * mode.ceiling_n ** 3 / statistics.median(times) / 1e9
    return out


# === 2. Training step ===

def training_section(mode: Mode, data: dict, ceiling_result: dict) -> dict:
    from bench import training_speed as ts
    from kemdy_tf.models.tokenizer import corpus_vocab_size

    ceiling_gflops = ceiling_result["gflops"]
    out = {}
    for preset in PRESETS:
        config = config_of(mode, preset)
        # An embedding of the preset's full vocabulary; 0 (the small preset) is sized from
        # the corpus when a run trains its tokenizer, here from the bench's synthetic texts.
        vocab = config.features.vocab_size or corpus_vocab_size(data["table_4n"]["text"])
        frames, (warmup, steps) = mode.frames[preset], mode.steps[preset]
        block: dict = {"frames": frames, "batch": mode.batch, "note": mode.note.get(preset, ""), "stages": {}}
        for stage in ts.STAGES:
            _log(f"training step: {preset} {stage}")
            r = ts.measure_stage(config, stage, batch=mode.batch, frames=frames, vocab_size=vocab, warmup=warmup,
                                 steps=steps, new_lengths=mode.new_lengths if stage == "audio" else 0)
            r.update(ts.achieved(r, ceiling_gflops))
            r["gflop_fwd"] = r["flops"]["forward_per_sample"] / 1e9
            r["gflop_train"] = r["flops"]["train_per_sample"] / 1e9
            block["stages"][stage] = r
        stages = block["stages"].values()
        total_flops = sum(s["flops"]["train_per_sample"] * s["batch"] for s in stages)
        total_time = sum(s["step_s"] for s in stages)
        block["total"] = {"gflops": total_flops / total_time / 1e9,
                          "fraction_of_ceiling": total_flops / total_time / 1e9 / ceiling_gflops}
        if mode.variants.get(preset):
            block["variants"] = {stage: _variants(mode, config, block["stages"][stage], vocab, frames, warmup, steps,
                                                  ceiling_result) for stage in mode.variant_stages}
        if not mode.smoke:  # tests/test_bench.py checks measure_rnn on its own
            block["recurrent"] = _recurrent_profile(mode, config, block, frames, warmup, steps, ceiling_gflops)
        if preset in mode.full_length_flops:
            block["flops_at_max_frames"] = _flops_at(config, vocab, mode.batch, config.features.max_frames)
        out[preset] = block
    return out


def _recurrent_profile(mode, config, block: dict, frames: int, warmup: int, steps: int, ceiling_gflops) -> dict:
    """Each stage's recurrent layer timed alone, as a share of the stage's step time and FLOPs."""
    from bench import training_speed as ts

    tokens = config.features.max_tokens
    layers = {"audio": ("gru", config.audio.gru_units, config.audio.d_model, frames),
              "text": ("gru", config.text.gru_units, config.text.d_model, tokens),
              "fusion": ("lstm", config.fusion.lstm_units, max(config.audio.d_model, config.text.d_model),
                         frames + tokens)}
    out = {}
    for stage, (kind, units, width, length) in layers.items():
        _log(f"training step: {config.preset} {stage} {kind.upper()} alone")
        r = ts.measure_rnn(kind, units, width, batch=mode.batch, steps_in_sequence=length, warmup=warmup,
                           steps=steps)
        r.update(ts.achieved(r, ceiling_gflops))
        whole = block["stages"][stage]
        r["share_of_stage_step"] = r["step_s"] / whole["step_s"]
        r["share_of_stage_flops"] = r["flops"]["train_per_sample"] / whole["flops"]["train_per_sample"]
        out[stage] = r
    return out


def _flops_at(config, vocab: int, batch: int, frames: int) -> dict:
    """GFLOP per training sample of each stage at `frames` (traced, not run)."""
    import keras

    from bench import training_speed as ts

    out = {"frames": frames}
    for stage in ts.STAGES:
        model = ts.build_stage(config, stage, vocab)
        data = ts.stage_batch(config, stage, batch, frames, vocab)
        out[stage] = ts.train_flops(model, data)["train_per_sample"] / 1e9
        keras.backend.clear_session()
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
        new_lengths = mode.new_lengths if key == "xla" and stage != "text" else 0
        r = ts.measure_stage(config, stage, frames=frames, vocab_size=vocab, warmup=warmup, steps=steps,
                             count=False, new_lengths=new_lengths, **kwargs)
        r["flops"] = base["flops"]
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["fraction_of_ceiling_f32"] = ts.achieved(r, ceiling_result["gflops"])["fraction_of_ceiling"]
        if key == "bf16":  # bfloat16 matmuls have their own, higher ceiling
            r["fraction_of_ceiling_bf16"] = ts.achieved(r, ceiling_result["bf16_gflops"])["fraction_of_ceiling"]
        out[name] = r
    return out


# === 3. Input pipeline ===

def pipeline_section(mode: Mode, data: dict, work: Path, training: dict) -> dict:
    from bench import pipeline
    from kemdy_tf.models.tokenizer import load_tokenizer

    config = config_of(mode, "small", [f"train.batch_size={mode.batch}"])
    _log("pipeline: cache build vs plain loop")
    build = pipeline.measure_build(data["long"], config, work / "pipeline")
    _log("pipeline: cached epoch")
    cache = shared_cache(mode, data)
    tokenizer = load_tokenizer(str(data["tokenizer"]), config.features.max_tokens)
    epoch = pipeline.measure_cached_epoch(data["table_4n"], cache, tokenizer, config)
    # The fastest consumer is the strictest reference.
    stages = training["small"]["stages"]
    fastest = max(stages.values(), key=lambda s: s["samples_per_s"])
    epoch["train_stage"] = fastest["stage"]
    epoch["train_batches_per_s"] = 1.0 / fastest["step_s"]
    epoch["ratio"] = epoch["batches_per_s"] / epoch["train_batches_per_s"]
    epoch["ratio_by_stage"] = {s["stage"]: epoch["batches_per_s"] * s["step_s"] for s in stages.values()}
    return {"build": build, "cached_epoch": epoch}


def shared_cache(mode: Mode, data: dict):
    """The feature cache of the N and 4N sets (built once, untimed), shared by the later sections."""
    from kemdy_tf.data.features import FeatureCache

    if "cache" not in data:
        cache = FeatureCache(data["cache_root"], config_of(mode, "small").features)
        workers = 1 if mode.smoke else 2  # a few toy clips: not worth starting workers
        failures = [f for key in ("table_n", "table_4n") for f in cache.build(data[key], workers, progress=False)]
        if failures:
            raise RuntimeError(f"feature extraction failed for {len(failures)} wavs, e.g. {failures[0]}")
        data["cache"] = cache
    return data["cache"]


# === 4. Serving ===

def serving_section(mode: Mode, data: dict, work: Path) -> dict:
    from bench import serving

    return serving.measure(config_of(mode, "small"), data["tokenizer"], work / "serving",
                           calls=mode.serving_calls, batch=mode.serving_batch,
                           batch_calls=mode.serving_batch_calls, predict_calls=mode.predict_calls,
                           paper_config=config_of(mode, "paper"), paper_calls=mode.paper_serving_calls,
                           litert_calls=mode.litert_calls)


# === 5. Memory ===

def start_memory(mode: Mode, data: dict, work: Path) -> None:
    from bench import memory

    shared_cache(mode, data)
    data["memory_children"] = memory.start({"n": data["n"], "4n": data["4n"]}, work, data["cache_root"], "small",
                                           mode.model_overrides["small"], score=("n",) if mode.smoke else ())


def memory_section(mode: Mode, data: dict, work: Path) -> dict:
    from bench import memory

    if "memory_children" not in data:
        start_memory(mode, data, work)
    cache = shared_cache(mode, data)
    sizes = {key: sum(cache.entry(p).file.stat().st_size for p in set(data[f"table_{key}"]["wav_path"]))
             for key in ("n", "4n")}
    return memory.collect(data.pop("memory_children"), sizes)


# === 6. Accuracy vs cost ===

def accuracy_section(mode: Mode, data: dict, work: Path, main_run: Path | None, training: dict,
                     memory: dict) -> dict:
    from bench import accuracy

    out = {}
    main_train = accuracy.main_run_train_utterances(main_run) if main_run else None
    f1 = accuracy.main_run_f1(main_run) if main_run else None
    if f1 and Path(f1["source"]).is_relative_to(REPO):
        f1["source"] = str(Path(f1["source"]).relative_to(REPO))
    note = ""
    if f1 is None and mode.smoke:
        f1 = {"macro_f1": memory["one_epoch_test_macro_f1_n"], "split": "test", "n": memory["test_n"],
              "train_utterances": memory["n_utterances"],
              "source": "the memory benchmark's fusion model after its one epoch on the N set"}
        note = "tiny mode: F1 of a one-epoch toy model, a smoke test of the code path only"
    elif f1 is None:
        _log("accuracy: short small run")
        shared_cache(mode, data)
        f1 = accuracy.short_run(data["n"], work / "accuracy_run", data["cache_root"], config_of(mode, "small"),
                                mode.accuracy_epochs)
        note = (f"no main run{'' if main_run is None else f' at {main_run}'}: trained a short run here "
                f"({mode.accuracy_epochs} epoch(s) per stage), far from converged")
    train_utterances = main_train or f1["train_utterances"]
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
            frames, seconds = training[preset]["frames"], epoch["total_s"]
            entry["note"] = f"epoch time extrapolated from the measured {frames}-frame steps"
            longest = training[preset].get("flops_at_max_frames")
            if longest:
                # At the preset's full length: its FLOPs at the rate each stage reached here.
                rates = {stage: s["gflops"] / longest[stage] for stage, s in training[preset]["stages"].items()}
                entry["epoch_at_max_frames"] = accuracy.epoch_estimate(train_utterances, rates)
                seconds = entry["epoch_at_max_frames"]["total_s"]
                frames = longest["frames"]
                entry["note"] += (f"; at {frames} frames (FLOPs traced at {frames}, at the rates measured at "
                                  f"{training[preset]['frames']}): {seconds:.0f} s per epoch")
            entry["f1"] = {"macro_f1": None, "reason": (
                f"one epoch of the three stages at {frames} frames takes ~{seconds / 3600:.1f} h here (extrapolated), "
                f"{epochs} epochs ~{epochs * seconds / 3600:.1f} h on these 2 shared cores: not trained")}
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
