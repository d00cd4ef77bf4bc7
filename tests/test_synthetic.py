"""The synthetic KEMDy20-shaped dataset: layout, formats, determinism and designed signal."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from kemdy_tf.config import DEFAULT_CLASSES
from kemdy_tf.data import labels as labels_lib
from kemdy_tf.data import synthetic

SEGMENT_ID = re.compile(r"^Sess(\d\d)_script(\d\d)_User(\d{3})([FM])_(\d{3})$")
STAMP = re.compile(r"^\d{4}-\d{4}-\d{4}-\d\d-\d{3}$")
E4_NAME = re.compile(r"^Sess(\d\d)_script(\d\d)_User(\d{3})[FM]\.csv$")


def _annotation(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[:2], rows[2:]


def _all_rows(root: Path) -> list[list[str]]:
    return [row for path in sorted((root / "annotation").glob("*.csv")) for row in _annotation(path)[1]]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _session_files(root: Path, session: int) -> dict[str, bytes]:
    tag = (f"Session{session:02d}", f"Sess{session:02d}_eval.csv")
    return {name: data for name, data in _files(root).items() if any(t in name for t in tag)}


@pytest.fixture(scope="module")
def root(synthetic_root) -> Path:
    return Path(synthetic_root)


@pytest.fixture(scope="module")
def sessions(root) -> int:
    return json.loads((root / synthetic.MARKER).read_text())["sessions"]


# === Layout and formats ===


def test_layout_has_every_kemdy20_folder(root, sessions):
    assert sorted((root / "annotation").iterdir()) == [
        root / "annotation" / f"Sess{n:02d}_eval.csv" for n in range(1, sessions + 1)]
    for n in range(1, sessions + 1):
        ids = {row[3] for row in _annotation(root / "annotation" / f"Sess{n:02d}_eval.csv")[1]}
        wav_dir = root / "wav" / f"Session{n:02d}"
        assert {p.stem for p in wav_dir.glob("*.wav")} == ids
        assert {p.stem for p in wav_dir.glob("*.txt")} == ids
        e4_stems = {i.rsplit("_", 1)[0] for i in ids}  # one file per speaker and script
        for signal in ("EDA", "TEMP", "IBI"):
            assert {p.stem for p in (root / signal / f"Session{n:02d}").glob("*.csv")} == e4_stems


def test_annotation_has_two_header_rows_and_37_columns(root, sessions):
    names_per_session = []
    for n in range(1, sessions + 1):
        (first, second), rows = _annotation(root / "annotation" / f"Sess{n:02d}_eval.csv")
        assert first[:7] == ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
        assert second[:7] == [" ", "start", "end", " ", "Emotion", "Valence", "Arousal"]
        assert second[7:] == ["Emotion", "Valence", "Arousal"] * 10
        raters = first[7::3]
        assert len(raters) == 10 and all(re.fullmatch(r"Eval\d\d[FM]", r) for r in raters)
        assert first[8::3] == [""] * 10 and first[9::3] == [""] * 10
        names_per_session.append(tuple(raters))
        assert rows and all(len(row) == 37 for row in [first, second, *rows])
        assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
        starts = [float(row[1]) for row in rows]
        assert starts == sorted(starts) and all(float(r[2]) > float(r[1]) for r in rows)
    assert len(set(names_per_session)) == sessions  # rater names differ between sessions


def test_total_evaluation_follows_the_raters(root):
    for row in _all_rows(root):
        votes, valences, arousals = row[7::3], row[8::3], row[9::3]
        assert row[4] == synthetic.total_label(votes)
        assert all(v in {"1", "2", "3", "4", "5"} for v in valences + arousals)
        assert row[5] == f"{np.mean([int(v) for v in valences]):.1f}"
        assert row[6] == f"{np.mean([int(v) for v in arousals]):.1f}"


def test_segment_ids_number_utterances_per_script_and_speaker(root):
    for path in sorted((root / "annotation").glob("*.csv")):
        session = int(path.name[4:6])
        speakers, seen = {}, {}
        for row in _annotation(path)[1]:
            match = SEGMENT_ID.match(row[3])
            assert match, row[3]
            sess, script, user, sex, number = match.groups()
            assert int(sess) == session
            assert int(user) in (2 * session - 1, 2 * session)
            speakers.setdefault(user, sex)
            assert speakers[user] == sex
            key = (script, user)
            seen[key] = seen.get(key, 0) + 1
            assert int(number) == seen[key]  # numbered by position in the conversation
        assert len(speakers) == 2


def test_labels_spell_disqust_and_write_ties(root):
    rows = _all_rows(root)
    written = " ".join(" ".join(row[4::3]) for row in rows)
    assert "disqust" in written and "disgust" not in written
    totals = [row[4] for row in rows]
    ties = [t for t in totals if ";" in t]
    assert ties and all(t.split(";") == sorted(t.split(";")) for t in ties)
    assert 0.02 <= len(ties) / len(totals) <= 0.12
    primary = [labels_lib.primary_label(t, DEFAULT_CLASSES) for t in totals]
    share = {name: primary.count(name) / len(primary) for name in DEFAULT_CLASSES}
    assert 0.35 <= share["neutral"] <= 0.65
    assert all(0.06 <= share[name] <= 0.22 for name in DEFAULT_CLASSES if name != "neutral")


def test_transcripts_are_one_cp949_line_with_noise_tags(root):
    texts = []
    for path in sorted((root / "wav").rglob("*.txt")):
        data = path.read_bytes()
        text = data.decode("cp949")
        assert "\n" not in text and "\r" not in text and text == text.strip()
        with pytest.raises(UnicodeDecodeError):  # really cp949, not UTF-8
            data.decode("utf-8")
        texts.append(text)
    tokens = [text.split() for text in texts]
    standalone = sum(any(t in synthetic.STANDALONE_TAGS for t in words) for words in tokens)
    attached = sum(any(re.fullmatch(r"[가-힣]+[*+/]", t) for t in words) for words in tokens)
    tagged = sum(bool(re.search(r"(^| )[cnNulb]/|[가-힣][*+/]", text)) for text in texts)
    assert standalone > 0 and attached > 0
    assert 0.15 <= tagged / len(texts) <= 0.45
    # 4-10 words, not counting tags and stutter fragments (`저+` before `저는`).
    words = [sum(t not in synthetic.STANDALONE_TAGS and not t.endswith("+") for t in w) for w in tokens]
    assert min(words) == 4 and max(words) == 10


def test_wavs_are_16k_mono_pcm16_and_match_the_annotation(root):
    for row in _all_rows(root):
        session = row[3][4:6]
        info = soundfile.info(root / "wav" / f"Session{session}" / f"{row[3]}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        expected = round((float(row[2]) - float(row[1])) * 16000)
        assert info.frames == expected
        assert 1.0 <= info.frames / 16000 <= 3.0


def test_e4_files_have_kemdy20_headers_and_ragged_rows(root):
    rows = _all_rows(root)
    spans = {row[3]: (float(row[1]), float(row[2])) for row in rows}
    for path in sorted((root / "EDA").rglob("*.csv")) + sorted((root / "TEMP").rglob("*.csv")):
        stem = path.stem
        assert E4_NAME.match(path.name)
        lines = path.read_text(encoding="ascii").splitlines()
        float(lines[0])
        assert lines[1] == "4.000000"
        cells = [line.split(",") for line in lines[2:]]
        assert {len(c) for c in cells} == {2, 3}  # ragged: the id only inside utterances
        assert all(STAMP.match(c[1]) for c in cells)
        millis = [int(c[1][-3:]) for c in cells[:8]]
        assert all((b - a) % 1000 == 250 for a, b in zip(millis, millis[1:]))  # 4 Hz
        ids = {c[2] for c in cells if len(c) == 3}
        own = {i for i in spans if i.rsplit("_", 1)[0] == stem}
        assert ids == own  # every utterance of this speaker and script, and only those
        for segment_id in list(ids)[:3]:  # rows per utterance ~ duration * 4 Hz
            start, end = spans[segment_id]
            count = sum(1 for c in cells if len(c) == 3 and c[2] == segment_id)
            assert abs(count - (end - start) * 4) <= 2
    for path in sorted((root / "IBI").rglob("*.csv")):
        lines = path.read_text(encoding="ascii").splitlines()
        assert lines[0].endswith(", IBI")
        cells = [line.split(",") for line in lines[1:]]
        assert {len(c) for c in cells} <= {3, 4} and any(len(c) == 3 for c in cells)
        times = [float(c[0]) for c in cells]
        assert times == sorted(times)
        assert all(0.4 < float(c[1]) < 1.6 and STAMP.match(c[2]) for c in cells)


# === Generation: determinism, no-op, atomicity, command line ===


def test_same_seed_same_bytes_and_more_sessions_keep_earlier_ones(root, tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "one"), "--seed", "0", "--sessions", "1"]) == 0
    printed = capsys.readouterr().out
    assert "generated in" in printed and "utterances:" in printed
    one = _files(tmp_path / "one")
    assert one.pop(synthetic.MARKER)
    assert one == _session_files(root, 1)  # same seed -> byte-identical session 1


def test_different_seed_gives_different_files(root, tmp_path):
    other = synthetic.generate(tmp_path / "other", seed=1, sessions=1)
    mine, theirs = _session_files(root, 1), _session_files(other, 1)
    common = set(mine) & set(theirs)
    assert mine["annotation/Sess01_eval.csv"] != theirs["annotation/Sess01_eval.csv"]
    assert sum(mine[name] == theirs[name] for name in common) < 0.05 * len(common)
    # A synthetic set with other settings is replaced as a whole.
    assert synthetic.generate(other, seed=0, sessions=1) == other
    assert json.loads((other / synthetic.MARKER).read_text())["seed"] == 0
    assert _session_files(other, 1) == mine
    assert [p.name for p in tmp_path.iterdir()] == ["other"]  # no partial or old folder left


def test_rerun_with_same_settings_is_a_noop(root, sessions):
    wav = next((root / "wav" / "Session01").glob("*.wav"))
    before = wav.stat().st_mtime_ns
    assert synthetic.generate(root, seed=0, sessions=sessions) == root
    assert wav.stat().st_mtime_ns == before


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def crash(seed, session, partial):
        (partial / "wav").mkdir(exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_session", crash)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "K", sessions=1)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_other_data_and_bad_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic"):
        synthetic.generate(tmp_path / "mine", sessions=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="sessions"):
        synthetic.generate(tmp_path / "x", sessions=0)
    with pytest.raises(ValueError, match="seed"):
        synthetic.generate(tmp_path / "x", seed=-1)
    assert synthetic.main(["--out", str(tmp_path / "x"), "--sessions", "100"]) == 2


def test_summary_counts_the_annotation(root, sessions):
    counts = synthetic.summary(root)
    rows = _all_rows(root)
    assert counts["sessions"] == sessions and counts["speakers"] == 2 * sessions
    assert counts["utterances"] == len(rows) == sum(counts["labels"].values())
    assert counts["ties"] == sum(";" in row[4] for row in rows)
    assert sum(counts["emotions"].values()) + counts["dropped"] == len(rows)
    assert counts["duration_s"] == pytest.approx(sum(float(r[2]) - float(r[1]) for r in rows), abs=0.01)


def test_kemdy20_class_shares_follow_the_real_imbalance(tmp_path):
    # Plans only (no audio): 40 sessions give ~4,300 utterances, enough to see 1% classes.
    plans = [synthetic._plan_session(0, n, 3, synthetic.DEFAULT_UTTERANCES, synthetic.DEFAULT_DURATION, "kemdy20")
             for n in range(1, 41)]
    primary = [labels_lib.primary_label(u.label, DEFAULT_CLASSES) for p in plans for u in p.utterances]
    kept = [name for name in primary if name is not None]
    share = {name: kept.count(name) / len(kept) for name in DEFAULT_CLASSES}
    assert 0.80 <= share["neutral"] <= 0.90 and 0.06 <= share["happy"] <= 0.13
    for rare in ("sad", "angry", "surprise"):
        assert 0.005 <= share[rare] <= 0.025, share
    # The default mix is unchanged, and its marker has no new key (older sets still match).
    default = synthetic._plan_session(0, 1, 3, synthetic.DEFAULT_UTTERANCES, synthetic.DEFAULT_DURATION)
    assert [u.label for u in default.utterances] == [
        u.label for u in synthetic._plan_session(0, 1, 3, synthetic.DEFAULT_UTTERANCES,
                                                 synthetic.DEFAULT_DURATION, "default").utterances]
    assert "class_shares" not in synthetic._check_settings(0, 1, 3, (16, 20), (1.0, 3.0))
    root = synthetic.generate(tmp_path / "imb", sessions=1, utterances=(2, 3), class_shares="kemdy20")
    assert json.loads((root / synthetic.MARKER).read_text())["class_shares"] == "kemdy20"
    with pytest.raises(ValueError, match="class_shares"):
        synthetic.generate(tmp_path / "x", sessions=1, class_shares="kemdy19")
    with pytest.raises(SystemExit):  # argparse refuses a mix it does not know
        synthetic.main(["--out", str(tmp_path / "y"), "--class-shares", "none"])


def test_reader_reads_it_without_skips(root):
    if importlib.util.find_spec("kemdy_tf.data.kemdy20") is None:
        pytest.skip("kemdy_tf/data/kemdy20.py (the KEMDy20 reader) does not exist yet")
    from kemdy_tf.data.kemdy20 import read_kemdy20

    table, skips = read_kemdy20(root)
    assert skips.empty, skips.head().to_dict("records")
    assert len(table) == len(_all_rows(root))
    assert (table.eda_path != "").all() and (table.ibi_path != "").all() and (table.temp_path != "").all()


# === The designed signal ===


@pytest.fixture(scope="module")
def utterances(root):
    """Primary label, cleaned words and a few audio features per utterance of the 5 classes."""
    records = []
    for row in _all_rows(root):
        label = labels_lib.primary_label(row[4], DEFAULT_CLASSES)
        if label is None:
            continue
        folder = root / "wav" / f"Session{row[3][4:6]}"
        audio, rate = soundfile.read(folder / f"{row[3]}.wav", dtype="float32")
        loudness = librosa.amplitude_to_db(librosa.feature.rms(y=audio)[0])
        centroid = librosa.feature.spectral_centroid(y=audio, sr=rate)[0]
        words = " ".join(re.findall(r"[가-힣]+", (folder / f"{row[3]}.txt").read_bytes().decode("cp949")))
        records.append((label, words, np.percentile(loudness, 90), np.median(centroid), float(row[6])))
    labels, words, loud, bright, arousal = map(np.array, zip(*records))
    return {"label": labels, "words": words, "audio": np.stack([loud, np.log(bright)], 1), "arousal": arousal}


def _cv_predict(features, labels):
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(model, features, labels, cv=folds)


def test_audio_carries_arousal_but_not_which_high_arousal_emotion(utterances):
    label, audio = utterances["label"], StandardScaler().fit_transform(utterances["audio"])
    loud = audio[:, 0]
    assert np.corrcoef(loud, utterances["arousal"])[0, 1] > 0.6
    low_vs_high = np.isin(label, ["sad", "happy", "angry", "surprise"])
    assert roc_auc_score(label[low_vs_high] != "sad", loud[low_vs_high]) > 0.95
    mid_vs_high = np.isin(label, ["neutral", "surprise"])
    assert roc_auc_score(label[mid_vs_high] == "surprise", loud[mid_vs_high]) > 0.8
    high = np.isin(label, ["happy", "angry", "surprise"])  # designed confusion
    predicted = _cv_predict(audio[high], label[high])
    assert f1_score(label[high], predicted, average="macro") < 0.6


def test_text_carries_valence_groups_but_not_sad_vs_angry(utterances):
    label, words = utterances["label"], utterances["words"]
    bags = CountVectorizer(token_pattern=r"[가-힣]+").fit_transform(words)
    group = np.array([synthetic.CUES[name].lexicon for name in label])
    assert np.mean(_cv_predict(bags, group) == group) > 0.8
    for pair in (["sad", "angry"], ["neutral", "surprise"]):  # designed confusions
        keep = np.isin(label, pair)
        predicted = _cv_predict(bags[keep], label[keep])
        assert f1_score(label[keep], predicted, average="macro") < 0.7, pair


def test_both_modalities_together_beat_either_alone(utterances):
    label = utterances["label"]
    bags = CountVectorizer(token_pattern=r"[가-힣]+").fit_transform(utterances["words"]).toarray()
    audio = StandardScaler().fit_transform(utterances["audio"])
    scores = {name: f1_score(label, _cv_predict(x, label), average="macro")
              for name, x in (("audio", audio), ("text", bags), ("both", np.hstack([bags, audio])))}
    assert scores["both"] > 0.7, scores
    assert scores["both"] > max(scores["audio"], scores["text"]) + 0.15, scores
