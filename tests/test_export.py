"""The SavedModel export: TF Serving layout, atomic versions, both signatures, one copy of each weight.

The serving checks run in fresh subprocesses that import only TensorFlow (and TF Text
where the signature needs it), never kemdy_tf, and feed the signatures the way TF
Serving's REST API does (row format).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL

from kemdy_tf import export, run as run_lib, speaker_statistics
from kemdy_tf.config import make_config
from kemdy_tf.data import schema
from kemdy_tf.trained_run import TrainedRun

VENV_BIN = Path(sys.executable).parent
SERVING_CLIENT = Path(__file__).resolve().parents[1] / "scripts" / "serving_client.py"
TEXTS = ["안녕하세요 반갑습니다", "오늘 날씨가 정말 좋네요", "정말 화가 나요", "너무 슬퍼서 울었어요",
         "깜짝 놀랐어요 진짜", "그냥 그래요", "기분이 좋아요", "왜 그랬어요"]
TINY = [*TINY_MODEL, "features.vocab_size=60"]  # conftest's model sizes, a vocabulary these texts fill


def build_tiny_run(workdir: Path, overrides=(), experts: bool = False):
    """A trained-run stand-in (random weights), laid out by `kemdy_tf.run` itself. With
    `experts`, the fusion model is what `--stage all` leaves: its network times an audio and
    a text classifier (`fusion_experts.combine`, fixed weights per set of modalities).

    Returns:
        (config, {"audio", "text", "fusion": in-memory Keras models}, tokenizer).
    """
    import keras

    from kemdy_tf.models import build_audio_encoder, build_fusion_model, build_text_encoder
    from kemdy_tf.models.tokenizer import load_tokenizer, train_sentencepiece

    keras.utils.set_random_seed(0)
    config = make_config("small", [*TINY, *overrides])
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = train_sentencepiece(TEXTS * 3, workdir / "tokenizer.model", config.features.vocab_size)
    tokenizer = load_tokenizer(tokenizer_path, config.features.max_tokens)
    audio = build_audio_encoder(config.audio, config.features)
    text = build_text_encoder(config.text, config.features, tokenizer.vocabulary_size())
    fusion = build_fusion_model(audio.get_layer("audio_backbone"), text.get_layer("text_backbone"),
                                config.fusion, len(config.data.classes))
    if experts:
        fusion = with_experts(fusion, audio, text, config, workdir)
    models = {"audio": audio, "text": text, "fusion": fusion}
    for stage, model in models.items():
        (workdir / stage).mkdir(exist_ok=True)
        model.save(workdir / stage / "model.keras")
    write_stand_in_run(workdir, config)
    if speaker_statistics.reads_speaker_statistics(fusion):  # what training writes beside run.json
        np.save(workdir / speaker_statistics.FALLBACK_FILE, tiny_fallback(config))
    return config, models, tokenizer


def with_experts(network, audio, text, config, workdir: Path):
    """`network` x an audio classifier (functionals standardised per speaker, the default) x a
    text classifier, as `fusion_experts.combine` builds the trained fusion model (from the
    classifiers' saved archives, as training does: no layer shared with the network)."""
    import dataclasses

    import keras

    from kemdy_tf import fusion_experts
    from kemdy_tf.models import build_fusion_model

    n = len(config.data.classes)
    classifiers = {
        "audio_clf": build_fusion_model(audio.get_layer("audio_backbone"), None, config.fusion, n, ("audio",)),
        "text_clf": build_fusion_model(None, text.get_layer("text_backbone"),
                                       dataclasses.replace(config.fusion, char_ngrams=0), n, ("text",)),
    }
    for stage, model in classifiers.items():
        (workdir / stage).mkdir(exist_ok=True)
        model.save(workdir / stage / "model.keras")
        classifiers[stage] = keras.saving.load_model(workdir / stage / "model.keras")
    weights = [[1.0, 0.0, 0.0], [0.6, 0.9, 0.0], [0.5, 0.0, 0.8], [0.4, 0.7, 1.0]]  # neither, audio, text, both
    bias = np.linspace(-0.3, 0.3, n)[np.newaxis].repeat(4, axis=0)
    return fusion_experts.combine(network, classifiers, weights, bias)


def tiny_fallback(config) -> np.ndarray:
    """The stand-in run's speaker fallback: the statistics of four fixed clips."""
    from kemdy_tf.data.audio import log_mel

    mels = [log_mel(w, config.features) for w in clips(config.features.sample_rate, seconds=(0.8, 1.3, 0.5, 1.1))]
    return speaker_statistics.enrol(mels, config.fusion.functional_cepstra, config.features.max_frames)[0]


def tiny_trained(workdir: Path, config, models) -> TrainedRun:
    """The stand-in run's models in memory as a `TrainedRun` (with its speaker fallback)."""
    fallback = tiny_fallback(config) if speaker_statistics.reads_speaker_statistics(models["fusion"]) else None
    return TrainedRun(config, workdir / "tokenizer.model", models, speaker_fallback=fallback)


def write_stand_in_run(workdir: Path, config) -> None:
    """run.json and an empty table.csv, written the way prepare_run writes them."""
    run_lib.write_run_files(workdir, config, {"data": str(workdir)}, schema.empty_table().assign(split=""),
                            workdir / "cache")


def keras_reference(models, tokenizer, config, waves, texts, speaker=None) -> dict:
    """What the Keras models say for these clips, fed the training features (librosa), and
    speaker statistics `speaker` [2, F] (default: the stand-in run's fallback) where the fusion
    model reads them."""
    from kemdy_tf.data.audio import log_mel

    mels = [log_mel(w, config.features) for w in waves]
    frames = max(len(m) for m in mels)
    batch = np.zeros((len(mels), frames, config.features.n_mels), np.float32)
    mask = np.zeros((len(mels), frames), bool)
    for i, m in enumerate(mels):
        batch[i, : len(m)], mask[i, : len(m)] = m, True
    ids = np.asarray(tokenizer(texts), np.int32)
    audio_in = {"log_mel": batch, "frame_mask": mask}
    fusion_in = {**audio_in, "token_ids": ids}
    if speaker_statistics.reads_speaker_statistics(models["fusion"]):
        speaker = tiny_fallback(config) if speaker is None else np.asarray(speaker, np.float32)
        fusion_in["speaker_functionals"] = np.repeat(speaker[np.newaxis], len(mels), axis=0)
    return {
        "log_mel": batch, "frame_count": mask.sum(axis=1).astype(np.int32), "token_ids": ids,
        "emotion_probs": np.asarray(models["fusion"](fusion_in)["emotion"]),
        "arousal": np.asarray(models["audio"](audio_in)["arousal"])[:, 0],
        "valence": np.asarray(models["text"](ids)["valence"])[:, 0],
    }


def rest_bodies(waves, texts, reference) -> tuple[dict, dict]:
    """REST row-format bodies for `serving_default` (the clips) and `features` (their reference features)."""
    width = max(len(w) for w in waves)  # row format needs equal lengths: pad client-side
    waveform_body = {"signature_name": "serving_default", "instances": [
        {"waveform": np.pad(w, (0, width - len(w))).tolist(), "waveform_length": len(w), "text": t}
        for w, t in zip(waves, texts)]}
    features_body = {"signature_name": "features", "instances": [
        {"log_mel": reference["log_mel"][i].tolist(), "frame_count": int(reference["frame_count"][i]),
         "token_ids": reference["token_ids"][i].tolist()} for i in range(len(waves))]}
    return waveform_body, features_body


def clips(rate: int, seconds=(1.0, 0.4, 1.7)) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * rate)) / rate
        out.append((0.2 * np.sin(2 * np.pi * (150 + 120 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return out


def run_client(tmp_path, job: dict, python=sys.executable) -> dict:
    """scripts/serving_client.py on `job` in a fresh process of `python` (see its docstring)."""
    job_file, result_file = tmp_path / "job.json", tmp_path / "result.json"
    job_file.write_text(json.dumps(job))
    done = subprocess.run([str(python), str(SERVING_CLIENT), str(job_file), str(result_file)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result_file.read_text())


def assert_matches(response: dict, reference: dict, classes) -> None:
    rows = response["predictions"]
    probs = np.array([r["emotion_probs"] for r in rows])
    np.testing.assert_allclose(probs, reference["emotion_probs"], atol=1e-4)
    np.testing.assert_allclose([r["arousal"] for r in rows], reference["arousal"], atol=1e-4)
    np.testing.assert_allclose([r["valence"] for r in rows], reference["valence"], atol=1e-4)
    assert [r["emotion"] for r in rows] == [classes[i] for i in probs.argmax(axis=1)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run's workdir, its in-memory models, and its export (version 1).

    `saved_model_cli` (a TensorFlow start-up, seconds) starts on the export at once and
    runs beside the other tests; its test collects the output.
    """
    root = tmp_path_factory.mktemp("export")
    # The fusion model `--stage all` leaves (network x classifiers), its network reading
    # functionals standardised per speaker: the speaker signatures too.
    config, models, tokenizer = build_tiny_run(root / "run", ["fusion.functionals_in_fusion=true"], experts=True)
    target = export.export_run(root / "run", root / "saved" / "kemdy")
    cli = subprocess.Popen([str(VENV_BIN / "saved_model_cli"), "show", "--all", "--dir", str(target)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    yield {"root": root, "config": config, "models": models, "tokenizer": tokenizer, "export": target,
           "saved_model_cli": cli}
    if cli.poll() is None:
        cli.kill()
        cli.communicate()


def test_writes_tf_serving_layout_with_metadata_assets(run):
    target = run["export"]
    assert target == run["root"] / "saved" / "kemdy" / "1"
    assert (target / "saved_model.pb").is_file() and (target / "variables" / "variables.index").is_file()
    assert (target / "assets" / export.TOKENIZER_ASSET).read_bytes() == (run["root"] / "run" / "tokenizer.model").read_bytes()
    metadata = export.read_metadata(target)
    assert metadata["classes"] == list(run["config"].data.classes)
    assert metadata["features"]["max_tokens"] == run["config"].features.max_tokens
    assert metadata["features"]["log_mel"]["top_db"] == 80.0
    assert set(metadata["signatures"]) == {"serving_default", "features", "serving_speaker", "features_speaker",
                                           "speaker_statistics"}
    assert metadata["speaker_statistics"]["reads"] and metadata["speaker_statistics"]["min_clips"] == 5
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # no temporary folder left


def test_stores_each_weight_once(run):
    # export_run loads the three .keras files, so each model holds its own copy of the
    # backbones; their weights are equal (frozen in the fusion stage), so the export
    # runs and stores each backbone once: the weights of the in-memory models, which share them.
    assert export.saved_variable_bytes(run["export"]) == export.weight_bytes(*run["models"].values())
    assert export.read_metadata(run["export"])["inference"]["backbone_run_once"] == {
        "audio_backbone": True, "text_backbone": True}


def test_rest_requests_match_the_keras_models(run, tmp_path):
    config, classes = run["config"], list(run["config"].data.classes)
    waves = clips(config.features.sample_rate)
    texts = ["정말 화가 나요", "", "오늘 날씨가 좋네요 깜짝"]
    reference = keras_reference(run["models"], run["tokenizer"], config, waves, texts)
    waveform_body, features_body = rest_bodies(waves, texts, reference)

    result = run_client(tmp_path, {"export": str(run["export"]), "import_tf_text": True,
                                   "requests": [waveform_body, features_body]})

    assert "kemdy_tf" not in result["modules"] and "keras_hub" not in result["modules"]
    for response in result["responses"]:
        assert_matches(response, reference, classes)


def test_xla_export_matches_the_keras_models(run, tmp_path):
    """--xla-bucket: the models compiled with XLA on frames padded to a bucket (masked)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  serving_default's SentencePiece ops

    config, models = run["config"], run["models"]
    target = export.export_models(tiny_trained(run["root"] / "run", config, models), tmp_path,
                                  xla_bucket=64)
    inference = export.read_metadata(target)["inference"]
    assert inference["xla_bucket"] == 64
    assert inference["stem_outside_xla"]  # the convolution stem runs in graph mode, outside XLA
    assert inference["log_mel_xla"] and inference["text_program"] and inference["token_bucket"] == 16
    waves = clips(config.features.sample_rate, seconds=(0.9, 1.5))  # 29 and 47 frames: one bucket, one compile
    texts = ["기분이 좋아요", ""]
    reference = keras_reference(models, run["tokenizer"], config, waves, texts)
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    for i, (wave, text) in enumerate(zip(waves, texts)):
        out = serve(waveform=tf.constant(wave[None]), waveform_length=tf.constant([len(wave)]),
                    text=tf.constant([text]))
        np.testing.assert_allclose(out["emotion_probs"][0], reference["emotion_probs"][i], atol=1e-4)
        np.testing.assert_allclose(out["arousal"][0], reference["arousal"][i], atol=1e-4)
        np.testing.assert_allclose(out["valence"][0], reference["valence"][i], atol=1e-4)
    # Both in one padded batch: the shorter clip's padding frames reach the stem, and must not matter.
    width = max(len(w) for w in waves)
    out = serve(waveform=tf.constant(np.stack([np.pad(w, (0, width - len(w))) for w in waves])),
                waveform_length=tf.constant([len(w) for w in waves]), text=tf.constant(texts))
    for name in ("emotion_probs", "arousal", "valence"):
        np.testing.assert_allclose(out[name], reference[name], atol=1e-4)


def test_features_signature_needs_no_tf_text(run, tmp_path):
    """features: no TF Text op in the full export; a features-only export loads without TF Text."""
    config, classes, models = run["config"], list(run["config"].data.classes), run["models"]
    out = export.export_models(tiny_trained(run["root"] / "run", config, models),
                               run["root"] / "features_only", features_only=True)
    # In memory the fusion model shares the encoders' backbones: those weights are stored once.
    assert export.saved_variable_bytes(out) == export.weight_bytes(*models.values())
    assert export.weight_bytes(*models.values()) < sum(export.weight_bytes(m) for m in models.values())
    waves = clips(config.features.sample_rate, seconds=(0.6, 1.2))
    reference = keras_reference(run["models"], run["tokenizer"], config, waves, ["기분이 좋아요", ""])
    body = {"signature_name": "features", "instances": [
        {"log_mel": reference["log_mel"][i].tolist(), "frame_count": int(reference["frame_count"][i]),
         "token_ids": reference["token_ids"][i].tolist()} for i in range(len(waves))]}

    full = str(run["export"])
    result = run_client(tmp_path, {
        "export": str(out), "import_tf_text": False, "requests": [body],
        "inspect": {"features": [full, "features"], "serving_default": [full, "serving_default"]},
    })

    assert result["modules"] == []  # neither tensorflow_text nor kemdy_tf was imported
    assert_matches(result["responses"][0], reference, classes)
    assert result["foreign_ops"]["features"] == []
    assert "SentencepieceTokenizeOp" in result["foreign_ops"]["serving_default"]  # the check can see TF Text


def test_saved_model_cli_lists_both_signatures(run):
    stdout, stderr = run["saved_model_cli"].communicate(timeout=300)  # started by the fixture
    assert run["saved_model_cli"].returncode == 0, stderr[-2000:]
    for name in ("serving_default", "features"):
        assert f"signature_def['{name}']" in stdout
    for name in ("waveform", "waveform_length", "text", "log_mel", "frame_count", "token_ids",
                 "emotion_probs", "emotion", "arousal", "valence"):
        assert f"['{name}'] tensor_info" in stdout


def test_never_overwrites_a_version_and_numbers_the_next_one(run):
    base = run["export"].parent
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_run(run["root"] / "run", base, version=1)
    assert export.next_version(base) == 2
    assert export.next_version(run["root"] / "nowhere") == 1


def test_interrupted_export_leaves_no_version_and_no_temporary_folder(tmp_path, monkeypatch):
    import tensorflow as tf

    def fail_half_way(obj, path, signatures=None, **kwargs):
        Path(path, "saved_model.pb").write_bytes(b"partial")
        raise KeyboardInterrupt  # also a BaseException that is not an Exception

    monkeypatch.setattr(export, "build_serving_module", lambda *a, **k: (tf.Module(), {}))
    monkeypatch.setattr(tf.saved_model, "save", fail_half_way)
    base = tmp_path / "kemdy"
    (base / "3").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        export.export_models(TrainedRun(make_config(), Path("tok.model"), {}), base)
    assert sorted(p.name for p in base.iterdir()) == ["3"]


def test_find_export_picks_the_highest_complete_version(tmp_path):
    base = tmp_path / "kemdy"
    for version in ("1", "2", "10"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    (base / "11").mkdir()  # not a SavedModel (e.g. copied half-way by hand): skipped
    (base / ".12.partial-x").mkdir()
    assert export.find_export(base) == base / "10"
    assert export.find_export(base / "2") == base / "2"
    with pytest.raises(export.ExportError, match="not a kemdy_tf export"):
        export.find_export(tmp_path)


def test_cli_reports_a_missing_run_in_one_line(tmp_path, capsys):
    assert export.main(["--workdir", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "run.json" in err[0]


def test_refuses_runs_the_served_graph_cannot_reproduce(run, tmp_path):
    models = run["models"]
    three_classes = make_config("small", [*TINY, "data.classes=neutral,happy,sad"])
    with pytest.raises(export.ExportError, match="predicts 5 classes"):
        export.export_models(TrainedRun(three_classes, run["root"] / "run" / "tokenizer.model", models),
                             tmp_path / "a")
    assert [p.name for p in (tmp_path / "a").iterdir()] == []

    refused = [
        # Speaker-normalised features need statistics of a speaker the server does not know.
        (["features.speaker_norm=true"], "speaker_norm"),
        # Pitch statistics come from the data pipeline's tracker, which the SavedModel lacks.
        (["fusion.functionals=true", "fusion.functionals_in_fusion=true", "fusion.pitch=true"], "fusion.pitch"),
    ]
    for k, (overrides, reason) in enumerate(refused):
        workdir = tmp_path / f"run{k}"
        workdir.mkdir()
        (workdir / "tokenizer.model").write_bytes((run["root"] / "run" / "tokenizer.model").read_bytes())
        write_stand_in_run(workdir, make_config("small", [*TINY, *overrides]))
        with pytest.raises(export.ExportError, match=reason):
            export.export_run(workdir, tmp_path / f"out{k}")


def test_speaker_signatures_answer_what_the_keras_models_answer_with_those_statistics(run, tmp_path):
    """Enrolment in the graph equals the data pipeline's statistics; `serving_speaker` with them
    equals the Keras models fed them; `serving_default` equals them fed the run's fallback."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  serving_default's SentencePiece ops

    from kemdy_tf.data.audio import log_mel

    config = run["config"]
    saved = tf.saved_model.load(str(run["export"]))
    enrolment = clips(config.features.sample_rate, seconds=(0.7, 1.4, 0.9))
    width = max(len(w) for w in enrolment)
    out = saved.signatures["speaker_statistics"](
        waveform=tf.constant(np.stack([np.pad(w, (0, width - len(w))) for w in enrolment])),
        waveform_length=tf.constant([len(w) for w in enrolment], tf.int32))
    expected, warnings = speaker_statistics.enrol([log_mel(w, config.features) for w in enrolment],
                                                  config.fusion.functional_cepstra, config.features.max_frames)
    assert warnings and "fewer than 5" in warnings[0]  # three clips: enrolled, with a warning
    np.testing.assert_allclose(out["speaker_functionals"], expected, rtol=1e-3, atol=1e-3)
    assert bool(out["enrolled"]) and int(out["clips"]) == 3
    one = saved.signatures["speaker_statistics"](waveform=tf.constant(enrolment[:1]),
                                                 waveform_length=tf.constant([len(enrolment[0])], tf.int32))
    assert not bool(one["enrolled"])  # one clip: the run's fallback
    np.testing.assert_allclose(one["speaker_functionals"], tiny_fallback(config), atol=1e-6)

    waves, texts = clips(config.features.sample_rate, seconds=(1.0, 0.5)), ["기분이 좋아요", ""]
    width = max(len(w) for w in waves)
    batch = dict(waveform=tf.constant(np.stack([np.pad(w, (0, width - len(w))) for w in waves])),
                 waveform_length=tf.constant([len(w) for w in waves], tf.int32), text=tf.constant(texts))
    enrolled = saved.signatures["serving_speaker"](
        **batch, speaker_functionals=tf.constant(np.repeat(expected[np.newaxis], 2, axis=0)))
    reference = keras_reference(run["models"], run["tokenizer"], config, waves, texts, speaker=expected)
    np.testing.assert_allclose(enrolled["emotion_probs"], reference["emotion_probs"], atol=1e-4)
    plain = saved.signatures["serving_default"](**batch)
    fallback = keras_reference(run["models"], run["tokenizer"], config, waves, texts)
    np.testing.assert_allclose(plain["emotion_probs"], fallback["emotion_probs"], atol=1e-4)
    assert not np.allclose(plain["emotion_probs"], enrolled["emotion_probs"], atol=1e-4)  # the statistics count
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):  # TF Serving: a 400
        saved.signatures["serving_speaker"](**batch, speaker_functionals=tf.zeros([2, 2, 3]))


def test_the_product_of_experts_exports_and_answers_as_the_keras_model(run):
    """The fusion model `--stage all` leaves (network x audio_clf x text_clf, reading speaker
    statistics) exports: `serving_default` answers what the Keras model answers with the run's
    fallback, `serving_speaker` what it answers with given statistics, a blank transcript
    included (the weights fitted without the text expert)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  serving_default's SentencePiece ops

    from kemdy_tf import fusion_experts

    config, models, tokenizer = run["config"], run["models"], run["tokenizer"]
    assert fusion_experts.has_experts(models["fusion"])
    saved = tf.saved_model.load(str(run["export"]))
    waves, texts = clips(config.features.sample_rate), ["정말 화가 나요", "", "오늘 날씨가 좋네요"]
    width = max(len(w) for w in waves)
    batch = dict(waveform=tf.constant(np.stack([np.pad(w, (0, width - len(w))) for w in waves])),
                 waveform_length=tf.constant([len(w) for w in waves], tf.int32), text=tf.constant(texts))
    fallback = keras_reference(models, tokenizer, config, waves, texts)
    np.testing.assert_allclose(saved.signatures["serving_default"](**batch)["emotion_probs"],
                               fallback["emotion_probs"], atol=1e-4)
    speaker = tiny_fallback(config) * np.array([[1.1], [0.9]], np.float32)
    enrolled = keras_reference(models, tokenizer, config, waves, texts, speaker=speaker)
    answer = saved.signatures["serving_speaker"](**batch, speaker_functionals=tf.constant(
        np.repeat(speaker[np.newaxis], len(waves), axis=0), tf.float32))
    np.testing.assert_allclose(answer["emotion_probs"], enrolled["emotion_probs"], atol=1e-4)
