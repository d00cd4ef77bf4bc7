"""The benchmark: its FLOP counter is right, and `bench/run.py --tiny` produces every section.

No timing is asserted: speeds depend on the machine and its load. The smoke test
only checks that every section is there with finite numbers, so the benchmark
cannot rot unnoticed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import flops, report  # noqa: E402
from bench.machine import percentile  # noqa: E402


def _dense_conv_model():
    import keras

    inputs = keras.Input((12, 10, 1))
    x = keras.layers.Conv2D(4, (1, 3), padding="same")(inputs)
    x = keras.layers.Reshape((12, 40))(x)
    x = keras.layers.Dense(8)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _gradient_graph(model, x):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    return step.get_concrete_function(x).graph


def test_counter_agrees_with_tf_profiler_on_a_graph_without_loops():
    import tensorflow as tf

    model = _dense_conv_model()
    graph = _gradient_graph(model, tf.zeros([2, 12, 10, 1]))
    mine, theirs = flops.count_flops(graph), flops.profiler_flops(graph)
    # The gradient of the first convolution with respect to the model input is never used:
    # TF prunes it before running, so it is not counted; the profiler counts every node.
    assert mine["Conv2DBackpropFilter"] == theirs["Conv2DBackpropFilter"]
    assert "Conv2DBackpropInput" not in mine and theirs["Conv2DBackpropInput"] > 0
    assert mine["Conv2D"] == theirs["Conv2D"] == 2 * (2 * 12 * 10 * 4) * 3
    # Forward, kernel gradients and input gradients of both Dense layers (the first one's
    # input gradient feeds the convolution's filter gradient).
    dense = 2 * (2 * 12) * (40 * 8 + 8 * 3)
    assert mine["MatMul"] == theirs["MatMul"] == 3 * dense


def test_counter_unrolls_recurrent_loops_that_the_profiler_skips():
    import keras
    import tensorflow as tf

    batch, steps, width, units = 2, 7, 5, 6
    inputs = keras.Input((steps, width))
    model = keras.Model(inputs, keras.layers.GRU(units)(inputs))
    x = tf.zeros([batch, steps, width])
    forward = tf.function(lambda x: model(x)).get_concrete_function(x).graph
    # Each step: input kernel [width, 3 units] and recurrent kernel [units, 3 units].
    per_step = 2 * batch * (width + units) * 3 * units
    assert flops.count_flops(forward) == {"MatMul": steps * per_step}
    # The profiler never enters the loop body; it only sees the step Keras runs once
    # outside the loop to learn the output shapes (unused: TF prunes it, so do we).
    assert flops.profiler_flops(forward).get("MatMul", 0) <= per_step

    split = flops.count_flops(_gradient_graph(model, x),
                              group=lambda op: "backward" if op.name.startswith("gradient_tape") else "forward")
    assert sum(split["forward"].values()) == steps * per_step
    # Weight gradients of both kernels and the state gradient through the recurrent kernel;
    # no gradient with respect to the model input.
    assert sum(split["backward"].values()) == steps * 2 * batch * (width + 2 * units) * 3 * units


def test_counter_refuses_unknown_shapes():
    import tensorflow as tf

    graph = tf.function(lambda a: tf.matmul(a, tf.ones([3, 4]))).get_concrete_function(
        tf.TensorSpec([None, 3])).graph
    with pytest.raises(flops.FlopCountError, match="unknown dimensions"):
        flops.count_flops(graph)


def test_percentile_interpolates_like_numpy():
    import numpy as np

    values = [5.0, 1.0, 3.0, 10.0, 7.0, 2.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_markdown_block_is_replaced_and_hand_written_text_kept(tmp_path):
    path = tmp_path / "bench.md"
    report.write_markdown(path, "first table\n")
    assert path.read_text().startswith("# Benchmarks\n") and "first table" in path.read_text()
    path.write_text(path.read_text() + "\n## Analysis\n\nwritten by hand\n")
    report.write_markdown(path, "second table\n")
    text = path.read_text()
    assert "second table" in text and "first table" not in text
    assert text.index(report.END) < text.index("## Analysis") and "written by hand" in text


def test_verdicts_compare_each_figure_with_its_target():
    results = {
        "ceiling": {"gflops": 100.0},
        "training": {p: {"total": {"gflops": g, "fraction_of_ceiling": g / 100},
                         "stages": {"audio": {"stage": "audio", "fraction_of_ceiling": g / 100}}}
                     for p, g in (("paper", 59.0), ("small", 31.0))},
        "memory": {"ratio": 1.05, "peak_rss_mb_4n": 1050.0, "peak_rss_mb_n": 1000.0},
    }
    met = {v["id"]: v["met"] for v in report.verdicts(results)}
    assert met == {"train_paper": False, "train_small": True, "memory": True}


def _numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


@pytest.mark.slow  # the whole benchmark, tiny (~1-2 min): a job of its own (.ci/slow.sh)
def test_tiny_benchmark_writes_every_section_with_finite_numbers(tmp_path):
    out = tmp_path / "benchmarks.md"
    # The limit only catches a hang: beside training jobs on 2 cores --tiny took over 300 s.
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.with_suffix(".json").read_text())

    for section in ("meta", "ceiling", "training", "pipeline", "serving", "memory", "accuracy", "verdicts"):
        assert results.get(section), f"section {section} is missing or empty"
    numbers = dict(_numbers(results))
    assert all(math.isfinite(v) for v in numbers.values()), [k for k, v in numbers.items() if not math.isfinite(v)]
    for preset in ("small", "paper"):
        block = results["training"][preset]
        assert set(block["stages"]) == {"audio", "text", "fusion"}
        for stage in block["stages"].values():
            assert stage["samples_per_s"] > 0 and stage["gflop_train"] > stage["gflop_fwd"] > 0
    assert set(results["training"]["small"]["variants"]["audio"]) == {"mixed_bfloat16"}  # --tiny's only variant
    assert results["serving"]["calls"] == 20 and results["serving"]["p99_ms"] >= results["serving"]["p50_ms"] > 0
    assert results["memory"]["n4_utterances"] > results["memory"]["n_utterances"] > 0
    assert 0 <= results["accuracy"]["small"]["f1"]["macro_f1"] <= 1
    assert results["accuracy"]["paper"]["f1"]["macro_f1"] is None and results["accuracy"]["paper"]["f1"]["reason"]
    assert {v["id"] for v in results["verdicts"]} == {
        "train_paper", "train_small", "cache_build", "cached_epoch", "serving_p50", "serving_vs_predict", "memory"}
    text = out.read_text()
    assert report.BEGIN in text and "| measure | value |" in text and "python bench/run.py --tiny" in text


def test_recurrent_layer_alone_is_timed_and_counted():
    from bench.training_speed import measure_rnn

    result = measure_rnn("lstm", 4, 3, batch=2, steps_in_sequence=5, warmup=1, steps=2)
    per_sample_step = 2 * (3 + 4) * 4 * 4  # input and recurrent kernels, four gates
    assert result["flops"]["forward_per_sample"] == 5 * per_sample_step + 2 * 4  # + the Dense(1) head
    assert result["step_s"] > 0 and len(result["step_s_all"]) == 2


@pytest.mark.slow  # 20 s of predictions over the trained run: the slow job runs it
def test_speaker_fallback_bench_scores_each_source_of_statistics(trained_run, capsys):
    """bench/speaker_fallback.py: its "all clips" row is what the evaluation scores (the data
    pipeline's per-speaker statistics); the other rows feed the same model other statistics."""
    import keras
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    from bench import speaker_fallback
    from kemdy_tf import run as run_lib
    from kemdy_tf.evaluation.runs import split_dataset
    from kemdy_tf.stages import inputs_for

    scores = speaker_fallback.fold_scores(trained_run, ["audio_clf", "fusion"])
    assert list(scores) == ["audio_clf", "fusion"]  # the fusion model reads them through its audio expert
    assert list(scores["audio_clf"]) == ["speaker, all clips", "speaker, 5 clips", "training set (fallback)"]
    run = run_lib.open_run(trained_run)
    model = keras.saving.load_model(run.model_path("audio_clf"), compile=False)
    truth, predicted = [], []
    for features, targets in split_dataset(run, run.split("test")):
        x = {k: v for k, v in features.items() if k in model.input}
        predicted.append(np.argmax(model.predict_on_batch(inputs_for(model, x))["emotion"], axis=-1))
        truth.append(np.asarray(targets["emotion"]))
    expected = balanced_accuracy_score(np.concatenate(truth), np.concatenate(predicted))
    assert scores["audio_clf"]["speaker, all clips"] == pytest.approx(expected, abs=1e-9)
    assert speaker_fallback.main(["--workdir", str(trained_run), "--stages", "audio_clf"]) == 0
    assert "training set (fallback)" in capsys.readouterr().out


@pytest.mark.slow  # four regressions fitted on the trained run: 20 s, kept out of the 8-minute default run
def test_ngram_candidates_bench_reproduces_the_stages_choice(trained_run, capsys, monkeypatch):
    """bench/ngram_candidates.py fits each candidate as the text classifier's choice does:
    its validation losses are the ones the stage recorded, and `best` on them decides the same."""
    import json

    from bench import ngram_candidates
    from kemdy_tf import ngram_choice

    found = ngram_candidates.candidates_of(trained_run)
    recorded = json.loads((trained_run / "text_clf" / "summary.json").read_text())["char_ngram_choice"]
    assert {name: round(float(losses.mean()), 4) for name, (losses, _) in found.items()} == pytest.approx(
        recorded["validation_log_loss"], abs=2e-4)
    assert all(0.0 <= test_ua <= 1.0 for _, test_ua in found.values())
    assert ngram_choice.decide({n: losses for n, (losses, _) in found.items()})["chosen"] == recorded["chosen"]
    monkeypatch.setattr(ngram_candidates, "candidates_of", lambda workdir: found)  # the table, not a second fit
    assert ngram_candidates.main([str(trained_run)]) == 0
    assert f"| {trained_run} ({len(found['tfidf_char4_words'][0])}) |" in capsys.readouterr().out
