"""CSV manifests: reading, skips, split validation, and the round trip with write_manifest."""

import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile

from kemdy_tf.data.kemdy20 import TABLE_COLUMNS, read_kemdy20
from kemdy_tf.data.manifest import read_manifest, write_manifest

MINI = os.path.join(os.path.dirname(__file__), "fixtures", "kemdy20_mini", "KEMDy20_v1_1")


def _wav(path, seconds=0.05):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path):
    """A folder with three wavs and a manifest pointing at them relatively."""
    for name in ("a", "b", "c"):
        _wav(tmp_path / "audio" / f"{name}.wav")
    return tmp_path


def test_minimal_manifest_fills_the_contract(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion\naudio/a.wav,n/ 안녕 하세요 l/,happy;neutral\n"
                                    "audio/b.wav,좋아,disqust\n")
    table, skips = read_manifest(csv)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert skips.empty
    first = table.iloc[0]
    assert first.segment_id == "a"  # the wav stem
    assert first.wav_path == str(dataset / "audio" / "a.wav")
    assert (first.text_raw, first.text) == ("n/ 안녕 하세요 l/", "안녕 하세요")
    assert (first.labels, first.emotion) == ("happy;neutral", "happy")
    assert (table.iloc[1].labels, table.iloc[1].emotion) == ("disgust", "disgust")
    assert math.isnan(first.valence) and math.isnan(first.wav_start)
    for column in ("session", "script", "speaker", "sex", "txt_path", "rater_emotions", "eda_path"):
        assert first[column] == "", column


def test_optional_and_extra_columns(dataset):
    csv = _write(
        dataset / "m.csv",
        "id,path,text,emotion,valence,arousal,speaker,session,corpus\n"
        "u1,audio/a.wav,하나,sad,2.5,1.5,spk1,s1,mine\n",
    )
    table, _ = read_manifest(csv)
    row = table.iloc[0]
    assert (row.segment_id, row.valence, row.arousal, row.speaker, row.session) == ("u1", 2.5, 1.5, "spk1", "s1")
    assert list(table.columns) == list(TABLE_COLUMNS) + ["corpus"]
    assert row.corpus == "mine"


def test_absolute_paths_are_kept(dataset, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    csv = _write(other / "m.csv", f"path,text,emotion\n{dataset / 'audio' / 'a.wav'},하나,sad\n")
    table, _ = read_manifest(csv)
    assert table.wav_path.iloc[0] == str(dataset / "audio" / "a.wav")


def test_skips_name_file_line_and_reason(dataset):
    (dataset / "audio" / "empty.wav").write_bytes(b"")
    csv = _write(
        dataset / "m.csv",
        "path,text,emotion,valence\n"
        "audio/a.wav,하나,sad,2\n"            # line 2 good
        "audio/missing.wav,둘,sad,2\n"        # line 3 missing file
        "audio/empty.wav,셋,sad,2\n"          # line 4 empty file
        "audio/b.wav,넷,,2\n"                 # line 5 empty label
        "audio/c.wav,n/ l/,sad,2\n"           # line 6 tags only
        "audio/b.wav,다섯,sad,high\n"          # line 7 non-numeric valence
        "audio/b.wav,여섯,sad,9\n"             # line 8 out of range
        "audio/a.wav,일곱,happy,3\n"           # line 9 duplicate id "a"
        ",여덟,happy,3\n",                     # line 10 empty path
    )
    table, skips = read_manifest(csv)
    assert list(table.segment_id) == ["a"]
    assert list(skips.file) == [str(csv)] * 8
    assert list(skips.row) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert list(skips.segment_id) == ["missing", "empty", "b", "c", "b", "b", "a", ""]
    assert list(skips.reason) == [
        f"missing wav: {dataset / 'audio' / 'missing.wav'} does not exist or is not a file",
        f"empty wav: {dataset / 'audio' / 'empty.wav'} has 0 bytes",
        "empty label: emotion cell is ''",
        "empty transcript: text is 'n/ l/'",
        "malformed row: valence 'high' is not a number",
        "malformed row: valence '9' is outside 1..5",
        "duplicate id: first seen on line 2",
        "missing wav: path is empty",
    ]


def test_unknown_emotion_is_kept_without_a_primary_label(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion\naudio/a.wav,하나,excited\naudio/b.wav,둘,excited;sad\n")
    table, skips = read_manifest(csv)
    assert skips.empty
    assert list(table.labels) == ["excited", "excited;sad"]
    assert list(table.emotion) == ["", "sad"]


def test_clean_tags_can_be_turned_off(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion\naudio/a.wav,그*  C++ 50/50,happy\n")
    assert read_manifest(csv)[0].text.iloc[0] == "그 C++ 50/50"  # only the tag goes
    assert read_manifest(csv, clean_tags=False)[0].text.iloc[0] == "그* C++ 50/50"


def test_a_clean_tags_column_turns_cleaning_off_per_row(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion,clean_tags\naudio/a.wav,그* 저+,happy,false\n"
                                    "audio/b.wav,그* 저+,happy,\naudio/c.wav,그* 저+,happy,yes\n")
    table, _ = read_manifest(csv)
    assert list(table.text) == ["그* 저+", "그 저", "그 저"]
    assert "clean_tags" not in table.columns
    bad = _write(dataset / "bad.csv", "path,text,emotion,clean_tags\naudio/a.wav,하나,happy,maybe\n")
    with pytest.raises(ValueError, match="line 2: clean_tags 'maybe'"):
        read_manifest(bad)


def test_split_column_is_validated(dataset):
    good = _write(dataset / "good.csv", "path,text,emotion,split\naudio/a.wav,하나,sad,train\n"
                                        "audio/b.wav,둘,sad, Val\naudio/c.wav,셋,sad,test\n")
    table, _ = read_manifest(good)
    assert list(table.split) == ["train", "val", "test"]
    assert list(table.columns) == list(TABLE_COLUMNS) + ["split"]
    bad = _write(dataset / "bad.csv", "path,text,emotion,split\naudio/a.wav,하나,sad,train\n"
                                      "audio/b.wav,둘,sad,dev\naudio/c.wav,셋,sad,\n")
    with pytest.raises(ValueError) as caught:
        read_manifest(bad)
    message = str(caught.value)
    assert str(bad) in message and "line 3" in message and "'dev'" in message and "2 such row" in message


def test_missing_required_column_is_an_error(dataset):
    csv = _write(dataset / "m.csv", "path,emotion\naudio/a.wav,sad\n")
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['text'\]"):
        read_manifest(csv)


def test_derived_column_names_are_an_error(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion,labels\naudio/a.wav,하나,sad,sad\n")
    with pytest.raises(ValueError, match="labels -> emotion"):
        read_manifest(csv)


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_round_trip_of_a_kemdy20_table(tmp_path):
    data = tmp_path / "KEMDy20"
    shutil.copytree(MINI, data)
    table, _ = read_kemdy20(data)
    table["split"] = ["train"] * 5 + ["val", "test", "test"]
    table["augmented_from"] = ""
    csv = write_manifest(table, tmp_path / "lists" / "manifest.csv")
    written = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(written.columns[:9]) == ["id", "path", "text", "emotion", "valence", "arousal", "speaker",
                                         "session", "split"]
    assert written.path.iloc[0] == "../KEMDy20/wav/Session01/Sess01_script01_User001F_001.wav"
    assert written.eda_path.iloc[0] == "../KEMDy20/EDA/Session01/Sess01_script01_User001F.csv"
    assert written.emotion.iloc[3] == "angry;neutral;disgust;fear;sad"  # ties survive
    back, skips = read_manifest(csv)
    assert skips.empty
    pd.testing.assert_frame_equal(back, table)


def test_written_manifest_moves_with_its_data(tmp_path):
    """Relative paths: moving the folder that holds data and manifest keeps it readable."""
    first = tmp_path / "first"
    shutil.copytree(MINI, first / "data")
    table, _ = read_kemdy20(first / "data")
    write_manifest(table, first / "manifest.csv")
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    back, skips = read_manifest(moved / "manifest.csv")
    assert skips.empty and len(back) == len(table)
    assert back.wav_path.iloc[0] == str(moved / "data" / "wav" / "Session01" / "Sess01_script01_User001F_001.wav")
    assert list(back.text) == list(table.text)


# === Nothing lost (issue 13) ===


def test_distinct_files_that_share_a_name_keep_distinct_ids(tmp_path, caplog):
    lines = ["path,text,emotion,speaker"]
    for speaker in ("spkA", "spkB"):
        for index in range(3):
            _wav(tmp_path / speaker / f"{index:03d}.wav")
            lines.append(f"{speaker}/{index:03d}.wav,하나,sad,{speaker}")
    _wav(tmp_path / "spkA" / "solo.wav")
    lines.append("spkA/solo.wav,둘,sad,spkA")
    csv = _write(tmp_path / "m.csv", "\n".join(lines) + "\n")
    table, skips = read_manifest(csv)
    assert skips.empty and len(table) == 7
    assert list(table.segment_id) == ["spkA/000", "spkA/001", "spkA/002", "spkB/000", "spkB/001", "spkB/002",
                                      "solo"]  # a unique stem stays the id
    assert table.wav_path.nunique() == 7


def test_the_same_file_twice_is_still_one_repeat(dataset):
    csv = _write(dataset / "m.csv", "path,text,emotion\naudio/a.wav,하나,sad\n./audio/a.wav,하나,sad\n")
    table, skips = read_manifest(csv)
    assert list(table.segment_id) == ["a"] and list(skips.reason) == ["duplicate id: first seen on line 2"]


def test_skipping_many_rows_is_said_loudly(dataset, caplog):
    csv = _write(dataset / "m.csv", "path,text,emotion\naudio/a.wav,하나,sad\naudio/b.wav,둘,sad\n"
                                    "audio/gone1.wav,셋,sad\naudio/gone2.wav,넷,sad\n")
    with caplog.at_level("WARNING"):
        table, skips = read_manifest(csv)
    assert len(table) == 2 and len(skips) == 2
    assert "2 of 4 rows (50%)" in caplog.text and "SKIPPED" in caplog.text and "missing wav (2)" in caplog.text


@pytest.mark.parametrize("content", ["path,text,emotion\n", ""])
def test_a_manifest_without_rows_says_no_utterances_and_where(tmp_path, content):
    from kemdy_tf.data.checks import NoUtterancesError

    csv = _write(tmp_path / "m.csv", content)
    with pytest.raises(NoUtterancesError) as caught:
        read_manifest(csv)
    assert "no utterances" in str(caught.value) and str(csv) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_manifest_whose_rows_are_all_skipped_names_the_reasons(tmp_path):
    from kemdy_tf.data.checks import NoUtterancesError

    csv = _write(tmp_path / "m.csv", "path,text,emotion\ngone.wav,하나,sad\n")
    with pytest.raises(NoUtterancesError, match=r"all 1 row\(s\).*missing wav \(1\).*line 2") as caught:
        read_manifest(csv)
    assert len(caught.value.skips) == 1
