"""Writes a synthetic dataset in the exact KEMDy20 layout, with a designed, learnable signal.

For plumbing, tests and demos only: the speech is a buzzy source through formant
filters, the transcripts are word salad from small lexicons, and the emotions follow
the rules below, not people. Numbers measured on it say nothing about KEMDy20.

Layout written (what `kemdy_tf.data.kemdy20.read_kemdy20` reads):

    annotation/SessNN_eval.csv              two header rows, 37 columns, one row per utterance
    wav/SessionNN/<segment id>.wav / .txt   16 kHz mono PCM16; one-line cp949 transcript
    EDA/ TEMP/ IBI/ SessionNN/SessNN_scriptMM_UserKKKG.csv   E4 wristband, per speaker + script
    synthetic.json                          the generator's settings; written last

Signal design (docs/synthetic.md explains why):
    * arousal lives in the audio: loudness, syllable rate, spectral brightness, and
      pitch level and range relative to the speaker's own base pitch;
    * valence lives in the words: a positive lexicon (happy), a negative one shared
      by sad and angry, a neutral one shared by neutral and surprise;
    * so text alone confuses sad/angry and neutral/surprise, audio alone confuses
      happy/angry/surprise, and only both together separate the five classes;
    * a few "weak cue" utterances and the tied labels keep it from being trivial;
    * EDA carries a weak arousal effect (buried in drift and noise); TEMP and IBI none.

Every random draw comes from a generator keyed by (seed, purpose, session, script,
speaker, utterance), so one seed gives byte-identical files, and asking for more
sessions leaves the earlier sessions unchanged.

Command line:
    python -m kemdy_tf.data.synthetic --out DIR [--seed N] [--sessions N] [--class-shares kemdy20]

`--class-shares kemdy20` draws the labels with KEMDy20's real imbalance (neutral ~85%,
the three rarest classes ~1.3% each) instead of the milder default mix.

Example:
    >>> from kemdy_tf.data import synthetic
    >>> root = synthetic.generate("/tmp/kemdy_synth", seed=0, sessions=2)  # doctest: +SKIP
    >>> synthetic.summary(root)["utterances"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import glob
import io
import json
import os
import shutil
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile

from kemdy_tf.config import DEFAULT_CLASSES
from kemdy_tf.data import labels as labels_lib

SAMPLE_RATE = 16000
DEFAULT_SESSIONS = 12
DEFAULT_SCRIPTS = 3
# Utterances per speaker per script, drawn uniformly in this range (inclusive).
DEFAULT_UTTERANCES = (16, 20)
# Utterance length in seconds; real KEMDy20 utterances are mostly 3-8 s, these are
# short so that CPU training stays fast.
DEFAULT_DURATION = (1.0, 3.0)
N_RATERS = 10
MARKER = "synthetic.json"
FORMAT_VERSION = 1
E4_RATE = 4  # Hz, EDA and TEMP
# EDA rises during an utterance by this fraction of the speaker's level per arousal
# point above 3 (falls below 3): a weak effect, well under the drift.
EDA_AROUSAL_EFFECT = 0.01

# === Emotions and their cues ===


@dataclass(frozen=True)
class _Cue:
    arousal: float  # mean rated arousal (1..5): drives the audio
    valence: float  # mean rated valence (1..5)
    lexicon: str  # which word group the transcript draws from: drives the text


# Names as KEMDy20 writes them ("disqust" is the dataset's spelling).
CUES = {
    "neutral": _Cue(3.0, 3.0, "neutral"),
    "happy": _Cue(4.0, 4.2, "positive"),
    "sad": _Cue(1.8, 1.9, "negative"),
    "angry": _Cue(4.3, 1.7, "negative"),
    "surprise": _Cue(4.2, 3.2, "neutral"),
    "fear": _Cue(3.6, 2.0, "negative"),
    "disqust": _Cue(2.8, 1.8, "negative"),
}
# Share of utterances per written total label. Single labels first, then ties
# (written sorted, like "happy;neutral"); about 6.5% ties, 3-way ties rare.
LABEL_SHARES = {
    "neutral": 0.47, "happy": 0.12, "sad": 0.105, "angry": 0.105, "surprise": 0.105,
    "fear": 0.02, "disqust": 0.02,
    "happy;neutral": 0.02, "neutral;sad": 0.012, "angry;neutral": 0.01, "neutral;surprise": 0.01,
    "happy;surprise": 0.004, "angry;sad": 0.003, "happy;neutral;surprise": 0.003,
    "angry;neutral;sad": 0.003,
}
# KEMDy20's own imbalance (issue 14: of the five default classes neutral ~84%, happy
# ~9%, surprise, angry and sad ~1-1.5% each; fear and disgust rarer still). Ties with
# neutral count as the emotion (`labels.primary_label`), so they are kept small.
KEMDY20_LABEL_SHARES = {
    "neutral": 0.80, "happy": 0.075, "surprise": 0.012, "angry": 0.011, "sad": 0.010,
    "fear": 0.004, "disqust": 0.006,
    "happy;neutral": 0.015, "neutral;surprise": 0.003, "angry;neutral": 0.002, "neutral;sad": 0.002,
    "happy;surprise": 0.001,
}
# The label mixes `--class-shares` chooses from; "default" is the milder design above.
CLASS_SHARES = {"default": LABEL_SHARES, "kemdy20": KEMDY20_LABEL_SHARES}
# Utterances whose cues are deliberately weak (label noise): audio pulled toward
# neutral arousal and no sentiment word in the transcript.
WEAK_CUE_SHARE = 0.05
# Share of transcripts carrying noise tags.
TAGGED_SHARE = 0.3

# === Lexicons (Hangul only, so every transcript encodes in cp949) ===

LEXICONS = {
    "positive": ("좋아요", "재밌어요", "행복해요", "신나요", "최고야", "즐거웠어", "웃겨요", "기뻐요",
                 "멋있다", "고마워요", "대박이야", "맛있었어", "설레요", "다행이다", "귀여워", "좋았어"),
    "negative": ("싫어요", "힘들어", "짜증나", "슬퍼요", "화나요", "속상해", "답답해", "우울해",
                 "최악이야", "억울해", "미워요", "괴로워", "아파요", "지쳤어", "실망이야", "서운해"),
    # Everyday topic words: what neutral and surprise talk about.
    "neutral": ("학교", "회사", "친구들", "어제", "주말에", "영화", "버스", "시간", "집에", "생각",
                "이야기", "오늘", "사람들", "뉴스", "동네", "수업", "점심", "날씨"),
}
FILLERS = ("아", "음", "그냥", "근데", "막", "좀", "저는", "그", "뭐", "이제", "약간", "되게",
           "네", "어", "그래서", "그러니까", "제가", "우리", "거기", "이렇게", "그런", "진짜")
STANDALONE_TAGS = ("c/", "n/", "N/", "u/", "l/", "b/")
# Marks attached to a filler word: `그*` partly heard, `저+ 저는` stutter, `음/` interjection.
ATTACHED_MARKS = ("*", "+", "/")
INTERJECTIONS = ("음", "어", "아")

# Formant frequencies (F1, F2, F3 in Hz) of a few vowels, scaled per speaker.
_VOWELS = np.array([(800, 1200, 2500), (500, 1900, 2600), (300, 2300, 3000),
                    (500, 900, 2400), (350, 800, 2300), (450, 1500, 2500)], dtype=float)
_FORMANT_GAINS = np.array([1.0, 0.5, 0.25])

# Keys of the per-purpose random generators (first element after the seed).
_PLAN, _SPEAKER, _RATERS, _AUDIO, _TEXT, _E4 = range(6)


def _rng(seed: int, purpose: int, session: int = 0, script: int = 0, speaker: int = 0,
         number: int = 0) -> np.random.Generator:
    """A generator for one purpose and one place in the dataset (fixed-length key)."""
    return np.random.default_rng([seed, purpose, session, script, speaker, number])


# === The plan of a session ===


@dataclass(frozen=True)
class _Speaker:
    number: int  # 1-based position in the session (1 or 2)
    name: str  # e.g. User001F
    sex: str
    f0: float  # base pitch, Hz
    tract: float  # formant scale (shorter vocal tract -> higher formants)
    rate: float  # syllables per second at neutral arousal
    gain_db: float  # recording level relative to the others
    noise_db: float  # background noise level, dBFS
    eda_level: float  # microsiemens
    temp_level: float  # degrees C
    ibi_mean: float  # seconds


@dataclass
class _Utterance:
    segment_id: str
    script: int
    speaker: _Speaker
    number: int
    label: str  # total evaluation as written, e.g. "happy;neutral"
    arousal: float  # latent arousal the raters hear (1..5)
    valence: float
    weak: bool
    start_ms: int  # position in the session recording
    end_ms: int
    votes: list[str]
    rater_valence: list[int]
    rater_arousal: list[int]

    @property
    def duration(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


@dataclass
class _Session:
    number: int
    speakers: tuple[_Speaker, _Speaker]
    raters: list[str]  # header names, e.g. Eval07F
    utterances: list[_Utterance]  # in conversation order
    scripts: list[tuple[int, int]]  # (start_ms, end_ms) of each script recording
    clock: datetime.datetime  # wall-clock time at session second 0


def _make_speaker(seed: int, session: int, number: int, sex: str) -> _Speaker:
    rng = _rng(seed, _SPEAKER, session, 0, number)
    female = sex == "F"
    return _Speaker(
        number=number,
        name=f"User{2 * (session - 1) + number:03d}{sex}",
        sex=sex,
        f0=float(rng.normal(205, 18) if female else rng.normal(118, 11)),
        tract=float((1.12 if female else 1.0) * rng.normal(1.0, 0.04)),
        rate=float(4.2 * rng.lognormal(0.0, 0.08)),
        gain_db=float(rng.normal(0.0, 1.0)),
        noise_db=float(rng.uniform(-62, -50)),
        eda_level=float(rng.lognormal(np.log(2.0), 0.6)),
        temp_level=float(rng.normal(33.3, 0.7)),
        ibi_mean=float(rng.uniform(0.7, 1.0)),
    )


def _raters(seed: int, session: int) -> tuple[list[str], np.ndarray]:
    """Ten rater header names (different per session) and each rater's valence/arousal bias."""
    rng = _rng(seed, _RATERS, session)
    numbers = np.sort(rng.choice(np.arange(1, 65), N_RATERS, replace=False))
    # A rater keeps the same sex letter in every session.
    names = [f"Eval{n:02d}{'FM'[_rng(seed, _RATERS, 0, 0, 0, int(n)).integers(2)]}" for n in numbers]
    return names, rng.normal(0.0, 0.25, size=(N_RATERS, 2))


def _votes(rng: np.random.Generator, label: str) -> list[str]:
    """Ten rater emotions whose plurality (ties included) is exactly `label`."""
    winners = label.split(";")
    others = [name for name in CUES if name not in winners]
    weights = np.array([3.0 if name == "neutral" else 1.0 for name in others])
    if len(winners) == 1:
        top = int(rng.integers(5, 11))
    elif len(winners) == 2:
        top = int(rng.integers(3, 6))
    else:
        top = 3
    counts = {name: top for name in winners}
    for _ in range(N_RATERS - top * len(winners)):
        allowed = [i for i, name in enumerate(others) if counts.get(name, 0) < top - 1]
        p = weights[allowed] / weights[allowed].sum()
        name = others[allowed[rng.choice(len(allowed), p=p)]]
        counts[name] = counts.get(name, 0) + 1
    votes = [name for name, count in counts.items() for _ in range(count)]
    return [votes[i] for i in rng.permutation(N_RATERS)]


def total_label(votes: typing.Sequence[str]) -> str:
    """The plurality of rater emotions, ties joined by `;` in sorted order (`happy;neutral`)."""
    names, counts = np.unique(np.asarray(votes), return_counts=True)
    return ";".join(sorted(str(n) for n in names[counts == counts.max()]))


def _plan_session(seed: int, session: int, scripts: int, utterances: tuple[int, int],
                  duration: tuple[float, float], class_shares: str = "default") -> _Session:
    rng = _rng(seed, _PLAN, session)
    sexes = rng.choice(["FM", "MF", "FF", "MM"], p=[0.35, 0.35, 0.15, 0.15])
    speakers = (_make_speaker(seed, session, 1, sexes[0]), _make_speaker(seed, session, 2, sexes[1]))
    raters, bias = _raters(seed, session)
    label_names = list(CLASS_SHARES[class_shares])
    shares = np.array(list(CLASS_SHARES[class_shares].values()))
    shares = shares / shares.sum()
    clock = datetime.datetime(2020, 7, 6, 10, 0) + datetime.timedelta(
        days=int(session - 1), minutes=int(rng.integers(0, 360)), seconds=int(rng.integers(0, 60)))

    planned, spans = [], []
    t = int(rng.integers(5_000, 30_000))
    for script in range(1, scripts + 1):
        counts = rng.integers(utterances[0], utterances[1] + 1, size=2)
        turns = rng.permutation(np.repeat([0, 1], counts))
        script_start = t
        t += int(rng.integers(1_500, 4_000))
        numbers = [0, 0]
        for who in turns:
            speaker = speakers[who]
            numbers[who] += 1
            label = label_names[rng.choice(len(label_names), p=shares)]
            cues = [CUES[name] for name in label.split(";")]
            length = int(round(rng.uniform(*duration) * 1000))
            start = t
            t += length
            vote_rng = _rng(seed, _PLAN, session, script, speaker.number, numbers[who])
            arousal = float(np.clip(np.mean([c.arousal for c in cues]) + vote_rng.normal(0, 0.22), 1, 5))
            valence = float(np.clip(np.mean([c.valence for c in cues]) + vote_rng.normal(0, 0.3), 1, 5))
            noise = vote_rng.normal(0.0, 0.55, size=(N_RATERS, 2)) + bias
            planned.append(_Utterance(
                segment_id=f"Sess{session:02d}_script{script:02d}_{speaker.name}_{numbers[who]:03d}",
                script=script, speaker=speaker, number=numbers[who], label=label,
                arousal=arousal, valence=valence, weak=bool(vote_rng.random() < WEAK_CUE_SHARE),
                start_ms=start, end_ms=t, votes=_votes(vote_rng, label),
                rater_valence=[int(v) for v in np.clip(np.rint(valence + noise[:, 0]), 1, 5)],
                rater_arousal=[int(v) for v in np.clip(np.rint(arousal + noise[:, 1]), 1, 5)],
            ))
            t += int(rng.integers(200, 1_200))  # pause before the next turn
        t += int(rng.integers(1_000, 3_000))
        spans.append((script_start, t))
        t += int(rng.integers(15_000, 40_000))  # break between scripts
    return _Session(session, speakers, raters, planned, spans, clock)


# === Audio ===


def synthesize_speech(rng: np.random.Generator, duration: float, arousal: float, *, f0: float = 150.0,
                      tract: float = 1.0, rate: float = 4.2, gain_db: float = 0.0,
                      noise_db: float = -55.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like audio whose arousal cues are loudness, tempo, brightness and pitch.

    A sawtooth voice source with an f0 contour, shaped by a spectral tilt and three
    formant resonators per syllable, with syllable-like envelopes, consonant noise
    bursts and background noise. Pitch level and range are set relative to `f0`, so
    the cue is the same for low and high voices.

    Args:
        rng: the random generator of this utterance.
        duration: seconds.
        arousal: 1..5; 3 is neutral.
        f0: the speaker's base pitch (Hz).
        tract: formant scale of the speaker.
        rate: the speaker's syllables per second at arousal 3.
        gain_db: the speaker's recording level offset.
        noise_db: background noise level (dBFS).
        sample_rate: Hz.

    Returns:
        float32 samples in [-1, 1], `round(duration * sample_rate)` of them.
    """
    n = int(round(duration * sample_rate))
    z = (arousal - 3.0) / 1.2  # about -1 (sad) .. +1 (angry)
    syllable_rate = rate * 2.0 ** (0.5 * z) * rng.lognormal(0.0, 0.07)
    level_st = 3.0 * z + rng.normal(0.0, 0.6)  # pitch level, semitones above the base
    range_st = max(1.0, 3.5 + 2.0 * z + rng.normal(0.0, 0.6))  # pitch movement, semitones
    tilt_hz = 700.0 * 2.0 ** (1.0 * z + rng.normal(0.0, 0.1))  # brighter when aroused
    level_db = -27.0 + gain_db + 8.0 * z + rng.normal(0.0, 0.8)

    # Syllables fill the utterance between short lead/trail silences; a few pauses.
    syllables = []
    t = rng.uniform(0.04, 0.12)
    end = duration - rng.uniform(0.04, 0.12)
    while t < end - 0.08 or not syllables:
        length = min(rng.lognormal(0.0, 0.18) / syllable_rate, max(end - t, 0.06))
        syllables.append((t, t + length))
        t += length + (rng.uniform(0.08, 0.2) if rng.random() < 0.1 else 0.0)

    times = np.arange(n) / sample_rate
    centres = np.array([(a + b) / 2 for a, b in syllables])
    contour = np.interp(times, centres, rng.uniform(-0.5, 0.5, len(syllables)) * range_st)
    contour -= 0.4 * range_st * (times / duration - 0.5)  # declination
    f0_track = f0 * 2.0 ** ((level_st + contour) / 12.0)
    phase = np.cumsum(f0_track) / sample_rate
    source = 2.0 * (phase % 1.0) - 1.0
    pole = np.exp(-2 * np.pi * tilt_hz / sample_rate)
    source = scipy.signal.lfilter([1 - pole], [1, -pole], source)

    speech = np.zeros(n)
    for (a, b), vowel in zip(syllables, rng.integers(len(_VOWELS), size=len(syllables))):
        i, j = int(a * sample_rate), min(int(b * sample_rate), n)
        if j - i < 16:
            continue
        chunk = np.zeros(j - i)
        for freq, gain in zip(_VOWELS[vowel] * tract, _FORMANT_GAINS):
            b_coef, a_coef = _resonator(round(min(freq, 0.45 * sample_rate), 1), sample_rate)
            chunk += gain * scipy.signal.lfilter(b_coef, a_coef, source[i:j])
        onset = int(rng.uniform(0.015, 0.05) * sample_rate)
        envelope = np.sin(np.pi * np.linspace(0.0, 1.0, j - i)) ** 0.6
        envelope[: min(onset, j - i)] *= np.linspace(0.0, 1.0, min(onset, j - i))
        chunk *= envelope * 10 ** (rng.normal(0.0, 2.0) / 20)  # per-syllable stress
        if rng.random() < 0.6:  # consonant: a short high-passed noise burst
            burst = np.diff(rng.normal(size=min(onset, j - i) + 1))
            chunk[: len(burst)] += 0.4 * np.std(chunk) * burst * np.linspace(1.0, 0.0, len(burst))
        speech[i:j] += chunk
    active = np.abs(speech) > 0
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
    speech *= 10 ** (level_db / 20) / rms

    noise = scipy.signal.lfilter([1.0], [1.0, -0.9], rng.normal(size=n))
    noise *= 10 ** (noise_db / 20) / np.std(noise)
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _resonator(freq: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A formant: a second-order peak filter at `freq` Hz (cached: speakers reuse them)."""
    return scipy.signal.iirpeak(freq, 8.0, fs=sample_rate)


def _audio(seed: int, session: int, utterance: _Utterance) -> np.ndarray:
    speaker = utterance.speaker
    rng = _rng(seed, _AUDIO, session, utterance.script, speaker.number, utterance.number)
    arousal = utterance.arousal
    if utterance.weak:  # the voice does not show what the raters heard
        arousal = 3.0 + (arousal - 3.0) * rng.uniform(0.0, 0.4)
    return synthesize_speech(rng, utterance.duration, arousal, f0=speaker.f0, tract=speaker.tract,
                             rate=speaker.rate, gain_db=speaker.gain_db, noise_db=speaker.noise_db)


# === Text ===


def _transcript(seed: int, session: int, utterance: _Utterance) -> str:
    """4-10 words: sentiment/topic words from the label's lexicons and fillers, maybe tags.

    Tags never touch a lexicon word, and add no word once removed (a stutter
    `저+ 저는` repeats the start of a word that is there anyway).
    """
    rng = _rng(seed, _TEXT, session, utterance.script, utterance.speaker.number, utterance.number)
    groups = sorted({CUES[name].lexicon for name in utterance.label.split(";")})
    n_words = int(rng.integers(4, 11))
    words: list[str] = []
    if utterance.weak:
        words += list(rng.choice(LEXICONS["neutral"], int(rng.integers(0, 2))))
    elif len(groups) > 1:  # a tie: one word from each label's lexicon
        words += [str(rng.choice(LEXICONS[group])) for group in groups]
    elif groups == ["neutral"]:
        words += list(rng.choice(LEXICONS["neutral"], int(rng.integers(2, 4)), replace=False))
    else:
        words += list(rng.choice(LEXICONS[groups[0]], int(rng.integers(1, 4)), replace=False))
        words += list(rng.choice(LEXICONS["neutral"], int(rng.integers(0, 2))))
    words += list(rng.choice(FILLERS, n_words - len(words)))  # at most 4 words so far
    words = [str(words[i]) for i in rng.permutation(len(words))]
    if rng.random() < 0.2:
        words[-1] += "?" if rng.random() < 0.6 else "."
    if rng.random() < TAGGED_SHARE:
        for _ in range(int(rng.integers(1, 3))):
            fillers = [i for i, word in enumerate(words) if word in FILLERS]
            kind = rng.choice(["standalone", "attached"], p=[0.6, 0.4]) if fillers else "standalone"
            if kind == "standalone":
                position = int(rng.choice([0, len(words), int(rng.integers(0, len(words) + 1))]))
                words.insert(position, str(rng.choice(STANDALONE_TAGS)))
                continue
            i = int(rng.choice(fillers))
            mark = str(rng.choice(ATTACHED_MARKS))
            if mark == "/":  # an interjection
                words[i] = str(rng.choice(INTERJECTIONS)) + "/"
            elif mark == "+":  # a stutter on the word's first syllable
                words[i] = f"{words[i][0]}+ {words[i]}"
            else:  # a word only partly heard
                words[i] += "*"
    return " ".join(words)


# === E4 wristband ===


def _stamp(clock: datetime.datetime, ms: int) -> str:
    """KEMDy20's E4 timestamp `2020-0821-1213-19-250` (YYYY-MMDD-HHMM-SS-mmm)."""
    t = clock + datetime.timedelta(milliseconds=int(ms))
    return f"{t:%Y-%m%d-%H%M-%S}-{t.microsecond // 1000:03d}"


def _unix(clock: datetime.datetime, ms: int) -> float:
    return (clock + datetime.timedelta(milliseconds=int(ms))).replace(tzinfo=datetime.timezone.utc).timestamp()


def _segment_at(times_ms: np.ndarray, own: list[_Utterance]) -> list[str]:
    ids = [""] * len(times_ms)
    for utterance in own:
        inside = np.flatnonzero((times_ms >= utterance.start_ms) & (times_ms <= utterance.end_ms))
        for i in inside:
            ids[i] = utterance.segment_id
    return ids


def _slow_drift(rng: np.random.Generator, seconds: np.ndarray) -> np.ndarray:
    """Unit-scale slow wander: a few long sinusoids plus a smoothed random walk."""
    drift = sum(np.sin(2 * np.pi * seconds / rng.uniform(30, 200) + rng.uniform(0, 2 * np.pi))
                for _ in range(3)) / 3
    walk = np.cumsum(rng.normal(0.0, 0.02, len(seconds)))
    return drift + walk - walk.mean()


def _e4_files(seed: int, session: _Session, script: int, speaker: _Speaker) -> dict[str, str]:
    """The EDA, TEMP and IBI CSV texts of one speaker and script (E4 style, ragged rows)."""
    rng = _rng(seed, _E4, session.number, script, speaker.number)
    span_start, span_end = session.scripts[script - 1]
    start_ms = span_start - span_start % 1000  # E4 files start on a whole second
    own = [u for u in session.utterances if u.script == script and u.speaker is speaker]
    times_ms = np.arange(start_ms, span_end + 1, 1000 // E4_RATE)
    seconds = (times_ms - start_ms) / 1000.0
    ids = _segment_at(times_ms, own)
    header = f"{_unix(session.clock, start_ms):.6f}\n{E4_RATE:.6f}\n"

    # EDA: speaker level, drift, noise, and the weak arousal effect: during an
    # utterance the level ramps by EDA_AROUSAL_EFFECT * (arousal - 3), then recovers.
    level = speaker.eda_level
    eda = level * (1 + 0.08 * _slow_drift(rng, seconds)) + rng.normal(0.0, 0.02 * level, len(seconds))
    for utterance in own:
        rise = EDA_AROUSAL_EFFECT * level * (utterance.arousal - 3.0)
        into = (times_ms - utterance.start_ms) / max(utterance.end_ms - utterance.start_ms, 1)
        after = (times_ms - utterance.end_ms) / 1000.0
        eda += rise * np.where(into < 0, 0.0, np.where(after <= 0, into, np.exp(-after / 4.0)))
    eda = np.maximum(eda, 0.001)
    temp = speaker.temp_level + 0.2 * _slow_drift(rng, seconds) + rng.normal(0.0, 0.02, len(seconds))

    def rows(values: np.ndarray, fmt: str) -> str:
        return "".join(
            f"{value:{fmt}},{_stamp(session.clock, ms)}" + (f",{sid}\n" if sid else "\n")
            for value, ms, sid in zip(values, times_ms, ids)
        )

    # IBI: beats with heart-rate variability; the wristband misses some, and a row
    # exists only when a beat and the one before it were both detected.
    beats, t = [], 0.0
    while t < seconds[-1]:
        t += speaker.ibi_mean * (1 + 0.05 * rng.normal() + 0.03 * np.sin(2 * np.pi * 0.25 * t))
        beats.append(t)
    beats_arr = np.array(beats[:-1]) if len(beats) > 1 else np.array(beats)
    detected = rng.random(len(beats_arr)) < 0.75
    beat_ms = start_ms + np.rint(beats_arr * 1000).astype(np.int64)
    beat_ids = _segment_at(beat_ms, own)
    ibi_rows = [
        f"{beats_arr[k]:.6f},{beats_arr[k] - beats_arr[k - 1]:.6f},{_stamp(session.clock, beat_ms[k])}"
        + (f",{beat_ids[k]}\n" if beat_ids[k] else "\n")
        for k in range(1, len(beats_arr)) if detected[k] and detected[k - 1]
    ]
    return {
        "EDA": header + rows(eda, ".6f"),
        "TEMP": header + rows(temp, ".2f"),
        "IBI": f"{_unix(session.clock, start_ms):.6f}, IBI\n" + "".join(ibi_rows),
    }


# === Annotation ===


def _annotation_csv(session: _Session) -> str:
    """`SessNN_eval.csv`: two header rows, then one 37-cell row per utterance."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    first = ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
    second = [" ", "start", "end", " ", "Emotion", "Valence", "Arousal"]
    for name in session.raters:
        first += [name, "", ""]
        second += ["Emotion", "Valence", "Arousal"]
    writer.writerow(first)
    writer.writerow(second)
    for numb, u in enumerate(session.utterances, start=1):
        row = [numb, f"{u.start_ms / 1000:.3f}", f"{u.end_ms / 1000:.3f}", u.segment_id, u.label,
               f"{np.mean(u.rater_valence):.1f}", f"{np.mean(u.rater_arousal):.1f}"]
        for emotion, valence, arousal in zip(u.votes, u.rater_valence, u.rater_arousal):
            row += [emotion, valence, arousal]
        writer.writerow(row)
    return out.getvalue()


# === Writing the dataset ===


def _settings(seed: int, sessions: int, scripts: int, utterances: tuple[int, int],
              duration: tuple[float, float], class_shares: str) -> dict:
    settings = {"generator": "kemdy_tf.data.synthetic", "format_version": FORMAT_VERSION, "seed": seed,
                "sessions": sessions, "scripts": scripts, "utterances_per_speaker": list(utterances),
                "duration_s": list(duration), "sample_rate": SAMPLE_RATE}
    if class_shares != "default":  # so sets written before the option still match their marker
        settings["class_shares"] = class_shares
    return settings


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_session(seed: int, session: _Session, root: Path) -> None:
    name = f"Session{session.number:02d}"
    wav_dir = root / "wav" / name
    wav_dir.mkdir(parents=True)
    for utterance in session.utterances:
        audio = _audio(seed, session.number, utterance)
        # Through memory: libsndfile's many small writes to disk are several times slower.
        wav = io.BytesIO()
        soundfile.write(wav, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        (wav_dir / f"{utterance.segment_id}.wav").write_bytes(wav.getvalue())
        text = _transcript(seed, session.number, utterance)
        (wav_dir / f"{utterance.segment_id}.txt").write_bytes(text.encode("cp949"))
    (root / "annotation" / f"Sess{session.number:02d}_eval.csv").write_text(
        _annotation_csv(session), encoding="utf-8", newline="")
    for script in range(1, len(session.scripts) + 1):
        for speaker in session.speakers:
            files = _e4_files(seed, session, script, speaker)
            for signal, text in files.items():
                path = root / signal / name / f"Sess{session.number:02d}_script{script:02d}_{speaker.name}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="ascii", newline="")


def generate(out: str | os.PathLike, seed: int = 0, sessions: int = DEFAULT_SESSIONS, *,
             scripts: int = DEFAULT_SCRIPTS, utterances: tuple[int, int] = DEFAULT_UTTERANCES,
             duration: tuple[float, float] = DEFAULT_DURATION, class_shares: str = "default",
             verbose: bool = False) -> Path:
    """Writes a synthetic KEMDy20-shaped dataset to `out` and returns its path.

    The files are written to a hidden folder beside `out` and renamed into place at
    the end, so an interrupted run never leaves a dataset that looks complete. When
    `out` already holds a complete set with the same settings (its `synthetic.json`
    matches), nothing is written. A previous synthetic set with other settings is
    replaced; any other non-empty folder is refused.

    Args:
        out: the dataset root to create (it will hold `annotation/`, `wav/`, ...).
        seed: any non-negative integer; the same seed gives byte-identical files.
        sessions: number of sessions (two speakers each), 1..99.
        scripts: scripts per session, 1..99.
        utterances: (min, max) utterances per speaker per script.
        duration: (min, max) utterance length in seconds.
        class_shares: the label mix, a key of `CLASS_SHARES`: "default" (neutral 47%,
            the others ~10% each) or "kemdy20" (KEMDy20's imbalance: neutral ~85%).
        verbose: print the summary and the time taken.

    Returns:
        The absolute path of the dataset root.

    Raises:
        ValueError: a setting is out of range.
        FileExistsError: `out` exists and is not an empty folder or a synthetic set.
    """
    settings = _check_settings(seed, sessions, scripts, utterances, duration, class_shares)
    out = Path(out).absolute()
    if out.exists():
        if _read_marker(out) == settings:
            if verbose:
                print(f"{out} already holds this synthetic set (seed {seed}, {sessions} sessions); nothing to do")
            return out
        if not out.is_dir() or (any(out.iterdir()) and _read_marker(out) is None):
            raise FileExistsError(
                f"{out} exists and is not a synthetic KEMDy20 set (no {MARKER}); "
                "choose another --out or remove it")
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "annotation").mkdir(parents=True)
        for number in range(1, sessions + 1):
            session = _plan_session(seed, number, scripts, utterances, duration, class_shares)
            _write_session(seed, session, partial)
        (partial / MARKER).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():  # an older synthetic set or an empty folder: swap it out
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(partial, out)
            shutil.rmtree(old)
        else:
            os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if verbose:
        print(format_summary(summary(out), seconds=time.perf_counter() - started))
    return out


def _check_settings(seed, sessions, scripts, utterances, duration, class_shares="default") -> dict:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("sessions", sessions), ("scripts", scripts)):
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= 99:
            raise ValueError(f"{name} must be an integer in 1..99, got {value!r}")
    low, high = utterances
    if not 1 <= low <= high <= 999:
        raise ValueError(f"utterances must be (min, max) with 1 <= min <= max <= 999, got {utterances!r}")
    shortest, longest = duration
    if not 0.3 <= shortest <= longest <= 30:
        raise ValueError(f"duration must be (min, max) seconds with 0.3 <= min <= max <= 30, got {duration!r}")
    if class_shares not in CLASS_SHARES:
        raise ValueError(f"class_shares must be one of {sorted(CLASS_SHARES)}, got {class_shares!r}")
    return _settings(int(seed), int(sessions), int(scripts), (int(low), int(high)),
                     (float(shortest), float(longest)), class_shares)


# === Summary ===


def summary(root: str | os.PathLike) -> dict:
    """Counts of a KEMDy20-shaped folder, read from its annotation files only.

    Returns:
        `{"sessions", "speakers", "utterances", "duration_s", "ties",
        "labels": {written total label: count}, "emotions": {primary label among
        the default classes: count}, "dropped": utterances with no default class}`.
    """
    root = Path(root)
    files = sorted(glob.glob(str(root / "annotation" / "Sess*_eval.csv")))
    if not files:
        raise FileNotFoundError(f"no annotation/SessNN_eval.csv in {root}")
    labels: dict[str, int] = {}
    emotions = {name: 0 for name in DEFAULT_CLASSES}
    speakers, seconds, dropped = set(), 0.0, 0
    for path in files:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))[2:]
        for cells in rows:
            if len(cells) < 7 or not cells[3].strip():
                continue
            label = cells[4].strip()
            labels[label] = labels.get(label, 0) + 1
            primary = labels_lib.primary_label(label, DEFAULT_CLASSES)
            if primary is None:
                dropped += 1
            else:
                emotions[primary] += 1
            speakers.add(cells[3].split("_")[2] if cells[3].count("_") >= 3 else "")
            try:
                seconds += float(cells[2]) - float(cells[1])
            except ValueError:  # real files leave some wav times empty
                pass
    return {
        "sessions": len(files),
        "speakers": len(speakers),
        "utterances": sum(labels.values()),
        "duration_s": round(seconds, 3),
        "ties": sum(count for label, count in labels.items() if ";" in label),
        "labels": dict(sorted(labels.items(), key=lambda item: -item[1])),
        "emotions": emotions,
        "dropped": dropped,
    }


def format_summary(counts: dict, seconds: float | None = None) -> str:
    """The printable form of `summary(root)`, with the generation time when given."""
    lines = [f"sessions: {counts['sessions']}  speakers: {counts['speakers']}  "
             f"utterances: {counts['utterances']}  audio: {counts['duration_s'] / 60:.1f} min"]
    lines.append(f"primary emotion (default classes; {counts['dropped']} fear/disgust dropped):")
    lines += [f"  {name:<9} {count:>5}" for name, count in counts["emotions"].items()]
    lines.append(f"tied labels: {counts['ties']}")
    if seconds is not None:
        lines.append(f"generated in {seconds:.1f} s")
    return "\n".join(lines)


# === Command line ===


def main(argv: typing.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kemdy_tf.data.synthetic",
        description="Write a synthetic dataset in the KEMDy20 layout (for plumbing, tests and demos).")
    parser.add_argument("--out", required=True, help="dataset root to create")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                        help=f"number of sessions, two speakers each (default {DEFAULT_SESSIONS})")
    parser.add_argument("--class-shares", choices=sorted(CLASS_SHARES), default="default",
                        help="label mix: default (neutral 47%%) or kemdy20 (KEMDy20's imbalance, neutral ~85%%)")
    args = parser.parse_args(argv)
    try:
        root = generate(args.out, seed=args.seed, sessions=args.sessions, class_shares=args.class_shares,
                        verbose=True)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"dataset: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
