"""A web page where people try an exported model: upload or record a clip, see the emotion.

    python serve.py                                   # saved_models/kemdy on http://127.0.0.1:8000
    python serve.py --model saved_models/kemdy/3 --port 8080
    python serve.py --host 0.0.0.0                    # reachable from other machines (see docs/web.md)

The page records from the microphone only in a secure context: http://127.0.0.1 or
http://localhost, or HTTPS. The API (POST /api/predict, POST /api/transcribe, GET
/api/health, the live stream WS /api/stream, the schema at /openapi.json) is described
in docs/web.md; speech recognition and long uploads' timelines in docs/stt.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # predict.py lives next to this script (also when serve.py is imported)
    sys.path.insert(0, HERE)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    import predict  # next to this script; light (numpy), and it owns the stderr silencer

    with predict._native_stderr_silenced():  # importing kemdy_tf starts TensorFlow, whose C++ chatters
        from kemdy_tf.web.app import Limits, create_app
        from kemdy_tf.web.stream import StreamLimits

    defaults, live = Limits(), StreamLimits()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="saved_models/kemdy",
                        help="export base folder (its highest version) or a version folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-mb", type=float, default=defaults.max_bytes / 2**20, help="largest audio upload, MB")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="longest audio, seconds")
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars, help="longest transcript")
    parser.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                        help="clips decoded and predicted at once (more wait their turn)")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests that may wait for a turn; beyond them: 503 busy with Retry-After")
    parser.add_argument("--no-stt", action="store_true",
                        help="no speech recognition (/api/transcribe answers 503; long uploads' segments are "
                             "predicted audio-only); default: on when requirements-stt.txt is installed")
    parser.add_argument("--live-max-connections", type=int, default=live.max_connections,
                        help="live sessions (/api/stream) at once; one more is refused as busy")
    parser.add_argument("--live-max-seconds", type=float, default=live.max_session_seconds,
                        help="audio one live session may send, seconds")
    parser.add_argument("--live-idle-seconds", type=float, default=live.idle_seconds,
                        help="a live session that sends nothing for this long is closed")
    args = parser.parse_args(argv)
    try:
        limits = Limits(max_bytes=int(args.max_mb * 2**20), max_seconds=args.max_seconds,
                        max_text_chars=args.max_text_chars, max_concurrent=args.max_concurrent,
                        max_queue=args.max_queue)
        stream_limits = StreamLimits(max_connections=args.live_max_connections,
                                     max_session_seconds=args.live_max_seconds, idle_seconds=args.live_idle_seconds)
    except ValueError as error:
        parser.error(str(error))

    import uvicorn

    try:
        with predict._native_stderr_silenced():
            app = create_app(args.model, limits, speech_recognition=False if args.no_stt else None,
                             stream_limits=stream_limits)
    except predict.PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who reaches this address can use the model "
              "(there is no authentication), and browsers record from the microphone only over HTTPS "
              "or on localhost", file=sys.stderr)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"kemdy_tf web: model {app.state.model.path} -> http://{shown}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
