"""kemdy_tf.bulk: the Beam pipeline answers what predict.py answers, file by file (DirectRunner)."""

from __future__ import annotations

import csv
import glob
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("apache_beam", reason="apache-beam is not installed: pip install -r requirements-bulk.txt")

from kemdy_tf import bulk  # noqa: E402
from test_predict import predict, setup, tone  # noqa: E402,F401  (setup: the tiny export and its clips)
from test_stt import needs_espeak, needs_stt, speak  # noqa: E402
from test_timeline import burst, join  # noqa: E402

TOLERANCE = 1e-5
SHORT = ["a_stereo.wav", "b_mono.flac", "c_silent.wav"]  # within the tiny export's ~2 s window
BROKEN = ["e_empty.wav", "f_garbage.ogg"]


def run(setup, source, out: Path, *extra) -> int:
    return bulk.main(["--model", str(setup["base"]), "--input", str(source), "--output", str(out), *map(str, extra)])


def csv_rows(out: Path) -> list[dict]:
    return [row for path in sorted(glob.glob(f"{out}-*-of-*.csv")) if "dead-letters" not in path
            for row in csv.DictReader(open(path, encoding="utf-8"))]


def parquet_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(glob.glob(f"{out}-*-of-*.parquet")) for row in pq.read_table(path).to_pylist()]


def dead_letters(out: Path) -> list[dict]:
    (path,) = glob.glob(f"{out}-dead-letters-00000-of-00001.csv")
    return list(csv.DictReader(open(path, encoding="utf-8")))


def assert_same(row: dict, expected, classes) -> None:
    """One output row (CSV strings) against predict.py's Prediction for the same clip or segment."""
    number = lambda v: None if v in ("", None) else float(v)  # noqa: E731
    assert row["emotion"] == expected.emotion
    np.testing.assert_allclose([float(row[f"prob_{c}"]) for c in classes],
                               [expected.probabilities[c] for c in classes], atol=TOLERANCE)
    for name in ("arousal", "valence", "start", "end"):
        want = getattr(expected, name)
        assert number(row[name]) == (None if want is None else pytest.approx(want, abs=TOLERANCE)), name
    assert (row["transcript"] or None) == expected.transcript
    assert (row["transcript_source"] or None) == expected.transcript_source
    assert (row["statistics"] or None) == expected.statistics
    assert row["warnings"] == "; ".join(expected.warnings)


@pytest.fixture(scope="module")
def folder(setup, tmp_path_factory):
    """predict.py's test clips (three short, a 3 s tone, two broken files, a text file) plus a
    recording of four phrases, one of them longer than the window."""
    root = tmp_path_factory.mktemp("bulk") / "clips"
    shutil.copytree(setup["clips"], root)
    wave, _ = join([burst(1.0), burst(1.5, freq=330.0), burst(5.0, freq=260.0), burst(0.8)], [0.8, 1.2, 1.0, 0.5])
    sf.write(root / "long.wav", wave, 16000)
    return root


def test_a_folder_gives_predict_pys_answers_timelines_and_dead_letters(setup, folder, tmp_path, monkeypatch, capsys):
    """Short clips as predict.py --wav DIR, the long recordings as predict.py --wav LONG (its
    timeline's segments), the two broken files as dead letters; CSV and Parquet agree; a rerun
    writes the same files. --transcribe without Vosk says so once and predicts audio-only."""
    from kemdy_tf import stt

    monkeypatch.setattr(stt, "unavailable_reason", lambda: "speech-to-text is not installed: no vosk")
    out = tmp_path / "out" / "emotions"
    assert run(setup, folder, out, "--timeline", "--transcribe") == 0
    printed = capsys.readouterr()
    assert "--transcribe: speech-to-text is not installed" in printed.err and "audio-only" in printed.err
    assert "7 files: 3 clips" in printed.out and "2 dead letters" in printed.out

    model, classes = setup["model"], list(setup["config"].data.classes)
    rows = csv_rows(out)
    assert {Path(r["file"]).name for r in rows} == {*SHORT, "d_long.wav", "long.wav"}  # notes.txt is no audio
    expected = predict.predict_files([folder / name for name in SHORT], None, model)
    for prediction in expected:
        (row,) = [r for r in rows if r["file"] == prediction.file]
        assert row["start"] == row["end"] == ""  # a whole clip
        assert_same(row, prediction, classes)
    assert any("silent" in w for w in expected[2].warnings)  # warnings travel too
    for name in ("long.wav", "d_long.wav"):
        segments = predict.predict_timeline(folder / name, model)
        ours = sorted((r for r in rows if Path(r["file"]).name == name), key=lambda r: float(r["start"]))
        assert len(ours) == len(segments) >= 2
        for row, segment in zip(ours, segments):
            assert_same(row, segment, classes)
    assert {r["statistics"] for r in rows if r["start"] == ""} == {"training set"}  # no speaker named

    # The Parquet shards hold the same rows, typed.
    typed = {(r["file"], r["start"]): r for r in parquet_rows(out)}
    assert len(typed) == len(rows)
    for row in rows:
        twin = typed[(row["file"], None if row["start"] == "" else float(row["start"]))]
        assert twin["prob_" + classes[0]] == float(row["prob_" + classes[0]]) and twin["warnings"] == row["warnings"]

    # Dead letters: predict.py's error for each broken file.
    errors = {p.file: p.error for p in predict.predict_files([folder / name for name in BROKEN], None, model)}
    assert {(d["file"], d["reason"]) for d in dead_letters(out)} == set(errors.items())

    # A rerun replaces the same files with the same rows.
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["emotions-00000-of-00002.csv", "emotions-00000-of-00002.parquet", "emotions-00001-of-00002.csv",
                     "emotions-00001-of-00002.parquet", "emotions-dead-letters-00000-of-00001.csv"]
    assert run(setup, folder, out, "--timeline") == 0
    assert sorted(p.name for p in out.parent.iterdir()) == files
    key = lambda r: (r["file"], r["start"])  # noqa: E731
    assert sorted(csv_rows(out), key=key) == sorted(rows, key=key)
    assert len(dead_letters(out)) == 2


def test_a_manifest_enrols_each_speaker_as_predict_py_does(setup, folder, tmp_path, capsys):
    """Named speakers grouped and enrolled from their clips in manifest order (a broken one skipped),
    transcripts given, a long clip truncated without --timeline: predict.py --manifest's answers."""
    for k, freq in enumerate((180, 260, 350)):
        sf.write(tmp_path / f"mina_{k}.wav", tone(0.7 + 0.2 * k, 16000, freq=freq), 16000)
    (tmp_path / "clips.csv").write_text(
        "path,text,speaker\n"
        + "".join(f"mina_{k}.wav,,mina\n" for k in range(3))
        + f"{folder / 'e_empty.wav'},,mina\n{folder / 'd_long.wav'},정말 화가 나요,mina\n"
        + f"{folder / 'b_mono.flac'},기분이 좋아요,\n{folder / 'a_stereo.wav'},,solo\n", encoding="utf-8")
    out = tmp_path / "out" / "m"
    assert run(setup, tmp_path / "clips.csv", out) == 0
    assert "7 files: 6 clips" in capsys.readouterr().out

    wavs, texts, speakers = predict._read_manifest(tmp_path / "clips.csv")
    expected = [p for p in predict.predict_files(wavs, texts, setup["model"], speakers=speakers) if not p.error]
    rows = {r["file"]: r for r in csv_rows(out)}
    assert set(rows) == {p.file for p in expected}
    for prediction in expected:
        assert_same(rows[prediction.file], prediction, list(setup["config"].data.classes))
    assert [rows[w]["statistics"] for w in wavs if w in rows] == ["mina (4 clips)"] * 4 + ["training set"] * 2
    assert any("truncated" in w for w in expected[3].warnings) and expected[3].valence is not None
    assert [d["file"] for d in dead_letters(out)] == [str(folder / "e_empty.wav")]


def test_a_failing_batch_becomes_dead_letters_and_the_pipeline_goes_on(setup, folder, tmp_path, monkeypatch):
    original = bulk.ExportHandler.run_inference

    def flaky(self, batch, model, inference_args=None):
        if any("b_mono" in clip.prediction.file for clip in batch):
            raise RuntimeError("out of memory\nsecond line")
        return original(self, batch, model, inference_args)

    monkeypatch.setattr(bulk.ExportHandler, "run_inference", flaky)
    (tmp_path / "clips.csv").write_text(f"path\n{folder / 'a_stereo.wav'}\n{folder / 'b_mono.flac'}\n")
    out = tmp_path / "out" / "f"
    assert run(setup, tmp_path / "clips.csv", out, "--batch-size", 1) == 0
    assert [Path(r["file"]).name for r in csv_rows(out)] == ["a_stereo.wav"]
    assert [(Path(d["file"]).name, d["reason"]) for d in dead_letters(out)] == [
        ("b_mono.flac", "inference failed: RuntimeError: out of memory")]


@pytest.mark.parametrize("case", ["no_match", "not_an_export", "manifest_without_path", "bad_batch"])
def test_bad_command_lines_are_one_line_on_stderr(setup, tmp_path, capsys, case):
    argv = {"no_match": ["--input", str(tmp_path / "*.wav")],
            "not_an_export": ["--input", str(tmp_path), "--model", str(tmp_path)],
            "manifest_without_path": ["--input", str(tmp_path / "m.csv")],
            "bad_batch": ["--input", str(tmp_path), "--batch-size", "0"]}[case]
    (tmp_path / "m.csv").write_text("file,text\na.wav,x\n")
    assert bulk.main(["--model", str(setup["base"]), "--output", str(tmp_path / "o"), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    expect = {"no_match": "matches no file", "not_an_export": "not a kemdy_tf export",
              "manifest_without_path": "no 'path' column", "bad_batch": "at least 1"}[case]
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0]


def test_input_kinds_and_manifest_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    assert bulk.input_kind(str(tmp_path / "sub")) == "folder"
    assert bulk.input_kind("gs://bucket/audio/") == "folder"
    assert bulk.input_kind("gs://bucket/audio/*.flac") == "glob"
    assert bulk.input_kind(str(tmp_path / "list.CSV")) == "manifest"
    (tmp_path / "sub" / "m.csv").write_text("path,text\nx.wav,\n/abs/y.wav,안녕\ngs://b/z.wav,\n", encoding="utf-8")
    sources = bulk.read_manifest(str(tmp_path / "sub" / "m.csv"))
    assert [s.path for s in sources] == [str(tmp_path / "sub" / "x.wav"), "/abs/y.wav", "gs://b/z.wav"]
    assert [s.text for s in sources] == ["", "안녕", ""] and [s.order for s in sources] == [0, 1, 2]
    assert all(s.speaker is None for s in sources)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_rows(setup, folder, tmp_path):
    """The multi-process DirectRunner (what bench/bulk.py times): workers load the export themselves."""
    one, two = tmp_path / "one" / "o", tmp_path / "two" / "o"
    assert run(setup, folder, one, "--timeline") == 0
    assert run(setup, folder, two, "--timeline", "--direct_num_workers=2",
               "--direct_running_mode=multi_processing") == 0
    key = lambda r: (r["file"], r["start"])  # noqa: E731
    ours, theirs = sorted(csv_rows(one), key=key), sorted(csv_rows(two), key=key)
    assert [key(r) for r in ours] == [key(r) for r in theirs]
    classes = list(setup["config"].data.classes)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose([float(a[f"prob_{c}"]) for c in classes], [float(b[f"prob_{c}"]) for c in classes],
                                   atol=TOLERANCE)
    assert len(dead_letters(two)) == 2


@pytest.mark.slow
@needs_stt
@needs_espeak
def test_transcribe_gives_predict_pys_transcript_and_answer(setup, tmp_path):
    from kemdy_tf import stt

    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "talk.wav", np.pad(speak("감사합니다", trim=True), 1600), 16000)  # within the 2 s window
    out = tmp_path / "out" / "t"
    assert run(setup, clips, out, "--transcribe") == 0
    (row,) = csv_rows(out)
    (expected,) = predict.predict_files([clips / "talk.wav"], None, setup["model"], stt=stt.recognizer())
    assert row["transcript_source"] == "stt" and row["transcript"]
    assert_same(row, expected, list(setup["config"].data.classes))


def test_remote_files_and_exports_are_copied_to_local_files(setup, folder, monkeypatch):
    """gs:// and the like: decoders and TensorFlow read a local copy (here the local file system
    stands in for the remote one, through the same FileSystems calls)."""
    monkeypatch.setattr(bulk, "is_remote", lambda path: True)
    version = setup["base"] / "1"
    copy = Path(bulk._local_export.__wrapped__(str(version)))  # not the per-process cache
    ours = sorted(p.relative_to(version) for p in version.rglob("*") if p.is_file())
    assert ours and sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == ours
    assert all((copy / p).read_bytes() == (version / p).read_bytes() for p in ours)
    shutil.rmtree(copy)
    with bulk._local_copy(str(folder / "b_mono.flac")) as local:
        assert local != str(folder / "b_mono.flac") and local.endswith(".flac")
        assert Path(local).read_bytes() == (folder / "b_mono.flac").read_bytes()
    assert not Path(local).exists()


def test_length_batches_group_similar_lengths_and_one_speakers_statistics():
    """LengthBatches: every clip once, at most batch_size per batch, one set of statistics per
    batch, lengths within LENGTH_RATIO (full buckets) or sorted (the bundle's rest)."""
    rng = np.random.default_rng(0)
    mine, yours = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    clips = [bulk.Clip(bulk.Prediction(file=str(i)), np.zeros(int(rng.integers(800, 48000)), np.float32),
                       [None, mine, yours][i % 3]) for i in range(100)]
    batching = bulk.LengthBatches(batch_size=8, window_samples=32000)
    batching.start_bundle()
    full = [batch for clip in clips for batch in batching.process(clip)]
    rest = [value.value for value in batching.finish_bundle()]
    assert full and sorted(int(c.prediction.file) for batch in full + rest for c in batch) == list(range(100))
    for i, batch in enumerate(full + rest):
        assert 1 <= len(batch) <= 8 and len({None if c.statistics is None else c.statistics.tobytes()
                                             for c in batch}) == 1
        lengths = [min(len(c.wave), 32000) for c in batch]
        assert lengths == sorted(lengths) if i >= len(full) else max(lengths) < min(lengths) * bulk.LENGTH_RATIO
