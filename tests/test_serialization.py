"""Every object kemdy_tf registers with Keras survives get_config / from_config, and a
compiled archive of every stage loads after `import kemdy_tf` (no custom_objects).

The list of classes is not written here: it is whatever `keras.saving.get_custom_objects()`
holds under the `kemdy_tf>` package, so a new layer or metric is covered the day it is
registered. Its example instance comes from the stage registry's own models and metrics;
a registered class that none of them uses fails `test_every_registered_object_has_an_example`
until an example is added to `EXTRA_EXAMPLES`.
"""

from __future__ import annotations

import dataclasses

import subprocess
import sys

import numpy as np
import pytest

PACKAGE = "kemdy_tf>"


def _segment_ids():  # used only with a pretrained BERT-style backbone (text_encoder)
    from kemdy_tf.models.layers import SegmentIds

    return SegmentIds(segment=1, name="segment_ids")


def _text_recipe(name):
    """The text encoder's optional parts (bag-of-tokens path, smoothed loss), off by default."""
    def make():
        from kemdy_tf.models import text_encoder

        return {"HashedTokenBigrams": lambda: text_encoder.HashedTokenBigrams(buckets=64, name="bigrams"),
                "MaskedMeanMaxPool": lambda: text_encoder.MaskedMeanMaxPool(name="bag"),
                "AddToSteps": lambda: text_encoder.AddToSteps(name="add_bag"),
                "SmoothedSparseCrossentropy": lambda: text_encoder.SmoothedSparseCrossentropy(5, 0.1)}[name]()
    return make


def _backbone_layer(name):
    """The layers that wrap a pretrained keras-hub backbone (models.backbones), off by default."""
    def make():
        from kemdy_tf.models import backbones

        return {"BackboneTokenIds": lambda: backbones.BackboneTokenIds(pad_id=1, name="backbone_token_ids"),
                "EveryOtherStep": lambda: backbones.EveryOtherStep(name="half_rate_mask"),
                "RepeatToFrames": lambda: backbones.RepeatToFrames(name="frame_rate_sequence")}[name]()
    return make


# Examples of registered classes that no default stage model uses (name -> () -> instance).
def _functionals():
    from kemdy_tf.models import layers

    return layers.UtteranceFunctionals(cepstra=4, name="utterance_functionals")


def _speaker_standardise():  # fusion.functionals_speaker_norm, off by default
    from kemdy_tf.models import layers

    return layers.SpeakerStandardise(name="functionals_speaker_norm")


def _char_ngram_layer(name):
    """The text classifier's character n-gram bag (fusion.char_ngrams), off by default."""
    def make():
        from kemdy_tf.models import char_ngrams

        return {"PieceCharNgrams": lambda: char_ngrams.PieceCharNgrams(["", "▁가", "나"], max_n=3, buckets=64,
                                                                       name="char_ngram_ids"),
                "HashedBag": lambda: char_ngrams.HashedBag(64, 4, id_dropout=0.5, name="char_ngram_bag")}[name]()
    return make


def _ngram_logistic_layer(name):
    """The text classifier's fitted n-gram path (fusion.char_ngram_model=nblr), off by default."""
    def make():
        from kemdy_tf.models import ngram_logistic

        return {"NgramLogisticScores": lambda: ngram_logistic.NgramLogisticScores(64, 3, name="char_ngram_scores"),
                "WideShare": lambda: ngram_logistic.WideShare(name="wide_share")}[name]()
    return make


def _logit_adjusted_loss():  # train.class_weighting=logit_adjust (auto under heavy imbalance)
    from kemdy_tf.models.losses import LogitAdjustedLoss
    from kemdy_tf.models.text_encoder import SmoothedSparseCrossentropy

    return LogitAdjustedLoss([0.8, 0.15, 0.05], base=SmoothedSparseCrossentropy(3, 0.1))


def _expert_product():  # the fusion model's experts (fusion_experts), added after the stage builder
    from kemdy_tf.models.experts import ExpertProduct

    return ExpertProduct([[1.0, 0.0], [0.4, 0.8]], [[0.0, 0.0, 0.0], [0.1, -0.1, 0.0]], masked=[False, True],
                         expert_names=["cross_modal", "text_clf"], name="expert_product")


def _known_transcript_mask():  # the fusion model of a scripted corpus (fusion_experts)
    from kemdy_tf.models.known_transcripts import KnownTranscriptMask

    return KnownTranscriptMask(3, name="text_clf_evidence")


EXTRA_EXAMPLES: dict = {"kemdy_tf>SegmentIds": _segment_ids,
                        "kemdy_tf>KnownTranscriptMask": _known_transcript_mask,
                        "kemdy_tf>ExpertProduct": _expert_product,
                        "kemdy_tf>LogitAdjustedLoss": _logit_adjusted_loss,
                        "kemdy_tf>UtteranceFunctionals": _functionals,
                        "kemdy_tf>SpeakerStandardise": _speaker_standardise,
                        **{f"kemdy_tf>{n}": _char_ngram_layer(n) for n in ("PieceCharNgrams", "HashedBag")},
                        **{f"kemdy_tf>{n}": _ngram_logistic_layer(n) for n in ("NgramLogisticScores", "WideShare")},
                        **{f"kemdy_tf>{n}": _backbone_layer(n) for n in (
                            "BackboneTokenIds", "EveryOtherStep", "RepeatToFrames")},
                        **{f"kemdy_tf>{n}": _text_recipe(n) for n in (
                            "HashedTokenBigrams", "MaskedMeanMaxPool", "AddToSteps", "SmoothedSparseCrossentropy")}}


def registered() -> dict[str, type]:
    import keras

    import kemdy_tf  # noqa: F401  registers on import

    return {name: obj for name, obj in keras.saving.get_custom_objects().items() if name.startswith(PACKAGE)}


class _StandInRun:
    """What the stage builders read from a run: config, vocabulary size, encoder paths."""

    def __init__(self, config, workdir):
        self.config, self.workdir = config, workdir

    def vocab_size(self):
        return 50

    def model_path(self, stage):
        return self.workdir / stage / "model.keras"


@pytest.fixture(scope="module")
def stage_models(tmp_path_factory, tiny_config):
    """One model per registered stage, built by its registered builder (random weights)."""
    from kemdy_tf import stages

    root = tmp_path_factory.mktemp("stages")
    # No character n-grams: the stand-in has no tokenizer to spell them (the trained run has them).
    config = dataclasses.replace(tiny_config, fusion=dataclasses.replace(tiny_config.fusion, char_ngrams=0))
    run = _StandInRun(config, root)
    models = {}
    for stage in stages.all_stages():  # training order: encoders exist before the classifiers
        model = stage.build(run, stage.name)
        model.compile("adam", loss=stage.loss, metrics=stage.metrics(tiny_config))
        models[stage.name] = model
        if not stage.requires:
            (root / stage.name).mkdir()
            model.save(run.model_path(stage.name))
    return models


def examples(stage_models, tiny_config) -> dict[str, object]:
    """`{registered name: an instance}` gathered from the stage models and metrics."""
    import keras

    from kemdy_tf import stages

    found = {}
    objects = [layer for m in stage_models.values() for layer in m._flatten_layers(include_self=False)]
    objects += [metric for stage in stages.all_stages() for metric in stage.metrics(tiny_config)]
    for obj in objects:
        found.setdefault(keras.saving.get_registered_name(type(obj)), obj)
    for name, make in EXTRA_EXAMPLES.items():
        found.setdefault(name, make())
    return found


def test_every_registered_object_has_an_example(stage_models, tiny_config):
    names = registered()
    assert names, "kemdy_tf registers nothing with Keras"
    missing = sorted(set(names) - set(examples(stage_models, tiny_config)))
    assert not missing, f"no example instance of {missing}: add one to EXTRA_EXAMPLES"


def test_get_config_round_trips_for_every_registered_object(stage_models, tiny_config):
    found = examples(stage_models, tiny_config)
    for name, cls in registered().items():
        obj = found[name]
        config = obj.get_config()
        clone = cls.from_config(config)
        assert clone.get_config() == config, name


def test_every_stage_archive_loads_compiled_in_a_fresh_process(stage_models, tmp_path):
    """`import kemdy_tf; keras.saving.load_model(path)` (compile on, safe_mode on), per stage."""
    paths = {}
    for name, model in stage_models.items():
        paths[name] = tmp_path / f"{name}.keras"
        model.save(paths[name])
    code = ("import sys, keras, kemdy_tf\n"
            "for path in sys.argv[1:]:\n"
            "    model = keras.saving.load_model(path)\n"
            "    assert model.compiled and model.optimizer is not None, path\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, paths.values())], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_sparse_macro_f1_round_trip_keeps_its_result():
    import kemdy_tf  # noqa: F401
    from kemdy_tf.models.metrics import SparseMacroF1

    metric = SparseMacroF1(3)
    clone = SparseMacroF1.from_config(metric.get_config())
    for m in (metric, clone):
        m.update_state(np.array([0, 1, 2, 2]), np.array([[.9, .1, 0], [.1, .8, .1], [.2, .6, .2], [0, 0, 1]]))
    assert float(metric.result()) == pytest.approx(float(clone.result()))
