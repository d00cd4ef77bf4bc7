"""What taking speaker statistics costs a served request (issue "serve the model that is right").

    python bench/serving_speaker.py --export /tmp/rav_export --export saved_models/kemdy [--calls 300]

Loads each trained export as TF Serving and `predict.py` do (`tf.saved_model.load`) and
calls, at batch 1 on a 5 s clip with a 10-word transcript, its `serving_default` (an
unenrolled clip: the run's fallback statistics are a constant of the graph) and, where the
export has it, `serving_speaker` (the same graph with the statistics as an input, a `[1, 2, F]`
tensor as an enrolled speaker's request carries them). All signatures are called in turns
(one call of each per round), so a neighbour's load falls on all of them alike; on a shared
machine only the ratios mean much. The first export's `serving_default` is the reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", action="append", required=True,
                        help="an export (version folder or base folder); repeat to compare several")
    parser.add_argument("--calls", type=int, default=300, help="timed calls of each signature")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  serving_default's SentencePiece ops

    from bench.machine import percentile
    from bench.serving import TRANSCRIPT, clip, interleaved_calls
    from kemdy_tf import export as export_lib

    calls, loaded = {}, []
    for path in args.export:
        folder = export_lib.find_export(path)
        saved = tf.saved_model.load(str(folder))
        metadata = export_lib.read_metadata(folder)
        rate = int(metadata["features"]["sample_rate"])
        wave = clip(args.seconds, rate)
        inputs = {"waveform": tf.constant(wave[np.newaxis]), "waveform_length": tf.constant([len(wave)], tf.int32),
                  "text": tf.constant([TRANSCRIPT.encode("utf-8")])}
        name = f"{path} ({len(metadata['classes'])} classes)"
        loaded.append(saved)  # keeps the variables alive
        serve = saved.signatures[export_lib.SERVING_SIGNATURE]
        calls[f"{name} serving_default"] = lambda serve=serve, inputs=inputs: serve(**inputs)["emotion_probs"].numpy()
        if export_lib.SERVING_SPEAKER_SIGNATURE in saved.signatures:
            speaker = saved.signatures[export_lib.SERVING_SPEAKER_SIGNATURE]
            # One clip enrols nobody: the enrolment signature answers the run's fallback, scaled a
            # little so the request carries statistics of its own.
            enrol = saved.signatures[export_lib.ENROL_SIGNATURE]
            fallback = enrol(waveform=inputs["waveform"], waveform_length=inputs["waveform_length"])
            statistics = fallback["speaker_functionals"][tf.newaxis] * 1.05
            calls[f"{name} serving_speaker"] = (
                lambda speaker=speaker, inputs=inputs, statistics=statistics:
                speaker(**inputs, speaker_functionals=statistics)["emotion_probs"].numpy())
    times = interleaved_calls(calls, {name: args.calls for name in calls}, warmup=10)
    reference = percentile(next(iter(times.values())), 50)
    print(f"batch 1, {args.seconds:g} s clip, {args.calls} calls each, in turns")
    print("| export, signature | p50 ms | p95 ms | p50 / first row |\n|---|---|---|---|")
    for name, seconds in times.items():
        p50 = percentile(seconds, 50)
        print(f"| {name} | {1e3 * p50:.2f} | {1e3 * percentile(seconds, 95):.2f} | {p50 / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
