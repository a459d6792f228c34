"""A real HTTP server on 127.0.0.1 that plays a script of behaviours, for fault-injection tests.

    with FaultServer([rate_limited(retry_after_s=0.2), ok("hello")]) as server:
        settings = ClientSettings(base_url=server.base_url)   # http://127.0.0.1:PORT/v1
        ...
    assert len(server.requests) == 2

The script answers `POST .../chat/completions`: behaviour i answers the i-th such request, and
`default` (ok() or, with an upstream, forward()) answers once the list runs out. A callable
script is called with each `Received` request (its `.index`, `.json`, ...) and returns the
behaviour. `GET .../models` answers a one-model list (or is forwarded to the upstream).

Proxy use: `FaultServer(script, upstream=httpx.ASGITransport(app=...))` or `upstream="http://host:port"`
puts the server in front of a real model; `forward()` passes a request through unchanged, so a
script like `[drop(), server_error(503), forward()]` injects faults before real answers.

It is an asyncio socket server running in its own thread and event loop, so that it can close
a connection without answering, hang, or cut a body short: things an ASGI server will not do.
Request bodies must carry Content-Length (httpx and the openai SDK send it for JSON).
"""
from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import httpx
import numpy as np

from audiobatch.tasks.audio import codecs

DEFAULT_USAGE = {
    "prompt_tokens": 130, "completion_tokens": 12, "total_tokens": 142,
    "prompt_tokens_details": {"audio_tokens": 100, "text_tokens": 30, "cached_tokens": 0},
    "completion_tokens_details": {"audio_tokens": 0, "text_tokens": 12},
}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                "content-encoding"}


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one request. Build them with the functions below."""

    action: Literal["answer", "reply", "drop", "truncate", "forward"]
    status: int = 200
    body: bytes = b""  # "reply" only
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before acting ("hang" is an answer after a long delay)
    text: str = "hello world"  # "answer"/"truncate": the transcript in the reply
    usage: Mapping[str, Any] | None = None  # "answer": None means DEFAULT_USAGE
    cut_connection: bool = False  # "truncate": promise the full length, then hang up
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # "forward": edit the JSON
    # "forward": edit the request's JSON before it goes upstream (e.g. the model it names)
    rewrite_request: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def ok(text: str = "hello world", *, usage: Mapping[str, Any] | None = None,
       headers: Mapping[str, str] | None = None, delay_s: float = 0.0) -> Behaviour:
    """A valid chat completion; with a short wav/pcm tone when the request asks for audio."""
    return Behaviour("answer", text=text, usage=usage, headers=headers or {}, delay_s=delay_s)


def error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
          headers: Mapping[str, str] | None = None) -> Behaviour:
    """An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return Behaviour("reply", status=status, body=json.dumps(body).encode(), headers=headers or {})


def raw(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Behaviour:
    """Exactly this status, body and headers (e.g. a 200 whose JSON lacks what was asked)."""
    return Behaviour("reply", status=status, body=body, headers=headers or {})


def rate_limited(*, retry_after_s: float | None = None, retry_after_ms: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Behaviour:
    extra = dict(headers or {})
    if retry_after_s is not None:
        extra["retry-after"] = f"{retry_after_s:g}"
    if retry_after_ms is not None:
        extra["retry-after-ms"] = f"{retry_after_ms:g}"
    return error(429, "Rate limit reached for requests", type="requests",
                 code="rate_limit_exceeded", headers=extra)


def insufficient_quota() -> Behaviour:
    return error(429, "You exceeded your current quota, please check your plan and billing details.",
                 type="insufficient_quota", code="insufficient_quota")


def server_error(status: int = 500) -> Behaviour:
    return error(status, "The server had an error while processing your request.", type="server_error")


def hang(seconds: float) -> Behaviour:
    """Say nothing for `seconds` (longer than the client's timeout), then answer."""
    return ok(delay_s=seconds)


def drop(*, delay_s: float = 0.0) -> Behaviour:
    """Close the connection without sending a byte of response."""
    return Behaviour("drop", delay_s=delay_s)


def truncated(*, cut_connection: bool = False) -> Behaviour:
    """A 200 carrying half of a valid JSON answer (or promising all of it and hanging up)."""
    return Behaviour("truncate", cut_connection=cut_connection)


RequestEdit = Callable[[dict[str, Any]], dict[str, Any]]


def rewritten(rewrite: Callable[[dict[str, Any]], dict[str, Any]], *,
              rewrite_request: RequestEdit | None = None) -> Behaviour:
    """Forward to the upstream model and hand its JSON answer to `rewrite` before replying:
    a real model made to misbehave (chatter, refuse, loop, stop early...)."""
    return Behaviour("forward", rewrite=rewrite, rewrite_request=rewrite_request)


def forward(*, delay_s: float = 0.0, rewrite_request: RequestEdit | None = None) -> Behaviour:
    """Pass the request to the upstream (unchanged unless `rewrite_request`) and relay its answer."""
    return Behaviour("forward", delay_s=delay_s, rewrite_request=rewrite_request)


@dataclass
class Received:
    """One request as the server saw it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


Script = Sequence[Behaviour] | Callable[[Received], Behaviour]


class FaultServer:
    """A scripted HTTP server on 127.0.0.1; a context manager exposing `.base_url`, `.requests`."""

    def __init__(self, script: Script = (), *, upstream: httpx.AsyncBaseTransport | str | None = None,
                 default: Behaviour | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls  # serve https with this server-side context
        self.connections_opened = 0
        self.upstream = upstream
        self.default = default or (forward() if upstream is not None else ok())
        self.requests: list[Received] = []
        self.port = 0
        self._chat_count = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task] = set()
        self._upstream_client: httpx.AsyncClient | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def __enter__(self) -> FaultServer:
        self._thread = threading.Thread(target=self._run, name="faultserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault server did not start within 10 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._thread is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # --- the server's own thread ----------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._connections):
            task.cancel()  # hanging handlers end with the server
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        if self._upstream_client is not None:
            await self._upstream_client.aclose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        try:
            while (request := await self._read_request(reader)) is not None:
                if not await self._respond(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up; nothing to answer
        except asyncio.CancelledError:
            pass  # the server is stopping (3.11's start_server logs a cancelled handler otherwise)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received | None:
        line = await reader.readline()
        if not line.strip():
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        received = Received(len(self.requests), method, target, headers, body, time.monotonic())
        self.requests.append(received)
        return received

    async def _respond(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        """Act out the request's behaviour; False when the connection must close."""
        behaviour = self._behaviour_for(request)
        await asyncio.sleep(behaviour.delay_s)
        if behaviour.action == "drop":
            writer.transport.abort()  # reset, not a polite close: no response at all
            return False
        if behaviour.action == "forward":
            status, headers, body = await self._forward(request, behaviour.rewrite_request)
            if behaviour.rewrite is not None and status == 200:
                body = json.dumps(behaviour.rewrite(json.loads(body))).encode()
        elif behaviour.action == "reply":
            status, headers, body = behaviour.status, dict(behaviour.headers), behaviour.body
        elif request.path.rstrip("/").endswith("/models"):
            status, headers, body = 200, {}, _models_body()
        else:
            status, headers, body = 200, dict(behaviour.headers), _answer_body(request, behaviour)
        headers.setdefault("x-request-id", f"req_fault_{request.index}")
        if behaviour.action == "truncate":
            return await self._send_truncated(writer, status, headers, body, behaviour.cut_connection)
        writer.write(_head(status, headers, len(body)) + body)
        await writer.drain()
        return request.headers.get("connection", "").lower() != "close"

    def _behaviour_for(self, request: Received) -> Behaviour:
        if not request.path.rstrip("/").endswith("/chat/completions"):
            return forward() if self.upstream is not None else ok()
        number, self._chat_count = self._chat_count, self._chat_count + 1
        if callable(self.script):
            return self.script(request)
        return self.script[number] if number < len(self.script) else self.default

    async def _send_truncated(self, writer: asyncio.StreamWriter, status: int,
                              headers: dict[str, str], body: bytes, cut_connection: bool) -> bool:
        half = body[: len(body) // 2]
        writer.write(_head(status, headers, len(body) if cut_connection else len(half)) + half)
        await writer.drain()
        return not cut_connection

    async def _forward(self, request: Received,
                       edit: RequestEdit | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.upstream is None:
            raise RuntimeError("forward() needs FaultServer(upstream=...)")
        if self._upstream_client is None:
            transport = self.upstream if not isinstance(self.upstream, str) else None
            base = self.upstream if isinstance(self.upstream, str) else "http://upstream"
            self._upstream_client = httpx.AsyncClient(transport=transport, base_url=base, timeout=None)
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_HEADERS}
        content = request.body if edit is None else json.dumps(edit(request.json)).encode()
        response = await self._upstream_client.request(request.method, request.path,
                                                       headers=headers, content=content)
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
        return response.status_code, kept, response.content


def _head(status: int, headers: Mapping[str, str], length: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}", f"content-length: {length}"]
    if not any(name.lower() == "content-type" for name in headers):
        lines.append("content-type: application/json")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _models_body() -> bytes:
    model = {"id": "fault-model", "object": "model", "created": 0, "owned_by": "faultserver"}
    return json.dumps({"object": "list", "data": [model]}).encode()


def _answer_body(request: Received, behaviour: Behaviour) -> bytes:
    """An OpenAI-shaped chat completion for `request`: text, or a tone + transcript for audio."""
    asked = request.json if isinstance(request.json, dict) else {}
    message: dict[str, Any] = {"role": "assistant", "content": behaviour.text, "refusal": None}
    usage = dict(behaviour.usage or DEFAULT_USAGE)
    if "audio" in (asked.get("modalities") or []):
        audio_format = (asked.get("audio") or {}).get("format", "wav")
        message["content"] = None
        message["audio"] = {"id": f"audio_{request.index}", "expires_at": 0,
                            "transcript": behaviour.text, "data": _tone_base64(audio_format)}
    return json.dumps({
        "id": f"chatcmpl-fault-{request.index}", "object": "chat.completion", "created": 0,
        "model": asked.get("model", "fault-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage,
    }).encode()


_TONES: dict[str, str] = {}


def _tone_base64(audio_format: str) -> str:
    """0.25 s of a 440 Hz tone at 24 kHz, encoded once per format."""
    if audio_format not in _TONES:
        t = np.arange(6000, dtype=np.float32) / 24000
        samples = 0.3 * np.sin(2 * np.pi * 440 * t)
        _TONES[audio_format] = base64.b64encode(codecs.encode(samples, 24000, audio_format)).decode()
    return _TONES[audio_format]
