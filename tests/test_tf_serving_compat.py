"""A fresh export loads and answers in TF Serving 2.20's runtime: TensorFlow 2.20 with TF Text 2.20.

TF Serving 2.20, the newest release, bundles TensorFlow 2.20 and TF Text 2.20; the
project exports with TensorFlow 2.21. This test writes exports of the fusion model
`--stage all` leaves (its network times the two classifiers, the audio one reading
speaker statistics: the default one, the XLA one and a features-only one) and sends REST row-format bodies to them through
scripts/serving_client.py (TF Serving's JSON conversion, no kemdy_tf; `serving_speaker`
with a speaker's statistics too) in a virtual
environment that holds only tensorflow==2.20.* and tensorflow-text==2.20.*, then
compares with the Keras models. Slow: the environment is made once (about 1 GB from
the package index) in `KEMDY_TF_SERVING_VENV` (default ~/.cache/kemdy_tf/venv-tf2.20);
`.ci/tf_serving_compat.sh` runs it as its own CI step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export import assert_matches, build_tiny_run, clips, keras_reference, rest_bodies, run_client, tiny_fallback

from kemdy_tf import export

SERVING_TF = "2.20"
VENV = Path(os.environ.get("KEMDY_TF_SERVING_VENV", Path.home() / ".cache" / "kemdy_tf" / f"venv-tf{SERVING_TF}"))

pytestmark = pytest.mark.slow


def serving_python() -> Path:
    """The Python of a virtual environment with TF Serving 2.20's TensorFlow and TF Text (made once)."""
    python = VENV / "bin" / "python"
    versions = "import tensorflow as tf, tensorflow_text as t; print(tf.__version__, t.__version__)"
    probe = subprocess.run([str(python), "-c", versions], capture_output=True, text=True) if python.exists() else None
    if probe is None or probe.returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"tensorflow=={SERVING_TF}.*",
                               f"tensorflow-text=={SERVING_TF}.*"], capture_output=True, text=True)
        assert done.returncode == 0, f"cannot make {VENV} (needs a package index):\n{done.stderr[-2000:]}"
    return python


@pytest.mark.timeout(1800)
def test_exports_answer_rest_requests_under_tensorflow_2_20(tmp_path):
    python = serving_python()
    # What `--stage all` leaves: the network x the classifiers, reading speaker statistics.
    config, models, tokenizer = build_tiny_run(tmp_path / "run", experts=True)
    classes = list(config.data.classes)
    exports = {
        "default": export.export_run(tmp_path / "run", tmp_path / "saved"),
        "xla": export.export_run(tmp_path / "run", tmp_path / "saved", xla_bucket=64),
        "features only": export.export_run(tmp_path / "run", tmp_path / "saved", features_only=True),
    }
    waves = clips(config.features.sample_rate)
    texts = ["정말 화가 나요", "", "오늘 날씨가 좋네요 깜짝"]
    reference = keras_reference(models, tokenizer, config, waves, texts)
    waveform_body, features_body = rest_bodies(waves, texts, reference)
    speaker = tiny_fallback(config) * np.array([[1.1], [0.9]], np.float32)  # a speaker's statistics
    speaker_reference = keras_reference(models, tokenizer, config, waves, texts, speaker=speaker)
    speaker_body = {"signature_name": "serving_speaker", "instances": [
        {**row, "speaker_functionals": speaker.tolist()} for row in waveform_body["instances"]]}

    for name, path in exports.items():
        full = name != "features only"
        job_dir = tmp_path / name.replace(" ", "_")
        job_dir.mkdir()
        requests = [waveform_body, features_body, speaker_body] if full else [features_body]
        result = run_client(job_dir, {"export": str(path), "import_tf_text": full, "requests": requests},
                            python=python)
        assert result["versions"]["tensorflow"].startswith(SERVING_TF + "."), result["versions"]
        if full:
            assert result["versions"]["tensorflow_text"].startswith(SERVING_TF + "."), result["versions"]
        assert "kemdy_tf" not in result["modules"]
        expected = [reference, reference, speaker_reference] if full else [reference]
        assert len(result["responses"]) == len(expected)
        for response, want in zip(result["responses"], expected):
            assert_matches(response, want, classes)
