"""Transcript decoding (cp949 / UTF-8) and removal of the nine KEMDy noise tags."""

import pytest

from kemdy_tf.data.transcripts import (
    NOISE_TAGS,
    TranscriptError,
    clean_transcript,
    decode_transcript,
    read_transcript,
)


def test_the_nine_tags_are_listed():
    assert set(NOISE_TAGS) == {"c/", "n/", "N/", "u/", "l/", "b/", "*", "+", "/"}


def test_seed_example():
    assert clean_transcript("n/ 아 친구들도? l/") == "아 친구들도?"


@pytest.mark.parametrize("tag", ["c/", "n/", "N/", "u/", "l/", "b/"])
def test_standalone_letter_tags_are_removed(tag):
    assert clean_transcript(f"{tag} 그래서 {tag} 갔어 {tag}") == "그래서 갔어"


@pytest.mark.parametrize("tag", ["c/", "n/", "N/", "u/", "l/", "b/"])
def test_letter_tag_written_against_a_word_keeps_the_word(tag):
    assert clean_transcript(f"{tag}그래서 갔어") == "그래서 갔어"


@pytest.mark.parametrize("mark", ["*", "+", "/"])
def test_attached_marks_are_stripped_and_the_word_kept(mark):
    assert clean_transcript(f"그{mark} 사람이 {mark}저 갔어") == "그 사람이 저 갔어"


@pytest.mark.parametrize("mark", ["*", "+", "/"])
def test_standalone_marks_are_removed(mark):
    assert clean_transcript(f"그 {mark} 사람") == "그 사람"


def test_every_tag_together_and_whitespace_folded():
    raw = "c/  그*   저+ 저\t음/ n/ N/ u/ 좋아 l/ b/\n"
    assert clean_transcript(raw) == "그 저 저 음 좋아"


def test_tags_only_cleans_to_empty():
    assert clean_transcript("n/ l/ b/ * + /") == ""


def test_cleaning_is_idempotent_and_keeps_punctuation():
    once = clean_transcript("c/ 진짜+ 진짜? 웃기다! u/")
    assert once == "진짜 진짜? 웃기다!"
    assert clean_transcript(once) == once


def test_read_cp949(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("n/ 아 친구들도? l/\r\n".encode("cp949"))
    assert read_transcript(path) == "n/ 아 친구들도? l/"


def test_read_utf8_with_bom_and_newline(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "정말? 그게 사실이야?\n".encode("utf-8"))
    assert read_transcript(path) == "정말? 그게 사실이야?"


def test_read_joins_several_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("첫 줄\n\n둘째 줄\n".encode("cp949"))
    assert read_transcript(path) == "첫 줄 둘째 줄"


def test_cp949_that_happens_to_be_valid_utf8_is_read_as_cp949():
    # "치" in cp949 is C4 A1, which is also valid UTF-8 for "ġ" (no Hangul).
    data = "치".encode("cp949")
    data.decode("utf-8")  # valid UTF-8, so the Hangul check is what decides
    assert decode_transcript(data) == "치"


def test_empty_file_reads_as_empty(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"")
    assert read_transcript(path) == ""


def test_undecodable_raises_with_path_and_reason(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\xff\xfe\xfd\xff")
    with pytest.raises(TranscriptError) as caught:
        read_transcript(path)
    assert caught.value.path == str(path)
    assert "neither UTF-8 nor cp949" in caught.value.reason
    assert str(path) in str(caught.value)


def test_binary_file_raises(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("ok 아".encode("utf-16-le"))
    with pytest.raises(TranscriptError, match="NUL bytes"):
        read_transcript(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(TranscriptError, match="cannot be read"):
        read_transcript(tmp_path / "nope.txt")


# === Only tags are removed (issue 13, item 10) ===


@pytest.mark.parametrize("text", ["50/50 c++ rock+roll", "and/or 1/2 C++", "n/a c/o", "a+b=c x*y"])
def test_slashes_and_pluses_inside_words_are_text_not_tags(text):
    assert clean_transcript(text) == text


def test_tags_next_to_ordinary_text_are_still_removed():
    assert clean_transcript("n/ 50/50 이야* c++ 좋아+ l/") == "50/50 이야 c++ 좋아"
    assert clean_transcript("c/*그 n/아") == "그 아"
