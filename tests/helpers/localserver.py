"""The embedded model as a real HTTP server in a subprocess, plus helpers for talking to it.

    with running_server(api_key="k-123") as base_url:      # http://127.0.0.1:PORT/v1
        client = openai.OpenAI(base_url=base_url, api_key="k-123")
        ...

The server is `python -m localmodel.server` (what `audiobatch serve` runs), started on a free
loopback port; the context manager returns once the engines are loaded and /v1/models answers,
and stops the process on exit. The key goes to the server through AUDIOBATCH_SERVE_API_KEY,
not the command line, so it never shows in the process list.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import httpx

from tests.helpers.data import DATA, ROOT, SPEECH  # noqa: E402,F401 - re-exported for tests
API_KEY_ENV = "AUDIOBATCH_SERVE_API_KEY"
LOCAL_MODEL = "audiobatch-local"


@contextmanager
def running_server(api_key: str | None = None, max_body_mb: float | None = None, *,
                   log_path: Path | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """Run the local model on 127.0.0.1:<free port>; yields the base URL (ending in /v1)."""
    args = [] if max_body_mb is None else ["--max-body-mb", str(max_body_mb)]
    with server_process(args, api_key=api_key, log_path=log_path, timeout_s=timeout_s) as (base_url, _):
        yield base_url


@contextmanager
def server_process(args: list[str], *, api_key: str | None = None, log_path: Path | None = None,
                   timeout_s: float = 120.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m audiobatch.localmodel.server --port P *args`, ready: (base URL, the process)."""
    port = free_port()
    command = [sys.executable, "-m", "audiobatch.localmodel.server", "--port", str(port), *args]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key
    log_file: IO[bytes] = (open(log_path, "w+b") if log_path
                           else tempfile.TemporaryFile(prefix="localserver-", suffix=".log"))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file,
                               stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_ready(process, base_url, api_key, timeout_s, log_file)
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, api_key: str | None,
                      timeout_s: float, log_file: IO[bytes]) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"local model server exited with {process.returncode}:\n"
                               f"{_tail(log_file)}")
        try:
            if httpx.get(f"{base_url}/models", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"local model server not ready after {timeout_s} s:\n{_tail(log_file)}")


def _tail(log_file: IO[bytes], size: int = 4000) -> str:
    log_file.flush()
    log_file.seek(0)
    return log_file.read()[-size:].decode(errors="replace")


# --- speech data and request bodies --------------------------------------------------------

@lru_cache(maxsize=1)
def references() -> dict[str, str]:
    """Reference transcripts of the shared speech clips, by file name."""
    with open(DATA / "speech" / "references.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row["reference_text"] for row in csv.DictReader(handle)}


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normalisation (case, punctuation, number spellings)."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def transcription_body(audio: bytes, audio_format: str, *, prompt: str | None = None,
                       **extra: Any) -> dict[str, Any]:
    """A Chat Completions request asking the local model to transcribe `audio`."""
    parts: list[dict[str, Any]] = [] if prompt is None else [{"type": "text", "text": prompt}]
    parts.append({"type": "input_audio",
                  "input_audio": {"data": base64.b64encode(audio).decode(), "format": audio_format}})
    return {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": parts}], **extra}


def narration_body(text: str, audio_format: str, *, instructions: str | None = None,
                   voice: str = "alloy", **extra: Any) -> dict[str, Any]:
    """A Chat Completions request asking the local model to speak `text`."""
    messages = [] if instructions is None else [{"role": "system", "content": instructions}]
    messages.append({"role": "user", "content": text})
    return {"model": LOCAL_MODEL, "modalities": ["text", "audio"],
            "audio": {"voice": voice, "format": audio_format}, "messages": messages, **extra}


# --- reading answers -----------------------------------------------------------------------

def sse_events(text: str) -> list[Any]:
    """The `data:` payloads of a Server-Sent Events body: parsed JSON chunks, then "[DONE]"."""
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block[:80]
            payload = block[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """Check an error answer has OpenAI's shape, status, code and a request id; return it."""
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    assert error["type"] == "invalid_request_error"
    return error
