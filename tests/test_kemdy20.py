"""The KEMDy20 reader on two hand-written fixtures (tests/fixtures/kemdy20_mini, kemdy20_bad)."""

import math
import os
import shutil

import pandas as pd
import pytest
import soundfile

from kemdy_tf.data import kemdy20
from kemdy_tf.data.kemdy20 import TABLE_COLUMNS, find_root, read_kemdy20

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
MINI_PARENT = os.path.join(FIXTURES, "kemdy20_mini")
MINI = os.path.join(MINI_PARENT, "KEMDy20_v1_1")
BAD = os.path.join(FIXTURES, "kemdy20_bad")


@pytest.fixture(scope="module")
def mini():
    return read_kemdy20(MINI)


def _row(table, segment_id):
    rows = table[table.segment_id == segment_id]
    assert len(rows) == 1, segment_id
    return rows.iloc[0]


# === find_root ===


def test_find_root_accepts_the_root_and_its_parent():
    assert find_root(MINI) == os.path.abspath(MINI)
    assert find_root(MINI_PARENT) == os.path.abspath(MINI)


def test_find_root_error_says_what_was_expected(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(FileNotFoundError) as caught:
        find_root(tmp_path)
    message = str(caught.value)
    assert "annotation/Sess01_eval.csv" in message and "wav/Session01" in message
    assert "something_else/" in message  # what it found instead


def test_find_root_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_root(tmp_path / "nope")


# === The mini fixture ===


def test_mini_rows_and_columns(mini):
    table, skips = mini
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table.segment_id) == [
        "Sess01_script01_User001F_001", "Sess01_script01_User002M_001", "Sess01_script01_User001F_002",
        "Sess01_script02_User002M_001", "Sess02_script01_User003M_001", "Sess02_script01_User004F_001",
        "Sess17_script03_User033F_001", "Sess17_script03_User034M_002",
    ]
    assert skips.empty and list(skips.columns) == ["file", "row", "segment_id", "reason"]


def test_mini_reading_the_parent_folder_gives_the_same_table(mini):
    table, _ = read_kemdy20(MINI_PARENT)
    pd.testing.assert_frame_equal(table, mini[0])


def test_mini_values_of_one_row(mini):
    row = _row(mini[0], "Sess01_script01_User001F_001")
    assert (row.session, row.script, row.speaker, row.sex) == ("Sess01", "script01", "User001F", "F")
    assert row.wav_path == os.path.join(MINI, "wav", "Session01", "Sess01_script01_User001F_001.wav")
    assert row.txt_path == os.path.join(MINI, "wav", "Session01", "Sess01_script01_User001F_001.txt")
    assert os.path.isabs(row.wav_path)
    assert (row.text_raw, row.text) == ("n/ 아 친구들도? l/", "아 친구들도?")
    assert (row.labels, row.emotion) == ("neutral", "neutral")
    assert (row.valence, row.arousal, row.wav_start, row.wav_end) == (3.1, 2.9, 10.512, 13.201)
    assert row.rater_emotions == ";".join(["neutral"] * 10)
    assert row.rater_valence == "3;3;4;3;3;3;3;3;3;3"
    assert row.rater_arousal == "3;3;3;3;2;3;3;3;3;3"


def test_mini_every_tag_is_cleaned_from_cp949_transcripts(mini):
    table = mini[0]
    expected = {
        "Sess01_script01_User002M_001": ("c/ 그* 저+ 저 진짜 재밌었어 b/", "그 저 저 진짜 재밌었어"),
        "Sess01_script01_User001F_002": ("음/ 그건 좀 u/ 별로야", "음 그건 좀 별로야"),
        "Sess01_script02_User002M_001": ("N/ 왜 그랬는지 모르겠어", "왜 그랬는지 모르겠어"),
        "Sess17_script03_User033F_001": ("*어 오늘은 좀 우울했어", "어 오늘은 좀 우울했어"),
        "Sess17_script03_User034M_002": ("하하 c/ 진짜+ 진짜 웃기다", "하하 진짜 진짜 웃기다"),
    }
    for segment_id, (raw, clean) in expected.items():
        row = _row(table, segment_id)
        assert (row.text_raw, row.text) == (raw, clean)
    tags_seen = set()
    for raw in table.text_raw:
        for tag in ("c/", "n/", "N/", "u/", "l/", "b/", "*", "+"):
            tags_seen.update([tag] if tag in raw else [])
        interjections = [w for w in raw.split() if w.endswith("/") and w[:-1] not in ("c", "n", "N", "u", "l", "b")]
        tags_seen.update(["/"] if interjections else [])
    assert tags_seen == {"c/", "n/", "N/", "u/", "l/", "b/", "*", "+", "/"}


def test_mini_utf8_transcript(mini):
    assert _row(mini[0], "Sess02_script01_User003M_001").text == "정말? 그게 사실이야?"


def test_mini_ties_and_canonical_names(mini):
    table = mini[0]
    disgust = _row(table, "Sess01_script01_User001F_002")
    assert (disgust.labels, disgust.emotion) == ("disgust", "disgust")
    assert disgust.rater_emotions.split(";") == ["disgust"] * 6 + ["neutral"] * 4
    five = _row(table, "Sess01_script02_User002M_001")
    assert five.labels == "angry;neutral;disgust;fear;sad"
    assert five.emotion == "angry"
    assert _row(table, "Sess01_script01_User002M_001").emotion == "happy"  # happy;neutral
    assert _row(table, "Sess02_script01_User004F_001").emotion == "sad"  # neutral;sad
    assert "disqust" not in " ".join(table.labels) + " ".join(table.rater_emotions)


def test_mini_sess17_wrong_prefix_is_remapped_not_skipped(mini):
    table, skips = mini
    row = _row(table, "Sess17_script03_User034M_002")
    assert row.session == "Sess17"
    assert row.wav_path.endswith(os.path.join("Session17", "Sess17_script03_User034M_002.wav"))
    assert (row.labels, row.valence, row.arousal) == ("happy", 4.1, 3.8)
    assert "Sess18_script03_User034M_002" not in set(table.segment_id)
    assert skips.attrs["remapped"] == 1
    assert skips.attrs["remaps"] == {"Sess18_script03_User034M_002": "Sess17_script03_User034M_002"}


def test_mini_remap_is_logged(caplog):
    with caplog.at_level("WARNING", logger="kemdy_tf.data.kemdy20"):
        read_kemdy20(MINI, sessions=[17])
    assert "Sess18_script03_User034M_002 -> Sess17_script03_User034M_002" in caplog.text


def test_mini_e4_paths(mini):
    table = mini[0]
    first = _row(table, "Sess01_script01_User001F_001")
    for signal, column in (("EDA", "eda_path"), ("IBI", "ibi_path"), ("TEMP", "temp_path")):
        assert first[column] == os.path.join(MINI, signal, "Session01", "Sess01_script01_User001F.csv")
    assert _row(table, "Sess01_script01_User001F_002").eda_path == first.eda_path  # same speaker and script
    only_eda = _row(table, "Sess01_script01_User002M_001")
    assert only_eda.eda_path.endswith("Sess01_script01_User002M.csv")
    assert (only_eda.ibi_path, only_eda.temp_path) == ("", "")
    assert (_row(table, "Sess01_script02_User002M_001")[["eda_path", "ibi_path", "temp_path"]] == "").all()


def test_sessions_filter():
    table, _ = read_kemdy20(MINI, sessions=[17, "Sess02"])
    assert sorted(table.session.unique()) == ["Sess02", "Sess17"]
    assert len(table) == 4
    with pytest.raises(FileNotFoundError, match=r"session\(s\) \[5\]"):
        read_kemdy20(MINI, sessions=[5])


def test_reading_never_decodes_audio(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("audio was decoded while reading the table")

    monkeypatch.setattr(soundfile, "read", forbidden)
    monkeypatch.setattr(soundfile.SoundFile, "read", forbidden)
    monkeypatch.setattr(soundfile.SoundFile, "buffer_read", forbidden)
    librosa = pytest.importorskip("librosa")
    monkeypatch.setattr(librosa, "load", forbidden)
    table, _ = read_kemdy20(MINI)
    assert len(table) == 8
    table, skips = read_kemdy20(BAD)
    assert len(table) == 4 and len(skips) == 18


# === The bad fixture ===


def test_bad_fixture_complete_skip_report():
    table, skips = read_kemdy20(BAD)
    csv_path = os.path.join(BAD, "annotation", "Sess01_eval.csv")
    wav = os.path.join(BAD, "wav", "Session01")

    def sid(k):
        return f"Sess01_script01_User001F_{k:03d}"

    expected = [
        (4, sid(2), "unreadable wav: " + os.path.join(wav, sid(2) + ".wav")),
        (5, sid(3), f"empty wav: {os.path.join(wav, sid(3))}.wav has a header but no audio frames"),
        (6, sid(4), f"empty wav: {os.path.join(wav, sid(4))}.wav has 0 bytes"),
        (7, sid(5), f"empty transcript: {os.path.join(wav, sid(5))}.txt"),
        (8, sid(6), "malformed row: 5 cells, the total evaluation needs columns 0-6 (of 37)"),
        (9, sid(7), "malformed row: 40 cells, expected 37"),
        (10, sid(8), "malformed row: valence is missing ('NaN')"),
        (11, sid(9), "malformed row: valence 'abc' is not a number"),
        (12, sid(10), f"missing transcript: no {sid(10)}.txt next to {os.path.join(wav, sid(10))}.wav"),
        (13, sid(11), f"unreadable transcript: {os.path.join(wav, sid(11))}.txt: is neither UTF-8 nor cp949 text"),
        (14, sid(12), f"missing wav: no {sid(12)}.wav next to {os.path.join(wav, sid(12))}.txt"),
        (15, sid(13), f"missing wav and transcript: no {sid(13)}.wav/.txt under {BAD}/wav/"),
        (16, sid(14), "empty label: emotion cell is ''"),
        (17, sid(15), f"empty transcript: {os.path.join(wav, sid(15))}.txt holds only noise tags ('n/ l/ b/')"),
        (18, sid(16), "unknown emotion: excited (in 'excited')"),
        (19, sid(17), "malformed row: valence '7' is outside 1..5"),
        (22, sid(1), f"duplicate segment id: first seen in {csv_path} line 3"),
        (25, "Sess01_script01_User001X_021",
         "malformed row: segment id 'Sess01_script01_User001X_021' is not SessNN_scriptMM_UserKKKG_III"),
    ]
    assert list(skips.file) == [csv_path] * len(expected)
    assert list(skips.row) == [line for line, _, _ in expected]
    assert list(skips.segment_id) == [segment_id for _, segment_id, _ in expected]
    # The corrupt wav's reason also carries libsndfile's message; compare its start.
    assert skips.reason.iloc[0].startswith(expected[0][2] + " (")
    assert list(skips.reason.iloc[1:]) == [reason for _, _, reason in expected[1:]]


def test_bad_fixture_every_good_row_loads():
    table, _ = read_kemdy20(BAD)
    assert list(table.segment_id) == [f"Sess01_script01_User001F_{k:03d}" for k in (1, 18, 19, 20)]
    short = _row(table, "Sess01_script01_User001F_018")  # 16 cells: only three raters
    assert short.rater_emotions == "neutral;neutral;neutral" + ";" * 7
    assert short.rater_valence.split(";") == ["3", "3", "3"] + [""] * 7
    assert short.text == "짧은 줄 이지만 괜찮아"
    trailing = _row(table, "Sess01_script01_User001F_019")  # 40 cells, the extra 3 empty
    assert trailing.rater_emotions == ";".join(["neutral"] * 10)
    no_start = _row(table, "Sess01_script01_User001F_020")
    assert math.isnan(no_start.wav_start) and no_start.wav_end == 2.0
    assert no_start.text == "시작 시각이 비어도 괜찮아"  # UTF-8


# === Odd annotation files ===


def _copy_mini(tmp_path):
    root = tmp_path / "KEMDy20"
    shutil.copytree(MINI, root)
    return root


def test_second_header_row_holding_data_is_read(tmp_path):
    root = _copy_mini(tmp_path)
    path = root / "annotation" / "Sess17_eval.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "".join(lines[2:]))  # one header row only
    table, skips = read_kemdy20(root, sessions=[17])
    assert len(table) == 2 and skips.empty


def test_unreadable_annotation_file_is_one_skip_entry(tmp_path):
    root = _copy_mini(tmp_path)
    (root / "annotation" / "Sess02_eval.csv").write_bytes(b"Numb\n\xff\xff\xff,\x80\n")
    table, skips = read_kemdy20(root)
    assert len(table) == 6
    assert list(skips.row) == [0]
    assert skips.reason.iloc[0].startswith("unreadable annotation file")
    assert skips.file.iloc[0] == str(root / "annotation" / "Sess02_eval.csv")


@pytest.mark.parametrize("content", [b"", "Numb,Wav,,Segment ID,Total Evaluation\n,start,end,,Emotion\n".encode()])
def test_annotation_files_without_rows_say_no_utterances_and_where(tmp_path, capsys, content):
    from kemdy_tf.data.checks import NoUtterancesError

    root = _copy_mini(tmp_path)
    for path in (root / "annotation").glob("*.csv"):
        path.write_bytes(content)
    with pytest.raises(NoUtterancesError) as caught:
        read_kemdy20(root)
    message = str(caught.value)
    assert "no utterances" in message and str(root / "annotation") in message and "Sess01_eval.csv" in message
    assert kemdy20.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert "no utterances" in err and "utterances: 0" not in err


def test_every_row_skipped_is_an_error_that_keeps_the_skip_report(tmp_path, capsys):
    root = _copy_mini(tmp_path)
    shutil.rmtree(root / "wav" / "Session01")
    for session in ("Session02", "Session17"):
        shutil.rmtree(root / "wav" / session, ignore_errors=True)
    skips_csv = tmp_path / "skips.csv"
    assert kemdy20.main([str(root), "--skips", str(skips_csv)]) == 2
    assert "all 8 row(s)" in capsys.readouterr().err
    assert len(pd.read_csv(skips_csv)) == 8


def test_skipping_many_rows_is_said_loudly(caplog):
    with caplog.at_level("WARNING"):
        read_kemdy20(BAD)
    assert "18 of 22 rows (82%)" in caplog.text and "SKIPPED" in caplog.text


def test_no_annotation_file(tmp_path):
    (tmp_path / "annotation").mkdir()
    (tmp_path / "wav").mkdir()
    with pytest.raises(FileNotFoundError, match="no SessNN_eval.csv"):
        read_kemdy20(tmp_path)


# === Command line ===


def test_command_line_summary(capsys, tmp_path):
    skips_csv = tmp_path / "skips.csv"
    assert kemdy20.main([BAD, "--skips", str(skips_csv)]) == 0
    out = capsys.readouterr().out
    assert "utterances: 4" in out
    assert "skipped rows: 18" in out
    assert "malformed row: 6" in out
    assert len(pd.read_csv(skips_csv)) == 18
    assert kemdy20.main([str(tmp_path)]) == 2
    assert "is not a KEMDy20 folder" in capsys.readouterr().err
