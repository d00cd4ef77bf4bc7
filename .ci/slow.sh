#!/usr/bin/env bash
# CI job of its own ("slow"): the tests marked slow (long end-to-end runs, kill-at-every-point
# resumes, the transcript-shortcut scenario, TF Serving 2.20's runtime), which the default run
# (.ci/run, the README's test command) leaves out to stay near 15 minutes. Run after .ci/run,
# which makes .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q -m slow
