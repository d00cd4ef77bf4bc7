"""Emotion, arousal and valence of speech clips, with an exported kemdy_tf model.

    python predict.py --wav clip.wav --text "정말 화가 나요"
    python predict.py --wav clip.wav --text-file clip.txt --json
    python predict.py --wav clips/ --out predictions.csv
    python predict.py --manifest clips.csv --model saved_models/kemdy/3 --out predictions.csv

`--model` is an export's base folder (the highest version is used) or one version
folder. Audio: any format and rate librosa reads, stereo averaged to mono. A
manifest is a UTF-8 CSV with a `path` column (relative to the CSV's folder) and an
optional `text` column (the manifest format of kemdy_tf.data.manifest; other
columns are ignored). Transcripts are cleaned of KEMDy noise tags, as in training.

Decisions:
* no transcript: the audio-only path (empty text = all-zero token ids, the fusion
  model with the text blanked, as trained by modality dropout); valence is not
  reported then, because it is read from the transcript alone.
* audio longer than the model's window (max_frames frames, ~16.4 s): truncated to
  the window, with a warning; training truncated long clips the same way.
* silence (peak below -60 dBFS), audio shorter than 0.5 s, a WAV whose header
  promises more audio than the file holds (truncated), samples beyond full scale
  (a float WAV at +-50) or clipped: a warning each; the prediction is still made
  (see kemdy_tf.inference for the thresholds).
* a file that cannot be decoded: the error says what the file looks like (size,
  first bytes: empty, not a RIFF/WAV, truncated header) and which formats are read.
* a file that cannot be used (missing, unreadable, empty): one line on stderr, the
  other files are still predicted, and the exit status is 1.

This file is the command line only (arguments, printing, exit codes); the model
and `predict_files` live in `kemdy_tf.inference`, which other callers (the web page)
import.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep stderr for our own messages

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aif", ".aiff", ".au", ".wma")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hides what C++ code writes to file descriptor 2 (TensorFlow's start-up lines about
    oneDNN and CUDA, which TF 2.21 prints despite TF_CPP_MIN_LOG_LEVEL), so stderr holds
    only this program's messages. Python exceptions pass through unchanged."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():  # importing kemdy_tf starts TensorFlow
    from kemdy_tf.inference import PredictError, Prediction, first_line, load_model, predict_files, write_csv


# === Command line ===


def _inputs(args) -> tuple[list[str], list]:
    """(audio paths, transcripts) from --wav/--text/--text-file or --manifest."""
    if args.manifest:
        if args.text is not None or args.text_file is not None:
            raise PredictError("--text/--text-file go with --wav FILE; a manifest carries its own `text` column")
        return _read_manifest(args.manifest)
    wav = Path(args.wav)
    if wav.is_dir():
        if args.text is not None or args.text_file is not None:
            raise PredictError("--text/--text-file go with a single --wav FILE; give a folder's "
                               "transcripts in a --manifest CSV (columns path,text)")
        files = sorted(p for p in wav.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise PredictError(f"{wav} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})")
        return [str(p) for p in files], [None] * len(files)
    text = args.text
    if args.text_file is not None:
        try:
            text = Path(args.text_file).read_bytes()
        except OSError as error:
            raise PredictError(f"cannot read --text-file {args.text_file}: {error.strerror}") from None
    return [str(wav)], [text]


def _read_manifest(path) -> tuple[list[str], list]:
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise PredictError(f"manifest {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise PredictError(f"manifest {path} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
        raise PredictError(f"cannot read manifest {path}: {first_line(error)}") from None
    if "path" not in frame.columns:
        raise PredictError(f"manifest {path} has no 'path' column (columns: {', '.join(frame.columns)})")
    if frame.empty:
        raise PredictError(f"manifest {path} has no rows")
    folder = path.parent
    wavs = [str(p if Path(p).is_absolute() else folder / p) for p in frame["path"]]
    texts = list(frame["text"]) if "text" in frame.columns else [None] * len(wavs)
    return wavs, texts


def _format(prediction: Prediction) -> str:
    if prediction.error:
        return f"{prediction.file}\n  error     {prediction.error}"
    probs = "  ".join(f"{c} {p:.3f}" for c, p in prediction.probabilities.items())
    valence = ("n/a (no transcript, or a model trained without valence labels)" if prediction.valence is None
               else f"{prediction.valence:.2f}  (1 negative .. 5 positive)")
    arousal = ("n/a (a model trained without arousal labels)" if prediction.arousal is None
               else f"{prediction.arousal:.2f}  (1 relaxed .. 5 aroused)")
    lines = [
        prediction.file,
        f"  emotion   {prediction.emotion}",
        f"  probs     {probs}",
        f"  arousal   {arousal}",
        f"  valence   {valence}",
        f"  text      {prediction.transcript or '(missing: emotion from the audio alone, no valence)'}",
    ]
    return "\n".join(lines)  # warnings go to stderr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="an audio file, or a folder of audio files")
    source.add_argument("--manifest", help="CSV with a `path` column and an optional `text` column")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--text", help="the transcript of --wav FILE (omit: audio-only)")
    text.add_argument("--text-file", help="a UTF-8 file holding the transcript of --wav FILE")
    parser.add_argument("--model", default="saved_models/kemdy",
                        help="export base folder (highest version) or a version folder")
    parser.add_argument("--json", action="store_true", help="print JSON (an object, or a list for many files)")
    parser.add_argument("--out", help="also write a CSV with one row per file")
    args = parser.parse_args(argv)

    try:
        wavs, texts = _inputs(args)
        with _native_stderr_silenced():
            model = load_model(args.model)
        predictions = predict_files(wavs, texts, model)
        if args.out:
            try:
                write_csv(predictions, model.classes, args.out)
            except OSError as error:
                raise PredictError(f"cannot write {args.out}: {error.strerror}") from None
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    for p in predictions:
        for warning in p.warnings:
            print(f"warning: {p.file}: {warning}", file=sys.stderr)
        if p.error:
            print(f"error: {p.file}: {p.error}", file=sys.stderr)
    if args.json:
        items = [p.to_dict() for p in predictions]
        single = args.wav is not None and not Path(args.wav).is_dir()
        print(json.dumps(items[0] if single else items, ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(_format(p) for p in predictions))
    return 1 if any(p.error for p in predictions) else 0


if __name__ == "__main__":
    sys.exit(main())
