"""Shared fixtures: a small synthetic KEMDy20 and tiny model sizes so tests run in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the top-level CLIs (train.py, ...)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

# Model sizes that train in seconds on 2 CPU cores; the data/feature settings stay default.
TINY = [
    "audio.conv_filters=4,4,4,4", "audio.d_model=16", "audio.n_layers=1", "audio.n_heads=2",
    "audio.ff_dim=32", "audio.gru_units=16",
    "text.d_model=16", "text.n_layers=1", "text.n_heads=2", "text.ff_dim=32", "text.gru_units=16",
    "fusion.n_heads=2", "fusion.lstm_units=16",
    "features.vocab_size=200", "train.batch_size=16", "train.epochs=2",
]


@pytest.fixture(scope="session")
def tiny_overrides():
    return list(TINY)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A 3-session synthetic KEMDy20 (one session each for train, val, test)."""
    from kemdy_tf.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("synthetic") / "KEMDy20", seed=0, sessions=3)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_root, tiny_overrides):
    """Every stage trained once (tiny sizes, 2 epochs) on the 3-session synthetic set."""
    from train import main

    workdir = tmp_path_factory.mktemp("run") / "run"
    sets = [arg for item in tiny_overrides for arg in ("--set", item)]
    code = main(["--stage", "all", "--data", str(synthetic_root), "--workdir", str(workdir),
                 "--no-export", *sets])
    assert code == 0
    return workdir
