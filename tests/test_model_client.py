"""The model client against a real HTTP server on loopback that misbehaves on cue.

The fault server (tests/helpers/faultserver.py) stands in for a remote OpenAI-compatible
endpoint, because no remote endpoint is reachable here; everything else is real: sockets,
httpx, tenacity, JSON, base64 and the audio (a real speech clip in, a real wav back).
"""
from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import httpx
import pytest

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.errors import (ConfigError, ModelError, PermanentModelError, RunFatalError,
                                     TransientModelError)
from audiobatch.tasks.model.client import TRANSCRIPT_ONLY, ClientSettings, ModelClient, transcribe_instruction
from audiobatch.tasks.model.cost import Usage
from tests.helpers.data import SPEECH
from tests.helpers.faultserver import (FaultServer, drop, error, forward, hang, insufficient_quota,
                                       ok, rate_limited, raw, server_error, truncated)

KEY = "sk-test-SECRET1234567890"
# Real speech (2.8 s, "go forward ten meters") from the shared test data next to the checkout.
GOFORWARD = SPEECH / "pocketsphinx__goforward.wav"


def settings_for(server: FaultServer, **changes: object) -> ClientSettings:
    """Settings with tiny backoffs so retries take milliseconds."""
    values: dict = dict(base_url=server.base_url, api_key=KEY, timeout_s=2.0, max_attempts=4,
                        backoff_initial_s=0.01, backoff_max_s=0.05)
    values.update(changes)
    return ClientSettings(**values)


async def transcribe_via(server: FaultServer, **changes: object):
    async with ModelClient(settings_for(server, **changes)) as client:
        return await client.transcribe(GOFORWARD.read_bytes(), "wav")


# --- request shapes --------------------------------------------------------------------------

async def test_transcribe_sends_the_audio_and_reads_transcript_and_usage() -> None:
    audio = GOFORWARD.read_bytes()
    with FaultServer([ok("go forward ten meters")]) as server:
        async with ModelClient(settings_for(server)) as client:
            reply = await client.transcribe(audio, "wav", language="en")
    [request] = server.requests
    body = request.json
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-audio-1.5" and body["modalities"] == ["text"]
    assert body["temperature"] == 0 and body["max_completion_tokens"] == 8192
    [message] = body["messages"]
    instruction, audio_part = message["content"]
    assert audio_part["type"] == "input_audio" and audio_part["input_audio"]["format"] == "wav"
    assert base64.b64decode(audio_part["input_audio"]["data"]) == audio
    assert "English" in instruction["text"] and "transcript only" in instruction["text"]
    assert reply.text == "go forward ten meters" and reply.audio is None
    assert reply.usage == Usage(prompt_text_tokens=30, prompt_audio_tokens=100,
                                completion_text_tokens=12)
    assert reply.request_id == "req_fault_0" and reply.model == "gpt-audio-1.5"
    assert [(a.attempt, a.http_status, a.error_type) for a in reply.attempts] == [(1, 200, None)]
    assert reply.attempts[0].usage == reply.usage


def test_a_user_prompt_replaces_the_default_instruction_but_keeps_the_rules() -> None:
    text = transcribe_instruction("Speakers: Ada Lovelace, Charles Babbage.", "de")
    assert text.startswith("Speakers: Ada Lovelace, Charles Babbage.")
    assert "The audio is in German." in text and TRANSCRIPT_ONLY in text
    assert "Transcribe the speech" not in text


async def test_narrate_asks_for_audio_and_decodes_it() -> None:
    with FaultServer([ok("Chapter one. It was a bright cold day.")]) as server:
        async with ModelClient(settings_for(server)) as client:
            reply = await client.narrate("Chapter one. It was a bright cold day.", voice="alloy",
                                         audio_format="wav", instructions="Calm, slow delivery.")
    body = server.requests[0].json
    assert body["modalities"] == ["text", "audio"]
    assert body["audio"] == {"voice": "alloy", "format": "wav"}
    system, user = body["messages"]
    assert system["role"] == "system" and "word for word" in system["content"]
    assert "Calm, slow delivery." in system["content"]
    assert user == {"role": "user", "content": "Chapter one. It was a bright cold day."}
    samples = codecs.decode(reply.audio, 24000)
    assert len(samples) == pytest.approx(6000, abs=10)  # the server's 0.25 s wav, intact
    assert reply.text == "Chapter one. It was a bright cold day."
    assert (reply.voice, reply.audio_format) == ("alloy", "wav")


# --- recovering from transient failures -------------------------------------------------------

@pytest.mark.parametrize("fault, status", [
    (rate_limited(retry_after_ms=30), 429),
    (server_error(500), 500),
    (server_error(502), 502),
    (server_error(503), 503),
    (error(408, "Request timed out.", type="timeout"), 408),
    (hang(1.5), None),
    (drop(), None),
    (truncated(), 200),
    (truncated(cut_connection=True), None),
], ids=["429", "500", "502", "503", "408", "hang", "drop", "truncated-json", "cut-body"])
async def test_recovers_after_a_transient_failure(fault, status) -> None:
    with FaultServer([fault, ok("go forward ten meters")]) as server:
        reply = await transcribe_via(server, timeout_s=0.4)
    assert reply.text == "go forward ten meters"
    assert len(server.requests) == 2
    failed, succeeded = reply.attempts
    assert (failed.http_status, failed.error_type, failed.usage) == (status, "transient_error", Usage())
    assert failed.error_message and succeeded.error_type is None and succeeded.http_status == 200


async def test_narration_without_audio_in_the_answer_is_retried() -> None:
    text_only = raw(200, b'{"choices":[{"message":{"content":"hi"}}]}')
    with FaultServer([text_only, ok("hi")]) as server:
        async with ModelClient(settings_for(server)) as client:
            reply = await client.narrate("hi", voice="alloy", audio_format="wav")
    assert reply.audio and [a.http_status for a in reply.attempts] == [200, 200]
    assert "without message.audio" in reply.attempts[0].error_message


async def test_gives_up_after_max_attempts_with_every_attempt_recorded() -> None:
    with FaultServer(lambda request: server_error(503)) as server:
        with pytest.raises(TransientModelError, match="HTTP 503") as caught:
            await transcribe_via(server, max_attempts=3)
    assert len(server.requests) == 3
    attempts = caught.value.attempts
    assert [(a.attempt, a.http_status, a.error_type) for a in attempts] == [
        (1, 503, "transient_error"), (2, 503, "transient_error"), (3, 503, "transient_error")]
    assert all(a.request_id == f"req_fault_{i}" for i, a in enumerate(attempts))


# --- failures that must not be retried --------------------------------------------------------

@pytest.mark.parametrize("fault, expected, words", [
    (error(400, "Invalid value for 'format'."), PermanentModelError, "Invalid value"),
    (error(401, f"Incorrect API key provided: {KEY}.", type="invalid_request_error",
           code="invalid_api_key"), RunFatalError, "OPENAI_API_KEY"),
    (error(403, "Project does not have access to model.", code="model_not_allowed"),
     RunFatalError, "permissions"),
    (error(404, "The model `gpt-4o-audio-preview` does not exist.", code="model_not_found"),
     PermanentModelError, "/v1/models"),
    (error(413, "Request too large."), PermanentModelError, "audio budget"),
    (error(422, "Unprocessable audio."), PermanentModelError, "Unprocessable"),
    (insufficient_quota(), RunFatalError, "no quota left"),
], ids=["400", "401", "403", "404", "413", "422", "insufficient_quota"])
async def test_refusals_are_not_retried(fault, expected, words) -> None:
    with FaultServer([fault, ok()]) as server:
        with pytest.raises(ModelError) as caught:
            await transcribe_via(server)
    assert type(caught.value) is expected
    # one chat completion, not retried (after a 404 the client also asks GET /models)
    assert sum(r.path.endswith("/chat/completions") for r in server.requests) == 1
    message = str(caught.value)
    assert words in message and "req_fault_0" in message and KEY not in message
    assert [a.http_status for a in caught.value.attempts] == [fault.status]


# --- retry-after -----------------------------------------------------------------------------

@pytest.mark.parametrize("fault, wait_s", [
    (rate_limited(retry_after_s=0.6), 0.6),
    (rate_limited(retry_after_ms=400), 0.4),
])
async def test_honours_retry_after(fault, wait_s) -> None:
    with FaultServer([fault, ok()]) as server:
        await transcribe_via(server, backoff_max_s=5.0)
    gap = server.requests[1].at - server.requests[0].at
    assert wait_s <= gap <= wait_s + 0.4


async def test_retry_after_longer_than_the_cap_waits_the_cap() -> None:
    with FaultServer([rate_limited(retry_after_s=30), ok()]) as server:
        await transcribe_via(server, backoff_max_s=0.3)
    gap = server.requests[1].at - server.requests[0].at
    assert 0.3 <= gap <= 0.8


async def test_retry_after_pauses_other_requests_sharing_the_client() -> None:
    script = lambda request: rate_limited(retry_after_s=0.5) if request.index == 0 else ok()  # noqa: E731
    with FaultServer(script) as server:
        async with ModelClient(settings_for(server, backoff_max_s=5.0)) as client:
            first = asyncio.create_task(client.transcribe(GOFORWARD.read_bytes(), "wav"))
            await asyncio.sleep(0.15)  # the first has had its 429 by now
            await client.transcribe(GOFORWARD.read_bytes(), "wav")
            await first
    refused_at = server.requests[0].at
    assert len(server.requests) == 3
    assert all(r.at - refused_at >= 0.48 for r in server.requests[1:])


# --- secrets, settings, wiring ---------------------------------------------------------------

@pytest.mark.parametrize("key", [KEY, "gw-live-7f3a9c2e11b04d5e"])
async def test_the_key_never_appears_in_errors_logs_or_reprs(key, caplog) -> None:
    echo = error(500, f"upstream rejected header Authorization: Bearer {key}", type="server_error")
    leak = error(400, f"bad request from key {key}")
    caplog.set_level(logging.DEBUG)
    with FaultServer([echo, leak]) as server:
        settings = settings_for(server, api_key=key)
        client = ModelClient(settings)
        async with client:
            with pytest.raises(PermanentModelError) as caught:
                await client.transcribe(GOFORWARD.read_bytes(), "wav")
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"  # it was sent...
    shown = [repr(settings), str(settings), repr(client), str(caught.value), caplog.text,
             *(a.error_message for a in caught.value.attempts)]
    assert "upstream rejected" in caplog.text  # ...the retry was logged...
    assert not any(key in text for text in shown)  # ...and shown nowhere


def test_settings_from_env_and_derived_defaults(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1/")
    monkeypatch.delenv("AUDIOBATCH_MODEL", raising=False)
    settings = ClientSettings.from_env(model=None, concurrency=2)
    assert settings.base_url == "https://api.openai.com/v1" and settings.api_key == KEY
    assert (settings.model, settings.provider, settings.concurrency) == ("gpt-audio-1.5", "openai", 2)
    monkeypatch.setenv("AUDIOBATCH_MODEL", "gpt-audio-mini")
    assert ClientSettings.from_env().model == "gpt-audio-mini"
    local = ClientSettings()
    assert (local.model, local.provider) == ("audiobatch-local", "local")
    gateway = ClientSettings(base_url="https://api.cometapi.com/v1", model="gpt-4o-audio-preview")
    assert gateway.provider == "api.cometapi.com"
    with pytest.raises(ConfigError, match="not an http"):
        ClientSettings(base_url="api.openai.com/v1")


def test_embedded_model_needs_a_transport() -> None:
    with pytest.raises(ConfigError, match="transport"):
        ModelClient(ClientSettings())


async def test_embedded_model_is_reached_through_the_given_transport() -> None:
    # A minimal ASGI app stands in for localmodel (which is built elsewhere and which tasks/
    # must not import); the exchange through httpx.ASGITransport is real.
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        body = b'{"choices":[{"message":{"content":"in process"}}],"usage":{"prompt_tokens":3}}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async with ModelClient(ClientSettings(), transport=httpx.ASGITransport(app=app)) as client:
        reply = await client.transcribe(GOFORWARD.read_bytes(), "wav")
    assert seen == ["/v1/chat/completions"] and reply.text == "in process"
    assert reply.model == "audiobatch-local" and reply.usage.prompt_text_tokens == 3


async def test_list_models() -> None:
    with FaultServer() as server:
        async with ModelClient(settings_for(server)) as client:
            models = await client.list_models()
    assert [m["id"] for m in models] == ["fault-model"]
    assert server.requests[0].path == "/v1/models"


async def test_fault_server_as_a_proxy_injects_faults_before_real_answers() -> None:
    with FaultServer([ok("from upstream")]) as upstream:
        with FaultServer([drop(), forward()], upstream=upstream.origin) as proxy:
            reply = await transcribe_via(proxy)
    assert reply.text == "from upstream" and len(proxy.requests) == 2
    assert upstream.requests[0].json == proxy.requests[1].json
    assert upstream.requests[0].headers["authorization"] == f"Bearer {KEY}"
