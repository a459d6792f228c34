"""The embedded OpenAI-compatible audio model: faster-whisper tiny.en + Piper en_US-joe-medium.

A transcribe/narrate engine behind OpenAI's Chat Completions wire contract, not a chat model.
`create_app()` gives the ASGI app (use it in-process with `httpx.ASGITransport`);
`localmodel.server.serve()` runs it over HTTP.
"""
from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on use: `audiobatch serve --help` reads localmodel.serving without loading the app.
    if name == "create_app":
        from audiobatch.localmodel.app import create_app
        return create_app
    raise AttributeError(name)
