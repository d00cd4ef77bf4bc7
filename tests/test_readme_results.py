"""The README's results are the stored report rendered again, not numbers typed by hand."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "scripts" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_stored_report():
    script = _script()
    report = json.loads(script.STORED.read_text(encoding="utf-8"))
    readme = script.README.read_text(encoding="utf-8")
    assert script.current_fragment(readme) == script.fragment(report), (
        "README.md's results differ from docs/results/synthetic_report.json: "
        "run `python scripts/readme_results.py` (never edit the tables by hand)")


def test_stored_report_has_no_machine_paths():
    script = _script()
    report = json.loads(script.STORED.read_text(encoding="utf-8"))
    assert not set(script.MACHINE_KEYS) & set(report)


def test_rewriting_keeps_the_text_around_the_markers(tmp_path):
    script = _script()
    text = f"intro\n{script.BEGIN}\nold table\n{script.END}\noutro\n"
    new = script.replace_fragment(text, "| new |\n")
    assert new == f"intro\n{script.BEGIN}\n| new |\n{script.END}\noutro\n"
    assert script.current_fragment(new) == "| new |\n"
