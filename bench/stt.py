"""Speech-to-text speed and long-recording throughput and memory (a benchmark: it prints figures).

    nice -n 10 python bench/stt.py                        # 10 and 60 min, STT on 2 min
    python bench/stt.py --minutes 10 60 --stt-minutes 2 --model saved_models/kemdy
    python bench/stt.py --write 1 demo.wav                 # only write a recording (docs/stt.md)

Prints:
* STT: the Vosk model's load time and real-time factor (seconds of computing per
  second of audio) on espeak-ng Korean sentences.
* long files: for each length in --minutes, a recording of espeak-ng sentences (or
  speech-like bursts without espeak-ng) separated by pauses is written in blocks, and
  `kemdy_tf.inference.predict_timeline` runs on it in a fresh process (audio-only):
  wall time, throughput in audio hours per hour, segments, the RSS once the model is
  loaded, the peak RSS sampled every 0.2 s while the timeline runs, and the process's
  peak (ru_maxrss, loading included). A peak that does not grow from 10 to 60 minutes
  shows that the file is streamed. --stt-minutes runs the same with speech recognition on a shorter file
  (STT at a real-time factor near 1 would take an hour per hour of audio).

--model is an export; without it an untrained small-preset export is built in a
temporary folder (speed and memory do not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = ["오늘 날씨가 정말 좋네요", "저는 학교에 갑니다", "지금 너무 화가 나요", "감사합니다",
             "내일 다시 만나요", "이 음식은 맛있어요", "정말 놀랐어요", "그냥 그래요"]
RATE = 16000


def korean_clips() -> list[np.ndarray]:
    """espeak-ng Korean sentences at 16 kHz (speech-like bursts when espeak-ng is absent)."""
    import librosa
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        from bench.serving import clip

        return [clip(s, RATE, seed) for seed, s in enumerate([1.5, 2.5, 3.5, 5.0])]
    clips = []
    for text in SENTENCES:
        out = subprocess.run(["espeak-ng", "-v", "ko+f3", "--stdout", text], check=True, capture_output=True).stdout
        wave, rate = sf.read(io.BytesIO(out), dtype="float32")
        clips.append(librosa.effects.trim(librosa.resample(wave, orig_sr=rate, target_sr=RATE), top_db=40)[0])
    return clips


def write_recording(path: Path, minutes: float, clips: list[np.ndarray], seed: int = 0) -> None:
    """`minutes` of clips (one to three in a row) and 0.5-2 s pauses, written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
        written = 0
        while written < total:
            parts = [clips[i] for i in rng.integers(0, len(clips), rng.integers(1, 4))]
            parts.append(np.zeros(int(rng.uniform(0.5, 2.0) * RATE), np.float32))
            block = np.concatenate(parts)[: total - written]
            out.write(block)
            written += len(block)


def build_export(folder: Path) -> Path:
    """An untrained small-preset export (a tokenizer trained on the synthetic set's words)."""
    from bench.serving import build_models
    from kemdy_tf import export
    from kemdy_tf.trained_run import TrainedRun
    from kemdy_tf.config import make_config
    from kemdy_tf.data.synthetic import FILLERS, LEXICONS
    from kemdy_tf.models.tokenizer import load_tokenizer, train_sentencepiece

    config = make_config("small", ["features.vocab_size=200"])
    words = [w for words in LEXICONS.values() for w in words] + list(FILLERS)
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + SENTENCES
    tokenizer = train_sentencepiece(texts, folder / "tokenizer.model", config.features.vocab_size)
    vocabulary = int(load_tokenizer(str(tokenizer), config.features.max_tokens).vocabulary_size())
    models = build_models(config, vocabulary)
    export.export_models(TrainedRun(config, tokenizer, models), folder / "export")
    return folder / "export"


def measure_stt(clips: list[np.ndarray]) -> dict:
    from kemdy_tf import stt

    recognizer = stt.Recognizer()
    start = time.perf_counter()
    recognizer.transcribe(np.zeros(RATE // 10, np.float32), RATE)  # loads the model
    load = time.perf_counter() - start
    audio = np.concatenate([np.pad(c, RATE // 4) for c in clips])
    start = time.perf_counter()
    recognizer.transcribe(audio, RATE)
    seconds = time.perf_counter() - start
    return {"model_load_s": round(load, 2), "audio_s": round(len(audio) / RATE, 1),
            "real_time_factor": round(seconds / (len(audio) / RATE), 3)}


def child(wav: str, model: str, use_stt: bool) -> None:
    """In a fresh process: the timeline of `wav`, then its figures as one JSON line."""
    from bench.web_memory import rss_bytes
    from kemdy_tf import inference, stt

    loaded = inference.load_model(model)
    recognizer = stt.recognizer() if use_stt else None
    if recognizer is not None:
        recognizer.transcribe(np.zeros(RATE // 10, np.float32), RATE)  # model load is not the file's time
    loaded.predict([np.zeros(RATE, np.float32)], ["가"])  # the first call traces the graph
    before = rss_bytes()
    peak, done = [before], threading.Event()

    def sample():  # the RSS while the timeline runs (ru_maxrss would also count model loading)
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    rows = inference.predict_timeline(wav, loaded, stt=recognizer)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"wall_s": round(seconds, 1), "segments": len(rows),
                      "rss_after_load_mb": round(before / 2**20, 1),
                      "peak_rss_during_mb": round(max(peak[0], rss_bytes()) / 2**20, 1),
                      "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_long(wav: Path, model: Path, minutes: float, use_stt: bool) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(wav), str(model), *(["--stt"] if use_stt else [])],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"the timeline of {wav} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(minutes=minutes, stt=use_stt, file_mb=round(wav.stat().st_size / 2**20, 1),
                   audio_hours_per_hour=round(minutes * 60 / figures["wall_s"], 1))
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="long-file lengths, audio-only")
    parser.add_argument("--stt-minutes", type=float, default=2, help="long-file length with STT (0: skip)")
    parser.add_argument("--model", help="an export (default: an untrained small-preset one, built now)")
    parser.add_argument("--write", nargs=2, metavar=("MINUTES", "WAV"),
                        help="only write a recording of MINUTES (espeak-ng sentences and pauses) to WAV")
    parser.add_argument("--child", nargs=2, metavar=("WAV", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--stt", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.stt)
        return 0

    from kemdy_tf import stt

    clips = korean_clips()
    if args.write:
        write_recording(Path(args.write[1]), float(args.write[0]), clips)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_stt_") as folder:
        folder = Path(folder)
        model = Path(args.model) if args.model else build_export(folder)
        if stt.available():
            print("STT", json.dumps(measure_stt(clips)), flush=True)
        else:
            print(f"STT skipped: {stt.unavailable_reason()}", flush=True)
        runs = [(m, False) for m in args.minutes]
        if args.stt_minutes and stt.available():
            runs.append((args.stt_minutes, True))
        for minutes, use_stt in runs:
            wav = folder / f"long_{minutes:g}min.wav"
            if not wav.exists():
                write_recording(wav, minutes, clips)
            print("long file", json.dumps(run_long(wav, model, minutes, use_stt)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
