"""The embedded model as an ASGI app speaking OpenAI's Chat Completions wire contract.

Used in-process through `httpx.ASGITransport(app=create_app())` (no port, no key) and served
over HTTP by `localmodel.server.serve` (`audiobatch serve`). Routes:

    POST /v1/chat/completions   transcribe input_audio / speak text (see localmodel.chat)
    GET  /v1/models             the one model, `audiobatch-local`, described honestly
    GET  /v1/models/{id}

Every answer, errors included, carries an `x-request-id` header; errors use OpenAI's shape.
Served (`limits` given), each client is held to localmodel/protect.py: audio and text per
request, a bounded queue, Host/Origin checks; a client that hangs up stops its work.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import weakref
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audiobatch.localmodel import chat
from audiobatch.localmodel.chat import OFFLINE_NOTES_MODEL
from audiobatch.localmodel import multilingual
from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, VOICE_NAME, Engines, shared_engines
from audiobatch.localmodel.protect import (Admission, ClientGone, answer_unless_gone, check_text,
                                           request_origin_error)
from audiobatch.localmodel.serving import ServeLimits
from audiobatch.localmodel.weights import (PIPER_VOICE_SHA256, PIPER_WEIGHTS, WHISPER_MODEL_SHA256,
                                           WHISPER_WEIGHTS)
from audiobatch.localmodel.wire import (INPUT_AUDIO_FORMATS, OUTPUT_AUDIO_FORMATS, APIError, new_id,
                                        parse_chat_request)
from audiobatch.tasks.errors import register_secret
from audiobatch.tasks.extract.tool import TOOL_NAME
from audiobatch.tasks.model.profiles import LOCAL_MODEL, LOCAL_MULTILINGUAL_MODEL, get_profile

log = logging.getLogger("audiobatch.localmodel")
VOICE_HEADER = "x-audiobatch-voice"
_STARTED = int(time.time())


def create_app(*, api_key: str | None = None, max_body_bytes: int = 64 * 1024 * 1024,
               engines: Engines | None = None, limits: ServeLimits | None = None,
               allowed_hosts: frozenset[str] | None = None) -> Starlette:
    """The ASGI app. With `api_key`, every request needs `Authorization: Bearer <api_key>`.

    `engines` defaults to the process-wide pair, so apps share one load and one worker thread.
    `limits` and `allowed_hosts` are for serving others (localmodel/protect.py); in-process,
    the pipeline's own requests need neither.
    """
    register_secret(api_key)  # tasks.errors.redact() will scrub it wherever it shows up
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
            Route("/v1/models", _list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", _get_model, methods=["GET"]),
        ],
        exception_handlers={APIError: _api_error_response, HTTPException: _http_error_response},
        middleware=[Middleware(RequestMiddleware, api_key=api_key, allowed_hosts=allowed_hosts)],
    )
    app.state.engines = engines or shared_engines()
    app.state.max_body_bytes = max_body_bytes
    app.state.limits = limits
    app.state.admission = Admission(limits.max_queue) if limits else None
    return app


# --- routes ------------------------------------------------------------------------------

async def _chat_completions(request: Request) -> Response:
    admission: Admission | None = request.app.state.admission
    entered = admission.enter() if admission else 0.0  # before the body: a full queue costs nothing
    try:
        return await _answer(request, admission, entered)
    except BaseException:
        if admission:
            admission.leave(entered)
        raise


async def _answer(request: Request, admission: Admission | None, entered: float) -> Response:
    limits: ServeLimits | None = request.app.state.limits
    raw = await read_capped_body(request, request.app.state.max_body_bytes,
                                 limits.body_timeout_s if limits else None)
    parsed = parse_chat_request(raw)
    if limits:
        check_text(parsed.prompt_texts, limits.for_notes() if parsed.tool else limits)
    engines: Engines = request.app.state.engines
    headers = {VOICE_HEADER: VOICE_NAME} if parsed.wants_audio else {}
    max_audio_s = limits.max_audio_s if limits else None
    try:
        if parsed.stream:
            events = await answer_unless_gone(request, _start_stream(request, parsed, engines, max_audio_s))
            headers["cache-control"] = "no-cache"
            return StreamingResponse(_releasing(events, admission, entered),
                                     media_type="text/event-stream", headers=headers)
        body = await answer_unless_gone(request, _complete(request, parsed, engines, max_audio_s))
    except ClientGone:
        log.info("%s: the client went away; its work was stopped", request.scope.get("request_id"))
        body, headers = {}, {}  # nobody reads this answer
    if admission:
        admission.leave(entered)
    return JSONResponse(body, headers=headers)


async def _prepared(request: Request, parsed: Any, max_audio_s: float | None) -> chat.Prepared:
    prepared = await chat.prepare(parsed, max_audio_s)
    if max_audio_s is not None:  # served: say what each request asks of the engines
        log.info("%s: %.1f s of audio, %d characters of text", request.scope.get("request_id"),
                 prepared.input_seconds, sum(len(t) for t in parsed.prompt_texts))
    return prepared


async def _complete(request: Request, parsed: Any, engines: Engines,
                    max_audio_s: float | None) -> dict[str, Any]:
    return await chat.complete(await _prepared(request, parsed, max_audio_s), engines)


async def _start_stream(request: Request, parsed: Any, engines: Engines,
                        max_audio_s: float | None) -> AsyncIterator[bytes]:
    return await chat.start_stream(await _prepared(request, parsed, max_audio_s), engines)


def _releasing(events: AsyncIterator[bytes], admission: Admission | None,
               entered: float) -> AsyncIterator[bytes]:
    """A streamed answer holds its place in the queue until its last event, or until it is
    dropped unread (a client gone before the first event: then the generator never runs)."""
    release = weakref.finalize(events, admission.leave, entered) if admission else (lambda: None)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield event
        finally:
            release()
    return relay()


def _served() -> list[str]:
    """The embedded model, and the multilingual one when its extra is installed."""
    return [LOCAL_MODEL, *([LOCAL_MULTILINGUAL_MODEL] if multilingual.installed() else [])]


async def _list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [model_card(m) for m in _served()]})


async def _get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    if model_id not in _served():
        raise APIError(404, f"The model '{model_id}' does not exist here: this server serves "
                       f"only {' and '.join(map(repr, _served()))}.", code="model_not_found",
                       param="model")
    return JSONResponse(model_card(model_id))


def model_card(model: str = LOCAL_MODEL) -> dict[str, Any]:
    """OpenAI's model object plus an honest description of what this model is."""
    if model == LOCAL_MULTILINGUAL_MODEL:
        return _multilingual_card()
    profile = get_profile(LOCAL_MODEL)
    return {
        "id": LOCAL_MODEL, "object": "model", "created": _STARTED, "owned_by": "audiobatch",
        "description": ("Embedded transcribe/narrate engine, not a chat model: input_audio is "
                        "transcribed (text parts are ignored); with modalities [\"text\", "
                        "\"audio\"] the last user message's text is spoken. English only."),
        "capabilities": {"transcribe": True, "narrate": True, "chat": False, "streaming": True,
                         # answered by audiobatch's offline method, as its reply's model says
                         "tools": [f"{TOOL_NAME} (offline method: {OFFLINE_NOTES_MODEL})"]},
        "languages": list(profile.languages) or ["en"],
        "voice": VOICE_NAME,
        "voices_note": f"any requested voice name is answered with {VOICE_NAME}",
        "input_audio_formats": list(INPUT_AUDIO_FORMATS),
        "output_audio_formats": list(OUTPUT_AUDIO_FORMATS),
        "output_sample_rate": OUTPUT_SAMPLE_RATE,
        "audio_tokens_per_second": {"input": profile.input_audio_tokens_per_s,
                                    "output": profile.output_audio_tokens_per_s},
        "engines": {
            "speech_to_text": {"engine": "faster-whisper", "weights": WHISPER_WEIGHTS,
                               "sha256": WHISPER_MODEL_SHA256},
            "text_to_speech": {"engine": "piper-tts", "weights": PIPER_WEIGHTS,
                               "sha256": PIPER_VOICE_SHA256},
        },
    }


def _multilingual_card() -> dict[str, Any]:
    card = model_card(LOCAL_MODEL)
    card.update(id=LOCAL_MULTILINGUAL_MODEL, languages=["any Whisper language (detected)"],
                description=("Embedded multilingual transcription (Whisper base) + the same "
                             "English voice: input_audio is transcribed in its language, which "
                             "is detected unless the request names it; not a chat model."))
    card["engines"]["speech_to_text"] = {"engine": "faster-whisper", "weights": multilingual.WEIGHTS,
                                         "sha256": multilingual.MODEL_SHA256}
    return card


async def read_capped_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body, refusing (413) past `limit` bytes without reading more than that, and (408)
    when it has not all arrived `timeout_s` after the request did (a slow or stalled client
    must not keep its place in the queue)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, "the Content-Length header is not a number.", code="invalid_request")
        if int(declared) > limit:
            raise _too_large(f"{int(declared):,} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(f"more than {limit:,} bytes", limit)
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s ({size:,} bytes "
                       "came): this server gives each body that long (--body-timeout-s). Send "
                       "the whole request at once, or ask the operator for a longer time.",
                       code="request_timeout", headers={"connection": "close"}) from None
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> APIError:
    return APIError(413, f"the request body ({size}) is over this server's limit "
                    f"of {limit:,} bytes. Send shorter audio chunks (a smaller audio-token "
                    "budget), or start the server with a larger --max-body-mb.",
                    code="request_too_large")


# --- errors ------------------------------------------------------------------------------

async def _api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        error = APIError(405, f"Method not allowed ({where}); allowed: "
                         f"{(exc.headers or {}).get('Allow', '?')}.", code="method_not_allowed")
    elif exc.status_code == 404:
        error = APIError(404, f"Invalid URL ({where}). This server has POST /v1/chat/completions "
                         "and GET /v1/models.", code="unknown_url")
    else:
        error = APIError(exc.status_code, str(exc.detail), code=None)
    return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)


class RequestMiddleware:
    """Request ids, the Host/Origin and API key checks and a last-resort 500, for every route.

    Pure ASGI (not BaseHTTPMiddleware) so that streamed answers pass straight through.
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None,
                 allowed_hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self._hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req_")
        scope["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        error = request_origin_error(dict(scope["headers"]), self._hosts) or self._auth_error(scope)
        if error is not None:
            await _send_error(error, scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed", request_id)
            if started:
                raise  # mid-stream: nothing left but to drop the connection
            error = APIError(500, f"the local model failed on this request ({request_id}); "
                             "see the server log.", type="server_error", code="server_error")
            await _send_error(error, scope, receive, send_with_id)

    def _auth_error(self, scope: Scope) -> APIError | None:
        if self._key is None:
            return None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return APIError(401, "Missing API key: this server needs 'Authorization: Bearer <key>' "
                            "with the key it was started with (--api-key / "
                            "AUDIOBATCH_SERVE_API_KEY).", code="invalid_api_key")
        if not hmac.compare_digest(given.strip(), self._key):
            return APIError(401, "Incorrect API key provided. Use the key this server was "
                            "started with (--api-key / AUDIOBATCH_SERVE_API_KEY).",
                            code="invalid_api_key")
        return None


async def _send_error(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)
