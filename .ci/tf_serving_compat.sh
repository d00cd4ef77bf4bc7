#!/usr/bin/env bash
# CI step of its own: a fresh export loads and answers in TF Serving 2.20's runtime
# (TensorFlow 2.20 + TF Text 2.20, in a virtual environment the test makes once;
# KEMDY_TF_SERVING_VENV moves it). Run after .ci/run, which makes .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q -m slow tests/test_tf_serving_compat.py
