"""The model client: one OpenAI-compatible Chat Completions endpoint, per DESIGN.md's wire contract.

`ModelClient.transcribe` sends audio as an `input_audio` part and reads the transcript;
`ModelClient.narrate` asks for `modalities: ["text", "audio"]` and reads the spoken audio back;
`ModelClient.call_tool` offers one function tool (strict JSON schema), makes the model call it,
and returns the call's name and raw arguments (tasks/model/wire.py reads them; the caller
validates them: they are the model's, not ours). All three go through `complete`, which holds a `Limiter` slot only for the HTTP exchange, retries
transient failures with tenacity (exponential backoff, full jitter, honouring retry-after) and
records every attempt, failed or not, so that failed attempts still reach the cost report.

Retry-after: the client waits what the server asks, but never more than `backoff_max_s` per
wait (and pauses the shared limiter as long). A server asking for longer (a gateway's daily
quota, say) would otherwise stall the run silently; raise `backoff_max_s` to wait it out.

The client knows only the wire contract: the embedded model is reached through an httpx
transport that the caller passes in (flows/runtime.py wires it); tasks/ never imports localmodel.
Reading what comes back (replies and their checks, errors, retry-after, the reply size limit,
`GET /models`) is tasks/model/wire.py.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import (AsyncRetrying, RetryCallState, stop_after_attempt,
                      wait_random_exponential)

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.bounded import ACCEPT_ENCODING
from audiobatch.tasks.errors import (ConfigError, InputError, ModelError, RunFatalError, TransientModelError,
                                     register_secret)
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.model.cost import Usage
from audiobatch.tasks.model.estimate import expected_narrate_usage, expected_transcribe_usage
from audiobatch.tasks.model.http11 import Http11Transport, proxy_configured
from audiobatch.tasks.model.limits import Limiter
from audiobatch.tasks.model.profiles import (DEFAULT_REMOTE_MODEL, LOCAL_MODEL, ModelProfile, get_profile,
                                             provider_for)
from audiobatch.tasks.model.prompts import (REASK_TEMPERATURE, STRICT_TRANSCRIPT, TRANSCRIPT_ONLY,
                                            context_instruction, narration_system_prompt,
                                            transcribe_instruction, vocabulary_instruction)
from audiobatch.tasks.model.request_body import audio_data, json_content, require_audio
from audiobatch.tasks.model.wire import (Attempt, ModelReply, error_for_response, listed_models, model_list,
                                         parse_reply, read_capped)

__all__ = ["Attempt", "ClientSettings", "ModelClient", "ModelReply", "TRANSCRIPT_ONLY",
           "narration_system_prompt", "transcribe_instruction"]
log = logging.getLogger(__name__)

LOCAL_BASE_URL = "http://audiobatch-local/v1"
RETRIES_PER_SUCCESS = 2
_SECRET_HEADER_HINTS = ("auth", "key", "token", "secret")


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to call the model. Empty `model`/`provider` are derived from `base_url`."""

    base_url: str | None = None  # None: the embedded model (caller passes an in-process transport)
    api_key: str | None = field(default=None, repr=False)
    model: str = ""  # default: LOCAL_MODEL without base_url, else DEFAULT_REMOTE_MODEL
    provider: str = ""  # default: provider_for(base_url)
    timeout_s: float = 120.0  # per attempt
    max_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    concurrency: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    # Retries allowed for the client's whole life: this many, plus RETRIES_PER_SUCCESS for every
    # request that succeeded. A dead endpoint spends it quickly and the run stops (run-fatal)
    # instead of hanging; a merely flaky one earns more retries as it answers. None: unlimited.
    retry_budget: int | None = 20
    # A reply is read up to this size (a narrated chunk at the default budget is ~13 MB of
    # base64); an endpoint sending more is refused instead of filling memory.
    max_response_mb: float = 128.0
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        register_secret(self.api_key)
        for name, value in self.extra_headers.items():
            if any(hint in name.lower() for hint in _SECRET_HEADER_HINTS):
                register_secret(value)
        base_url = self.base_url.strip().rstrip("/") if self.base_url else None
        if base_url and not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL {safe_url(base_url)!r} is not an http(s) URL. Give one like "
                              "https://api.openai.com/v1 (--base-url / OPENAI_BASE_URL).")
        object.__setattr__(self, "base_url", base_url)
        object.__setattr__(self, "model", self.model or (DEFAULT_REMOTE_MODEL if base_url else LOCAL_MODEL))
        object.__setattr__(self, "provider", self.provider or provider_for(base_url))
        if self.timeout_s <= 0 or self.max_attempts < 1 or self.concurrency < 1:
            raise ConfigError("timeout_s must be positive, max_attempts and concurrency at least 1 "
                              f"(got {self.timeout_s}, {self.max_attempts}, {self.concurrency}).")

    @classmethod
    def from_env(cls, **overrides: Any) -> ClientSettings:
        """Settings from OPENAI_API_KEY, OPENAI_BASE_URL, AUDIOBATCH_MODEL; None overrides are ignored."""
        env = {"api_key": os.environ.get("OPENAI_API_KEY"),
               "base_url": os.environ.get("OPENAI_BASE_URL"),
               "model": os.environ.get("AUDIOBATCH_MODEL")}
        values = {name: value for name, value in env.items() if value}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)


def _remote_transport(connections: int) -> httpx.AsyncBaseTransport | None:
    """The lean HTTP/1.1 transport; None (httpx's own) when a proxy is configured."""
    return None if proxy_configured() else Http11Transport(max_idle=connections)


class ModelClient:
    """Async client for one endpoint; use as `async with ModelClient(settings, ...) as client:`."""

    def __init__(self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 limiter: Limiter | None = None) -> None:
        if settings.base_url is None and transport is None:
            raise ConfigError(
                "no base URL and no transport: the embedded model is reached in-process. Pass "
                "transport=httpx.ASGITransport(app=localmodel.app.create_app()) (flows/runtime.py "
                "does this), or set --base-url / OPENAI_BASE_URL for a remote endpoint.")
        self.settings = settings
        self.base_url = settings.base_url or LOCAL_BASE_URL
        self.shown_url = safe_url(self.base_url)  # for messages: user:password@ and tokens masked
        self.limiter = limiter or Limiter(settings.concurrency, settings.requests_per_minute,
                                          settings.tokens_per_minute)
        connections = max(settings.concurrency, self.limiter.concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", transport=transport or _remote_transport(connections),
            headers=self._headers(),
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 15.0)),
            limits=httpx.Limits(max_connections=connections + 2,  # httpx's transport: proxied runs
                                max_keepalive_connections=connections))
        self._jitter = wait_random_exponential(multiplier=settings.backoff_initial_s,
                                               max=settings.backoff_max_s)
        self._retries_used = 0
        self._successes = 0

    def __repr__(self) -> str:
        return (f"ModelClient(base_url={self.shown_url!r}, model={self.settings.model!r}, "
                f"provider={self.settings.provider!r})")

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the jobs -------------------------------------------------------------------

    async def transcribe(self, audio: bytes | Callable[[], bytes] | Path, audio_format: str, *,
                         prompt: str | None = None, language: str | None = None,
                         model: str | None = None, expected_tokens: int | None = None,
                         context: str | None = None, strict: bool = False,
                         vocabulary: tuple[str, ...] = ()) -> ModelReply:
        """The verbatim transcript of `audio` (wav or mp3 bytes) as `reply.text`.

        `audio` may be a chunk file's path (read piece by piece while the request is sent,
        tasks/model/request_body.py) or a function returning the bytes: either is read only once a
        limiter slot is held, for each attempt, so a chunk waiting its turn costs no memory. `context`: the transcript just before this audio (sent as its
        own text part, marked as context). `vocabulary`: names and terms to spell right (their own
        text part, quoted as data: tasks/model/prompts.py). `strict`: the re-ask after a failed check
        (tasks/transcription/qa.py): a firmer instruction, and REASK_TEMPERATURE instead of 0, so
        that a model deaf to the instruction may still answer otherwise."""
        model = model or self.settings.model
        profile = get_profile(model)
        instruction = transcribe_instruction(prompt, language)
        if strict:
            instruction += "\n" + STRICT_TRANSCRIPT
        read = audio.read_bytes if isinstance(audio, Path) else audio if callable(audio) else (lambda: audio)
        if isinstance(audio, bytes):
            require_audio(audio)
            if expected_tokens is None:
                expected_tokens = _transcribe_tokens(audio, audio_format, prompt, language, profile)

        def body() -> dict:
            content: list[dict[str, Any]] = [{"type": "text", "text": instruction}]
            if vocabulary:
                content.append({"type": "text", "text": vocabulary_instruction(vocabulary)})
            if context:
                content.append({"type": "text", "text": context_instruction(context)})
            content.append({"type": "input_audio", "input_audio": {
                "data": audio_data(audio if isinstance(audio, Path) else read()),
                "format": audio_format}})
            return {
                "model": model, "modalities": ["text"], "temperature": REASK_TEMPERATURE if strict else 0,
                "max_completion_tokens": profile.max_output_text_tokens,
                "messages": [{"role": "user", "content": content}],
            }

        if expected_tokens is None:
            expected_tokens = _transcribe_tokens(read(), audio_format, prompt, language, profile)
        return await self.complete(body, expected_tokens=expected_tokens, want_audio=False)

    async def narrate(self, text: str, *, voice: str, audio_format: str,
                      instructions: str | None = None, model: str | None = None,
                      expected_tokens: int | None = None, temperature: float | None = None) -> ModelReply:
        """`text` spoken by `voice`: `reply.audio` in `audio_format`, `reply.text` its transcript.
        A `temperature` asks for another take (a narration retaken after verification)."""
        if not text.strip():
            raise InputError("no text to narrate (empty). Check the item's text.")
        model = model or self.settings.model
        system = narration_system_prompt(instructions)
        body = {
            "model": model, "modalities": ["text", "audio"],
            "audio": {"voice": voice, "format": audio_format},
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        if temperature is not None:
            body["temperature"] = temperature
        if expected_tokens is None:
            expected_tokens = expected_narrate_usage(text, get_profile(model), instructions).total_tokens
        reply = await self.complete(body, expected_tokens=expected_tokens, want_audio=True)
        reply.voice = voice
        return reply

    async def call_tool(self, messages: list[dict[str, Any]], tool: dict[str, Any], *,
                        model: str | None = None, expected_tokens: int,
                        max_output_tokens: int | None = None) -> ModelReply:
        """One request offering `tool` (a function: name, description, JSON-schema parameters)
        and requiring the model to call it: `reply.tool_name`, `reply.tool_arguments` (text)."""
        model = model or self.settings.model
        profile = get_profile(model)
        body = {
            "model": model, "modalities": ["text"], "temperature": 0, "messages": messages,
            "max_completion_tokens": max_output_tokens or profile.max_output_text_tokens,
            "tools": [{"type": "function", "function": {**tool, "strict": True}}],
            "tool_choice": {"type": "function", "function": {"name": tool["name"]}},
        }
        return await self.complete(body, expected_tokens=expected_tokens, want_audio=False)

    # --- the shared core ----------------------------------------------------------------

    async def complete(self, body: dict | Callable[[], dict], *, expected_tokens: int,
                       want_audio: bool) -> ModelReply:
        """POST one chat completion with retries; raises ModelError with `.attempts` on failure.

        A callable `body` is built inside the limiter slot, once per attempt."""
        attempts: list[Attempt] = []
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts), wait=self._wait,
            retry=self._should_retry, before_sleep=_log_retry, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await self._attempt(body, expected_tokens, want_audio, attempts)
                    self._successes += 1
                    return reply
        except TransientModelError as exc:
            error = self._budget_error(exc) if self._budget_spent() else exc
            error.attempts = attempts  # type: ignore[attr-defined]
            raise error from (exc if error is not exc else None)
        except ModelError as exc:
            error = await self._with_model_list(exc) if exc.code == "model_not_found" else exc
            error.attempts = attempts  # type: ignore[attr-defined]
            raise error from (exc if error is not exc else None)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _with_model_list(self, error: ModelError) -> ModelError:
        """After "no such model", say which models the endpoint does list (one GET /models;
        best effort: the original error if that fails). The ids come from the server:
        `listed_models` shortens them and strips control characters."""
        try:
            listed = listed_models(await self.list_models())
        except ModelError:
            return error
        if listed is None:
            return error
        return type(error)(f"{error} {self.base_url}/models lists: {listed}.", status=error.status,
                           code=error.code, request_id=error.request_id)

    async def list_models(self) -> list[dict]:
        """The endpoint's `GET /models` list (for `doctor`); one attempt, errors as ModelError."""
        return model_list(await self._send("GET", "models"), self.shown_url)

    async def _attempt(self, body: dict | Callable[[], dict], expected_tokens: int,
                       want_audio: bool, attempts: list[Attempt]) -> ModelReply:
        number = len(attempts) + 1
        async with self.limiter.slot(expected_tokens):
            request = body() if callable(body) else body  # a payload exists only while it may go
            model = request["model"]
            audio_format = (request.get("audio") or {}).get("format")
            started = time.monotonic()
            try:
                response = await self._send("POST", "chat/completions", request)
                reply = parse_reply(response, f"{self.shown_url}/chat/completions", model=model,
                                    want_audio=want_audio, audio_format=audio_format)
                status = response.status_code
            except ModelError as exc:
                attempts.append(Attempt(number, exc.status, exc.request_id,
                                        time.monotonic() - started, Usage(), exc.kind, str(exc)))
                if isinstance(exc, TransientModelError) and exc.retry_after_s is not None:
                    self.limiter.pause(min(exc.retry_after_s, self.settings.backoff_max_s))
                raise
            finally:
                # A traceback keeps this frame alive while tenacity waits to retry: drop the
                # payload now, or a failing long chunk would hold its megabytes meanwhile.
                request = response = None
        attempts.append(Attempt(number, status, reply.request_id,
                                time.monotonic() - started, reply.usage, None, None))
        reply.attempts = attempts
        return reply

    async def _send(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """One HTTP exchange within the per-attempt timeout; non-2xx answers raise ModelError."""
        url = f"{self.shown_url}/{path}"
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self._capped_request(method, path, body, url)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientModelError(
                f"{url} gave no answer within {self.settings.timeout_s:g} s ({exc.__class__.__name__}). "
                "Retried; if it keeps happening raise the timeout or send shorter chunks.") from exc
        except httpx.TransportError as exc:
            raise TransientModelError(
                f"{url}: connection failed ({exc.__class__.__name__}: {exc or 'no detail'}). "
                "Retried; if it keeps failing check the base URL and the network.") from exc
        self.limiter.observe(response.headers)
        if not response.is_success:
            raise error_for_response(response, url, self.settings.model)
        return response

    async def _capped_request(self, method: str, path: str, body: dict | None, url: str) -> httpx.Response:
        """The answer, its body read up to `max_response_mb` (a reply is from someone else)."""
        headers, content = json_content(body) if body is not None else ({}, None)
        async with self._http.stream(method, path, content=content, headers=headers) as streamed:
            return await read_capped(streamed, url, self.settings.max_response_mb)

    def _budget_spent(self) -> bool:
        budget = self.settings.retry_budget
        return budget is not None and (
            self._retries_used >= budget + RETRIES_PER_SUCCESS * self._successes)

    def _should_retry(self, state: RetryCallState) -> bool:
        """Retry transient errors while the client-wide retry budget lasts."""
        error = state.outcome.exception() if state.outcome else None
        if not isinstance(error, TransientModelError) or self._budget_spent():
            return False
        self._retries_used += 1
        return True

    def _budget_error(self, error: TransientModelError) -> RunFatalError:
        return RunFatalError(
            f"the endpoint keeps failing: {self._retries_used} retries used for "
            f"{self._successes} successful requests (the retry budget). Last error: {error} "
            "Check the endpoint, then run the same command again to finish the work.",
            status=error.status, code=error.code, request_id=error.request_id)

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the server's retry-after (capped), else jittered backoff."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ModelError) and error.retry_after_s is not None:
            return min(error.retry_after_s, self.settings.backoff_max_s)
        return self._jitter(state)

    def _headers(self) -> dict[str, str]:
        # the codings read_capped decodes (httpx would offer brotli and zstd when installed)
        headers = {"User-Agent": "audiobatch", "Accept-Encoding": ACCEPT_ENCODING,
                   **self.settings.extra_headers}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return headers


def _transcribe_tokens(audio: bytes, audio_format: str, prompt: str | None,
                       language: str | None, profile: ModelProfile) -> int:
    """Expected tokens of a transcription when the caller did not say (duration from the header)."""
    try:
        seconds = codecs.probe(audio, f"{audio_format} chunk").duration_s or 0.0
    except InputError:
        seconds = 0.0  # the server will say what is wrong with it
    return expected_transcribe_usage(seconds, profile, prompt, language).total_tokens


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("model request attempt %d failed, retrying in %.2f s: %s",
                state.attempt_number, wait, error)
