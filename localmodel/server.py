"""Serve the embedded model over HTTP (what `audiobatch serve` runs).

    python -m localmodel.server [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-body-mb 64]

Binds 127.0.0.1 unless told otherwise. The API key may also come from the environment
(AUDIOBATCH_SERVE_API_KEY), which keeps it out of the process list; it is never logged.
The engines load before the port opens, so a server that answers is ready to work.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

import uvicorn

from audiobatch.localmodel.app import create_app
from audiobatch.localmodel.engines import shared_engines
from audiobatch.tasks.profiles import LOCAL_MODEL

API_KEY_ENV = "AUDIOBATCH_SERVE_API_KEY"
log = logging.getLogger("audiobatch.localmodel")


def serve(host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_body_mb: float = 64, *, log_level: str = "info") -> None:
    """Load the engines, then run uvicorn until interrupted."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach this port can use "
                    "it. Pass --api-key or set %s.", host, API_KEY_ENV)
    engines = shared_engines()
    engines.load_in_worker()
    log.info("engines loaded (whisper %.2f s, piper %.2f s)",
             engines.load_seconds.get("whisper", 0.0), engines.load_seconds.get("piper", 0.0))
    app = create_app(api_key=api_key, max_body_bytes=int(max_body_mb * 1024 * 1024),
                     engines=engines)
    log.info("%s on http://%s:%d/v1 (API key %s, body limit %s MB)", LOCAL_MODEL, host, port,
             "required" if api_key else "not required", max_body_mb)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), server_header=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localmodel.server",
                                     description=f"Serve {LOCAL_MODEL} (OpenAI Chat Completions).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this bearer key (default: ${API_KEY_ENV}, else none)")
    parser.add_argument("--max-body-mb", type=float, default=64,
                        help="largest request body accepted, in MB (default 64)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve(args.host, args.port, args.api_key, args.max_body_mb, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
