"""predict.py: predictions from an export, every bad input as one line on stderr."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kemdy_tf import export
from kemdy_tf.data.audio import load_audio, samples_for_frames
from test_export import build_tiny_run, keras_reference, tiny_trained
from test_stt import needs_espeak, needs_stt, speak
from test_timeline import burst, join

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("predict", ROOT / "predict.py")
predict = importlib.util.module_from_spec(_spec)
sys.modules["predict"] = predict  # dataclasses look their module up there
_spec.loader.exec_module(predict)

MAX_FRAMES = 64  # a ~2 s window, so a 3 s clip runs past it


def tone(seconds, rate, freq=220.0, amplitude=0.3, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny export and a folder of clips: stereo 44.1 kHz, mono flac, silent, long, empty, garbage."""
    root = tmp_path_factory.mktemp("predict")
    # A fusion model that standardises per speaker: predict.py enrols (the default reads no statistics).
    config, models, tokenizer = build_tiny_run(root / "run", [f"features.max_frames={MAX_FRAMES}",
                                                              "fusion.functionals_in_fusion=true"])
    base = root / "saved" / "kemdy"
    export.export_models(tiny_trained(root / "run", config, models), base)
    clips = root / "clips"
    clips.mkdir()
    sf.write(clips / "a_stereo.wav", tone(1.2, 44100, channels=2), 44100)
    sf.write(clips / "b_mono.flac", tone(0.8, 16000, freq=440), 16000)
    sf.write(clips / "c_silent.wav", np.zeros(8000), 16000)
    sf.write(clips / "d_long.wav", tone(3.0, 16000, freq=330), 16000)
    (clips / "e_empty.wav").write_bytes(b"")
    (clips / "f_garbage.ogg").write_bytes(b"this is not audio" * 20)
    (clips / "notes.txt").write_text("not an audio file")
    return {"root": root, "config": config, "models": models, "tokenizer": tokenizer, "base": base,
            "clips": clips, "model": predict.load_model(base)}


def test_predict_files_matches_the_keras_models_after_resampling_and_downmixing(setup):
    clips, config = setup["clips"], setup["config"]
    files = [clips / "a_stereo.wav", clips / "b_mono.flac"]
    texts = ["n/ 정말 화가 나요 l/", None]  # KEMDy noise tags are cleaned as in training
    results = predict.predict_files(files, texts, setup["model"])

    waves = [load_audio(f, config.features.sample_rate) for f in files]
    reference = keras_reference(setup["models"], setup["tokenizer"], config, waves, ["정말 화가 나요", ""])
    classes = list(config.data.classes)
    for i, result in enumerate(results):
        assert result.error is None
        np.testing.assert_allclose([result.probabilities[c] for c in classes], reference["emotion_probs"][i], atol=1e-4)
        assert result.emotion == classes[int(np.argmax(reference["emotion_probs"][i]))]
        assert result.arousal == pytest.approx(reference["arousal"][i], abs=1e-4)
    assert results[0].transcript == "정말 화가 나요"
    assert results[0].valence == pytest.approx(reference["valence"][0], abs=1e-4)
    # No transcript: audio-only, said so, and no valence (it is read from the text alone).
    assert results[1].transcript_missing and results[1].valence is None


def test_warns_about_silence_and_truncation_but_still_predicts(setup):
    silent, long = predict.predict_files([setup["clips"] / "c_silent.wav", setup["clips"] / "d_long.wav"],
                                         ["그냥 그래요", "그냥 그래요"], setup["model"])
    assert silent.emotion and any("silent" in w for w in silent.warnings)
    assert long.emotion and any("truncated" in w for w in long.warnings)
    assert not any("truncated" in w for w in silent.warnings)
    # The truncated clip is predicted from its first window only.
    window = samples_for_frames(MAX_FRAMES, setup["config"].features)
    wave = load_audio(setup["clips"] / "d_long.wav", 16000)
    (cut,) = predict.predict_files([_write(setup["root"] / "cut.wav", wave[:window])], ["그냥 그래요"], setup["model"])
    assert cut.probabilities == pytest.approx(long.probabilities, abs=1e-5)


def _write(path, wave):
    sf.write(path, wave, 16000, subtype="FLOAT")
    return path


def test_short_truncated_and_out_of_scale_clips_are_predicted_with_warnings(setup, tmp_path):
    sf.write(tmp_path / "whole.wav", tone(2.0, 16000), 16000, subtype="PCM_16")
    whole = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: 44 + 1000])  # the header promises 2 s; 31 ms are left
    sf.write(tmp_path / "clipped.wav", np.clip(tone(1.0, 16000, amplitude=3.0), -1, 1), 16000, subtype="PCM_16")
    files = [_write(tmp_path / "short.wav", tone(0.05, 16000)), _write(tmp_path / "one.wav", np.array([0.2])),
             tmp_path / "cut.wav", _write(tmp_path / "loud.wav", 50 * tone(1.0, 16000) / 0.45),
             tmp_path / "clipped.wav", _write(tmp_path / "fine.wav", tone(1.0, 16000))]
    short, one, cut, loud, clipped, fine = predict.predict_files(files, None, setup["model"])
    for result in (short, one, cut, loud, clipped, fine):
        assert result.error is None and result.emotion  # still predicted: warnings inform, they do not refuse
    assert any("very short audio (0.050 s" in w and "under 0.5 s" in w for w in short.warnings)
    assert any("very short audio (0.000 s, 1 samples" in w for w in one.warnings)
    assert any("truncated file: its header promises 2.00 s" in w and "0.031 s" in w for w in cut.warnings)
    assert any("very short" in w for w in cut.warnings)
    assert any("beyond full scale" in w and "50" in w for w in loud.warnings)
    assert any("clipped audio" in w for w in clipped.warnings)
    assert fine.warnings == []


def test_cli_folder_to_csv_reports_bad_files_and_exits_nonzero(setup, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code = predict.main(["--wav", str(setup["clips"]), "--model", str(setup["base"]), "--out", str(out), "--no-stt"])
    err = capsys.readouterr().err.strip().splitlines()

    assert code == 1
    assert all(line.startswith(("error: ", "warning: ")) for line in err)
    assert any("e_empty.wav" in line and "empty file" in line for line in err)
    assert any("f_garbage.ogg" in line and line.startswith("error:") and "not audio: no RIFF/WAV" in line
               and "readable formats" in line for line in err)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [Path(r["file"]).name for r in rows] == ["a_stereo.wav", "b_mono.flac", "c_silent.wav",
                                                     "d_long.wav", "e_empty.wav", "f_garbage.ogg"]
    good, bad = rows[:4], rows[4:]
    assert all(r["emotion"] in setup["config"].data.classes and r["transcript_missing"] == "True" for r in good)
    assert all(sum(float(r[f"prob_{c}"]) for c in setup["config"].data.classes) == pytest.approx(1, abs=1e-4)
               for r in good)
    assert all(r["error"] and not r["emotion"] for r in bad)


def test_cli_json_for_one_file(setup, capsys):
    code = predict.main(["--wav", str(setup["clips"] / "b_mono.flac"), "--text", "기분이 좋아요",
                         "--model", str(setup["base"] / "1"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["transcript"] == "기분이 좋아요" and not out["transcript_missing"]
    assert set(out["probabilities"]) == set(setup["config"].data.classes)
    assert 0 < out["valence"] < 10 and 0 < out["arousal"] < 10


def test_cli_manifest_with_relative_paths_and_transcripts(setup, tmp_path, capsys):
    manifest = setup["clips"] / "list.csv"
    manifest.write_text("path,text,emotion\na_stereo.wav,정말 화가 나요,angry\nb_mono.flac,,neutral\n", encoding="utf-8")
    code = predict.main(["--manifest", str(manifest), "--model", str(setup["base"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [o["transcript"] for o in out] == ["정말 화가 나요", None]
    assert out[1]["valence"] is None and out[0]["valence"] is not None


@pytest.mark.parametrize("case", ["not_an_export", "bad_utf8_text", "text_with_folder", "manifest_without_path"])
def test_cli_bad_input_is_one_line_on_stderr(setup, tmp_path, capsys, case):
    wav = str(setup["clips"] / "b_mono.flac")
    if case == "not_an_export":
        argv, expect = ["--wav", wav, "--model", str(setup["clips"])], "not a kemdy_tf export"
    elif case == "bad_utf8_text":
        (tmp_path / "t.txt").write_bytes("정말 화가 나요".encode("cp949"))
        argv, expect = ["--wav", wav, "--text-file", str(tmp_path / "t.txt"), "--model", str(setup["base"])], "UTF-8"
    elif case == "text_with_folder":
        argv, expect = ["--wav", str(setup["clips"]), "--text", "x", "--model", str(setup["base"])], "--manifest"
    else:
        (tmp_path / "m.csv").write_text("file,text\na.wav,x\n")
        argv, expect = ["--manifest", str(tmp_path / "m.csv"), "--model", str(setup["base"])], "no 'path' column"

    code = predict.main(argv)
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0]


def test_cli_process_stderr_is_one_line_not_a_traceback(setup):
    """The real program, TensorFlow start-up included: stderr holds only our line."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), "--wav", str(setup["clips"] / "e_empty.wav"),
         "--model", str(setup["base"])],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {setup['clips'] / 'e_empty.wav'}: empty file (0 bytes)"]


# === Long recordings: a timeline ===


def test_cli_long_recording_writes_a_timeline_csv_and_plot(setup, tmp_path, capsys):
    """Three phrases and a stretch longer than the (2 s) window: rows per segment, none over the window."""
    wave, truth = join([burst(1.0), burst(1.5, freq=330.0), burst(5.0, freq=260.0), burst(0.8)], [0.8, 1.2, 1.0, 0.5])
    sf.write(tmp_path / "long.wav", np.stack([wave, wave], axis=1), 16000)  # stereo: mixed down as for clips
    out = tmp_path / "timeline.csv"
    code = predict.main(["--wav", str(tmp_path / "long.wav"), "--model", str(setup["base"]), "--out", str(out),
                         "--no-stt"])
    printed = capsys.readouterr().out
    assert code == 0 and "segments" in printed and "--no-stt" in printed

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    classes = setup["config"].data.classes
    assert list(rows[0])[:5] == ["start", "end", "transcript", "transcript_source", "emotion"]
    assert {f"prob_{c}" for c in classes} | {"arousal", "valence"} <= set(rows[0])
    window = samples_for_frames(MAX_FRAMES, setup["config"].features) / 16000
    starts, ends = [float(r["start"]) for r in rows], [float(r["end"]) for r in rows]
    assert all(0 < e - s <= window for s, e in zip(starts, ends))
    assert all(e <= s for e, s in zip(ends, starts[1:]))
    # Every true phrase start is a segment start (the 5 s one is cut further inside).
    assert all(min(abs(s - start) for s in starts) < 0.3 for start, _ in truth)
    assert len(rows) >= len(truth) + 2
    for row in rows:
        assert row["emotion"] in classes and row["transcript"] == "" and row["valence"] == ""
        assert sum(float(row[f"prob_{c}"]) for c in classes) == pytest.approx(1, abs=1e-4)
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"

    # The same rows as JSON, and a segment predicted alone gives the same numbers.
    code = predict.main(["--wav", str(tmp_path / "long.wav"), "--model", str(setup["base"]), "--json", "--no-stt"])
    segments = json.loads(capsys.readouterr().out)["segments"]
    assert [s["start"] for s in segments] == starts
    first = wave[round(starts[0] * 16000) : round(ends[0] * 16000)]
    model, classes = setup["model"], list(setup["config"].data.classes)
    # ...standardised with the recording's own statistics, from its segments, as the timeline says.
    assert {s["statistics"] for s in segments} == {f"recording ({len(segments)} segments)"}
    pieces = [wave[round(s * 16000) : round(e * 16000)] for s, e in zip(starts, ends)]
    statistics, _ = model.enrol(pieces)
    (alone,) = model.predict([first], [""], statistics)
    # 1e-3: the segments' bounds come back rounded, so these statistics are of nearly the same samples.
    assert dict(zip(classes, alone["probabilities"].tolist())) == pytest.approx(segments[0]["probabilities"], abs=1e-3)


def test_cli_long_recording_refuses_one_text_for_many_segments(setup, tmp_path, capsys):
    sf.write(tmp_path / "long.wav", tone(5.0, 16000), 16000)
    code = predict.main(["--wav", str(tmp_path / "long.wav"), "--model", str(setup["base"]), "--text", "안녕"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "timeline of segments" in err[0] and "--no-stt" in err[0]


# === Speech recognition when no transcript is given ===


def test_cli_says_when_speech_recognition_is_not_installed(setup, monkeypatch, capsys):
    from kemdy_tf import stt

    monkeypatch.setattr(stt, "unavailable_reason", lambda: "speech-to-text is not installed: no vosk; pip install X")
    code = predict.main(["--wav", str(setup["clips"] / "b_mono.flac"), "--model", str(setup["base"])])
    out = capsys.readouterr().out
    assert code == 0 and "speech-to-text is not installed" in out and "no valence" in out
    assert "valence   n/a" in out


@needs_stt
@needs_espeak
def test_cli_transcribes_a_clip_given_no_text_and_says_so(setup, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", np.pad(speak("감사합니다", trim=True), 1600), 16000)  # within the 2 s window
    argv = ["--wav", str(tmp_path / "talk.wav"), "--model", str(setup["base"])]
    assert predict.main([*argv, "--json"]) == 0
    heard = json.loads(capsys.readouterr().out)
    assert heard["transcript_source"] == "stt" and heard["transcript"] and heard["valence"] is not None
    # The fusion model was fed that transcript: the same as giving it with --text.
    assert predict.main([*argv, "--json", "--text", heard["transcript"]]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["transcript_source"] == "given" and given["probabilities"] == heard["probabilities"]
    assert predict.main(argv) == 0
    assert "(speech recognition)" in capsys.readouterr().out
    # --text "" and --no-stt keep the clip audio-only on purpose.
    for extra in (["--text", ""], ["--no-stt"]):
        assert predict.main([*argv, "--json", *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["transcript"] is None and out["transcript_source"] is None and out["valence"] is None


@needs_stt
@needs_espeak
def test_cli_timeline_transcribes_each_segment(setup, tmp_path, capsys):
    sentences = ["지금 너무 화가 나요", "감사합니다"]
    wave, truth = join([speak(s, trim=True) for s in sentences], [1.0, 0.5])
    sf.write(tmp_path / "talk.wav", wave, 16000)
    assert predict.main(["--wav", str(tmp_path / "talk.wav"), "--model", str(setup["base"]), "--json"]) == 0
    segments = json.loads(capsys.readouterr().out)["segments"]
    assert len(segments) == 2
    assert all(s["transcript_source"] == "stt" and s["transcript"] and s["valence"] is not None for s in segments)
    assert [s["start"] for s in segments] == pytest.approx([start for start, _ in truth], abs=0.3)


def test_a_manifest_enrols_each_named_speaker_and_says_which_statistics_were_used(setup, tmp_path, capsys):
    """Speakers of a manifest are enrolled from their own clips (the statistics the Keras model
    is then fed give the same answer); a clip of no speaker gets the training set's; one clip
    of a speaker is not enough to enrol."""
    from kemdy_tf import speaker_statistics
    from kemdy_tf.data.audio import log_mel

    config, clips = setup["config"], setup["clips"]
    for k, freq in enumerate((180, 260, 350)):
        sf.write(tmp_path / f"mina_{k}.wav", tone(0.7 + 0.2 * k, 16000, freq=freq), 16000)
    (tmp_path / "clips.csv").write_text(
        "path,text,speaker\n" + "".join(f"mina_{k}.wav,,mina\n" for k in range(3))
        + f"{clips / 'b_mono.flac'},,\n{clips / 'a_stereo.wav'},,solo\n", encoding="utf-8")

    assert predict.main(["--manifest", str(tmp_path / "clips.csv"), "--model", str(setup["base"]),
                         "--no-stt", "--json", "--out", str(tmp_path / "out.csv")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["statistics"] for r in rows] == ["mina (3 clips)"] * 3 + ["training set"] * 2
    assert any("fewer than 5" in w for w in rows[0]["warnings"])
    assert any("not enrolled" in w for w in rows[4]["warnings"])

    waves = [load_audio(tmp_path / f"mina_{k}.wav", config.features.sample_rate) for k in range(3)]
    enrolled, _ = speaker_statistics.enrol([log_mel(w, config.features) for w in waves],
                                           config.fusion.functional_cepstra, config.features.max_frames)
    reference = keras_reference(setup["models"], setup["tokenizer"], config, waves, ["", "", ""], speaker=enrolled)
    classes = list(config.data.classes)
    np.testing.assert_allclose([[r["probabilities"][c] for c in classes] for r in rows[:3]],
                               reference["emotion_probs"], atol=2e-4)
    assert "statistics" in (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[0]


def test_enrol_cli_writes_what_the_export_computes(setup, tmp_path, capsys):
    """python -m kemdy_tf.enrol: a folder of one speaker's clips -> the export's own statistics
    (the speaker_statistics signature); one clip is refused, a bad file is skipped with a warning."""
    from kemdy_tf import enrol

    folder = tmp_path / "mina"
    folder.mkdir()
    for k, freq in enumerate((180, 260, 350)):
        sf.write(folder / f"{k}.wav", tone(0.7 + 0.2 * k, 16000, freq=freq), 16000)
    (folder / "broken.wav").write_bytes(b"not audio")
    assert enrol.main(["--model", str(setup["base"]), str(folder), "--out", str(tmp_path / "mina.json")]) == 0
    written = json.loads((tmp_path / "mina.json").read_text(encoding="utf-8"))
    err = capsys.readouterr().err
    assert "broken.wav: skipped" in err and "fewer than 5" in err
    waves = [load_audio(folder / f"{k}.wav", 16000) for k in range(3)]
    expected, used = setup["model"].enrol(waves)
    assert written["clips"] == used == 3 and written["enrolled"]
    np.testing.assert_allclose(written["speaker_functionals"], expected, atol=1e-5)
    assert enrol.main(["--model", str(setup["base"]), str(folder / "0.wav")]) == 1
    assert "at least 2" in capsys.readouterr().err
