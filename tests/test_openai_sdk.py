"""The official `openai` SDK against `python -m localmodel.server` over real HTTP on loopback.

This is the contract other clients rely on when they use `audiobatch serve`: the SDK's own
request building, response parsing, streaming and error classes must all work unchanged.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from audiobatch.tasks.audio import codecs
from tests.helpers.localserver import (SPEECH, narration_body, references, running_server,
                                       transcription_body, word_error_rate)

KEY = "sdk-test-key-4f9a2c"
JFK = "openai-whisper__jfk.flac"
TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the forest."


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("localserver") / "server.log"


@pytest.fixture(scope="module")
def base_url(server_log: Path) -> Iterator[str]:
    with running_server(api_key=KEY, log_path=server_log) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def jfk_wav() -> bytes:
    return codecs.encode(codecs.decode(SPEECH / JFK, 16000), 16000, "wav")


def test_transcribes_input_audio(client: openai.OpenAI, jfk_wav: bytes):
    body = transcription_body(jfk_wav, "wav", prompt="Transcribe this.")
    completion = client.chat.completions.create(model=body["model"], messages=body["messages"])

    assert completion.object == "chat.completion"
    assert word_error_rate(references()[JFK], completion.choices[0].message.content) < 0.15
    assert completion.usage.prompt_tokens_details.audio_tokens == math.ceil(
        codecs.decode(jfk_wav, 16000).size / 16000 * 10)


def test_narrates_with_audio_modality(client: openai.OpenAI):
    body = narration_body(TEXT, "wav", voice="alloy")
    raw = client.chat.completions.with_raw_response.create(
        model=body["model"], messages=body["messages"], modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"})
    completion = raw.parse()

    assert raw.headers["x-audiobatch-voice"] == "en_US-joe-medium"
    assert raw.headers["x-request-id"].startswith("req_")
    audio = completion.choices[0].message.audio
    assert audio.transcript == TEXT and completion.choices[0].message.content is None
    samples = codecs.decode(base64.b64decode(audio.data), 24000)
    assert 3 < samples.size / 24000 < 9  # 16 words
    assert completion.usage.completion_tokens_details.audio_tokens == math.ceil(
        samples.size / 24000 * 20)


def test_streams_pcm16_with_usage(client: openai.OpenAI):
    body = narration_body(TEXT, "pcm16")
    stream = client.chat.completions.create(
        model=body["model"], messages=body["messages"], modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"}, stream=True,
        stream_options={"include_usage": True})

    transcript, pcm, usage, expires_at = "", b"", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if audio := choice.delta.audio:
                transcript += audio.transcript or ""
                pcm += base64.b64decode(audio.data or "")
                expires_at = audio.expires_at or expires_at

    assert transcript == TEXT and expires_at is not None
    samples = np.frombuffer(pcm, dtype="<i2")
    assert 3 < samples.size / 24000 < 9 and np.abs(samples).max() > 3000  # speech, not silence
    assert usage is not None
    assert usage.completion_tokens_details.audio_tokens == math.ceil(samples.size / 24000 * 20)


def test_wrong_key_is_an_authentication_error(base_url: str, server_log: Path):
    stranger = openai.OpenAI(base_url=base_url, api_key="sk-wrong-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.code == "invalid_api_key"
    assert "sk-wrong-key-000000" not in str(refused.value)
    assert KEY not in server_log.read_text() and "sk-wrong-key" not in server_log.read_text()


def test_unknown_model_is_not_found(client: openai.OpenAI, jfk_wav: bytes):
    body = transcription_body(jfk_wav, "wav")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o-audio-preview", messages=body["messages"])
    assert missing.value.code == "model_not_found"


def test_models_list(client: openai.OpenAI):
    from audiobatch.localmodel import multilingual

    expected = ["audiobatch-local"] + (["audiobatch-local-multilingual"] if multilingual.installed() else [])
    assert [model.id for model in client.models.list()] == expected


def test_body_limit_of_a_served_model(jfk_wav: bytes):
    # A real ~470 kB request against a server started with --max-body-mb 0.1 and no key.
    with running_server(max_body_mb=0.1) as url:
        small = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        body = transcription_body(jfk_wav, "wav")
        with pytest.raises(openai.APIStatusError) as refused:
            small.chat.completions.create(model=body["model"], messages=body["messages"])
    assert refused.value.status_code == 413 and refused.value.code == "request_too_large"
