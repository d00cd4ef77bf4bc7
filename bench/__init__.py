"""Benchmarks of kemdy_tf: `python bench/run.py [--quick | --tiny]` (see bench/run.py and docs/benchmarks.md).

    machine.py         the matmul ceiling, timing helpers, how busy the machine was
    flops.py           FLOPs counted from a traced TensorFlow graph (loops unrolled)
    training_speed.py  train-step samples/s per stage, variants, recurrent-layer profile
    pipeline.py        feature-cache build vs a plain loop; a cached tf.data epoch
    serving.py         the exports' latency (SavedModel graph / XLA, LiteRT) vs keras predict
    memory.py          peak RSS of a training epoch at N and 4N utterances (subprocesses)
    accuracy.py        time per epoch and macro-F1 per preset
    report.py          verdicts, tables, docs/benchmarks.md
"""
