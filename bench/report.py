"""The benchmark's results as verdicts, a printed table and docs/benchmarks.md.

`docs/benchmarks.md` keeps hand-written analysis outside the generated block: only
the text between `BEGIN` and `END` is replaced when the benchmark runs again.
"""

from __future__ import annotations

import math
from pathlib import Path

BEGIN = "<!-- bench/run.py: generated block begins (edits inside are overwritten) -->"
END = "<!-- bench/run.py: generated block ends -->"


# === Verdicts ===

def verdicts(results: dict) -> list[dict]:
    """One row per target: what, value, reference measured in the same run, target, met.

    A section that failed (holds "error") gives no row.
    """
    results = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    rows = []
    training = results.get("training", {})
    for preset, floor in (("paper", 0.60), ("small", 0.30)):
        if preset not in training:
            continue
        total = training[preset]["total"]
        worst = min(training[preset]["stages"].values(), key=lambda s: s["fraction_of_ceiling"])
        rows.append(_row(
            f"train_{preset}", f"{preset}: training step, share of the f32 matmul ceiling (3 stages)",
            total["fraction_of_ceiling"], f"{total['gflops']:.1f} GFLOP/s of {results['ceiling']['gflops']:.1f}",
            f">= {floor:.0%}", total["fraction_of_ceiling"] >= floor, percent=True,
            note=f"lowest stage: {worst['stage']} {worst['fraction_of_ceiling']:.0%}"))
    pipeline = results.get("pipeline", {})
    if "build" in pipeline:
        build = pipeline["build"]
        rows.append(_row(
            "cache_build", f"feature cache build, {build['workers']} workers vs one-process librosa loop",
            build["speedup_vs_loop"], f"{build['build_parallel_utt_per_s']:.1f} vs "
            f"{build['plain_loop_utt_per_s']:.1f} utt/s", ">= 1.8x", build["speedup_vs_loop"] >= 1.8, times=True))
    if "cached_epoch" in pipeline:
        epoch = pipeline["cached_epoch"]
        rows.append(_row(
            "cached_epoch", "cached epoch (tf.data only) vs small training step's consumption",
            epoch["ratio"], f"{epoch['batches_per_s']:.1f} vs {epoch['train_batches_per_s']:.1f} batches/s",
            ">= 10x", epoch["ratio"] >= 10, times=True))
    serving = results.get("serving")
    if serving:
        graph = serving["exports"]["graph"]
        bucket = serving["exports"][serving.get("target_export", "xla")].get("xla_bucket")
        rows.append(_row("serving_p50", f"serving_default p50 latency, batch 1, 5 s clip (small, --xla-bucket {bucket})",
                         serving["p50_ms"], f"p99 {serving['p99_ms']:.1f} ms", "p50 <= 10 ms, p99 <= 20 ms",
                         serving["p50_ms"] <= 10 and serving["p99_ms"] <= 20, unit=" ms",
                         note=f"default export (graph mode): p50 {graph['p50_ms']:.1f} ms, p99 {graph['p99_ms']:.1f} ms"))
        rows.append(_row("serving_vs_predict", f"serving_default vs keras fusion.predict, one example (--xla-bucket {bucket})",
                         serving["speedup_vs_keras_predict"],
                         f"{serving['p50_ms']:.1f} vs {serving['keras_predict_p50_ms']:.1f} ms",
                         ">= 5x", serving["speedup_vs_keras_predict"] >= 5, times=True,
                         note=f"default export: {graph['speedup_vs_keras_predict']:.1f}x"))
    memory = results.get("memory")
    if memory:
        rows.append(_row("memory", "peak RSS of a training epoch, 4N vs N utterances",
                         memory["ratio"], f"{memory['peak_rss_mb_4n']:.0f} vs {memory['peak_rss_mb_n']:.0f} MB",
                         "<= 1.1x", memory["ratio"] <= 1.1, times=True))
    return rows


def _row(key, what, value, reference, target, met, percent=False, times=False, unit="", note=""):
    if percent:
        shown = f"{value:.0%}"
    elif times:
        shown = f"{value:.2f}x"
    else:
        shown = f"{value:.2f}{unit}"
    return {"id": key, "what": what, "value": value, "shown": shown, "reference": reference,
            "target": target, "met": bool(met), "note": note}


# === Text ===

def table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def headline(results: dict) -> str:
    rows = [[v["what"], v["shown"], v["reference"], v["target"], "met" if v["met"] else "**missed**",
             v["note"]] for v in results["verdicts"]]
    return table(["measure", "value", "reference (same run)", "target", "verdict", "note"], rows)


def render(results: dict) -> str:
    """The generated markdown block (headline table first, then each section's details)."""
    meta, ceiling = results["meta"], results.get("ceiling") or {}
    load = meta["load"]
    parts = [
        f"Command: `{meta['command']}` ({meta['mode']} mode), {meta['date']}, {meta['duration_s']:.0f} s.",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, TensorFlow "
        f"{meta['machine']['tensorflow']}. Load: other processes kept "
        f"{num(load.get('others_busy_cores'))} of {load['cores']} cores busy on average during the run "
        f"(load average {load['loadavg_start']} at start, {load['loadavg_end']} at end).",
        (f"Ceiling: float32 matmul {ceiling['n']}x{ceiling['n']}, median of {ceiling['repeats']}: "
         f"**{ceiling['gflops']:.1f} GFLOP/s** (fastest call {ceiling['gflops_best']:.1f}); "
         f"bfloat16 {num(ceiling.get('bf16_gflops'), 1)} GFLOP/s." if "gflops" in ceiling else
         "Ceiling: not measured in this run (--sections)."),
        "Seconds per section (wall / CPU of this process and its children): " + ", ".join(
            f"{name} {wall:.0f}/{meta.get('section_cpu_s', {}).get(name, float('nan')):.0f}"
            for name, wall in meta.get("section_s", {}).items()) + ".",
        "", "### Targets", "", headline(results),
    ]
    failed = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if failed:
        parts += ["", "**Failed sections:** " + "; ".join(f"{k}: `{v}`" for k, v in failed.items())]
    results = {k: v for k, v in results.items() if k not in failed}
    parts += _training_section(results)
    parts += _pipeline_section(results)
    parts += _serving_section(results)
    parts += _memory_section(results)
    parts += _accuracy_section(results)
    return "\n".join(parts) + "\n"


def _training_section(results: dict) -> list[str]:
    training = results.get("training")
    if not training:
        return []
    rows, variant_rows, profile_rows, notes = [], [], [], []
    for preset, block in training.items():
        if block.get("note"):
            notes.append(f"- {preset}: {block['note']}")
        for stage, s in block["stages"].items():
            rows.append([preset, stage, s["frames"], s["tokens"], s["batch"], num(s["gflop_fwd"], 3),
                         num(s["gflop_train"], 3), num(s["samples_per_s"], 2), num(s["gflops"], 1),
                         f"{s['fraction_of_ceiling']:.0%}", num(s["first_call_s"], 1),
                         _seconds(s.get("new_length_call_s"))])
        total = block["total"]
        rows.append([preset, "**all 3**", "", "", "", "", "", "", num(total["gflops"], 1),
                     f"**{total['fraction_of_ceiling']:.0%}**", "", ""])
        for stage, variants in block.get("variants", {}).items():
            for name, v in variants.items():
                own = f" ({v['fraction_of_ceiling_bf16']:.0%} of bf16's)" if "fraction_of_ceiling_bf16" in v else ""
                variant_rows.append([preset, stage, name, v["batch"], num(v["samples_per_s"], 2),
                                     f"{v['speedup']:.2f}x", f"{v['fraction_of_ceiling_f32']:.0%}{own}",
                                     num(v["first_call_s"], 1), _seconds(v.get("new_length_call_s"))])
        for stage, r in block.get("recurrent", {}).items():
            profile_rows.append([preset, stage, f"{r['kind'].upper()} {r['units']} units over {r['steps_in_sequence']} "
                                 f"steps, batch {r['batch']}", num(r["step_s"], 3), f"{r['share_of_stage_step']:.0%}",
                                 f"{r['share_of_stage_flops']:.1%}", f"{r['fraction_of_ceiling']:.0%}"])
        if block.get("flops_at_max_frames"):
            f = block["flops_at_max_frames"]
            notes.append(f"- {preset} at {f['frames']} frames (traced, not run): GFLOP train/sample " + ", ".join(
                f"{stage} {f[stage]:.1f}" for stage in ("audio", "text", "fusion")))
    out = ["", "### Training step", "",
           "One compiled Keras `train_function` call on a fixed batch (no input pipeline), median of the timed "
           "steps after warm-up. GFLOP per sample counted from the traced forward+backward graph "
           "(`bench/flops.py`); `% of ceiling` = achieved GFLOP/s / the f32 matmul ceiling. `new-length calls`: "
           "the next steps on batches of a new frame count (a padded batch's length changes with its longest clip).",
           "", table(["preset", "stage", "frames", "tokens", "batch", "GFLOP fwd/sample", "GFLOP train/sample",
                      "samples/s", "GFLOP/s", "% of ceiling", "first call s", "new-length calls s"], rows)]
    if notes:
        out += [""] + notes
    if variant_rows:
        out += ["", "Variants (same stage, same run; speed-up over the float32 graph-mode baseline above):", "",
                table(["preset", "stage", "variant", "batch", "samples/s", "speed-up", "% of f32 ceiling",
                       "first call s", "new-length calls s"], variant_rows)]
    if profile_rows:
        out += ["", "Profile: each stage's recurrent layer alone (same batch, same sequence length), "
                    "against the whole stage's step:", "",
                table(["preset", "stage", "layer", "step s", "share of the stage's step time",
                       "share of its FLOPs", "% of ceiling"], profile_rows)]
    return out


def _seconds(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else ""


def _pipeline_section(results: dict) -> list[str]:
    pipeline = results.get("pipeline")
    if not pipeline:
        return []
    b, e = pipeline["build"], pipeline["cached_epoch"]
    return ["", "### Input pipeline", "", table(["measure", "value", "reference", "ratio"], [
        [f"cache build, {b['workers']} workers, {b['utterances']} clips ({b['audio_seconds']:.0f} s of audio)",
         f"{b['build_parallel_utt_per_s']:.1f} utt/s", f"plain loop {b['plain_loop_utt_per_s']:.1f} utt/s",
         f"{b['speedup_vs_loop']:.2f}x"],
        [f"cache build, {b['workers']} workers with one BLAS thread each",
         f"{b['build_parallel_one_blas_thread_utt_per_s']:.1f} utt/s",
         f"plain loop {b['plain_loop_utt_per_s']:.1f} utt/s", f"{b['speedup_vs_loop_one_blas_thread']:.2f}x"],
        ["cache build, 1 worker (the cache's own overhead)", f"{b['build_single_utt_per_s']:.1f} utt/s",
         f"plain loop {b['plain_loop_utt_per_s']:.1f} utt/s", f"{1 / b['single_worker_overhead']:.2f}x"],
        [f"cached epoch, {e['utterances']} utterances, batch {e['batch_size']}",
         f"{e['batches_per_s']:.1f} batches/s", f"small train step {e['train_batches_per_s']:.1f} batches/s "
         f"({e['train_stage']}, the fastest stage)", f"{e['ratio']:.1f}x"],
    ]), "", f"Worker overhead of the {b['workers']}-worker build (its time minus the loop's split "
            f"{b['workers']} ways): {b['worker_overhead_s']:.1f} s for {b['plain_loop_s']:.1f} s of loop work. "
            "Cached epoch vs each small stage's consumption: " + ", ".join(
                f"{stage} {ratio:.1f}x" for stage, ratio in e["ratio_by_stage"].items()) + "."]


def _serving_section(results: dict) -> list[str]:
    s = results.get("serving")
    if not s:
        return []
    names = {"graph": "SavedModel, default (graph mode)",
             "xla": f"SavedModel, --xla-bucket {s['exports']['xla'].get('xla_bucket')} (XLA)"}
    rows = []
    for preset, block in [(s["preset"], s), *([("paper", s["paper"])] if s.get("paper") else [])]:
        for name, e in block["exports"].items():
            rows.append([preset, names.get(name, name), f"{e['p50_ms']:.1f}", f"{e['p99_ms']:.1f}",
                         f"{block['keras_predict_p50_ms']:.1f}", f"{e['speedup_vs_keras_predict']:.1f}x",
                         f"{e['first_call_s']:.1f}", f"{e['max_abs_diff_vs_keras']:.1e}"])
    lite = s.get("litert")
    if lite:
        rows.append([s["preset"], f"LiteRT, float32, {lite['bytes'] / 1e6:.1f} MB, window {lite['window_frames']} "
                     "frames", f"{lite['p50_ms']:.1f}", f"{lite['p99_ms']:.1f}", f"{s['keras_predict_p50_ms']:.1f}",
                     f"{s['keras_predict_p50_ms'] / lite['p50_ms']:.1f}x", f"{lite['convert_s']:.1f} (convert)",
                     f"{lite['max_abs_diff_vs_keras']:.1e}"])
    throughput = [[names.get(name, name), f"{rate:.1f} clips/s", f"{s['batch1_clips_per_s'][name]:.1f} clips/s",
                   f"{rate / s['batch1_clips_per_s'][name]:.2f}x"] for name, rate in s["batch_clips_per_s"].items()]
    return ["", "### Serving", "",
            f"Exports of small- and paper-preset runs, {s['weights']}; `serving_default` at batch 1 on a {s['clip_seconds']:.0f} s "
            f"clip with a {s['transcript_words']}-word Korean transcript, {s['calls']} timed calls (paper: "
            f"{s.get('paper', {}).get('calls', 0)}); the LiteRT model gets the same clip padded to its window and the "
            "transcript's token ids. `vs predict`: keras `fusion.predict` p50 on the precomputed features / the "
            "export's p50. `max diff`: largest difference of the emotion probabilities from the Keras model's.", "",
            table(["preset", "export", "p50 ms", "p99 ms", "keras predict p50 ms", "vs predict", "first call s",
                   "max diff"], rows), "",
            table(["export (small)", f"throughput at batch {s['batch']}", "batch 1", "ratio"], throughput), "",
            "Profile: p50 ms at batch 1 of each part, each in its own `tf.function` (same run):", "",
            table(["part", "p50 ms", "share of the default export's p50"],
                  [[name, f"{ms:.2f}", f"{ms / s['exports']['graph']['p50_ms']:.0%}"]
                   for name, ms in s["profile_p50_ms"].items()])]


def _memory_section(results: dict) -> list[str]:
    m = results.get("memory")
    if not m:
        return []
    return ["", "### Memory", "",
            table(["epoch of stage " + m["stage"], "training utterances", "peak RSS MB", "cached features MB",
                   "epoch s"], [
                ["N", m["n_utterances"], f"{m['peak_rss_mb_n']:.0f}", f"{m['features_mb_n']:.1f}",
                 f"{m['epoch_s_n']:.1f}"],
                ["4N", m["n4_utterances"], f"{m['peak_rss_mb_4n']:.0f}", f"{m['features_mb_4n']:.1f}",
                 f"{m['epoch_s_4n']:.1f}"]]),
            "", f"Ratio 4N/N: **{m['ratio']:.3f}**; had every feature been held in memory it would be at least "
                f"{m['ratio_if_features_in_memory']:.3f}."]


def _accuracy_section(results: dict) -> list[str]:
    acc = results.get("accuracy")
    if not acc:
        return []
    rows = []
    for preset, a in acc.items():
        epoch = a["epoch"]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in epoch["per_stage_s"].items())
        measured = a.get("main_run_epoch_s") or {}
        measured_text = ", ".join(f"{k} {v:.0f}" for k, v in measured.items()) or "n/a"
        f1 = a["f1"]
        f1_text = (f"{f1['macro_f1']:.3f} ({f1['split']}, n={f1.get('n')})" if f1.get("macro_f1") is not None
                   else f"not measured ({f1['reason']})")
        rows.append([preset, epoch["train_utterances"], f"{epoch['total_s']:.0f} ({stages})", measured_text,
                     f1_text, f1.get("source", "")])
    return ["", "### Accuracy vs cost", "",
            table(["preset", "training utterances", "s per epoch, 3 stages (extrapolated from this run's steps)",
                   "main run's logged s per epoch", "fusion macro-F1", "F1 from"], rows)] + [
        f"- {preset}: {a['note']}" for preset, a in acc.items() if a.get("note")]


def write_markdown(path: Path, block: str, title: str = "# Benchmarks") -> None:
    """Write `block` into `path` between the markers, keeping everything outside them."""
    generated = f"{BEGIN}\n{block}{END}\n"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            tail = "\n" + tail.lstrip("\n") if tail.strip() else ""
            path.write_text(head + generated + tail, encoding="utf-8")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{title}\n\n{generated}", encoding="utf-8")
