"""Does serve.py's memory stay bounded under rounds of long clips? RSS after each round.

    python bench/web_memory.py --model saved_models/kemdy --rounds 20 --concurrent 8 --seconds 15

Serves the export with uvicorn on 127.0.0.1 in a thread of this process (the app of
`kemdy_tf.web.app.create_app`), sends `rounds` rounds of `concurrent` simultaneous
requests of a `seconds`-long clip, and prints the process's RSS after each round.
Growth is bounded when the last rounds add (almost) nothing: the script prints the
growth over the first and the second half of the rounds. tests/test_web.py runs the
same loop (`rss_rounds`) at small sizes as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread of this process, for the duration of a `with`."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def post_many(url: str, count: int, content: bytes, text: str) -> list:
    """`count` simultaneous POST /api/predict of the same clip; the responses, in order."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=count)) as http:
        async def one(i):
            return await http.post("/api/predict", files={"audio": (f"clip{i}.wav", content, "audio/wav")},
                                   data={"text": text})
        return await asyncio.gather(*(one(i) for i in range(count)))


def long_clip(seconds: float, sample_rate: int = 16000) -> bytes:
    """A WAV of a modulated tone with a little noise (speech-like enough for memory)."""
    import soundfile

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave += 0.01 * np.random.default_rng(0).standard_normal(len(t))
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def rss_rounds(app, rounds: int, concurrent: int, content: bytes, text: str = "정말 화가 나요") -> list[int]:
    """RSS (bytes) before the first round and after each round; every answer must be 200."""
    with LoopbackServer(app) as server:
        sizes = [rss_bytes()]
        for _ in range(rounds):
            responses = asyncio.run(post_many(server.url, concurrent, content, text))
            bad = [r.status_code for r in responses if r.status_code != 200]
            if bad:
                raise RuntimeError(f"{len(bad)} of {concurrent} requests failed: {bad[:5]}")
            sizes.append(rss_bytes())
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="saved_models/kemdy", help="export base folder or version folder")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=8, help="simultaneous requests per round")
    parser.add_argument("--seconds", type=float, default=15.0, help="clip length")
    args = parser.parse_args(argv)

    from kemdy_tf.web.app import Limits, create_app

    limits = Limits(max_seconds=max(60.0, args.seconds + 1), max_queue=args.concurrent)
    app = create_app(args.model, limits)
    sizes = rss_rounds(app, args.rounds, args.concurrent, long_clip(args.seconds))
    mb = [s / 2**20 for s in sizes]
    for index, value in enumerate(mb):
        print(f"round {index:>3}: RSS {value:8.1f} MB" + ("" if index == 0 else f"  ({value - mb[index - 1]:+.1f})"))
    half = len(mb) // 2
    print(f"growth: first half {mb[half] - mb[0]:+.1f} MB, second half {mb[-1] - mb[half]:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
