"""The transcription of one item, as one Prefect task: fetch -> prepare -> call -> assemble ->
(chapters, with --chapters: tasks/extract) -> rows.

Chunks stream from the decoder to the requests: `tasks.audio.prepare.stream_chunks` hands each chunk
over as soon as it is written (decoding runs in a thread, at most one chunk ahead), a chunk is
taken only when one of the limiter's request slots is free, and its audio is read and encoded
only once the limiter lets its request go (`_transcribe_chunk`). So the first request leaves
while a long file is still decoding, and memory holds a few chunks whatever the file's length.
Requests of the item go concurrently through the run's shared client and limiter; the task
granularity is the item, never the request (a Prefect task run costs ~50 ms here).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

from audiobatch.tasks.audio.economy import economy_for
from audiobatch.tasks.audio.prepare import (ON_LOOP_MAX_AUDIO_S, Chunk, PreparedAudio, context_words_for,
                                            max_chunk_seconds, remove_chunk_files, stream_chunks)
from audiobatch.tasks.audio.streaming import HandedOver
from audiobatch.tasks.captions.cues import rules_for
from audiobatch.tasks.captions.files import render_json, render_srt, render_vtt
from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.captions.words import align_item
from audiobatch.tasks.errors import ConfigError, InputError
from audiobatch.tasks.extract.extract import item_notes
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.inputs.sources import fetch, safe_url
from audiobatch.tasks.inputs.vocabulary import merged
from audiobatch.tasks.model.estimate import expected_transcribe_usage
from audiobatch.tasks.model.profiles import LOCAL_MULTILINGUAL_MODEL
from audiobatch.tasks.model.prompts import REASK_TEMPERATURE
from audiobatch.tasks.outputs.datasets import media_relpath
from audiobatch.tasks.run.cache import ReplyRecord
from audiobatch.tasks.run.calls import attempts_before, call_model
from audiobatch.tasks.run.context import (ItemOutcome, ItemRecorder, RunContext, item_task, episode_fields,
                                          item_row)
from audiobatch.tasks.speakers.turns import Labelled, item_turns, label_speakers
from audiobatch.tasks.transcription.assemble import build_segments, join_transcripts, kept_word_ranges
from audiobatch.tasks.transcription.agreement import ChunkText, checked_chunk_text
from audiobatch.tasks.transcription.bounds import overlong
from audiobatch.tasks.transcription.vocabulary import check_terms

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json")
MULTILINGUAL_INSTALL = "pip install 'audiobatch[multilingual]'"


@dataclass(frozen=True)
class Ask:
    """What every request of one item asks for, besides its chunk's audio."""

    model: str
    prompt: str | None
    language: str | None
    vocabulary: tuple[str, ...] = ()  # names and terms to spell right (checked input)


def _language(ctx: RunContext, item: Item) -> str | None:
    language = item.options.get("language") or ctx.options.language
    supported = ctx.profile.languages
    if language and supported and language.split("-")[0].lower() not in supported:
        raise InputError(
            f"{item.item_id}: language {language!r} was asked, but model {ctx.model} transcribes "
            f"only {', '.join(supported)}. Use a multilingual model: the embedded "
            f"--model {LOCAL_MULTILINGUAL_MODEL} (install: {MULTILINGUAL_INSTALL}), or a remote "
            "one (e.g. --model gpt-audio-1.5 with --base-url); or drop the language column for this row.")
    return language


def _words_on_recording_timeline(rows: list[dict], prepared: PreparedAudio) -> list[dict]:
    """`words` rows' times in the sent audio -> times in the recording."""
    if prepared.timeline is None:
        return rows
    return [{**r, "start_s": round(prepared.to_original(r["start_s"]), 3),
             "end_s": round(prepared.to_original(r["end_s"]), 3)} for r in rows]


async def _request(ctx: RunContext, recorder: ItemRecorder, chunk: Chunk, ask: Ask,
                   context: str | None, reask: str | None = None) -> ReplyRecord:
    """One request for the chunk: from the cache, or built from the chunk file when its turn
    comes. A re-ask (`reask`: why) is stricter and counted after the first attempts."""
    strict = reask is not None
    params = {"kind": "transcribe", "model": ask.model, "prompt": ask.prompt,
              "language": ask.language, "format": "wav", "context": context, "strict": strict}
    if strict:
        params["temperature"] = REASK_TEMPERATURE
    if ask.vocabulary:  # only then: answers cached without one keep their keys
        params["vocabulary"] = list(ask.vocabulary)
    expected = expected_transcribe_usage(chunk.duration_s, ctx.profile, ask.prompt, ask.language,
                                         context_words=len(context.split()) if context else 0,
                                         vocabulary=ask.vocabulary)
    return await call_model(
        ctx, recorder, chunk_index=chunk.index, payload=chunk.path, params=params, expected=expected,
        audio_s=(chunk.recorded_s, chunk.duration_s),
        reask_reason=reask, first_attempt=attempts_before(recorder, chunk.index) + 1,
        send=lambda: ctx.client.transcribe(chunk.path, "wav", prompt=ask.prompt,
                                           language=ask.language, model=ask.model,
                                           expected_tokens=expected.total_tokens,
                                           context=context, strict=strict,
                                           vocabulary=ask.vocabulary))


async def _transcribe_chunk(ctx: RunContext, recorder: ItemRecorder, chunk: Chunk, ask: Ask,
                            context: str | None = None) -> ChunkText:
    """One chunk's transcript: asked, checked against its text and its audio
    (tasks/transcription/agreement.py), re-asked once if the check fails and a re-ask can change
    the answer; what still fails is kept with its flags."""
    if chunk.silent:
        return ChunkText("")  # nothing to hear: no request, no cost
    reply = await _request(ctx, recorder, chunk, ask, context)
    if not ctx.options.qa:
        if overlong(reply.text, chunk.recorded_s):  # never kept, whatever QA is set to
            return ChunkText("", ("overlong",), reply.language, reply.language_probability)
        return ChunkText(reply.text, (), reply.language, reply.language_probability)
    return await checked_chunk_text(
        ctx, chunk, reply, ask.model, ask.language, context,
        ask_again=lambda reason: _request(ctx, recorder, chunk, ask, context, reask=reason))


async def _transcribe_stream(ctx: RunContext, recorder: ItemRecorder,
                             chunks: HandedOver[Chunk, PreparedAudio], ask: Ask,
                             max_request_s: float) -> list[ChunkText]:
    """Each chunk's transcript as the decoder hands the chunks over. With context (short
    requests: `context_words_for`), a chunk is sent with the tail of the transcript before it,
    so one item's chunks go one after another while the next is decoded (items still run
    concurrently); without, as soon as a request slot is free."""
    words = context_words_for(ctx.options.context_words, max_request_s, ctx.options.overlap_s)
    if words:
        results: list[ChunkText] = []
        while (chunk := await chunks.next_item()) is not None:
            context = " ".join(" ".join(r.text for r in results).split()[-words:]) or None
            results.append(await _transcribe_chunk(ctx, recorder, chunk, ask, context))
        return results
    return await _transcribe_parallel(ctx, recorder, chunks, ask)


async def _transcribe_parallel(ctx: RunContext, recorder: ItemRecorder,
                               chunks: HandedOver[Chunk, PreparedAudio], ask: Ask) -> list[ChunkText]:
    """Each chunk requested as soon as the decoder hands it over and a request slot is free;
    the first failure stops the decoder and the item's other requests."""
    slots = asyncio.Semaphore(ctx.client.limiter.concurrency)
    texts: dict[int, ChunkText] = {}

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


def output_formats(choice: str) -> list[str]:
    """The transcript files to write: "all", or a comma list of OUTPUT_FORMATS."""
    chosen = [f.strip().lower() for f in choice.split(",") if f.strip()]
    if chosen == ["all"]:
        return list(OUTPUT_FORMATS)
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown or not chosen:
        raise ConfigError(f"--output-format {choice!r}: choose all, or a comma list of "
                          f"{', '.join(OUTPUT_FORMATS)}")
    return chosen


def _write_media(ctx: RunContext, item: Item, text: str, segments: list[Segment],
                 language: str | None) -> dict[str, str]:
    render = {"txt": lambda: text + "\n", "srt": lambda: render_srt(segments),
              "vtt": lambda: render_vtt(segments), "json": lambda: render_json(text, language, segments)}
    paths = {}
    for extension in output_formats(ctx.options.output_format):
        relative = media_relpath("transcripts", ctx.run_id, item.item_id, extension)
        ctx.out.write_bytes(relative, render[extension]().encode("utf-8"),
                           durable=False)  # made again by a resumed run
        paths[f"{extension}_path"] = ctx.out.display(relative)
    return paths


T = TypeVar("T")
# A file this small (~30 s of 16 kHz wav, a minute of mp3) is prepared, and its transcript
# files written, on the event loop (when it holds at most ON_LOOP_MAX_AUDIO_S of audio): with
# thousands of one-second clips, handing each to a thread and back cost more than the work
# (GIL hand-overs between 6 pool threads and the loop).
SMALL_FILE_BYTES = 1 << 20


async def _off_the_loop_unless(small: bool, function: Callable[..., T], *args: Any) -> T:
    return function(*args) if small else await asyncio.to_thread(function, *args)


@item_task("transcribe-item")
async def transcribe_item(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    ask = Ask(model=item.options.get("model") or ctx.model,
              prompt=item.options.get("prompt") or ctx.options.prompt, language=_language(ctx, item),
              vocabulary=merged(ctx.options.vocabulary, item.options.get("vocabulary", ()),
                                item.item_id))
    fetched = await fetch(item.source, ctx.work_dir / "downloads", ctx.fetch_policy,
                          label=item.item_id)
    max_s = max_chunk_seconds(ctx.profile.max_input_audio_tokens, ctx.profile.input_audio_tokens_per_s)
    work = ctx.work_dir / "chunks"  # shared by the run's items: no folder made and removed per item
    small = fetched.path.stat().st_size <= SMALL_FILE_BYTES
    try:
        async with stream_chunks(fetched.path, work, max_chunk_s=max_s, label=item.item_id,
                                 overlap_s=ctx.options.overlap_s, in_thread=not small,
                                 economy=economy_for(ctx.options.economy, ctx.options.economy_speed,
                                                     item.options.get("economy"))) as chunks:
            results = await _transcribe_stream(ctx, recorder, chunks, ask, max_s)
        results, fixes = _spelled(results, ask.vocabulary)
        prepared = chunks.result
        small = small and prepared.duration_s <= ON_LOOP_MAX_AUDIO_S  # else it went to a thread too
        if prepared.silent:
            raise InputError(f"{item.item_id}: the audio is silent from start to end; there is "
                             "nothing to transcribe. Check the file or the recording's level.")
        texts = [r.text for r in results]
        heard = detected_language(prepared.chunks, results, ask.language)
        text = join_transcripts(texts, overlap_s=ctx.options.overlap_s)
        aligned, words = await align_item(ctx.aligner if ctx.options.word_times else None,
                                          ctx.run_id, item.item_id, prepared.chunks, texts,
                                          heard[0], kept_word_ranges(texts, ctx.options.overlap_s),
                                          known=[r.words for r in results])
        words = _words_on_recording_timeline(words, prepared)
        if speakers := _speakers_setting(ctx, item):  # who spoke when: the whole recording, once
            labelled = label_speakers(ctx, item.item_id, await item_turns(
                ctx, fetched.path, speakers, item.item_id), words)
            words = labelled.words
        segments = await _off_the_loop_unless(
            small, build_segments, prepared.chunks, texts, ctx.options.overlap_s, aligned,
            rules_for(ctx.options), prepared.to_original if prepared.timeline else None,
            prepared.duration_s, labelled.speakers.at if speakers else None)
        paths = await _off_the_loop_unless(small, _write_media, ctx, item, text, segments, heard[0])
    finally:
        remove_chunk_files(work, item.item_id)
        if fetched.downloaded:
            fetched.path.unlink(missing_ok=True)
    notes = await item_notes(ctx, recorder, item, segments, prepared.duration_s, heard[0])
    outcome = _ok_outcome(ctx, item, recorder, started_at, prepared, text, segments, paths,
                          heard, ask.model, results)
    outcome.rows.update(words=words, **notes)
    outcome.rows["transcripts"][0]["vocabulary_fixes"] = fixes
    if speakers:
        _add_speakers(outcome, labelled)
    return outcome


def _spelled(results: list[ChunkText], terms: tuple[str, ...]) -> tuple[list[ChunkText], list[str]]:
    """Each chunk's text with the vocabulary's near misses corrected where safe (the rest
    flagged: tasks/transcription/vocabulary.py), and the corrections made, per chunk."""
    if not terms:
        return results, []
    spelled, fixes = [], []
    for index, result in enumerate(results):
        checked = check_terms(result.text, terms)
        words = result.words if checked.text == result.text else None  # QA's words: realigned
        spelled.append(replace(result, text=checked.text, flags=(*result.flags, *checked.notices),
                               words=words))
        fixes += [f"chunk {index}: {fix}" for fix in checked.fixes]
    return spelled, fixes


def _speakers_setting(ctx: RunContext, item: Item) -> str | None:
    """"auto", a number of speakers, or None (no labels): the row's `speakers`, else the run's."""
    return item.options.get("speakers") or ctx.options.speakers


def _add_speakers(outcome: ItemOutcome, labelled: Labelled) -> None:
    outcome.rows["speakers"] = labelled.rows
    outcome.rows["transcripts"][0]["rttm_path"] = labelled.rttm_path


def qa_flags(results: list[ChunkText]) -> list[str]:
    """`transcripts.qa_flags`: what QA could not fix, per chunk ("chunk 3: loop")."""
    return [f"chunk {i}: {flag}" for i, r in enumerate(results) for flag in r.flags]


def detected_language(chunks: list[Chunk], results: list[ChunkText],
                      asked: str | None) -> tuple[str | None, float | None]:
    """The item's language and how sure the model was: the one asked (probability None: it
    was told, not detected), else the one the model heard in most of the audio, with its mean
    probability over those chunks; (None, None) when the model says nothing about it."""
    if asked:
        return asked, None
    seconds: dict[str, float] = {}
    probabilities: dict[str, list[float]] = {}
    for chunk, result in zip(chunks, results):
        if result.language:
            seconds[result.language] = seconds.get(result.language, 0.0) + chunk.duration_s
            if result.language_probability is not None:
                probabilities.setdefault(result.language, []).append(result.language_probability)
    if not seconds:
        return None, None
    heard = max(seconds, key=seconds.__getitem__)
    found = probabilities.get(heard)
    return heard, round(sum(found) / len(found), 4) if found else None


def _ok_outcome(ctx: RunContext, item: Item, recorder: ItemRecorder, started_at: datetime,
                prepared: PreparedAudio, text: str, segments: list[Segment],
                paths: dict[str, str], language: tuple[str | None, float | None], model: str,
                results: list[ChunkText]) -> ItemOutcome:
    transcript = {"run_id": ctx.run_id, "item_id": item.item_id, "source": safe_url(item.source),
                  "duration_s": prepared.duration_s, "text": text, "language": language[0],
                  "language_probability": language[1], "qa_flags": qa_flags(results),
                  "model": model, "n_chunks": len(prepared.chunks), "origin": "model",
                  **paths, **episode_fields(item)}
    segment_rows = [{"run_id": ctx.run_id, "item_id": item.item_id, "chunk_index": s.chunk_index,
                     "segment_index": i, "start_s": s.start_s, "end_s": s.end_s, "text": s.text,
                     "qa_flags": list(results[s.chunk_index].flags), "speaker": s.speaker}
                    for i, s in enumerate(segments)]
    status = item_row(ctx, item, "ok", started_at=started_at, duration_s=prepared.duration_s,
                      n_chunks=len(prepared.chunks), costs=recorder.costs)
    status.update(skipped_audio_s=prepared.decoding.skipped_s,  # damage decoded through
                  skipped_bytes=prepared.decoding.skipped_bytes,
                  repaired_samples=prepared.decoding.repaired_samples)
    return ItemOutcome(status="ok", duration_s=prepared.duration_s,
                       rows={"transcripts": [transcript], "segments": segment_rows, "items": [status]})
