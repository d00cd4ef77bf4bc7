"""`import kemdy_tf` is light, and still makes the run's `.keras` archives loadable."""

import subprocess
import sys

import pytest

CHECKS = {
    "data tools do not import keras or tensorflow": (
        "import sys, kemdy_tf, kemdy_tf.data.kemdy20, kemdy_tf.data.synthetic\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"),
    "layers register when keras is imported after kemdy_tf": (
        "import kemdy_tf, keras\n"
        "assert keras.saving.get_registered_object('kemdy_tf>ModalityDropout') is not None"),
    "layers register when keras was imported first": (
        "import keras, kemdy_tf\n"
        "assert keras.saving.get_registered_object('kemdy_tf>ModalityDropout') is not None"),
    "the training metrics register too (compiled archives load)": (
        "import kemdy_tf, keras\n"
        "assert keras.saving.get_registered_object('kemdy_tf>SparseMacroF1') is not None\n"
        "assert keras.saving.get_registered_object('kemdy_tf>SparseBalancedAccuracy') is not None"),
    "evaluation and export do not import training (they read finished runs)": (
        "import sys, kemdy_tf.evaluation, kemdy_tf.export, kemdy_tf.run\n"
        "assert 'kemdy_tf.training' not in sys.modules"),
    "the stage registry and the run module are light": (
        "import sys, kemdy_tf.stages, kemdy_tf.run\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"),
}


@pytest.mark.parametrize("code", CHECKS.values(), ids=CHECKS.keys())
def test_import(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_archive_loads_after_import_kemdy_tf(tmp_path):
    """The documented fine-tuning entry point, in a fresh interpreter."""
    code = f"""
import kemdy_tf, keras
from kemdy_tf.config import make_config
from kemdy_tf.models import build_audio_backbone, build_fusion_model, build_text_backbone
cfg = make_config("small", ["audio.d_model=8", "audio.n_layers=1", "text.d_model=8", "text.n_layers=1"])
model = build_fusion_model(build_audio_backbone(cfg.audio, cfg.features),
                           build_text_backbone(cfg.text, cfg.features, 50), cfg.fusion, 5)
model.save(r"{tmp_path / 'fusion.keras'}")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    load = f"import kemdy_tf, keras; keras.saving.load_model(r'{tmp_path / 'fusion.keras'}')"
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def _imported_modules(path, module: str, known: set[str]) -> set[str]:
    """The kemdy_tf modules `module` (file `path`) imports, at the top or inside functions."""
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return (found & known) - {module}


def test_no_import_cycle_between_modules():
    """A module never imports one that imports it back, even lazily inside a function:
    a cycle means two modules share a concept that belongs in a third."""
    from conftest import REPO

    files = {}
    for path in (REPO / "kemdy_tf").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    graph = {name: _imported_modules(path, name, set(files)) for name, path in files.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a]
                    if a < b and reaches(b, a, set()))
    assert not cycles, f"import cycles (lift the shared part into a module of its own): {cycles}"
