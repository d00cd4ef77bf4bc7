"""The fusion model's product of experts: the layer, its fit on validation, the trained run's
combined model, and the calibration error the report prints beside UA."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kemdy_tf  # noqa: F401  registers the custom layers
from kemdy_tf import fusion_experts, scoring
from kemdy_tf.models.experts import (BIAS_PENALTY, BIAS_PENALTY_GRID, EXPERT_PRODUCT, ExpertProduct,
                                     choose_bias_penalty, clipped_log, expert_logits, fit_expert_weights,
                                     fit_sharpness)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_expert_product_answers_each_example_with_the_fit_of_the_modalities_it_has(tmp_path):
    rng = np.random.default_rng(0)
    p1, p2 = (_softmax(rng.normal(size=(4, 3))).astype("float32") for _ in range(2))
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], bool)
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    m = keras.Input((3,), dtype="bool", name="m")
    weights, bias = [[0.9, 0.0], [0.7, 1.3]], [[0.0, 0.3, 0.0], [0.1, -0.2, 0.0]]
    sharpness = [1.0, 1.7]
    layer = ExpertProduct(weights, bias, masked=[False, True], expert_names=["x", "y"], sharpness=sharpness,
                          name=EXPERT_PRODUCT)
    model = keras.Model({"a": a, "b": b, "m": m}, layer([a, b], [m]))
    got = model.predict({"a": p1, "b": p2, "m": mask}, verbose=0)
    present = mask.any(axis=1)
    logs = np.stack([clipped_log(p1), clipped_log(p2)], axis=1)
    both = _softmax(sharpness[1] * expert_logits(logs, np.array(weights[1]), np.array(bias[1])))
    alone = _softmax(expert_logits(logs, np.array(weights[0]), np.array(bias[0])))
    np.testing.assert_allclose(got[present], both[present], atol=1e-5)
    np.testing.assert_allclose(got[~present], alone[~present], atol=1e-5)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict({"a": p1, "b": p2, "m": mask}, verbose=0), got, atol=1e-6)
    assert reloaded.get_layer(EXPERT_PRODUCT).get_config()["expert_names"] == ["x", "y"]
    assert reloaded.get_layer(EXPERT_PRODUCT).get_config()["sharpness"] == sharpness
    # A layer saved before the sharpness existed loads with 1 (no temperature).
    config = {k: v for k, v in layer.get_config().items() if k != "sharpness"}
    assert ExpertProduct.from_config(config).sharpness == [1.0, 1.0]


def test_expert_product_refuses_a_negative_weight_or_a_missing_row():
    with pytest.raises(ValueError, match="finite and >= 0"):
        ExpertProduct([[1.0, -0.1]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="2 rows"):
        ExpertProduct([[1.0, 1.0]], [[0.0, 0.0]], masked=[False, True])
    with pytest.raises(ValueError, match="one bias per class"):
        ExpertProduct([[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0]], masked=[False, True])
    with pytest.raises(ValueError, match="sharpness"):
        ExpertProduct([[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], masked=[False, True], sharpness=[1.0, 0.0])


def test_the_sharpness_recovers_the_temperature_that_calibrates_and_keeps_every_decision():
    """Labels drawn from softmax(2 z): the logits z are underconfident by a factor 2, as capped
    weights leave a product; the fitted sharpness finds ~2, the ECE falls, no argmax moves."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1.5, (4000, 4))
    true = _softmax(2.0 * logits)
    labels = np.array([rng.choice(4, p=p) for p in true])
    sharpness = fit_sharpness(logits, labels)
    assert sharpness == pytest.approx(2.0, abs=0.25)
    before = scoring.expected_calibration_error(labels, _softmax(logits))
    after = scoring.expected_calibration_error(labels, _softmax(sharpness * logits))
    assert after < before / 2
    assert (_softmax(sharpness * logits).argmax(1) == logits.argmax(1)).all()
    # Already calibrated logits keep a sharpness of about 1.
    assert fit_sharpness(2.0 * logits, labels) == pytest.approx(1.0, abs=0.15)


def test_two_experts_that_each_know_half_the_classes_are_weighed_together():
    """Expert A separates classes {0,1} from {2,3}; B separates {0,2} from {1,3}: each alone
    is at 50%, their product knows all four. The fit must use both and beat either."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 800)
    a_side, b_side = labels // 2, labels % 2
    a = np.where(np.eye(2)[a_side][:, [0, 0, 1, 1]] > 0, 0.45, 0.05) + rng.uniform(0, .02, (800, 4))
    b = np.where(np.eye(2)[b_side][:, [0, 1, 0, 1]] > 0, 0.45, 0.05) + rng.uniform(0, .02, (800, 4))
    noise = np.full((800, 4), 0.25)
    probs = [noise, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)]
    logs = np.stack([clipped_log(p) for p in probs], axis=1)
    weights, bias, loss = fit_expert_weights(logs, labels)
    assert weights[1] > 0.5 and weights[2] > 0.5 and (weights >= 0).all()
    ua = (expert_logits(logs, weights, bias).argmax(1) == labels).mean()
    assert ua > 0.95
    first_alone = -np.log(0.25)
    assert loss < first_alone


def test_the_fit_is_never_worse_than_the_first_expert_on_its_rows():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)
    good = _softmax(np.eye(3)[labels] * 2 + rng.normal(0, 0.5, (60, 3)))
    junk = _softmax(rng.normal(0, 3, (60, 3)))
    logs = np.stack([clipped_log(good), clipped_log(junk)], axis=1)
    _, _, loss = fit_expert_weights(logs, labels)
    assert loss <= -np.log(good[np.arange(60), labels]).mean() + 1e-9


def _one_expert(n, offset, seed):
    """`[n, 1, 3]` log-probabilities of one calibrated expert whose logits for class 0 are
    `offset` below the truth's, and labels drawn from the true posterior."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.5, (n, 3))
    labels = np.array([rng.choice(3, p=p) for p in _softmax(truth)])
    seen = truth.copy()
    seen[:, 0] -= offset
    return clipped_log(_softmax(seen))[:, None, :], labels


def test_the_bias_penalty_lets_a_real_class_offset_through_and_holds_noise_back():
    # An expert that under-answers class 0 by 3 logits: the biases must correct it (weak penalty).
    log_probs, labels = _one_expert(300, 3.0, seed=0)
    penalty, held_out = choose_bias_penalty(log_probs, labels)
    assert penalty == min(BIAS_PENALTY_GRID) and set(held_out) == set(BIAS_PENALTY_GRID)
    # A calibrated expert on few rows: a fitted bias only follows their noise (strong penalty).
    log_probs, labels = _one_expert(40, 0.0, seed=3)
    penalty, held_out = choose_bias_penalty(log_probs, labels)
    assert penalty > min(BIAS_PENALTY_GRID)
    assert held_out[penalty] < held_out[min(BIAS_PENALTY_GRID)]
    assert choose_bias_penalty(log_probs, labels) == (penalty, held_out)  # seeded folds: the same choice
    # The fusion stage's fit uses the chosen penalty, not the fixed one.
    fitted = fusion_experts._fit(log_probs, labels, 3)
    assert fitted["bias_penalty"]["chosen"] == penalty
    _, chosen_bias, _ = fit_expert_weights(log_probs, labels, 1.0 / np.bincount(labels)[labels], penalty)
    _, fixed_bias, _ = fit_expert_weights(log_probs, labels, 1.0 / np.bincount(labels)[labels], BIAS_PENALTY)
    np.testing.assert_allclose(fitted["bias"], chosen_bias, atol=1e-5)
    assert np.abs(fitted["bias"]).sum() < np.abs(fixed_bias).sum()


def test_the_bias_penalty_holds_out_a_class_of_one_row_and_needs_two_rows_somewhere():
    log_probs, labels = _one_expert(30, 0.0, seed=1)
    labels[:] = np.where(labels == 2, 1, labels)
    labels[0] = 2  # one row of class 2: held out in one fold, missing from that fold's fit
    penalty, held_out = choose_bias_penalty(log_probs, labels)
    assert penalty in BIAS_PENALTY_GRID and np.isfinite(list(held_out.values())).all()
    assert choose_bias_penalty(log_probs[:3], np.array([0, 1, 2])) == (BIAS_PENALTY, {})


def test_expected_calibration_error():
    labels = np.array([0, 0, 1, 1])
    # Says .9 for class 0 everywhere: right half the time -> |.5 - .9| = .4.
    assert scoring.expected_calibration_error(labels, np.tile([0.9, 0.1], (4, 1))) == pytest.approx(0.4)
    # Confident and right -> the gap is 1 - confidence.
    assert scoring.expected_calibration_error(labels, np.eye(2)[labels]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="probabilities for 3 labels"):
        scoring.expected_calibration_error([0, 1, 1], np.eye(2))


def test_the_trained_fusion_model_is_its_network_times_the_run_classifiers(trained_run):
    """The fusion stage of `--stage all` ends with the product of experts: the summary says
    what was fitted, the model answers as its parts combined, and a blank transcript
    gets the weights fitted without the text expert."""
    from kemdy_tf.evaluation.runs import load_trained, split_dataset

    summary = json.loads((trained_run / "fusion" / "summary.json").read_text())
    experts = summary["experts"]
    assert experts["experts"] == ["cross_modal", "audio_clf", "text_clf"]
    assert set(experts["by_modalities"]) == {"audio+text", "audio", "text", "neither"}
    assert list(experts["weights"]) == experts["experts"] and min(experts["weights"].values()) >= 0
    assert experts["val_log_loss"]["combined"] <= experts["val_log_loss"]["alone"][0] + 1e-6
    assert list(experts["by_modalities"]["audio"]["weights"]) == ["cross_modal", "audio_clf"]
    # The sharpness (a temperature fitted after the weights) and the validation ECE it gives are recorded.
    assert experts["sharpness"] > 0 and set(experts["val_ece"]) == {"before", "after"}
    # So is the class biases' penalty each set of modalities chose by cross-validation.
    assert experts["bias_penalty"]["chosen"] in BIAS_PENALTY_GRID
    assert experts["bias_penalty"]["held_out_log_loss"]

    trained = load_trained(trained_run)
    fusion, run = trained.models["fusion"], trained.run
    layer = fusion.get_layer(EXPERT_PRODUCT)
    network = fusion_experts.cross_modal_part(fusion)
    assert not fusion_experts.has_experts(network)
    features, _ = next(iter(split_dataset(run, run.split("test"))))
    parts = {"cross_modal": network, "audio_clf": trained.models["audio_clf"], "text_clf": trained.models["text_clf"]}

    def answers(blank: bool):
        feed = {k: np.asarray(v) for k, v in features.items() if k != "segment_id"}
        if blank:
            feed["token_ids"] = np.zeros_like(feed["token_ids"])
        combined = fusion.predict_on_batch({t.name: feed[t.name] for t in fusion.inputs})["emotion"]
        each = {n: m.predict_on_batch({t.name: feed[t.name] for t in m.inputs})["emotion"] for n, m in parts.items()}
        return combined, np.stack([clipped_log(each[n]) for n in parts], axis=1)

    for blank, pattern in ((False, 3), (True, 1)):  # audio + text; audio alone
        combined, logs = answers(blank)
        want = _softmax(layer.sharpness[pattern] * expert_logits(
            logs, np.array(layer.weights_per_expert[pattern]), np.array(layer.class_bias[pattern])))
        np.testing.assert_allclose(combined, want, atol=1e-4)
    assert layer.weights_per_expert[1][2] == 0.0  # no text: the text expert has no say
