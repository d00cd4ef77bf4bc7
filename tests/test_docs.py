"""The code blocks of README.md and docs/*.md run exactly as written.

Every fenced block a user would run (language `bash`, `sh` or `python`) carries a
marker comment on the line above its fence:

    <!-- test: fast -->            run in the default test run
    <!-- test: slow -->            run with `pytest -m slow` (CI's slow job): blocks that
                                   only need time (training runs, measurements)
    <!-- test: skip (reason) -->   not runnable here: data that is not in the repo, a
                                   network (installs, Docker images), a server that runs
                                   until stopped, or more CPU than CI's budget even at the
                                   tiny sizes below; the reason is required

Untagged fences (output samples, file layouts, synopses with `[--option]`) are
illustrations and are not run. Each runnable block runs in a fresh process (`bash -e`
or `python`) inside one sandbox folder that stands in for a user's checkout: the
top-level scripts, `runs/synthetic` and `runs/kemdy20` (copies of a tiny trained run;
the slow blocks, which train `runs/kemdy20` themselves, get a copy without it),
`saved_models/kemdy/1` (its export), a few clips (`clip.wav`, `clips/`, `a.wav`,
`b.wav`, `clips.csv`, `my_corpus.csv`) and `$KEMDY20` pointing at a synthetic
KEMDy20 folder. Blocks run in document order, so a block may use what an earlier one
wrote, as a reader following the page would.

The slow blocks run as written too, in a sandbox whose `train.py` is the real one at
the tiny test sizes and one epoch (`TINY_TRAIN`): a block that trains for an hour at
the sizes it reports checks its commands, flags and files in a minute. The full-size
small preset runs end to end in CI's main job (`.ci/run`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_run

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"bash", "sh", "python"}
MARKER = re.compile(r"^<!--\s*test:\s*(fast|slow|skip)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```\s*([\w+-]*)")


@dataclasses.dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str | None
    reason: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the marker on the line above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1).lower()
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = MARKER.match(lines[start - 1].strip()) if start else None
        blocks.append(Block(path, start + 1, lang, marker.group(1) if marker else None,
                            marker.group(2) if marker else "", "\n".join(body) + "\n"))
        i += 1
    return blocks


ALL_BLOCKS = [b for path in DOCS for b in code_blocks(path)]




def _params(kind: str):
    marks = [pytest.mark.slow] if kind == "slow" else []
    return [pytest.param(b, id=b.id, marks=marks) for b in ALL_BLOCKS if b.marker == kind]


def test_every_runnable_block_is_marked():
    unmarked = [b.id for b in ALL_BLOCKS if b.lang in RUNNABLE and b.marker is None]
    assert not unmarked, f"mark these blocks <!-- test: fast|slow|skip (reason) -->: {unmarked}"
    no_reason = [b.id for b in ALL_BLOCKS if b.marker == "skip" and not b.reason.strip("() ")]
    assert not no_reason, f"a skipped block needs its reason: {no_reason}"
    stray = [b.id for b in ALL_BLOCKS if b.marker and b.lang not in RUNNABLE]
    assert not stray, f"markers on blocks that are not bash/sh/python: {stray}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, trained_run, synthetic_root):
    """A user's checkout in miniature (see the module docstring)."""
    import pandas as pd

    from kemdy_tf.export import export_run

    root = tmp_path_factory.mktemp("docs") / "checkout"
    root.mkdir()
    for name in ("train.py", "evaluate.py", "predict.py", "serve.py", "scripts", "bench", "tests"):
        (root / name).symlink_to(REPO / name)
    (root / "docs" / "figures").mkdir(parents=True)  # where docs blocks write their pictures
    copy_run(trained_run, root / "runs" / "synthetic")
    copy_run(trained_run, root / "runs" / "kemdy20")
    export_run(root / "runs" / "synthetic", root / "saved_models" / "kemdy", version=1)

    table = pd.read_csv(trained_run / "table.csv", keep_default_na=False)
    table = table[(table["augmented_from"] == "") & (table["split"] == "test")]
    wavs = [Path(p) for p in table["wav_path"]]
    shutil.copy(wavs[0], root / "clip.wav")
    (root / "clip.txt").write_text(table["text_raw"].iloc[0], encoding="utf-8")
    shutil.copy(wavs[1], root / "a.wav")
    shutil.copy(wavs[2], root / "b.wav")
    (root / "clips").mkdir()
    for wav in wavs[:3]:
        shutil.copy(wav, root / "clips" / wav.name)
    pd.DataFrame({"path": [f"clips/{w.name}" for w in wavs[:3]], "text": list(table["text"].iloc[:3])}) \
        .to_csv(root / "clips.csv", index=False)
    # Every session of the run (a manifest is split by session: one session cannot be).
    originals = pd.read_csv(trained_run / "table.csv", keep_default_na=False)
    originals = originals[originals["augmented_from"] == ""]
    corpus = originals.assign(path=originals["wav_path"])[["path", "text", "emotion", "valence", "arousal",
                                                           "speaker", "session"]]
    corpus.to_csv(root / "my_corpus.csv", index=False)
    return root


def run_block(block: Block, cwd: Path, kemdy20: Path) -> subprocess.CompletedProcess:
    """The block in a fresh `python` / `bash -e` process in `cwd`, `$KEMDY20` set."""
    env = {**os.environ, "KEMDY20": str(kemdy20), "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if block.lang == "python":
        command = [sys.executable, "-c", block.code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)


def _check(block: Block, sandbox: Path, synthetic_root: Path) -> None:
    done = run_block(block, sandbox, synthetic_root)
    assert done.returncode == 0, (f"{block.id} failed ({done.returncode}):\n{block.code}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("block", _params("fast"))
def test_fast_block_runs(block, sandbox, synthetic_root):
    _check(block, sandbox, synthetic_root)


# The slow sandbox's train.py: the real one, with the tiny sizes and one epoch appended
# (argparse keeps the last --epochs and the last value of each --set field).
TINY_TRAIN = """import runpy, sys
sys.path.insert(0, {repo!r})
sys.argv += {extra!r}
runpy.run_path({train!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def slow_sandbox(sandbox, tmp_path_factory, tiny_overrides):
    """The sandbox without `runs/kemdy20` (the slow blocks train that run themselves) and
    with a tiny train.py (`TINY_TRAIN`)."""
    from conftest import set_args

    root = tmp_path_factory.mktemp("docs_slow") / "checkout"
    shutil.copytree(sandbox, root, symlinks=True, ignore=lambda folder, names: (
        ["kemdy20"] if Path(folder).name == "runs" else []))
    (root / "train.py").unlink()
    (root / "train.py").write_text(TINY_TRAIN.format(
        repo=str(REPO), train=str(REPO / "train.py"), extra=[*set_args(tiny_overrides), "--epochs", "1"]))
    return root


@pytest.mark.parametrize("block", _params("slow"))
def test_slow_block_runs(block, slow_sandbox, synthetic_root):
    _check(block, slow_sandbox, synthetic_root)
