#!/usr/bin/env bash
# CI's slow job, run by .ci/run after the default suite (which makes .venv): the tests
# marked slow (long end-to-end runs, kill-at-every-point resumes, the transcript-shortcut
# scenario, TF Serving 2.20's runtime) and the docs blocks marked `test: slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -m slow -rf --tb=short  # exec: a timeout stops pytest itself
