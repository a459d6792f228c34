"""Streaming long files: chunks flow from the decoder to the requests through a bounded queue.

What a user notices: the first request leaves while the file is still decoding; the decoder
never runs more than a couple of chunks ahead of the requests (memory and disk stay bounded
whatever the file's length); a chunk's audio is read only when its request may go; a failing
request stops the decoder. Real decoding of real speech; a real HTTP model stub on 127.0.0.1
(tests.helpers.faultserver) where the test must see each request arrive.
"""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest

from audiobatch.tasks.audio.codecs import decode, encode
from audiobatch.tasks.audio.prepare import stream_chunks
from audiobatch.tasks.audio.streaming import Handoff, Produced
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from audiobatch.tasks.model.request_body import PIECE_BYTES
from tests.helpers.data import SPEECH
from tests.helpers.e2e import run_transcribe, write_manifest
from tests.helpers.faultserver import Behaviour, FaultServer, Received, error, ok

LONG = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"  # 171 s of read speech
CHUNK_S = 15.0  # about 15 chunks of the 171 s recording (cut in pauses)


def chunk_files(folder: Path) -> int:
    return len(list(folder.rglob("*.wav")))


async def test_the_decoder_stays_a_bounded_number_of_chunks_ahead(tmp_path: Path) -> None:
    work = tmp_path / "chunks"
    written_when_taken = []
    async with stream_chunks(LONG, work, max_chunk_s=CHUNK_S, label="lj", depth=1) as chunks:
        while (chunk := await chunks.next_item()) is not None:
            await asyncio.sleep(0.05)  # a slow consumer: the decoder must wait for it
            written_when_taken.append((chunk.index, chunk_files(work)))
    prepared = chunks.result
    n = len(prepared.chunks)
    assert n >= 12 and prepared.duration_s == pytest.approx(171, abs=1)
    assert [index for index, _ in written_when_taken] == list(range(n))
    # taken + one waiting in the queue + one written and waiting for room
    assert all(written <= index + 3 for index, written in written_when_taken), written_when_taken


async def test_a_small_file_is_prepared_on_the_loop_unless_it_holds_long_audio(tmp_path: Path) -> None:
    """Short clips skip the thread (its hand-over cost more than their decoding); a small
    file is not trusted to be short: 10 minutes of silence in FLAC is ~60 KB, and decoding it
    must not stop the event loop, so it goes to the thread after all, chunks intact."""
    clip = tmp_path / "clip.wav"
    clip.write_bytes(encode(decode(LONG, 16000)[: 5 * 16000], 16000, "wav"))
    silence = tmp_path / "silence.flac"
    silence.write_bytes(encode(np.zeros(600 * 16000, dtype=np.float32), 16000, "flac"))
    assert silence.stat().st_size < 1 << 20
    for path, handed_over, seconds in ((clip, Produced, 5.0), (silence, Handoff, 600.0)):
        work = tmp_path / f"work-{path.stem}"
        taken = []
        async with stream_chunks(path, work, max_chunk_s=CHUNK_S * 4, label=path.stem,
                                 in_thread=False) as chunks:
            assert type(chunks) is handed_over
            while (chunk := await chunks.next_item()) is not None:
                taken.append(chunk.index)
        assert chunks.result.duration_s == pytest.approx(seconds)
        assert taken == list(range(len(chunks.result.chunks)))
        assert chunk_files(work) == len(taken)  # the loop's aborted attempt left no chunk behind


async def test_leaving_early_stops_the_decoder(tmp_path: Path) -> None:
    work = tmp_path / "chunks"
    with pytest.raises(RuntimeError, match="consumer failed"):
        async with stream_chunks(LONG, work, max_chunk_s=CHUNK_S, label="lj") as chunks:
            await chunks.next_item()
            raise RuntimeError("consumer failed")
    # the decoder thread has ended: nothing is written any more, and it wrote few chunks
    written = chunk_files(work)
    await asyncio.sleep(0.3)
    assert chunk_files(work) == written <= 3


async def test_a_chunk_is_read_only_when_its_request_may_go() -> None:
    with FaultServer([Behaviour("answer", delay_s=0.3, text="first"), ok("second")]) as server:
        seen_when_read: list[int] = []

        def reader(audio: bytes):
            def read() -> bytes:
                seen_when_read.append(len(server.requests))
                return audio
            return read

        clip = (SPEECH / "pocketsphinx__goforward.wav").read_bytes()
        settings = ClientSettings(base_url=server.base_url, api_key="sk-test", concurrency=1)
        async with ModelClient(settings) as client:
            replies = await asyncio.gather(
                client.transcribe(reader(clip), "wav", expected_tokens=50),
                client.transcribe(reader(clip), "wav", expected_tokens=50))
    assert [r.text for r in replies] == ["first", "second"]
    # the second chunk was read after the first request had gone (one slot), not up front
    assert seen_when_read == [0, 1]


# three pieces, the last padded (streamed); a short clip's (one bytes body)
@pytest.mark.parametrize("size", [2 * PIECE_BYTES + 5, 32_001])
async def test_a_chunk_file_is_sent_in_pieces_as_the_same_request(tmp_path: Path, size: int) -> None:
    chunk = tmp_path / "chunk.wav"
    chunk.write_bytes(LONG.read_bytes()[:size])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    prompt = 'names: "Zoë", Ōsaka'  # quotes and non-ASCII text around the streamed audio
    with FaultServer([ok("heard")]) as server:
        settings = ClientSettings(base_url=server.base_url, api_key="sk-test")
        async with ModelClient(settings) as client:
            reply = await client.transcribe(chunk, "wav", prompt=prompt, expected_tokens=50)
            with pytest.raises(InputError, match="0 bytes"):
                await client.transcribe(empty, "wav", expected_tokens=50)
    assert reply.text == "heard" and len(server.requests) == 1  # the empty file was never sent
    sent = server.requests[0]
    assert int(sent.headers["content-length"]) == len(sent.body)
    content = sent.json["messages"][0]["content"]
    assert prompt in content[0]["text"]
    assert base64.b64decode(content[-1]["input_audio"]["data"]) == chunk.read_bytes()


def _counting(out: Path, counts: list[int], behaviour=None):
    def script(request: Received) -> Behaviour:
        counts.append(chunk_files(out / "_runs"))
        return behaviour(request) if behaviour else ok(f"part {request.index}")
    return script


async def test_requests_leave_while_a_long_file_is_decoding(prefect_api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts: list[int] = []
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "long", "audio": str(LONG)}])
    with FaultServer(_counting(out, counts)) as server:
        run = await run_transcribe(manifest, out, base_url=server.base_url, concurrency=2,
                                   max_audio_tokens=160, use_cache=False,
                                   context_words=0, qa=False,  # parallel requests; "part N" is no transcript
                                   word_times=False)
    transcript = run.item("long", "transcripts")
    n = transcript["n_chunks"]
    assert run.summary["ok"] == 1 and n >= 10 and len(counts) == n
    assert transcript["text"].count("part") == n  # every chunk's answer, once
    # the first request left while most of the file was still to decode, and the decoder never
    # ran more than a few chunks ahead of the requests (2 in flight + 1 queued + 1 written)
    assert counts[0] <= 4 < n, counts
    assert all(count <= i + 4 for i, count in enumerate(counts)), counts


async def test_a_failing_request_stops_the_rest_of_the_file(prefect_api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts: list[int] = []
    refuse_second = lambda request: error(400, "bad audio") if request.index == 1 else ok("fine")
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "long", "audio": str(LONG)}])
    with FaultServer(_counting(out, counts, refuse_second)) as server:
        run = await run_transcribe(manifest, out, base_url=server.base_url, concurrency=1,
                                   max_audio_tokens=160, use_cache=False, qa=False, word_times=False)
    item = run.item("long")
    assert item["status"] == "failed" and "bad audio" in item["error_message"]
    assert len(counts) == 2  # no request after the refused one; the decoder stopped
    assert chunk_files(out / "_runs") == 0  # and its chunk files are gone


@pytest.mark.parametrize("max_audio_tokens, with_context", [(160, True), (900, False)])
async def test_context_goes_with_short_requests_only(prefect_api, tmp_path: Path, max_audio_tokens: int,
                                                     with_context: bool) -> None:
    # The transcript so far helps a 16 s request and makes a 90 s one drop passages
    # (tasks.audio.prepare.CONTEXT_MAX_REQUEST_S): only short requests carry it.
    from audiobatch.tasks.model.prompts import CONTEXT_LEAD

    manifest = write_manifest(tmp_path / "m.csv", [{"id": "long", "audio": str(LONG)}])
    with FaultServer(lambda request: ok(f"words of part {request.index}")) as server:
        run = await run_transcribe(manifest, tmp_path / "out", base_url=server.base_url, use_cache=False,
                                   max_audio_tokens=max_audio_tokens, qa=False, word_times=False)
        bodies = [r.body.decode() for r in server.requests if r.path.endswith("/chat/completions")]
    assert run.summary["ok"] == 1 and len(bodies) >= 2
    assert CONTEXT_LEAD not in bodies[0]  # nothing came before the first chunk
    assert all((CONTEXT_LEAD in body) == with_context for body in bodies[1:])
