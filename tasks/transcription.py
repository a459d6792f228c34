"""The transcription of one item, as one Prefect task: fetch -> prepare -> call -> assemble -> rows.

Requests of the item go concurrently through the run's shared client and limiter; the task
granularity is the item, never the request (a Prefect task run costs ~50 ms here).
"""
from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timezone
from typing import Any


from audiobatch.tasks.assemble import Segment, build_segments, join_transcripts, render_srt, render_vtt
from audiobatch.tasks.audio import Chunk, PreparedAudio, max_chunk_seconds, prepare_chunks
from audiobatch.tasks.calls import call_model
from audiobatch.tasks.estimate import expected_transcribe_usage
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.manifest import Item
from audiobatch.tasks.outputs import media_relpath
from audiobatch.tasks.runs import ItemOutcome, ItemRecorder, RunContext, item_task, episode_fields, item_row
from audiobatch.tasks.sources import fetch, safe_url


def _language(ctx: RunContext, item: Item) -> str | None:
    language = item.options.get("language") or ctx.options.language
    supported = ctx.profile.languages
    if language and supported and language.split("-")[0].lower() not in supported:
        raise InputError(
            f"{item.item_id}: language {language!r} was asked, but model {ctx.model} transcribes "
            f"only {', '.join(supported)}. Use a multilingual model (e.g. --model gpt-audio-1.5 "
            "with --base-url) or drop the language column for this row.")
    return language


async def _transcribe_chunk(ctx: RunContext, recorder: ItemRecorder, chunk: Chunk, *,
                            prompt: str | None, language: str | None, model: str) -> str:
    if chunk.silent:
        return ""  # nothing to hear: no request, no cost
    audio = chunk.path.read_bytes()
    params = {"kind": "transcribe", "model": model, "prompt": prompt, "language": language,
              "format": "wav"}
    expected = expected_transcribe_usage(chunk.duration_s, ctx.profile, prompt, language)
    reply = await call_model(
        ctx, recorder, chunk_index=chunk.index, payload=audio, params=params, expected=expected,
        send=lambda: ctx.client.transcribe(audio, "wav", prompt=prompt, language=language,
                                           model=model, expected_tokens=expected.total_tokens))
    return reply.text


def _write_media(ctx: RunContext, item: Item, text: str, segments: list[Segment]) -> dict[str, str]:
    paths = {}
    for extension, content in (("txt", text + "\n"), ("srt", render_srt(segments)),
                               ("vtt", render_vtt(segments))):
        relative = media_relpath("transcripts", item.item_id, extension)
        ctx.out.write_bytes(relative, content.encode("utf-8"))
        paths[f"{extension}_path"] = ctx.out.display(relative)
    return paths


async def _prepare(ctx: RunContext, item: Item) -> tuple[PreparedAudio, Any]:
    fetched = await fetch(item.source, ctx.work_dir / "downloads", ctx.fetch_policy,
                          label=item.item_id)
    max_s = max_chunk_seconds(ctx.profile.max_input_audio_tokens, ctx.profile.input_audio_tokens_per_s)
    prepared = await asyncio.to_thread(
        prepare_chunks, fetched.path, ctx.work_dir / "chunks" / item.item_id, max_chunk_s=max_s,
        label=item.item_id, overlap_s=ctx.options.overlap_s)
    return prepared, fetched


@item_task("transcribe-item")
async def transcribe_item(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    language = _language(ctx, item)
    prompt = item.options.get("prompt") or ctx.options.prompt
    model = item.options.get("model") or ctx.model
    prepared, fetched = await _prepare(ctx, item)
    try:
        if prepared.silent:
            raise InputError(f"{item.item_id}: the audio is silent from start to end; there is "
                             "nothing to transcribe. Check the file or the recording's level.")
        texts = list(await asyncio.gather(*(
            _transcribe_chunk(ctx, recorder, chunk, prompt=prompt, language=language, model=model)
            for chunk in prepared.chunks)))
        text = join_transcripts(texts, overlap_s=ctx.options.overlap_s)
        segments = await asyncio.to_thread(build_segments, prepared.chunks, texts,
                                           ctx.options.overlap_s)
        paths = await asyncio.to_thread(_write_media, ctx, item, text, segments)
    finally:
        shutil.rmtree(ctx.work_dir / "chunks" / item.item_id, ignore_errors=True)
        if fetched.downloaded:
            fetched.path.unlink(missing_ok=True)
    return _ok_outcome(ctx, item, recorder, started_at, prepared, text, segments, paths,
                       language, model)


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
