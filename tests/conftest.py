"""The shared test harness: tiny model sizes, a small synthetic KEMDy20, one trained run.

Every test that needs a config, a dataset or a finished run takes it from here
(`tiny_overrides`, `tiny_config`, `synthetic_root`, `trained_run`, `train_args`) instead
of keeping its own copy. `trained_run` is a real run written by `train.py` (no
monkeypatching): tests that only read it must not change it; tests that do, copy it
with `copy_run`.

The suite runs on two pytest-xdist workers (pyproject's addopts). `synthetic_root` and
`trained_run` are made once for the whole session, by whichever worker asks first
(`made_once`), and read by both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the top-level CLIs (train.py, ...)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores: one TensorFlow compute thread each (and in the train.py
    # processes they start), rather than two threads each contending for the same cores.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def shared_base(tmp_path_factory) -> Path:
    """The session's temporary folder that both xdist workers see (their own outside xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def made_once(tmp_path_factory, name: str):
    """`(folder, done)` shared by every xdist worker of the session: the first worker to get
    here makes `folder` (then `done()` marks it finished); the others wait for it and find
    it finished. Outside xdist it is a folder of this session's own."""
    from filelock import FileLock

    base = shared_base(tmp_path_factory)
    folder, marker = base / name, base / f"{name}.done"
    with FileLock(str(base / f"{name}.lock")):
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir(parents=True)
            yield folder, marker.touch
        else:
            yield folder, None


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A 3-session synthetic KEMDy20 (one session each for train, val, test)."""
    from kemdy_tf.data import synthetic

    with made_once(tmp_path_factory, "synthetic") as (folder, done):
        if done:
            synthetic.generate(folder / "KEMDy20", seed=0, sessions=3)
            done()
    return folder / "KEMDy20"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One feature cache for the session's runs on `synthetic_root` (both workers): its
    log-mels and eGeMAPS rows are computed once. Entries are keyed by content and written
    by rename, so concurrent builds are safe; a test that checks building uses its own."""
    return shared_base(tmp_path_factory) / "shared_cache"


@pytest.fixture(scope="session")
def train_args(synthetic_root, tiny_overrides, shared_cache):
    """`train_args(workdir, *extra)`: train.py's arguments for a tiny run on `synthetic_root`
    (the shared feature cache unless `extra` names another `--cache-dir`)."""
    def make(workdir, *extra):
        return ["--data", str(synthetic_root), "--workdir", str(workdir), "--no-export",
                "--cache-dir", str(shared_cache), *set_args(tiny_overrides), *[str(e) for e in extra]]
    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_args):
    """Every stage trained once (tiny sizes, 2 epochs) on the 3-session synthetic set."""
    from train import main

    with made_once(tmp_path_factory, "trained") as (folder, done):
        if done:
            assert main(["--stage", "all", *train_args(folder / "run")]) == 0
            done()
    return folder / "run"


# The modules that take longest, first within their rank (a long module last would leave
# one worker idle at the end).
_LONGEST = ("test_training", "test_docs", "test_text_real", "test_refit", "test_evaluation", "test_precision")


def pytest_collection_modifyitems(config, items):
    """Order modules for the two xdist workers (`--dist loadscope --no-loadscope-reorder`
    hands out whole modules in this order): test_training first, which makes
    `trained_run`, then the modules that do not need it, so the other worker has work
    instead of waiting for it, then the rest; the longest first within each rank."""
    needs_run = {item.module.__name__ for item in items if "trained_run" in item.fixturenames}

    def rank(item):
        module = item.module.__name__
        first = 0 if module == "test_training" else 1 if module not in needs_run else 2
        return first, _LONGEST.index(module) if module in _LONGEST else len(_LONGEST)

    items.sort(key=rank)  # stable: collection order within a module
