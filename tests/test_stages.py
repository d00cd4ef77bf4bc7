"""The stage registry and the data-source registry: one registration is all a new one needs."""

from __future__ import annotations

import pytest

from kemdy_tf import run as run_lib, stages


def test_registry_holds_every_stage_in_training_order():
    assert stages.names() == ("audio", "text", "audio_clf", "text_clf", "fusion")
    assert stages.with_requirements("fusion") == ("audio", "text", "fusion")
    assert stages.with_requirements("text_clf") == ("text", "text_clf")
    assert stages.report_order() == ["audio_clf", "text_clf", "fusion", "audio", "text"]
    fusion = stages.get("fusion")
    assert fusion.target == "emotion" and fusion.inputs == ("log_mel", "frame_mask", "token_ids")
    with pytest.raises(stages.StageError, match="unknown stage 'nope'"):
        stages.get("nope")


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already registered"):
        stages.register(stages.get("audio"))
    with pytest.raises(ValueError, match="unregistered"):
        stages.register(stages.Stage("x", "emotion", stages.TEXT_INPUTS, ("text",), None, "mse",
                                     lambda c: [], "x", requires=("missing",)))


@pytest.fixture
def extra_stage():
    stage = stages.register(stages.Stage(
        "prosody", "arousal", stages.AUDIO_INPUTS, ("audio",), stages.get("audio").build, "mse",
        stages.get("audio").metrics, "prosody encoder"))
    yield stage
    del stages.STAGES["prosody"]


def test_a_registered_stage_reaches_train_py_and_the_report(extra_stage):
    import train
    from kemdy_tf.evaluation import report

    assert train.parse_args(["--stage", "prosody"]).stage == "prosody"
    assert report.describe("prosody") == "prosody encoder (`prosody`)"
    assert "prosody" in stages.report_order()


def test_a_registered_source_is_read_by_its_reader(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(run_lib.SOURCES, "mine", lambda path: calls.append(path) or ("table", "skips"))
    assert run_lib.read_source({"mine": tmp_path}) == ("table", "skips")
    assert calls == [tmp_path]
    with pytest.raises(ValueError, match="already registered"):
        run_lib.register_source("data", lambda path: None)
    with pytest.raises(run_lib.RunError, match="unknown data source"):
        run_lib.read_source({"other": tmp_path})


def test_open_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(run_lib.RunError, match="run.json is missing"):
        run_lib.open_run(tmp_path)
