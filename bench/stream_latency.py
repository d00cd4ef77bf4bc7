"""Live stream latency: from the end of a hop's audio to its window's message, with and without STT.

    python bench/stream_latency.py --model saved_models/kemdy --seconds 30
    python bench/stream_latency.py --wav speech.wav --sessions 4     # your audio; 4 sessions at once

Serves the export with uvicorn on 127.0.0.1 in a thread of this process (as serve.py does,
`kemdy_tf.web.app.create_app`), opens `sessions` live sessions on /api/stream and sends the
audio in real time, in 0.1 s frames as the page's worklet does. A window's latency is the
time from sending the frame that completes its hop to receiving its message. The run is
repeated with speech recognition (Vosk) when it is installed; p50 and p95 are printed for
each. Default audio: a modulated tone with noise (bench/web_memory.long_clip); pass `--wav`
for speech (Vosk's work grows with the words it hears).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

FRAME_SECONDS = 0.1  # what the page's worklet sends per message


async def one_session(url: str, pcm: bytes, rate: int) -> list[float]:
    """Send `pcm` in real time; each window's latency (seconds), in order."""
    from websockets.asyncio.client import connect

    frame = int(FRAME_SECONDS * rate) * 2
    sent_at: dict[float, float] = {}  # audio seconds sent -> when
    latencies = []
    async with connect(url.replace("http", "ws") + "/api/stream", max_size=2**22) as socket:
        ready = json.loads(await socket.recv())
        hop = ready["hop_seconds"]

        async def send():
            start = time.perf_counter()
            for k, at in enumerate(range(0, len(pcm), frame)):
                await asyncio.sleep(max(0.0, start + (k + 1) * FRAME_SECONDS - time.perf_counter()))  # real time
                await socket.send(pcm[at : at + frame])
                sent_at[round((at + frame) / 2 / rate, 3)] = time.perf_counter()
            await socket.send(json.dumps({"type": "stop"}))

        sender = asyncio.create_task(send())
        async for message in socket:
            message = json.loads(message)
            if message["type"] == "window":
                latencies.append(time.perf_counter() - sent_at[round(message["end"], 3)])
            elif message["type"] == "end":
                break
        await sender
    assert len(latencies) == int(len(pcm) / 2 / rate / hop), "a window is missing"
    return latencies


def measure(model: str, pcm: bytes, rate: int, sessions: int, stt: bool) -> np.ndarray:
    from bench.web_memory import LoopbackServer
    from kemdy_tf.web.app import Limits, create_app

    app = create_app(model, Limits(), speech_recognition=stt)

    async def all_sessions():
        return await asyncio.gather(*(one_session(server.url, pcm, rate) for _ in range(sessions)))

    with LoopbackServer(app) as server:
        asyncio.run(one_session(server.url, pcm[: 2 * 2 * rate], rate))  # warm-up: Vosk's model, TF's graphs
        results = asyncio.run(all_sessions())
    return np.array([latency for latencies in results for latency in latencies])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="saved_models/kemdy", help="export base folder or version folder")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per session (the tone's length)")
    parser.add_argument("--wav", help="audio to send instead of the tone (16 kHz mono is used as is)")
    parser.add_argument("--sessions", type=int, default=1, help="live sessions at once")
    args = parser.parse_args(argv)

    import soundfile

    from bench.web_memory import long_clip
    from kemdy_tf import stt
    from kemdy_tf.timeline import Span, open_audio

    rate = 16000
    if args.wav:
        audio = open_audio(args.wav, rate)
        wave = audio.read(Span(0.0, audio.duration), rate)
    else:
        wave, _ = soundfile.read(io.BytesIO(long_clip(args.seconds, rate)), dtype="float32")
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    print(f"{len(wave) / rate:.1f} s of audio per session, {args.sessions} session(s), sent in real time in "
          f"{FRAME_SECONDS:g} s frames")
    for with_stt in (False, True):
        if with_stt and not stt.available():
            print(f"with STT: skipped ({stt.unavailable_reason()})")
            continue
        latencies = measure(args.model, pcm, rate, args.sessions, with_stt) * 1000
        p50, p95 = np.percentile(latencies, [50, 95])
        print(f"{'with' if with_stt else 'without'} STT: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {latencies.max():.0f} ms "
              f"({len(latencies)} windows)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
