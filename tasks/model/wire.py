"""Reading the endpoint's answers: replies, errors, retry-after (DESIGN.md wire contract).

Split out of tasks/model/client.py so that each stays readable. `error_for_response` maps an HTTP
error to the class that says what the pipeline does with it (DESIGN.md "Errors and what they
do"); `parse_reply` turns a 200 into a `ModelReply`, treating a malformed 200 as transient;
`read_capped` reads any answer's body up to the reply size limit; `model_list` and
`listed_models` read a `GET /models` answer.

Tool calls: a reply's first `message.tool_calls[]` entry of type "function" is kept as its
name and raw `arguments` text, cut at MAX_TOOL_ARGUMENT_CHARS + 1 (so a longer one is seen to
be too long). Nothing here trusts the arguments: whoever asked for the call validates them
(tasks/extract/tool.py).
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import json
from datetime import datetime, timezone
from dataclasses import astuple, dataclass
from typing import Any

import httpx

from audiobatch.tasks.bounded import BodyDecoder, Budget, OverBudget, Undecodable
from audiobatch.tasks.errors import (ModelError, PermanentModelError, RunFatalError, TransientModelError,
                                     UnreadableUsage)
from audiobatch.tasks.model.cost import Usage

_MAX_SERVER_MESSAGE = 300  # characters of a server's error text kept (proxies send HTML pages)
MAX_TOOL_ARGUMENT_CHARS = 200_000  # a tool call's arguments kept beyond this are refused anyway
_MAX_TOOL_NAME = 64  # OpenAI's own limit on function names


@dataclass
class Attempt:
    """One HTTP attempt, failed or not: a row of the cost report."""

    attempt: int
    http_status: int | None
    request_id: str | None
    latency_s: float
    usage: Usage
    error_type: str | None
    error_message: str | None


@dataclass
class ModelReply:
    text: str
    audio: bytes | None
    audio_format: str | None
    model: str
    usage: Usage
    attempts: list[Attempt]
    request_id: str | None
    voice: str | None = None
    finish_reason: str | None = None  # "stop"; "length" = cut off (tasks/transcription/qa.py checks it)
    refusal: str | None = None  # the model's refusal text, when it refused instead
    language: str | None = None  # detected by the model (the embedded model reports it)
    language_probability: float | None = None
    tool_name: str | None = None  # the function the reply called (the first call), if any
    tool_arguments: str | None = None  # its arguments as sent: JSON text, unchecked


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The server's requested wait from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_for_response(response: httpx.Response, url: str, model: str) -> ModelError:
    """The ModelError for a non-2xx answer, with the server's words and what to do."""
    status = response.status_code
    server_message, code = _server_error(response)
    error_class, hint = _classify(status, code, model)
    request_id = response.headers.get("x-request-id")
    text = f"{url} answered HTTP {status}" + (f" ({code})" if code else "")
    text += f": {server_message}" if server_message else ""
    text += f" [request id {request_id}]" if request_id else ""
    return error_class(f"{text}. {hint}", status=status, code=code, request_id=request_id,
                       retry_after_s=retry_after_s(response.headers))


def _server_error(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code or type) from an OpenAI-shaped `{"error": {...}}` body, else the raw text."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, RecursionError):
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code") or error.get("type")
        return message[:_MAX_SERVER_MESSAGE], str(code) if code else None
    if isinstance(error, str):
        return error[:_MAX_SERVER_MESSAGE], None
    return response.text.strip()[:_MAX_SERVER_MESSAGE], None


def _classify(status: int, code: str | None, model: str) -> tuple[type[ModelError], str]:
    """Which error class a status means, and a hint saying what the user can do."""
    if status == 401:
        return RunFatalError, "Check OPENAI_API_KEY (or --api-key) for this endpoint."
    if status == 403:
        return RunFatalError, (f"The key may not use {model!r} (or this region/project); "
                               "check the key's permissions and --model.")
    if status == 429 and code == "insufficient_quota":
        return RunFatalError, "The account has no quota left: add credit or use another key."
    if status == 429:
        return TransientModelError, ("Rate limited; retried. Lower --concurrency or set "
                                     "requests/tokens per minute if it keeps happening.")
    if status in (408, 409) or status >= 500:
        return TransientModelError, "The server had a passing problem; retried."
    if status == 404 and code == "model_not_found":
        retired = (" gpt-4o-audio-preview is shut down on OpenAI's own API (gpt-audio-1.5 replaces "
                   "it there)." if model.startswith("gpt-4o-audio-preview") else "")
        return PermanentModelError, (f"Check --model ({model!r}): the endpoint's GET /v1/models "
                                     f"lists the models it serves.{retired}")
    if status == 404:
        return PermanentModelError, "Check --base-url: it should end in /v1 (e.g. https://api.openai.com/v1)."
    if status == 413:
        return PermanentModelError, "The request is too large: lower the per-request audio budget."
    return PermanentModelError, ("The server refused this request; check that --model takes "
                                 "audio in/out and that the audio format and voice are supported "
                                 "(with --chapters: that it calls tools).")


def parse_reply(response: httpx.Response, url: str, *, model: str, want_audio: bool,
                audio_format: str | None) -> ModelReply:
    """A 200's ModelReply (attempts filled in by the caller); malformed 200s are transient."""
    request_id = response.headers.get("x-request-id")
    where = f"{url} answered HTTP 200" + (f" [request id {request_id}]" if request_id else "")
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise TransientModelError(f"{where} with a body that is not complete JSON "
                                  f"({len(response.content)} bytes); retried.",
                                  status=200, request_id=request_id) from None
    message = _first_message(data)
    if message is None:
        detail = _server_error(response)[0] if isinstance(data, dict) and "error" in data else ""
        raise TransientModelError(f"{where} without choices[0].message {detail}".rstrip() + "; retried.",
                                  status=200, request_id=request_id)
    text = _content_text(message.get("content"))
    audio, transcript = _audio(message, where, want_audio, request_id)
    refusal = str(message["refusal"])[:300] if message.get("refusal") else None
    if refusal and not text and audio is None and want_audio:
        raise PermanentModelError(f"{where} with a refusal: {str(message['refusal'])[:300]}. "
                                  "Check the input; the same request would be refused again.",
                                  status=200, request_id=request_id)
    return ModelReply(
        text=(transcript if transcript is not None else text).strip(),
        audio=audio, audio_format=audio_format if audio is not None else None,
        model=str(data.get("model") or model), usage=_usage(data.get("usage"), where, request_id),
        attempts=[], request_id=request_id or data.get("id"),
        finish_reason=_finish_reason(data), refusal=refusal, **_language(data),
        **_tool_call(message))


def _tool_call(message: dict) -> dict[str, str]:
    """The first function call of `message.tool_calls` as {tool_name, tool_arguments}; {} when
    there is none in a readable shape (the caller then says no call was made)."""
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):  # some gateways send the object, not its text
            try:
                arguments = json.dumps(arguments)
            except (ValueError, RecursionError):
                arguments = ""
        return {"tool_name": function["name"][:_MAX_TOOL_NAME],
                "tool_arguments": arguments[:MAX_TOOL_ARGUMENT_CHARS + 1]
                if isinstance(arguments, str) else ""}
    return {}


def _finish_reason(data: dict) -> str | None:
    reason = data["choices"][0].get("finish_reason")
    return str(reason) if reason is not None else None


def _language(data: dict) -> dict[str, Any]:
    """The detected language, when the server reports one (the embedded model does)."""
    language, probability = data.get("language"), data.get("language_probability")
    if not isinstance(language, str) or not language.isascii() or len(language) > 12:
        return {}
    valid = isinstance(probability, (int, float)) and 0.0 <= probability <= 1.0
    return {"language": language, "language_probability": float(probability) if valid else None}


def _usage(usage: Any, where: str, request_id: str | None) -> Usage:
    """The reply's usage; counts that are not whole non-negative numbers fail the item (not
    retried: the request may already be billed, and a repeat would say the same)."""
    try:
        read = Usage.from_openai(usage)
        if all(isinstance(n, int) and n >= 0 for n in astuple(read)):
            return read
        problem = "negative counts"
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        problem = str(exc)[:120]
    raise UnreadableUsage(f"{where} with a `usage` object that is not token counts ({problem}), so "
                          "this request's cost is unknown (it may have been billed: check the "
                          "provider's usage page). Not retried; check the endpoint.",
                          status=200, request_id=request_id)


def _first_message(data: Any) -> dict | None:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


def _content_text(content: Any) -> str:
    """Message content as text: a string, or a list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _audio(message: dict, where: str, want_audio: bool,
           request_id: str | None) -> tuple[bytes | None, str | None]:
    """(audio bytes, transcript) from `message.audio`; missing audio when asked is transient."""
    part = message.get("audio")
    if not want_audio:
        return None, None
    if not isinstance(part, dict) or not part.get("data"):
        raise TransientModelError(f"{where} without message.audio although audio was asked for; "
                                  "retried. Check that --model can answer with audio "
                                  "(e.g. gpt-audio-1.5).", status=200, request_id=request_id)
    try:
        audio = base64.b64decode(part["data"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise TransientModelError(f"{where} with message.audio.data that is not base64; retried.",
                                  status=200, request_id=request_id) from None
    transcript = part.get("transcript")
    return audio, str(transcript) if transcript is not None else None


# --- reading any answer, and GET /models ---------------------------------------------------

async def read_capped(streamed: httpx.Response, url: str, max_mb: float) -> httpx.Response:
    """The streamed answer with its body read, up to `max_mb`: a larger body (announced or not)
    is refused unread, since the endpoint could otherwise fill memory. The body is decoded
    here, within the same cap (tasks/bounded.py): at most one content-coding, each piece
    counted before the next is inflated (httpx inflates a whole network read at once, and
    `gzip, gzip` 825 bytes to 400 MiB)."""
    cap = int(max_mb * 1024 * 1024)
    declared = streamed.headers.get("content-length", "")
    request_id = streamed.headers.get("x-request-id")
    refused = PermanentModelError(
        f"{url} answered HTTP {streamed.status_code} with a body over the "
        f"{max_mb:g} MB reply limit; it was not read. Send "
        "smaller requests (a lower audio-token budget) or check the endpoint.",
        status=streamed.status_code, request_id=request_id)
    if declared.isdigit() and int(declared) > cap:
        raise refused
    chunks = []
    try:
        decoder = BodyDecoder(streamed.headers.get("content-encoding"), Budget(cap, str(refused)),
                              f"{url}'s answer")
        async for raw in streamed.aiter_raw():
            chunks.extend(decoder.feed(raw))
        decoder.finish()
    except OverBudget:
        raise refused from None
    except Undecodable as error:
        raise PermanentModelError(f"{error} Check the endpoint (or a proxy in front of it).",
                                  status=streamed.status_code, request_id=request_id) from None
    headers = [(k, v) for k, v in streamed.headers.multi_items()  # the body is decoded now
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(streamed.status_code, headers=headers, content=b"".join(chunks),
                          request=streamed.request)


def model_list(response: httpx.Response, shown_url: str) -> list[dict]:
    """The `data` list of a `GET /models` answer; an answer without one is transient."""
    data = _json_or_none(response)
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise TransientModelError(f"{shown_url}/models answered without a `data` list; "
                                  "check that the base URL points at an OpenAI-compatible API.")
    return models


def listed_models(models: list) -> str | None:
    """A `GET /models` list's ids for a message (at most ten named), None when it has none.
    The ids come from the server: each is shortened and stripped of control characters."""
    ids = [str(m.get("id"))[:64] for m in models if isinstance(m, dict)]
    ids = ["".join(c for c in i if c.isprintable()) for i in ids if i]
    if not ids:
        return None
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
