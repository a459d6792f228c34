"""Serve the embedded model over HTTP (what `audiobatch serve` runs).

    python -m audiobatch.localmodel.server [--host 127.0.0.1] [--port 8000] [--api-key KEY]
        [--insecure-no-auth] [--max-body-mb 64] [--max-audio-s S] [--max-text-chars N] [--max-queue 4]
        [--body-timeout-s 30]

Binds 127.0.0.1 unless told otherwise; any other address needs an API key (or, knowingly,
--insecure-no-auth). The API key may also come from the environment (AUDIOBATCH_SERVE_API_KEY),
which keeps it out of the process list; it is never logged. Every client is untrusted: audio and
text per request, the queue, the time to send a body, Host and Origin are checked
(localmodel/protect.py). The engines
load before the port opens, so a server that answers is ready to work; SIGTERM stops it within
seconds (running inference stops at its next segment, queued work is dropped).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from audiobatch.localmodel.serving import ServeLimits, allowed_hosts, is_loopback
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.model.profiles import LOCAL_MODEL

API_KEY_ENV = "AUDIOBATCH_SERVE_API_KEY"
GRACEFUL_SHUTDOWN_S = 3  # then requests still running are cancelled
log = logging.getLogger("audiobatch.localmodel")


def serve(host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_body_mb: float = 64, *, insecure_no_auth: bool = False,
          limits: ServeLimits | None = None, log_level: str = "info") -> None:
    """Load the engines, then run uvicorn until interrupted (SIGINT/SIGTERM)."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(host):
        if not insecure_no_auth:
            raise ConfigError(f"refusing to serve on {host} without an API key: anyone who can reach "
                              f"this port could use it. Pass --api-key (or set {API_KEY_ENV}), bind "
                              "127.0.0.1, or pass --insecure-no-auth if that is really meant.")
        log.warning("serving on %s without an API key (--insecure-no-auth): anyone who can reach "
                    "this port can use it.", host)
    import uvicorn

    from audiobatch.localmodel.app import create_app
    from audiobatch.localmodel.engines import shared_engines

    limits = limits or ServeLimits.defaults()
    engines = shared_engines()
    engines.load_in_worker()
    log.info("engines loaded (whisper %.2f s, piper %.2f s)",
             engines.load_seconds.get("whisper", 0.0), engines.load_seconds.get("piper", 0.0))
    app = create_app(api_key=api_key, max_body_bytes=int(max_body_mb * 1024 * 1024), engines=engines,
                     limits=limits, allowed_hosts=allowed_hosts(host, api_key=api_key is not None))
    log.info("%s on http://%s:%d/v1 (API key %s, body limit %s MB within %g s, %g s of audio and %d "
             "characters per request, %d waiting at most)", LOCAL_MODEL, host, port,
             "required" if api_key else "not required", max_body_mb, limits.body_timeout_s,
             limits.max_audio_s, limits.max_text_chars, limits.max_queue)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), server_header=False,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    finally:
        engines.drop_queued()


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """The options of `audiobatch serve` (and `python -m audiobatch.localmodel.server`)."""
    defaults = ServeLimits.defaults()
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1; "
                        "another needs --api-key)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this bearer key (default: ${API_KEY_ENV}, else none)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve a non-loopback address without a key (anyone can use it)")
    parser.add_argument("--max-body-mb", type=float, default=64.0,
                        help="largest request body accepted, in MB (default: 64)")
    parser.add_argument("--max-audio-s", type=float, default=defaults.max_audio_s,
                        help=f"audio per request, seconds (default: {defaults.max_audio_s:g}, the "
                        "model's per-request budget)")
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars,
                        help=f"text per request (default: {defaults.max_text_chars:,})")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help=f"requests waiting beyond the one being worked on; more get 429 "
                        f"(default: {defaults.max_queue})")
    parser.add_argument("--body-timeout-s", type=float, default=defaults.body_timeout_s,
                        help="seconds a client has to send a request's body; slower ones get 408 "
                        f"and free their place in the queue (default: {defaults.body_timeout_s:g})")


def serve_from_args(args: argparse.Namespace, log_level: str = "info") -> None:
    serve(args.host, args.port, args.api_key, args.max_body_mb, insecure_no_auth=args.insecure_no_auth,
          limits=ServeLimits(args.max_audio_s, args.max_text_chars, args.max_queue, args.body_timeout_s),
          log_level=log_level)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m audiobatch.localmodel.server",
                                     description=f"Serve {LOCAL_MODEL} (OpenAI Chat Completions).")
    add_serve_args(parser)
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        serve_from_args(args, log_level=args.log_level)
    except ConfigError as error:
        print(f"audiobatch serve: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
