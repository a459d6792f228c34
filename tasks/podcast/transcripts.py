"""Transcripts that a podcast feed ships (`<podcast:transcript>`): recorded instead of paid for.

An episode offering one is not sent to the model (unless `--force`): its transcript is fetched
(WebVTT, SRT, Podcasting 2.0 JSON, HTML or plain text), turned into text and timed segments,
written like a model's transcript (.txt, and .srt/.vtt when it has timings) and recorded with
`origin = "feed"` in `transcripts`; the item's status is `ok` at $0. A transcript that cannot be
read fails the item (tried again next run); `--force` transcribes the audio instead.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from datetime import datetime, timezone

from audiobatch.tasks.captions.files import render_srt, render_vtt
from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.extract.extract import item_notes
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.inputs.sources import fetch, safe_url
from audiobatch.tasks.outputs.datasets import media_relpath
from audiobatch.tasks.run.context import (ItemOutcome, ItemRecorder, RunContext, episode_fields, item_row,
                                          item_task)

TRANSCRIPT_CONTENT_TYPES = frozenset({"text/*", "application/json", "application/srt",
                                      "application/x-subrip", "application/octet-stream",
                                      "binary/octet-stream"})
MAX_TRANSCRIPT_BYTES = 32 * 1024 * 1024
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:[.,](\d{1,3}))?"
_CUE_TIMING = re.compile(rf"{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str | None) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + float(f"0.{fraction or 0}")


def parse_cues(text: str) -> list[Segment]:
    """SRT or WebVTT cues -> segments (cue settings, numbers, voice tags and notes dropped)."""
    segments = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.strip().split("\n")
        for index, line in enumerate(lines):
            if timing := _CUE_TIMING.search(line):
                words = " ".join(_plain(part) for part in lines[index + 1:]).strip()
                if words:
                    g = timing.groups()
                    segments.append(Segment(0, _seconds(*g[:4]), _seconds(*g[4:]), words))
                break
    return segments


def parse_json_transcript(text: str) -> list[Segment]:
    """Podcasting 2.0 JSON: {"segments": [{"startTime", "endTime", "body", "speaker"}]}."""
    data = json.loads(text)
    segments = data.get("segments", []) if isinstance(data, dict) else []
    return [Segment(0, float(s.get("startTime") or 0.0), float(s.get("endTime") or 0.0),
                    _plain(str(s["body"]))) for s in segments if str(s.get("body", "")).strip()]


def _plain(markup: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", markup)).split())


def _html_text(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    return _plain(re.sub(r"(?i)<br\s*/?>|</p\s*>", "\n", text))


def transcript_from(body: bytes, mime: str, url: str) -> tuple[str, list[Segment]]:
    """(plain text, timed segments or []) of a shipped transcript, by type or by extension."""
    text = body.decode("utf-8-sig", errors="replace")
    path = url.split("?", 1)[0].lower()
    if "vtt" in mime or "srt" in mime or "subrip" in mime or path.endswith((".vtt", ".srt")):
        segments = parse_cues(text)
    elif "json" in mime or path.endswith(".json"):
        segments = parse_json_transcript(text)
    elif "html" in mime or path.endswith((".html", ".htm")):
        return _html_text(text), []
    else:
        return " ".join(text.split()), []
    return " ".join(s.text for s in segments), segments


async def _download(ctx: RunContext, item: Item, url: str) -> tuple[bytes, str | None]:
    policy = replace(ctx.fetch_policy, allowed_content_types=TRANSCRIPT_CONTENT_TYPES,
                     max_bytes=min(ctx.fetch_policy.max_bytes, MAX_TRANSCRIPT_BYTES))
    try:
        fetched = await fetch(url, ctx.work_dir / "feed-transcripts", policy, label=item.item_id)
    except InputError as error:
        raise InputError(f"{error} This is the transcript the feed ships for the episode; it is "
                         "tried again next run, or pass --force to transcribe the audio.") from None
    try:
        return fetched.path.read_bytes(), fetched.content_type
    finally:
        if fetched.downloaded:
            fetched.path.unlink(missing_ok=True)


def _write_media(ctx: RunContext, item: Item, text: str, segments: list[Segment]) -> dict[str, str]:
    files = {"txt": text + "\n"}
    if segments:
        files.update(srt=render_srt(segments), vtt=render_vtt(segments))
    paths = {}
    for extension, content in files.items():
        relative = media_relpath("transcripts", ctx.run_id, item.item_id, extension)
        ctx.out.write_bytes(relative, content.encode("utf-8"))
        paths[f"{extension}_path"] = ctx.out.display(relative)
    return paths


@item_task("feed-transcript")
async def record_feed_transcript(ctx: RunContext, item: Item, recorder: ItemRecorder) -> ItemOutcome:
    started_at = datetime.now(timezone.utc)
    url = item.options["transcript_url"]
    body, served_type = await _download(ctx, item, url)
    mime = item.metadata.get("transcript_type") or (served_type or "").split(";")[0].lower()
    try:
        text, segments = transcript_from(body, mime, url)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{item.item_id}: the feed's transcript {safe_url(url)} could not be read "
                         f"as {mime or 'text'} ({exc}); pass --force to transcribe the audio.") from None
    if not text:
        raise InputError(f"{item.item_id}: the feed's transcript {safe_url(url)} is empty; pass "
                         "--force to transcribe the audio instead.")
    stated = item.metadata.get("duration_s")
    duration_s = float(stated) if stated else (segments[-1].end_s if segments else None)
    paths = _write_media(ctx, item, text, segments)
    language = item.options.get("language") or ctx.options.language
    notes = await item_notes(ctx, recorder, item, segments, duration_s, language) if duration_s else {}
    transcript = {"run_id": ctx.run_id, "item_id": item.item_id, "source": safe_url(url),
                  "duration_s": duration_s, "text": text, "language": language,
                  "model": None, "n_chunks": 0, "origin": "feed", **paths, **episode_fields(item)}
    segment_rows = [{"run_id": ctx.run_id, "item_id": item.item_id, "chunk_index": 0,
                     "segment_index": i, "start_s": s.start_s, "end_s": s.end_s, "text": s.text}
                    for i, s in enumerate(segments)]
    # items.duration_s counts audio sent to the model (run summaries add it up): none here;
    # the episode's stated duration stays in the metadata column and in `transcripts`.
    status = item_row(ctx, item, "ok", started_at=started_at, n_chunks=0, costs=recorder.costs)
    status["model"] = None  # no model was asked
    return ItemOutcome(status="ok", rows={
        "transcripts": [transcript], "segments": segment_rows, "items": [status], **notes})
