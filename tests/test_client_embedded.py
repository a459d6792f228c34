"""The model client against the real embedded model: in-process (ASGI, no port) and over
HTTP against `audiobatch serve` on a loopback port. Same code path, same results."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from audiobatch.flows.runtime import build_client
from audiobatch.tasks.audio import codecs
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from tests.helpers.data import SPEECH
from tests.helpers.localserver import references, running_server, word_error_rate

PARAGRAPH = ("The printer set each line of type by hand. When the page was ready, he inked the "
             "forme, laid a damp sheet on it, and pulled the lever of the press.")
CLIPS = ["openai-whisper__jfk.flac", "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav",
         "speech_recognition__english.wav"]


@pytest.fixture(scope="module", params=["in-process", "serve"])
def settings(request) -> Iterator[ClientSettings]:
    """No base URL: the embedded model in-process. Otherwise `audiobatch serve` on loopback."""
    if request.param == "in-process":
        yield ClientSettings()
        return
    with running_server() as base_url:
        yield ClientSettings(base_url=base_url, model="audiobatch-local")


@pytest.fixture
async def client(settings: ClientSettings) -> AsyncIterator[ModelClient]:
    async with build_client(settings) as model_client:
        yield model_client


@pytest.mark.parametrize("clip", CLIPS)
async def test_transcribes_real_speech(client: ModelClient, clip: str) -> None:
    audio = codecs.encode(codecs.decode(SPEECH / clip, 16000), 16000, "wav")
    reply = await client.transcribe(audio, "wav")
    assert word_error_rate(references()[clip], reply.text) < 0.15
    assert reply.usage.prompt_audio_tokens > 0 and reply.attempts[-1].http_status == 200


async def test_narrates_a_paragraph_that_transcribes_back(client: ModelClient) -> None:
    spoken = await client.narrate(PARAGRAPH, voice="alloy", audio_format="mp3")
    samples = codecs.decode(spoken.audio, 16000)
    assert 6 < len(samples) / 16000 < 15
    heard = await client.transcribe(codecs.encode(samples, 16000, "wav"), "wav")
    assert word_error_rate(PARAGRAPH, heard.text) < 0.15
    assert spoken.usage.completion_audio_tokens == pytest.approx(len(samples) / 16000 * 20, abs=30)


def test_embedded_model_gets_no_more_requests_than_it_can_run(monkeypatch) -> None:
    """Its engines run one request at a time: a queue inside the app would eat the per-attempt
    timeout. A remote endpoint gets the concurrency the user asked for."""
    from audiobatch.flows.runtime import EMBEDDED_IN_FLIGHT, client_settings
    from audiobatch.tasks.run.context import RunOptions

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def in_flight(**options) -> int:
        return client_settings(RunOptions(kind="transcribe", manifest="m.csv", **options)).concurrency

    assert in_flight(concurrency=8) == EMBEDDED_IN_FLIGHT < 8
    assert in_flight(concurrency=1) == 1
    assert in_flight(concurrency=8, base_url="https://api.openai.com/v1") == 8
