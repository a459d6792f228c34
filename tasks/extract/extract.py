"""Chapters, show notes and sponsor spots of one transcribed item (`--chapters`).

The method: `offline` (the run's or the row's `chapters` says so), and the embedded model run
in-process, never send a request (offline.py). Otherwise the item's finished transcript goes to
the run's model in one tool call (`ModelClient.call_tool`) through the run's one request path,
`tasks.run.calls.call_model`: the cache, the budget, and a `costs` row per attempt
(`request_kind` "chapters", `chunk_index` -1: the item's request, not a chunk's). The call's
arguments are checked as hostile input (tool.py); a refused call is asked again once, saying
what was wrong; a second refusal, a failed request (a run-fatal one still stops the run), or a
transcript too long for the model's context makes the notes offline instead
(`offline-fallback`, the reasons in `show_notes.problems`).

Cache key: the transcript's words (not their times), the item's duration to 0.1 s, the model,
the endpoint and the tool's version (plus a re-ask's reasons). A re-run, or a run with
`--economy` that hears the same words, is answered from the cache at $0; times in a cached
answer are checked against this item like any.

Outputs: `chapters`, `show_notes` and `sponsor_spots` rows, and `<item_id>.chapters.json`
(Podcasting 2.0) beside the item's transcripts.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from audiobatch.tasks.captions.files import render_chapters_json
from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.errors import ModelError, RunFatalError
from audiobatch.tasks.extract.notes import Notes
from audiobatch.tasks.extract.offline import offline_notes
from audiobatch.tasks.extract.tool import TOOL_VERSION, checked_notes, tool_definition, transcript_lines
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.model.cost import Usage
from audiobatch.tasks.model.profiles import estimate_text_tokens, get_profile
from audiobatch.tasks.model.prompts import notes_messages
from audiobatch.tasks.outputs.datasets import media_relpath
from audiobatch.tasks.run.cache import ReplyRecord
from audiobatch.tasks.run.calls import attempts_before, call_model
from audiobatch.tasks.run.context import ItemRecorder, RunContext

NOTES_CHUNK_INDEX = -1  # the item's notes request in `costs` (chunks are 0, 1, ...)
NOTES_OUTPUT_TOKENS = 4096  # 40 chapters with summaries fit well within this
CONTEXT_MARGIN = 1000  # tokens: the instructions, and estimates that run short
_MAX_PROBLEM_CHARS = 300


def notes_method(ctx: RunContext, item: Item) -> str:
    """off | auto | offline: the row's `chapters` column, else the run's `--chapters`."""
    return item.options.get("chapters") or ctx.options.chapters


async def item_notes(ctx: RunContext, recorder: ItemRecorder, item: Item, segments: list[Segment],
                     duration_s: float, language: str | None,
                     folder: str = "transcripts") -> dict[str, list[dict[str, Any]]]:
    """The item's notes as rows for `chapters`, `show_notes` and `sponsor_spots` (and its
    chapters file written); {} when the item does not ask for them."""
    method = notes_method(ctx, item)
    if method == "off":
        return {}
    if method == "offline" or ctx.endpoint == "embedded":
        notes = await asyncio.to_thread(offline_notes, segments, duration_s, language)
    else:
        notes = await _model_notes(ctx, recorder, item, segments, duration_s, language)
    path = None
    if notes.chapters:
        relative = media_relpath(folder, ctx.run_id, item.item_id, "chapters.json")
        content = render_chapters_json([(c.start_s, c.end_s, c.title) for c in notes.chapters])
        await asyncio.to_thread(ctx.out.write_bytes, relative, content.encode("utf-8"), durable=False)
        path = ctx.out.display(relative)
    return notes_rows(ctx.run_id, item.item_id, notes, path)


async def _model_notes(ctx: RunContext, recorder: ItemRecorder, item: Item, segments: list[Segment],
                       duration_s: float, language: str | None) -> Notes:
    """The model's notes, checked, asked again once; else the offline ones, saying why."""
    model = item.options.get("model") or ctx.model
    lines = transcript_lines(segments)
    problems: list[str] = []
    context = get_profile(model, ctx.options.profiles).context_tokens
    if estimate_text_tokens(lines) + NOTES_OUTPUT_TOKENS + CONTEXT_MARGIN > context:
        problems.append(f"the transcript (about {estimate_text_tokens(lines):,} tokens) does not fit "
                        f"{model}'s context of {context:,} tokens")
    refused: list[str] = []
    for answer in ("first", "second") if not problems else ():
        try:
            reply = await _ask(ctx, recorder, model, segments, lines, duration_s, refused)
        except RunFatalError:
            raise
        except ModelError as error:  # the transcript is done: a failed extra need not fail it
            problems.append(f"the request failed: {error}")
            break
        notes, refused = checked_notes(reply.tool_name, reply.tool_arguments, duration_s,
                                       reply.model, "model" if answer == "first" else "model-reask")
        if notes is not None:
            return replace(notes, problems=_clipped(problems))
        problems.append(f"{answer} answer refused: " + "; ".join(refused))
    fallback = await asyncio.to_thread(offline_notes, segments, duration_s, language)
    return replace(fallback, method="offline-fallback", problems=_clipped(problems))


def _clipped(problems: list[str]) -> tuple[str, ...]:
    return tuple(problem[:_MAX_PROBLEM_CHARS] for problem in problems)


async def _ask(ctx: RunContext, recorder: ItemRecorder, model: str, segments: list[Segment],
               lines: str, duration_s: float, refused: list[str]) -> ReplyRecord:
    """One tool call (a re-ask when `refused` says what was wrong with the first)."""
    messages = notes_messages(lines, duration_s, refused or None)
    words = " ".join(word for s in segments for word in s.text.split())
    payload = json.dumps({"words": words, "duration_s": round(duration_s, 1)}).encode("utf-8")
    params = {"kind": "chapters", "model": model, "tool": TOOL_VERSION, "reask": refused or None}
    prompt_tokens = sum(estimate_text_tokens(m["content"]) for m in messages)
    expected = Usage(prompt_text_tokens=prompt_tokens, completion_text_tokens=NOTES_OUTPUT_TOKENS // 4)
    reason = ("invalid tool call: " + "; ".join(refused))[:_MAX_PROBLEM_CHARS] if refused else None
    return await call_model(
        ctx, recorder, chunk_index=NOTES_CHUNK_INDEX, payload=payload, params=params,
        expected=expected, reask_reason=reason,
        first_attempt=attempts_before(recorder, NOTES_CHUNK_INDEX) + 1,
        send=lambda: ctx.client.call_tool(messages, tool_definition(), model=model,
                                          expected_tokens=expected.total_tokens,
                                          max_output_tokens=NOTES_OUTPUT_TOKENS))


def notes_rows(run_id: str, item_id: str, notes: Notes,
               chapters_path: str | None) -> dict[str, list[dict[str, Any]]]:
    """One `chapters` row per chapter, one `show_notes` row, one `sponsor_spots` row per spot."""
    key = {"run_id": run_id, "item_id": item_id}
    chapters = [{**key, "chapter_index": i, "start_s": c.start_s, "end_s": c.end_s, "title": c.title,
                 "summary": c.summary, "method": notes.method, "model": notes.model}
                for i, c in enumerate(notes.chapters)]
    spots = [{**key, "spot_index": i, "start_s": s.start_s, "end_s": s.end_s, "sponsor": s.sponsor,
              "method": notes.method} for i, s in enumerate(notes.sponsor_spots)]
    show = {**key, "summary": notes.summary, "keywords": list(notes.keywords),
            "n_chapters": len(notes.chapters), "n_sponsor_spots": len(notes.sponsor_spots),
            "method": notes.method, "model": notes.model, "problems": list(notes.problems),
            "chapters_path": chapters_path}
    return {"chapters": chapters, "show_notes": [show], "sponsor_spots": spots}
