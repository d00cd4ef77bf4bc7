"""Emotion, arousal and valence of speech clips, with an exported kemdy_tf model.

    python predict.py --wav clip.wav --text "정말 화가 나요"
    python predict.py --wav clip.wav --text-file clip.txt --json
    python predict.py --wav clips/ --out predictions.csv
    python predict.py --wav clips_of_one_speaker/ --speaker mina    # enrolled from the folder
    python predict.py --manifest clips.csv --model saved_models/kemdy/3 --out predictions.csv
    python predict.py --wav long.wav --out timeline.csv      # + timeline.png


`--model` is an export's base folder (the highest version is used) or one version
folder. Audio: any format and rate librosa reads, stereo averaged to mono. A
manifest is a UTF-8 CSV with a `path` column (relative to the CSV's folder) and an
optional `text` and `speaker` columns (the manifest format of kemdy_tf.data.manifest;
other columns are ignored). Transcripts are cleaned of KEMDy noise tags, as in training.

Decisions:
* no transcript given: speech recognition (kemdy_tf.stt, Vosk) transcribes the clip
  when it is installed, and the output says which transcript was used (given / speech
  recognition). `--no-stt`, or `--text ""`, keeps a clip audio-only on purpose; a
  manifest's empty `text` cell is "none on purpose" too (a manifest without a `text`
  column is transcribed).
* no transcript: the audio-only path (empty text = all-zero token ids, the fusion
  model with the text blanked, as trained by modality dropout); valence is not
  reported then, because it is read from the transcript alone.
* one --wav FILE longer than the model's window (max_frames frames, ~16.4 s): a
  timeline. The recording is streamed, cut at pauses into segments that fit the
  window (kemdy_tf.timeline), and each segment is transcribed and predicted; --out
  writes one CSV row per segment (start, end, transcript, emotion, probabilities,
  arousal, valence) and a plot beside it (--plot names another PNG). A single
  --text cannot be shared out among segments, so it is refused there.
* speakers: a model that standardises its voice features per speaker (the default;
  kemdy_tf.speaker_statistics) enrols each speaker from their clips: the manifest's
  `speaker` column groups them, `--speaker NAME` names the one speaker of a folder or
  file. A clip of no named speaker gets the training set's statistics; a long
  recording its own. Each answer says which (`statistics`); a speaker with fewer than
  5 clips is enrolled with a warning, with one clip not at all.
* files of a folder or manifest longer than the window: truncated to the window,
  with a warning; training truncated long clips the same way.
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
    from kemdy_tf.inference import (PredictError, Prediction, first_line, load_model, predict_files,
                                    predict_timeline, write_csv)


# === Command line ===


def _inputs(args) -> tuple[list[str], list, list]:
    """(audio paths, transcripts, speakers) from --wav/--text/--text-file/--speaker or --manifest."""
    if args.manifest:
        if args.text is not None or args.text_file is not None:
            raise PredictError("--text/--text-file go with --wav FILE; a manifest carries its own `text` column")
        if args.speaker is not None:
            raise PredictError("--speaker goes with --wav; a manifest names speakers in its `speaker` column")
        return _read_manifest(args.manifest)
    wavs, texts = _wav_inputs(args)
    return wavs, texts, [args.speaker] * len(wavs)


def _wav_inputs(args) -> tuple[list[str], list]:
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


def _read_manifest(path) -> tuple[list[str], list, list]:
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
    speakers = list(frame["speaker"]) if "speaker" in frame.columns else [None] * len(wavs)
    return wavs, texts, speakers


def _speech_recognizer(args, texts):
    """The recogniser for files given no transcript; None (and why) when not used."""
    from kemdy_tf import stt

    if args.no_stt or all(t is not None for t in texts):
        return None, "--no-stt" if args.no_stt else None
    reason = stt.unavailable_reason()
    return (None, reason) if reason else (stt.recognizer(), None)


def _long_recording(args, model):
    """The opened recording when --wav is one file longer than the model's window, else None."""
    from kemdy_tf import timeline
    from kemdy_tf.data.audio import AudioError

    if args.wav is None or Path(args.wav).is_dir():
        return None
    try:
        audio = timeline.open_audio(args.wav, model.sample_rate)
    except AudioError:
        return None  # predict_files reports the file's error as before
    return audio if audio.duration > model.window_samples / model.sample_rate else None


def _missing_text(no_stt_reason: str | None) -> str:
    if no_stt_reason == "--no-stt":
        return "(none: --no-stt; emotion from the audio alone, no valence)"
    if no_stt_reason:
        return f"(missing: {no_stt_reason}; emotion from the audio alone, no valence)"
    return "(missing: emotion from the audio alone, no valence)"


def _text_line(prediction: Prediction, no_stt_reason: str | None) -> str:
    source = {"given": "given", "stt": "speech recognition"}.get(prediction.transcript_source)
    return f"{prediction.transcript}  ({source})" if prediction.transcript else _missing_text(no_stt_reason)


def _format(prediction: Prediction, no_stt_reason: str | None = None) -> str:
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
        f"  text      {_text_line(prediction, no_stt_reason)}",
    ]
    if prediction.statistics:
        lines.append(f"  speaker   {prediction.statistics}  (the statistics the voice was standardised with)")
    return "\n".join(lines)  # warnings go to stderr


def _format_timeline(file: str, rows: list[Prediction], no_stt_reason: str | None) -> str:
    if not rows:
        return f"{file}\n  no speech found (every part is quieter than the pause threshold)"
    lines = [f"{file}: {len(rows)} segments"]
    for r in rows:
        arousal = "n/a" if r.arousal is None else f"{r.arousal:.2f}"
        valence = "n/a" if r.valence is None else f"{r.valence:.2f}"
        lines.append(f"  {r.start:8.2f}-{r.end:8.2f} s  {r.emotion:<8} arousal {arousal}  valence {valence}  "
                     f"text {_text_line(r, no_stt_reason)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="an audio file, or a folder of audio files")
    source.add_argument("--manifest", help="CSV with a `path` column and an optional `text` column")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--text", help="the transcript of --wav FILE (omit: speech recognition when installed, "
                                     "else audio-only; \"\": audio-only)")
    text.add_argument("--text-file", help="a UTF-8 file holding the transcript of --wav FILE")
    parser.add_argument("--speaker", help="the one speaker of --wav (a folder: enrolled from its clips); "
                                          "a manifest uses its `speaker` column")
    parser.add_argument("--model", default="saved_models/kemdy",
                        help="export base folder (highest version) or a version folder")
    parser.add_argument("--json", action="store_true", help="print JSON (an object, or a list for many files)")
    parser.add_argument("--no-stt", action="store_true",
                        help="no speech recognition: files without a transcript are predicted audio-only")
    parser.add_argument("--out", help="also write a CSV with one row per file (a long recording: per segment)")
    parser.add_argument("--plot", help="a long recording's timeline PNG (default: --out with .png)")
    args = parser.parse_args(argv)

    try:
        wavs, texts, speakers = _inputs(args)
        with _native_stderr_silenced():
            model = load_model(args.model)
        recording = _long_recording(args, model)
        if recording is not None:
            return _timeline(args, model, recording, texts[0])
        stt, no_stt_reason = _speech_recognizer(args, texts)
        predictions = predict_files(wavs, texts, model, stt=stt, speakers=speakers)
        if args.out:
            _write(args.out, lambda: write_csv(predictions, model.classes, args.out))
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
        print("\n\n".join(_format(p, no_stt_reason) for p in predictions))
    return 1 if any(p.error for p in predictions) else 0


def _write(path, write) -> None:
    try:
        write()
    except OSError as error:
        raise PredictError(f"cannot write {path}: {error.strerror}") from None


def _timeline(args, model, recording, text) -> int:
    """A long recording: its segments printed (or as JSON), --out's CSV and the plot."""
    from kemdy_tf import timeline
    from kemdy_tf.data.audio import AudioError

    if text is not None and not (isinstance(text, str) and not text.strip()):
        window = model.window_samples / model.sample_rate
        raise PredictError(f"{args.wav} lasts {recording.duration:.1f} s, longer than the model's {window:.1f} s "
                           "window: it becomes a timeline of segments, each with its own transcript, and one "
                           "--text cannot be shared out among them; drop --text (speech recognition transcribes "
                           "each segment) or pass --no-stt for audio-only")
    stt, no_stt_reason = _speech_recognizer(args, [None if text is None else ""])
    try:
        rows = predict_timeline(args.wav, model, stt=stt, audio=recording)
    except AudioError as error:
        raise PredictError(str(error)) from None
    plot = args.plot or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if args.out:
        _write(args.out, lambda: timeline.write_csv(rows, model.classes, args.out))
    if plot:
        _write(plot, lambda: timeline.plot(rows, model.classes, plot, title=Path(args.wav).name))
    for r in rows:
        for warning in r.warnings:
            print(f"warning: {args.wav} {r.start:.2f}-{r.end:.2f} s: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"file": args.wav, "duration_seconds": round(recording.duration, 3),
                          "segments": [r.to_dict() for r in rows]}, ensure_ascii=False, indent=2))
    else:
        print(_format_timeline(args.wav, rows, no_stt_reason))
    return 0


if __name__ == "__main__":
    sys.exit(main())
