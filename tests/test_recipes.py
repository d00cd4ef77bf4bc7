"""Recipes (named partial configurations as data) and the one validation of a config."""

from __future__ import annotations

import json

import pytest

from kemdy_tf.config import (CHAR_NGRAM_MODELS, CLASS_WEIGHTINGS, RECIPES_DIR, load_recipe, make_config,
                             recipe_names, validate)


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads_and_validates(name):
    recipe = load_recipe(name)
    assert recipe["purpose"].strip() and "\n" not in recipe["purpose"]
    assert recipe["command"].startswith(("python ", "PYTHONPATH=. python ")) and f"--recipe {name}" in recipe["command"]
    config = make_config("small", recipes=[name])
    for item in recipe["set"]:  # every setting reached the config
        field, _, value = item.partition("=")
        section, _, attribute = field.partition(".")
        got = getattr(getattr(config, section), attribute)
        assert str(got).lower() == value.lower() or (isinstance(got, float) and got == float(value)), item


def test_shipped_recipes_are_the_files_in_the_package():
    assert recipe_names() == sorted(p.stem for p in RECIPES_DIR.glob("*.json"))
    assert {"real_speech", "review_text", "transcript_ngrams", "pretrained_backbones", "large_corpus"} <= set(recipe_names())


def test_preset_then_recipes_then_overrides():
    config = make_config("small", ["train.patience=3"], ["real_speech"])
    assert config.train.patience == 3  # --set wins over the recipe
    assert config.train.learning_rate == 0.002 and config.fusion.functionals_speaker_norm  # from the recipe
    assert config.audio.d_model == 64  # the preset's
    later = make_config("small", recipes=["review_text", "large_corpus"])
    assert later.train.refit is False and later.fusion.char_ngram_model == "nblr"  # the later recipe wins


def test_a_recipe_file_by_path_and_the_errors_name_the_file(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"purpose": "mine", "set": {"train.epochs": 3, "data.classes": ["a", "b"]}}))
    config = make_config("small", recipes=[str(mine)])
    assert config.train.epochs == 3 and config.data.classes == ("a", "b")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"purpose": "typo", "set": {"train.epoch": 3}}))
    with pytest.raises(ValueError, match=r"bad\.json: unknown field 'train\.epoch'"):
        load_recipe(str(bad))
    bad.write_text(json.dumps({"set": {"train.epochs": 3}}))
    with pytest.raises(ValueError, match="bad.json.*purpose"):
        load_recipe(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not readable JSON"):
        load_recipe(str(bad))
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*real_speech"):
        load_recipe("nope")


def test_validate_names_every_wrong_field_with_its_allowed_values():
    config = make_config()
    config.train.class_weighting = "balanced"
    config.fusion.char_ngram_model = "svm"
    config.fusion.modality_dropout = 1.5
    config.train.batch_size = 0
    with pytest.raises(ValueError) as error:
        validate(config)
    message = str(error.value)
    assert f"train.class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}; got 'balanced'" in message
    assert f"fusion.char_ngram_model must be one of {', '.join(CHAR_NGRAM_MODELS)}" in message
    assert "fusion.modality_dropout must be a number >= 0 and <= 1; got 1.5" in message
    assert "train.batch_size must be an integer >= 1; got 0" in message
    assert validate(make_config()) is not None  # the defaults are valid
    assert validate(make_config("paper")) is not None


def test_a_typo_is_refused_before_anything_is_written(tmp_path, capsys):
    from train import main

    workdir = tmp_path / "runs" / "typo"
    code = main(["--data", str(tmp_path / "KEMDy20"), "--workdir", str(workdir),
                 "--set", "train.class_weighting=balanced"])
    assert code == 2
    assert "train.class_weighting must be one of" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "KEMDy20").exists()
    assert main(["--workdir", str(workdir), "--recipe", "no_such_recipe"]) == 2
    assert "unknown recipe 'no_such_recipe'" in capsys.readouterr().err


def test_list_recipes_prints_each_with_its_purpose(capsys):
    from train import main

    assert main(["--list-recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == recipe_names()
    assert all(load_recipe(line.split()[0])["purpose"] in line for line in lines)


def test_run_json_records_the_preset_recipes_and_overrides(trained_run, tiny_overrides):
    made_with = json.loads((trained_run / "run.json").read_text())["made_with"]
    assert made_with == {"preset": "small", "recipes": [], "overrides": tiny_overrides}


def test_the_text_benchmark_takes_recipes_as_train_py_does(tmp_path, capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("text_real", REPO / "bench" / "text_real.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--data", str(tmp_path), "--recipe", "review_text"]) == 0  # no NSMC here: skipped
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown recipe 'no_such_recipe'"):
        bench.main(["--data", str(tmp_path), "--recipe", "no_such_recipe"])
    with pytest.raises(ValueError, match="train.class_weighting must be one of"):  # validated as train.py does
        bench.main(["--data", str(tmp_path), "--recipe", "review_text", "--set", "train.class_weighting=x"])
