"""The shared test harness: tiny model sizes, a small synthetic KEMDy20, one trained run.

Every test that needs a config, a dataset or a finished run takes it from here
(`tiny_overrides`, `tiny_config`, `synthetic_root`, `trained_run`, `train_args`) instead
of keeping its own copy. `trained_run` is a real run written by `train.py` (no
monkeypatching): tests that only read it must not change it; tests that do, copy it
with `copy_run`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the top-level CLIs (train.py, ...)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

REPO = Path(__file__).resolve().parents[1]

# Model sizes that train in seconds on 2 CPU cores; the data/feature settings stay default.
TINY_MODEL = [
    "audio.conv_filters=4,4,4,4", "audio.d_model=16", "audio.n_layers=1", "audio.n_heads=2",
    "audio.ff_dim=32", "audio.gru_units=16",
    "text.d_model=16", "text.n_layers=1", "text.n_heads=2", "text.ff_dim=32", "text.gru_units=16",
    "fusion.n_heads=2", "fusion.lstm_units=16",
    # Light transcript corruption: a tiny model's two or three epochs must show it learns
    # (the defaults' heavier corruption is measured end to end in tests/test_shortcut.py).
    "fusion.modality_dropout=0.15", "fusion.text_swap=0.25", "fusion.text_scramble=0",
]
TINY = [*TINY_MODEL, "features.vocab_size=200", "train.batch_size=16", "train.epochs=2"]


def set_args(overrides) -> list[str]:
    """`--set a=1 --set b=2` for train.py."""
    return [arg for item in overrides for arg in ("--set", item)]


def copy_run(workdir: Path, to: Path) -> Path:
    """A copy of a run folder (the feature cache it names is shared, read-only)."""
    shutil.copytree(workdir, to)
    return to


@pytest.fixture(scope="session")
def tiny_model_overrides():
    """Only the model sizes (for tests that pick their own vocabulary, batch and epochs)."""
    return list(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_overrides():
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_config():
    from kemdy_tf.config import make_config

    return make_config("small", TINY)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A 3-session synthetic KEMDy20 (one session each for train, val, test)."""
    from kemdy_tf.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("synthetic") / "KEMDy20", seed=0, sessions=3)


@pytest.fixture(scope="session")
def train_args(synthetic_root, tiny_overrides):
    """`train_args(workdir, *extra)`: train.py's arguments for a tiny run on `synthetic_root`."""
    def make(workdir, *extra):
        return ["--data", str(synthetic_root), "--workdir", str(workdir), "--no-export",
                *set_args(tiny_overrides), *[str(e) for e in extra]]
    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_args):
    """Every stage trained once (tiny sizes, 2 epochs) on the 3-session synthetic set."""
    from train import main

    workdir = tmp_path_factory.mktemp("run") / "run"
    assert main(["--stage", "all", *train_args(workdir)]) == 0
    return workdir
