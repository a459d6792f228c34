"""The transcription of one item, as one Prefect task: fetch -> prepare -> call -> assemble -> rows.

Chunks stream from the decoder to the requests: `tasks.audio.stream_chunks` hands each chunk
over as soon as it is written (decoding runs in a thread, at most one chunk ahead), a chunk is
taken only when one of the limiter's request slots is free, and its audio is read and encoded
only once the limiter lets its request go (`_transcribe_chunk`). So the first request leaves
while a long file is still decoding, and memory holds a few chunks whatever the file's length.
Requests of the item go concurrently through the run's shared client and limiter; the task
granularity is the item, never the request (a Prefect task run costs ~50 ms here).
"""
from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from audiobatch.tasks.assemble import Segment, build_segments, join_transcripts, render_srt, render_vtt
from audiobatch.tasks.audio import Chunk, PreparedAudio, max_chunk_seconds, stream_chunks
from audiobatch.tasks.calls import call_model
from audiobatch.tasks.economy import economy_for
from audiobatch.tasks.estimate import expected_transcribe_usage
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.manifest import Item
from audiobatch.tasks.outputs import media_relpath
from audiobatch.tasks.runs import ItemOutcome, ItemRecorder, RunContext, item_task, episode_fields, item_row
from audiobatch.tasks.sources import fetch, safe_url
from audiobatch.tasks.streaming import Handoff


@dataclass(frozen=True)
class Ask:
    """What every request of one item asks for, besides its chunk's audio."""

    model: str
    prompt: str | None
    language: str | None


def _language(ctx: RunContext, item: Item) -> str | None:
    language = item.options.get("language") or ctx.options.language
    supported = ctx.profile.languages
    if language and supported and language.split("-")[0].lower() not in supported:
        raise InputError(
            f"{item.item_id}: language {language!r} was asked, but model {ctx.model} transcribes "
            f"only {', '.join(supported)}. Use a multilingual model (e.g. --model gpt-audio-1.5 "
            "with --base-url) or drop the language column for this row.")
    return language


def _on_recording_timeline(segments: list[Segment], prepared: PreparedAudio) -> list[Segment]:
    """Segment times in the sent audio -> times in the recording (economy left pauses out)."""
    if prepared.timeline is None:
        return segments
    return [replace(s, start_s=round(prepared.to_original(s.start_s), 3),
                    end_s=round(prepared.to_original(s.end_s), 3)) for s in segments]


async def _transcribe_chunk(ctx: RunContext, recorder: ItemRecorder, chunk: Chunk, ask: Ask) -> str:
    """One chunk's request: from the cache, or built from the chunk file when its turn comes."""
    if chunk.silent:
        return ""  # nothing to hear: no request, no cost
    params = {"kind": "transcribe", "model": ask.model, "prompt": ask.prompt,
              "language": ask.language, "format": "wav"}
    expected = expected_transcribe_usage(chunk.duration_s, ctx.profile, ask.prompt, ask.language)
    reply = await call_model(
        ctx, recorder, chunk_index=chunk.index, payload=chunk.path, params=params, expected=expected,
        audio_s=(chunk.recorded_s, chunk.duration_s),
        send=lambda: ctx.client.transcribe(chunk.path.read_bytes, "wav", prompt=ask.prompt,
                                           language=ask.language, model=ask.model,
                                           expected_tokens=expected.total_tokens))
    return reply.text


async def _transcribe_stream(ctx: RunContext, recorder: ItemRecorder,
                             chunks: Handoff[Chunk, PreparedAudio], ask: Ask) -> list[str]:
    """Each chunk's transcript, requested as soon as the decoder hands the chunk over and a
    request slot is free; the first failure stops the decoder and the item's other requests."""
    slots = asyncio.Semaphore(ctx.client.limiter.concurrency)
    texts: dict[int, str] = {}

    async def answer(chunk: Chunk) -> None:
        try:
            texts[chunk.index] = await _transcribe_chunk(ctx, recorder, chunk, ask)
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as requests:
            while True:
                await slots.acquire()
                chunk = await chunks.next_item()
                if chunk is None:
                    break
                requests.create_task(answer(chunk))
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    return [texts[index] for index in range(len(texts))]


def _first_error(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _write_media(ctx: RunContext, item: Item, text: str, segments: list[Segment]) -> dict[str, str]:
    paths = {}
    for extension, content in (("txt", text + "\n"), ("srt", render_srt(segments)),
                               ("vtt", render_vtt(segments))):
        relative = media_relpath("transcripts", ctx.run_id, item.item_id, extension)
        ctx.out.write_bytes(relative, content.encode("utf-8"))
        paths[f"{extension}_path"] = ctx.out.display(relative)
    return paths


@item_task("transcribe-item")
async def transcribe_item(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    ask = Ask(model=item.options.get("model") or ctx.model,
              prompt=item.options.get("prompt") or ctx.options.prompt, language=_language(ctx, item))
    fetched = await fetch(item.source, ctx.work_dir / "downloads", ctx.fetch_policy,
                          label=item.item_id)
    max_s = max_chunk_seconds(ctx.profile.max_input_audio_tokens, ctx.profile.input_audio_tokens_per_s)
    work = ctx.work_dir / "chunks" / item.item_id
    try:
        async with stream_chunks(fetched.path, work, max_chunk_s=max_s, label=item.item_id,
                                 overlap_s=ctx.options.overlap_s,
                                 economy=economy_for(ctx.options.economy, ctx.options.economy_speed,
                                                     item.options.get("economy"))) as chunks:
            texts = await _transcribe_stream(ctx, recorder, chunks, ask)
        prepared = chunks.result
        if prepared.silent:
            raise InputError(f"{item.item_id}: the audio is silent from start to end; there is "
                             "nothing to transcribe. Check the file or the recording's level.")
        text = join_transcripts(texts, overlap_s=ctx.options.overlap_s)
        segments = _on_recording_timeline(await asyncio.to_thread(
            build_segments, prepared.chunks, texts, ctx.options.overlap_s), prepared)
        paths = await asyncio.to_thread(_write_media, ctx, item, text, segments)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if fetched.downloaded:
            fetched.path.unlink(missing_ok=True)
    return _ok_outcome(ctx, item, recorder, started_at, prepared, text, segments, paths,
                       ask.language, ask.model)


def _ok_outcome(ctx: RunContext, item: Item, recorder: ItemRecorder, started_at: datetime,
                prepared: PreparedAudio, text: str, segments: list[Segment],
                paths: dict[str, str], language: str | None, model: str) -> ItemOutcome:
    transcript = {"run_id": ctx.run_id, "item_id": item.item_id, "source": safe_url(item.source),
                  "duration_s": prepared.duration_s, "text": text, "language": language,
                  "model": model, "n_chunks": len(prepared.chunks), "origin": "model",
                  **paths, **episode_fields(item)}
    segment_rows = [{"run_id": ctx.run_id, "item_id": item.item_id, "chunk_index": s.chunk_index,
                     "segment_index": i, "start_s": s.start_s, "end_s": s.end_s, "text": s.text}
                    for i, s in enumerate(segments)]
    status = item_row(ctx, item, "ok", started_at=started_at, duration_s=prepared.duration_s,
                      n_chunks=len(prepared.chunks), costs=recorder.costs)
    status.update(skipped_audio_s=prepared.decoding.skipped_s,  # damage decoded through
                  skipped_bytes=prepared.decoding.skipped_bytes,
                  repaired_samples=prepared.decoding.repaired_samples)
    return ItemOutcome(status="ok", duration_s=prepared.duration_s,
                       rows={"transcripts": [transcript], "segments": segment_rows, "items": [status]})
