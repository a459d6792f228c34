"""The narration of one item, as one Prefect task: text -> chunks -> speech -> one audio file.

Each chunk is asked for as lossless wav (the final format is encoded once, after joining,
loudness and speed), through the run's shared client, limiter, cache and budget. A chunk's
audio goes to the run's work folder as soon as it arrives, so only the requests in flight are
held in memory; an audiobook (`m4b`) is then rendered chapter by chapter into one file
(tasks/narration/audiobook.py), other formats as one piece.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.audio.loudness import measure_lufs
from audiobatch.tasks.audio.stitch import MAX_SPEED, MIN_SPEED, PartClock, finish_narration, speed_up
from audiobatch.tasks.bounded import Budget
from audiobatch.tasks.captions.cues import rules_for
from audiobatch.tasks.captions.files import render_chapters_json, render_srt, render_vtt
from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.errors import InputError, ModelError
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.model.estimate import expected_narrate_usage
from audiobatch.tasks.model.profiles import ModelProfile
from audiobatch.tasks.narration.audiobook import AudiobookWriter
from audiobatch.tasks.narration.captions import align_chunk, caption_segments
from audiobatch.tasks.narration.verify import check, listener_hears
from audiobatch.tasks.outputs.datasets import media_relpath
from audiobatch.tasks.run.cache import ReplyRecord
from audiobatch.tasks.run.calls import call_model
from audiobatch.tasks.run.context import ItemOutcome, ItemRecorder, RunContext, item_task, item_row
from audiobatch.tasks.text.books import item_book
from audiobatch.tasks.text.chapters import Book
from audiobatch.tasks.text.speakable import (count_words, max_words_per_request, split_for_narration,
                                             text_language, writing_script)

NARRATION_RATE = 24000  # what OpenAI and the embedded model return; chunks are decoded to it
AUDIOBOOK = "m4b"
# A retake asks for another reading: temperature 0.8 for the second take, 1.0 for the third...
# (the embedded voice reads temperature/8 slower: 10%, 12.5%..., the same take every time).
RETAKE_TEMPERATURE = 0.8
# A narrated chunk's audio may last at most this long per word and character of its text, plus
# MAX_EXTRA_S: slow reading is ~0.6 s a word, a long number read out ~0.3 s a character.
MAX_S_PER_WORD, MAX_S_PER_CHARACTER, MAX_EXTRA_S = 2.0, 0.1, 10.0
_EXTENSIONS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", AUDIOBOOK: "m4b"}


def _settings(ctx: RunContext, item: Item) -> dict:
    speed = float(item.options.get("speed", ctx.options.speed))
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InputError(f"{item.item_id}: speed {speed:g} is outside {MIN_SPEED}-{MAX_SPEED}.")
    audio_format = item.options.get("format") or ctx.options.audio_format
    if audio_format not in _EXTENSIONS:
        raise InputError(f"{item.item_id}: format {audio_format!r} is not one of "
                         f"{', '.join(_EXTENSIONS)}.")
    return {"voice": item.options.get("voice") or ctx.options.voice, "format": audio_format,
            "speed": speed, "model": item.options.get("model") or ctx.model,
            "instructions": item.options.get("instructions") or ctx.options.instructions,
            "title": item.options.get("title") or item.item_id,
            "captions": rules_for(ctx.options)}


def check_voice_speaks(item: Item, text: str, profile: ModelProfile) -> str:
    """The text's language, or a clear InputError when the model's voice cannot speak it
    (the embedded voice speaks only English; a remote model's profile lists no languages)."""
    language = text_language(text, item.options.get("language"))
    if profile.languages and language not in profile.languages:
        script = {"CJK": "Han", "HIRAGANA": "kana"}.get(writing_script(text), writing_script(text).title())
        raise InputError(
            f"{item.item_id}: the text is {language} ({script} script), but the voice of "
            f"{profile.model} speaks only {', '.join(profile.languages)}. Narrate it with a model "
            "that speaks it (--base-url https://api.openai.com/v1 --model gpt-audio-1.5), or set "
            "the row's `language` column if the language was guessed wrong.")
    return language


@dataclass(frozen=True)
class PlannedChunk:
    index: int  # across the whole item (costs and checks are keyed by it)
    chapter: int
    text: str


def plan_chunks(book: Book, max_words: int) -> list[PlannedChunk]:
    """Chunks never span two chapters: a chapter mark falls between two requests."""
    texts = [(number, text) for number, chapter in enumerate(book.chapters)
             for text in split_for_narration(chapter.text, max_words)]
    return [PlannedChunk(index, number, text) for index, (number, text) in enumerate(texts)]


async def _narrate_chunk(ctx: RunContext, recorder: ItemRecorder, index: int, text: str,
                         settings: dict, take: int = 1) -> ReplyRecord:
    """One take of a chunk; takes after the first ask for another reading (another request,
    priced like any, with its own cache entry and cost rows numbered after the earlier ones)."""
    params = {"kind": "narrate", "model": settings["model"], "voice": settings["voice"],
              "format": "wav", "instructions": settings["instructions"]}
    temperature = None if take == 1 else round(RETAKE_TEMPERATURE + 0.2 * (take - 2), 2)
    if take > 1:
        params.update(take=take, temperature=temperature)
    expected = expected_narrate_usage(text, ctx.profile, settings["instructions"])
    first_attempt = 1 + sum(1 for row in recorder.costs if row["chunk_index"] == index)
    return await call_model(
        ctx, recorder, chunk_index=index, payload=text.encode("utf-8"), params=params,
        expected=expected, first_attempt=first_attempt,
        send=lambda: ctx.client.narrate(text, voice=settings["voice"], audio_format="wav",
                                        instructions=settings["instructions"], temperature=temperature,
                                        model=settings["model"], expected_tokens=expected.total_tokens))


def longest_reading_s(text: str) -> float:
    """The longest any voice could take to say `text` (generous: slow reading, long numbers)."""
    return MAX_S_PER_WORD * count_words(text) + MAX_S_PER_CHARACTER * len(text) + MAX_EXTRA_S


def _decode_part(item: Item, index: int, reply: ReplyRecord, text: str) -> np.ndarray:
    """A narrated chunk's samples. The reply is from the model: it must open as the wav asked
    for, and is decoded only as far as the text could take to say (a few hundred KB of FLAC
    or low-rate wav can hold an hour)."""
    if not reply.audio:
        raise InputError(f"{item.item_id}: chunk {index} came back without audio")
    limit_s = longest_reading_s(text)
    budget = Budget(round(limit_s * NARRATION_RATE), (
        f"{item.item_id}: the model's audio for chunk {index} is longer than {limit_s:.0f} s, more "
        f"than its {count_words(text):,} words take to say: refused (decoding stopped there). "
        "Check the endpoint: it should answer with the text spoken."))
    return codecs.decode(reply.audio, NARRATION_RATE, label=f"{item.item_id} chunk {index} (the model's audio)",
                         budget=budget, declared=reply.audio_format or "wav")


@dataclass
class NarratedChunk:
    chunk: PlannedChunk
    audio_path: Path  # float32 samples at NARRATION_RATE (.npy) in the run's work folder
    model: str
    checks: list[dict] = field(default_factory=list)  # narration_checks rows, one per take
    flag: str | None = None  # what verification could not fix
    words: list[Word] | None = None  # the kept take's words, aligned (chunk time, speed 1)


async def _hear(ctx: RunContext, samples: np.ndarray, speed: float, language: str) -> str:
    """The chunk as the embedded model hears it, at the speed the listener will hear it."""
    def as_delivered() -> bytes:
        return codecs.encode(speed_up(samples, NARRATION_RATE, speed)[0], NARRATION_RATE, "wav")

    reply = await ctx.verifier.transcribe(await asyncio.to_thread(as_delivered), "wav", language=language)
    return reply.text or ""


async def _chunk_audio(ctx: RunContext, recorder: ItemRecorder, chunk: PlannedChunk, settings: dict,
                       folder: Path, language: str) -> NarratedChunk:
    """One chunk narrated (and heard back, retaken while misheard), its best take's audio
    decoded and parked on disk (not held in memory)."""
    item = recorder.item
    verifying = ctx.verifier is not None and listener_hears(language)
    takes = max(1, ctx.options.verify_attempts) if verifying else 1
    result = NarratedChunk(chunk, folder / f"{chunk.index:05d}.npy", "")
    best: tuple[int, np.ndarray] | None = None  # (word errors, samples) of the best take so far
    for take in range(1, takes + 1):
        reply = await _narrate_chunk(ctx, recorder, chunk.index, chunk.text, settings, take)
        samples = await asyncio.to_thread(_decode_part, item, chunk.index, reply, chunk.text)
        try:
            heard = await _hear(ctx, samples, settings["speed"], language) if verifying else None
        except ModelError as error:  # the listener failed, not the narration: keep it, say so
            result.flag, heard = f"chunk {chunk.index}: not verified ({error})", None
        if heard is None:
            best, result.model = (0, samples), reply.model
            break
        verdict = check(chunk.text, heard, language)
        result.checks.append({"run_id": ctx.run_id, "item_id": item.item_id, "chunk_index": chunk.index,
                              "attempt": take, "wer": verdict.wer, "passed": verdict.passed,
                              "heard": heard})
        if best is None or verdict.errors < best[0]:
            best, result.model = (verdict.errors, samples), reply.model
        if verdict.passed:
            break
    else:
        kept = min(result.checks, key=lambda row: row["wer"])
        result.flag = (f"chunk {chunk.index}: still misheard after {takes} takes (best: "
                       f"{kept['wer']:.0%} word errors, take {kept['attempt']} kept)")
    assert best is not None
    await asyncio.to_thread(np.save, result.audio_path, best[1])
    if ctx.aligner is not None and listener_hears(language):  # captions, beside synthesis
        result.words = await align_chunk(ctx.aligner, best[1], NARRATION_RATE, chunk.text, language)
    return result


def _load(parts: list[NarratedChunk]) -> list[np.ndarray]:
    return [np.load(part.audio_path) for part in parts]


@dataclass
class Rendered:
    duration_s: float
    loudness_lufs: float
    captions: list[Segment]
    data: bytes = b""  # the encoded file (not for audiobooks, which are written to disk)
    chapter_starts: list[float] = field(default_factory=list)  # audiobooks: each chapter's start


def _finish(parts: list[NarratedChunk], settings: dict, target_lufs: float,
            offset_s: float = 0.0) -> tuple[np.ndarray, list[Segment]]:
    """Joined, levelled, stretched audio and its captions (offset: a chapter's start)."""
    placements: list[PartClock | None] = []
    audio = finish_narration(_load(parts), NARRATION_RATE, speed=settings["speed"],
                             target_lufs=target_lufs, placements=placements)
    pieces = [(part.chunk.index, part.chunk.text, part.words, at) for part, at in zip(parts, placements)]
    return audio, caption_segments(pieces, offset_s, settings["captions"],
                                   end_s=offset_s + len(audio) / NARRATION_RATE)


def _render(parts: list[NarratedChunk], settings: dict, target_lufs: float) -> Rendered:
    """Join, normalise, stretch and encode."""
    audio, captions = _finish(parts, settings, target_lufs)
    data = codecs.encode(audio, NARRATION_RATE, settings["format"], title=settings["title"])
    return Rendered(len(audio) / NARRATION_RATE, measure_lufs(audio, NARRATION_RATE), captions, data)


def _render_audiobook(parts: list[NarratedChunk], book: Book, settings: dict, target_lufs: float,
                      item: Item, path: Path) -> Rendered:
    """Each chapter stitched, levelled and stretched on its own, then appended to the m4b
    (loudness: the chapters' mean). Memory: one chapter's audio."""
    loudness: list[float] = []
    captions: list[Segment] = []
    starts: list[float] = []
    with AudiobookWriter(path, NARRATION_RATE, title=settings["title"],
                         author=item.metadata.get("author") or book.author,
                         cover=book.cover, cover_type=book.cover_type) as writer:
        for number, chapter in enumerate(book.chapters):
            own = [part for part in parts if part.chunk.chapter == number]
            starts.append(writer.samples_written / NARRATION_RATE)
            audio, chapter_captions = _finish(own, settings, target_lufs, starts[-1])
            captions += chapter_captions
            loudness.append(measure_lufs(audio, NARRATION_RATE))
            writer.add_chapter(chapter.title, audio)
        duration_s = writer.samples_written / NARRATION_RATE
    return Rendered(duration_s, float(np.mean(loudness)), captions, chapter_starts=starts)


@item_task("narrate-item")
async def narrate_item(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    settings = _settings(ctx, item)
    audiobook = settings["format"] == AUDIOBOOK
    book = item_book(item, ctx.fetch_policy, audiobook=audiobook)
    if audiobook and book.title and not item.options.get("title"):
        settings["title"] = book.title
    text = "\n\n".join(chapter.text for chapter in book.chapters)
    profile = ctx.profile
    language = check_voice_speaks(item, text, profile)
    max_words = max_words_per_request(profile.max_output_audio_tokens,
                                      profile.output_audio_tokens_per_s, profile.words_per_minute)
    chunks = plan_chunks(book, max_words)
    folder = ctx.work_dir / "narration" / item.item_id
    folder.mkdir(parents=True, exist_ok=True)
    parts = list(await asyncio.gather(*(_chunk_audio(ctx, recorder, chunk, settings, folder, language)
                                        for chunk in chunks)))
    relative = media_relpath("narrations", ctx.run_id, item.item_id, _EXTENSIONS[settings["format"]])
    if audiobook:
        local = folder / f"book.{AUDIOBOOK}"
        rendered = await asyncio.to_thread(
            _render_audiobook, parts, book, settings, ctx.options.target_lufs, item, local)
        size = local.stat().st_size
        await asyncio.to_thread(ctx.out.put_file, local, relative)
    else:
        rendered = await asyncio.to_thread(_render, parts, settings, ctx.options.target_lufs)
        size = len(rendered.data)
        await asyncio.to_thread(ctx.out.write_bytes, relative, rendered.data)
    duration_s, loudness = rendered.duration_s, rendered.loudness_lufs
    texts = {"txt": text + "\n"}  # what is said, word for word; captions when it was aligned
    if rendered.captions:
        texts.update(srt=render_srt(rendered.captions), vtt=render_vtt(rendered.captions))
    if len(book.chapters) > 1:  # an audiobook's chapters, for players that read a feed's links
        ends = [*rendered.chapter_starts[1:], duration_s]
        texts["chapters.json"] = render_chapters_json(
            list(zip(rendered.chapter_starts, ends, (chapter.title for chapter in book.chapters))))
    paths = {}
    for extension, content in texts.items():
        text_relative = media_relpath("narrations", ctx.run_id, item.item_id, extension)
        await asyncio.to_thread(ctx.out.write_bytes, text_relative, content.encode("utf-8"))
        paths[f"{extension.split('.')[0]}_path"] = ctx.out.display(text_relative)
    narration = {"run_id": ctx.run_id, "item_id": item.item_id, "audio_path": ctx.out.display(relative),
                 "format": settings["format"], "voice": settings["voice"], "speed": settings["speed"],
                 "duration_s": duration_s, "n_chunks": len(chunks), "title": settings["title"],
                 "words": count_words(text), "model": parts[0].model, "loudness_lufs": loudness,
                 "chapters": len(book.chapters), "audio_bytes": size,
                 "srt_path": None, "vtt_path": None, "chapters_path": None, **paths,
                 "qa_flags": _flags(parts, ctx, language)}
    status = item_row(ctx, item, "ok", started_at=started_at, duration_s=duration_s,
                      n_chunks=len(chunks), costs=recorder.costs)
    return ItemOutcome(status="ok", duration_s=duration_s,
                       rows={"narrations": [narration], "items": [status],
                             "narration_checks": [row for part in parts for row in part.checks]})


def _flags(parts: list[NarratedChunk], ctx: RunContext, language: str) -> list[str]:
    flags = [part.flag for part in parts if part.flag]
    if ctx.verifier is not None and not listener_hears(language):
        flags.append(f"not verified: the embedded model does not hear {language}")
    if ctx.aligner is not None and not listener_hears(language):
        flags.append(f"no captions: the embedded model does not align {language}")
    return flags
