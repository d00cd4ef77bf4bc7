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


def test_a_run_is_checked_exactly_on_the_same_cpu_and_within_rounding_on_another(tmp_path, monkeypatch, capsys):
    """`--check --from RUN` (CI, after the main job): identical on the CPU kind the README
    was made on; on another kind the figures may round differently, within the tolerance."""
    import copy

    script = _script()
    stored = json.loads(script.STORED.read_text(encoding="utf-8"))
    readme = tmp_path / "README.md"
    readme.write_text(script.replace_fragment(f"{script.BEGIN}\n{script.END}\n", script.fragment(stored)))

    def run_with(shift: float, machine: dict) -> int:
        report = copy.deepcopy(stored)
        report["models"]["fusion"]["emotion"]["balanced_accuracy"] += shift
        path = tmp_path / f"report{shift}.json"
        path.write_text(json.dumps(report))
        monkeypatch.setattr(script, "made_on", lambda: machine)
        return script.main(["--check", "--from", str(path), "--readme", str(readme)])

    same, other = stored["made_on"], {**stored["made_on"], "cpu_model": "another", "isa": ["avx2"]}
    assert run_with(0.0, same) == 0 and run_with(0.0, other) == 0
    assert run_with(0.01, same) == 1  # the same CPU: any difference is a default that moved
    assert run_with(0.05, other) == 0 and "another kind of CPU" in capsys.readouterr().out
    assert run_with(script.CROSS_CPU_TOLERANCE + 0.05, other) == 1
    assert "fusion balanced_accuracy" in capsys.readouterr().err
