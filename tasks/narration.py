"""The narration of one item, as one Prefect task: text -> chunks -> speech -> one audio file.

Each chunk is asked for as lossless wav (the final format is encoded once, after joining,
loudness and speed), through the run's shared client, limiter, cache and budget.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from audiobatch.tasks import codecs
from audiobatch.tasks.cache import ReplyRecord
from audiobatch.tasks.calls import call_model
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.estimate import expected_narrate_usage
from audiobatch.tasks.loudness import measure_lufs
from audiobatch.tasks.manifest import Item
from audiobatch.tasks.outputs import media_relpath
from audiobatch.tasks.runs import ItemOutcome, ItemRecorder, RunContext, item_task, item_row
from audiobatch.tasks.stitch import MAX_SPEED, MIN_SPEED, finish_narration
from audiobatch.tasks.profiles import ModelProfile
from audiobatch.tasks.text import (count_words, max_words_per_request, speakable_text, split_for_narration,
                                   text_language, writing_script)

NARRATION_RATE = 24000  # what OpenAI and the embedded model return; chunks are decoded to it
MAX_TEXT_CHARS = 500_000  # about 80,000 words or 8 hours of speech per item
_EXTENSIONS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus"}


def item_text(item: Item) -> str:
    """The item's text as it will be spoken (inline or from its file), or a clear InputError."""
    if item.source == "inline":
        raw = item.options.get("text", "")
    else:
        path = Path(item.source)
        if path.stat().st_size > MAX_TEXT_CHARS * 4:
            raise InputError(f"{item.item_id}: {path.name} is {path.stat().st_size:,} bytes; the limit "
                             f"is {MAX_TEXT_CHARS:,} characters per item. Split it into chapters.")
        try:
            raw = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputError(f"{item.item_id}: {path} is not UTF-8 text ({error}). Save it as "
                             "UTF-8 and run again.") from error
    if len(raw) > MAX_TEXT_CHARS:
        raise InputError(f"{item.item_id}: the text has {len(raw):,} characters; the limit is "
                         f"{MAX_TEXT_CHARS:,} per item. Split it into chapters (one row each).")
    text = speakable_text(raw, markdown=bool(item.options.get("markdown")))
    if not text:
        raise InputError(f"{item.item_id}: nothing to read aloud: the text is empty or only "
                         "emoji, symbols or control characters.")
    return text


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
            "title": item.options.get("title") or item.item_id}


async def _narrate_chunk(ctx: RunContext, recorder: ItemRecorder, index: int, text: str,
                         settings: dict) -> ReplyRecord:
    params = {"kind": "narrate", "model": settings["model"], "voice": settings["voice"],
              "format": "wav", "instructions": settings["instructions"]}
    expected = expected_narrate_usage(text, ctx.profile, settings["instructions"])
    return await call_model(
        ctx, recorder, chunk_index=index, payload=text.encode("utf-8"), params=params,
        expected=expected,
        send=lambda: ctx.client.narrate(text, voice=settings["voice"], audio_format="wav",
                                        instructions=settings["instructions"],
                                        model=settings["model"], expected_tokens=expected.total_tokens))


def _decode_part(item: Item, index: int, reply: ReplyRecord) -> np.ndarray:
    if not reply.audio:
        raise InputError(f"{item.item_id}: chunk {index} came back without audio")
    return codecs.decode(reply.audio, NARRATION_RATE, label=f"{item.item_id} chunk {index}")


def _render(item: Item, replies: list[ReplyRecord], settings: dict, target_lufs: float) -> tuple[bytes, float, float]:
    """Join, normalise, stretch and encode: (file bytes, duration_s, loudness LUFS)."""
    parts = [_decode_part(item, i, reply) for i, reply in enumerate(replies)]
    audio = finish_narration(parts, NARRATION_RATE, speed=settings["speed"], target_lufs=target_lufs)
    loudness = measure_lufs(audio, NARRATION_RATE)
    data = codecs.encode(audio, NARRATION_RATE, settings["format"], title=settings["title"])
    return data, len(audio) / NARRATION_RATE, loudness


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


@item_task("narrate-item")
async def narrate_item(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    settings = _settings(ctx, item)
    text = item_text(item)
    profile = ctx.profile
    check_voice_speaks(item, text, profile)
    max_words = max_words_per_request(profile.max_output_audio_tokens,
                                      profile.output_audio_tokens_per_s, profile.words_per_minute)
    chunks = split_for_narration(text, max_words)
    replies = await asyncio.gather(*(_narrate_chunk(ctx, recorder, i, chunk, settings)
                                     for i, chunk in enumerate(chunks)))
    data, duration_s, loudness = await asyncio.to_thread(
        _render, item, list(replies), settings, ctx.options.target_lufs)
    relative = media_relpath("narrations", item.item_id, _EXTENSIONS[settings["format"]])
    await asyncio.to_thread(ctx.out.write_bytes, relative, data)
    narration = {"run_id": ctx.run_id, "item_id": item.item_id, "audio_path": ctx.out.display(relative),
                 "format": settings["format"], "voice": settings["voice"], "speed": settings["speed"],
                 "duration_s": duration_s, "n_chunks": len(chunks), "title": settings["title"],
                 "words": count_words(text), "model": replies[0].model, "loudness_lufs": loudness}
    status = item_row(ctx, item, "ok", started_at=started_at, duration_s=duration_s,
                      n_chunks=len(chunks), costs=recorder.costs)
    return ItemOutcome(status="ok", duration_s=duration_s,
                       rows={"narrations": [narration], "items": [status]})
