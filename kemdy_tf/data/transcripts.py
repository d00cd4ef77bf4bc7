"""Reading KEMDy transcripts and removing their noise tags.

KEMDy20 writes each utterance's transcript as a one-line `.txt` in cp949 (KEMDy19's
are UTF-8) and marks noise with nine tags. For text analysis the tags are noise, so
`clean_transcript` removes them:

    >>> clean_transcript("n/ 아 친구들도? l/")
    '아 친구들도?'
    >>> clean_transcript("그* 저+ 저 음/ 그래서")
    '그 저 저 음 그래서'
"""

from __future__ import annotations

import os
import re

# Tag -> what the transcribers meant by it (ETRI's KEMDy20 documentation).
NOISE_TAGS = {
    "c/": "continuous speech without a pause (< 0.3 s)",
    "n/": "non-speech noise",
    "N/": "more than 50% of the segment is noise",
    "u/": "unintelligible word",
    "l/": "'um' sounds while speaking",
    "b/": "breath or cough",
    "*": "word only partly heard or ambiguous",
    "+": "stuttering repetition",
    "/": "interjection",
}

# Letter tags (`c/ n/ N/ u/ l/ b/`) stand alone or sit at the start of a word, one or
# more in a row; the word after them (if any) is kept. A tag is followed by the end of
# the token or by a character that is not a Latin letter or digit, so `n/a` and `c/o`
# are words, not tags.
_LETTER_TAGS = re.compile(r"^(?:[cnNulb]/)+(?![A-Za-z0-9])")
# A mark (`* + /`) is a tag when it stands alone or when exactly one sits at the start
# or at the end of a word (`그*`, `저+`, `음/`, `*그`). A mark inside a word (`50/50`,
# `rock+roll`) or a run of marks (`c++`) is part of the text.
_MARKS = "*+/"
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


class TranscriptError(ValueError):
    """A transcript file that cannot be read or decoded.

    Attributes:
        path: the transcript file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def clean_transcript(text: str) -> str:
    """Removes the nine KEMDy noise tags and folds whitespace.

    Standalone tags (`c/ n/ N/ u/ l/ b/ * + /`) are dropped; letter tags written
    against a word (`n/아`) and one mark `* + /` attached to either end of a word
    (`그*`, `저+`, `음/`, `*그`) are stripped and the word kept. Only tags are
    removed: a slash or plus inside a word (`50/50`, `rock+roll`), a run of marks
    (`c++`) and a letter tag glued to Latin text (`n/a`) stay as written. A
    transcript of tags only cleans to "". Cleaning is idempotent: cleaning a clean
    text changes nothing.

    Args:
        text: a transcript as written.

    Returns:
        The words of the transcript joined by single spaces.

    Example:
        >>> clean_transcript("50/50 c++ rock+roll 그*")
        '50/50 c++ rock+roll 그'
    """
    words = []
    for token in str(text).split():
        word = _strip_marks(_LETTER_TAGS.sub("", token))
        if word:
            words.append(word)
    return " ".join(words)


def _strip_marks(word: str) -> str:
    """`word` without one tag mark at its start and one at its end (never a run of marks)."""
    if len(word) == 1 and word in _MARKS:
        return ""
    if len(word) >= 2 and word[0] in _MARKS and word[1] not in _MARKS:
        word = word[1:]
    if len(word) >= 2 and word[-1] in _MARKS and word[-2] not in _MARKS:
        word = word[:-1]
    return word


def decode_transcript(data: bytes, path: str | os.PathLike = "<bytes>") -> str:
    """Decodes transcript bytes: UTF-8 when that gives Korean text, else cp949.

    UTF-8 is tried first because a cp949 file is almost never valid UTF-8, while
    valid UTF-8 Hangul is never what a cp949 file holds. Text that is valid UTF-8
    but has no Hangul (e.g. short cp949 byte runs that happen to be valid UTF-8) is
    read as cp949 when cp949 gives Hangul.

    Raises:
        TranscriptError: the bytes are neither UTF-8 nor cp949, or hold NUL bytes.
    """
    if b"\x00" in data:
        raise TranscriptError(path, "holds NUL bytes (binary file, or UTF-16 which is not supported)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    as_utf8 = as_cp949 = None
    try:
        as_utf8 = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if as_utf8 is not None and (as_utf8.isascii() or _HANGUL.search(as_utf8)):
        return as_utf8
    try:
        as_cp949 = data.decode("cp949")
    except UnicodeDecodeError:
        pass
    if as_cp949 is not None and (as_utf8 is None or _HANGUL.search(as_cp949)):
        return as_cp949
    if as_utf8 is not None:
        return as_utf8
    raise TranscriptError(path, "is neither UTF-8 nor cp949 text")


def read_transcript(path: str | os.PathLike) -> str:
    """The transcript as written (tags kept), on one line, without BOM or newlines.

    Args:
        path: a `.txt` transcript, cp949 or UTF-8.

    Returns:
        The text; "" for an empty file. Lines, if a file has several, are joined
        by a space.

    Raises:
        TranscriptError: the file cannot be read or decoded.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise TranscriptError(path, f"cannot be read ({error.strerror or error})") from None
    text = decode_transcript(data, path).lstrip("\ufeff")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
