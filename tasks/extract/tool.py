"""The tool a remote model calls to record an episode's notes, and the checks its call must pass.

Wire: `ModelClient.call_tool` offers `tool_definition()` (a function with a strict JSON schema)
and requires the model to call it; the messages carry the transcript as `[start-end] text`
lines, times in seconds on the recording's timeline (`transcript_lines`).

Trust: the call's arguments are the model's, so hostile until checked (`checked_notes`): they
must be one JSON object of at most MAX_TOOL_ARGUMENT_CHARS; 1 to `max_chapters(duration)`
chapters whose times are finite, inside the item (`TIME_SLACK_S` past its end at most),
increasing and not overlapping; titles of 1 to 80 characters; at most MAX_SPONSOR_SPOTS
sponsor spots inside the item. Every text is made valid XML on one line; summaries, keywords
and sponsor names are cut to their limits. What fails is said in words fit to send back to the
model (the re-ask) and to keep in `show_notes.problems`; quoted model text is cleaned and short.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.extract.notes import (MAX_CHAPTER_SUMMARY_CHARS, MAX_KEYWORD_CHARS, MAX_KEYWORDS,
                                            MAX_SPONSOR_CHARS, MAX_SPONSOR_SPOTS, MAX_SUMMARY_CHARS,
                                            MAX_TITLE_CHARS, Chapter, Notes, SponsorSpot, clipped, xml_text)
from audiobatch.tasks.model.wire import MAX_TOOL_ARGUMENT_CHARS

TOOL_NAME = "record_episode_notes"
TOOL_VERSION = 1  # part of the cache key: a changed schema or prompt asks again
TIME_SLACK_S = 1.0  # a model rounding the last end up a little is not wrong
MAX_MODEL_CHAPTERS = 50
MIN_MODEL_CHAPTER_S = 20.0  # bounds the count: one chapter per 20 s at most


def max_chapters(duration_s: float) -> int:
    return max(1, min(MAX_MODEL_CHAPTERS, int(duration_s // MIN_MODEL_CHAPTER_S)))


def _times(what: str) -> dict[str, Any]:
    return {"type": "number", "description": f"{what}, in seconds from the start of the episode"}


def tool_definition() -> dict[str, Any]:
    """The function offered to the model (OpenAI strict mode: every property required, no
    others; limits the schema cannot state are in the descriptions and checked here)."""
    chapter = {"type": "object", "additionalProperties": False,
               "required": ["start_s", "end_s", "title", "summary"],
               "properties": {"start_s": _times("where the chapter's topic starts"),
                              "end_s": _times("where it ends"),
                              "title": {"type": "string", "description": "the topic, at most "
                                        f"{MAX_TITLE_CHARS} characters"},
                              "summary": {"type": "string", "description": "one or two sentences"}}}
    spot = {"type": "object", "additionalProperties": False,
            "required": ["start_s", "end_s", "sponsor"],
            "properties": {"start_s": _times("where the sponsor read starts"),
                           "end_s": _times("where it ends"),
                           "sponsor": {"type": ["string", "null"],
                                       "description": "the sponsor's name if it is said, else null"}}}
    return {"name": TOOL_NAME,
            "description": "Record the chapters, show notes and sponsor reads of a podcast episode.",
            "parameters": {
                "type": "object", "additionalProperties": False,
                "required": ["chapters", "summary", "keywords", "sponsor_spots"],
                "properties": {
                    "chapters": {"type": "array", "items": chapter, "description": "the episode's "
                                 "topics in order, the first starting at 0, without overlaps"},
                    "summary": {"type": "string", "description": "two to four sentences"},
                    "keywords": {"type": "array", "items": {"type": "string"},
                                 "description": f"at most {MAX_KEYWORDS} keywords or short phrases"},
                    "sponsor_spots": {"type": "array", "items": spot, "description": "paid reads "
                                      "and ads in the episode; empty when there are none"}}}}


def transcript_lines(segments: list[Segment]) -> str:
    """The transcript as the model reads it: one `[start-end] text` line per segment."""
    return "\n".join(f"[{s.start_s:.1f}-{s.end_s:.1f}] {' '.join(s.text.split())}" for s in segments)


_LINE = re.compile(r"\[(\d{1,7}(?:\.\d+)?)-(\d{1,7}(?:\.\d+)?)\] ?(.*)")


def segments_from_lines(transcript: str) -> list[Segment]:
    """`transcript_lines` read back (lines in another shape are left out): what the embedded
    model's offline answer works on."""
    segments = []
    for line in transcript.splitlines():
        if match := _LINE.fullmatch(line.strip()):
            start, end = float(match.group(1)), float(match.group(2))
            segments.append(Segment(0, start, max(start, end), match.group(3)))
    return segments


def tool_arguments(notes: Notes) -> dict[str, Any]:
    """Notes as the tool's arguments (what a model's call would carry)."""
    return {"chapters": [{"start_s": c.start_s, "end_s": c.end_s, "title": c.title, "summary": c.summary}
                         for c in notes.chapters],
            "summary": notes.summary, "keywords": list(notes.keywords),
            "sponsor_spots": [{"start_s": s.start_s, "end_s": s.end_s, "sponsor": s.sponsor}
                              for s in notes.sponsor_spots]}


def checked_notes(name: str | None, arguments: Any, duration_s: float, model: str,
                  method: str) -> tuple[Notes | None, list[str]]:
    """(the notes, []) when the call passes every check, else (None, what is wrong)."""
    if name is None:
        return None, [f"the reply did not call {TOOL_NAME} (it had text only)"]
    if name != TOOL_NAME:
        return None, [f"the reply called {clipped(xml_text(name), 40)!r}, not {TOOL_NAME}"]
    if not isinstance(arguments, str) or len(arguments) > MAX_TOOL_ARGUMENT_CHARS:
        return None, [f"the arguments are not JSON text of at most {MAX_TOOL_ARGUMENT_CHARS:,} characters"]
    try:
        data = json.loads(arguments)
    except (ValueError, RecursionError) as error:
        return None, [f"the arguments are not valid JSON ({clipped(xml_text(str(error)), 80)})"]
    if not isinstance(data, dict):
        return None, ["the arguments are not a JSON object"]
    problems: list[str] = []
    chapters = _chapters(data.get("chapters"), duration_s, problems)
    spots = _spots(data.get("sponsor_spots"), duration_s, problems)
    keywords = _keywords(data.get("keywords"), problems)
    summary = data.get("summary")
    if not isinstance(summary, str):
        problems.append("summary is not a string")
    if problems:
        return None, problems
    return Notes(tuple(chapters), clipped(xml_text(summary), MAX_SUMMARY_CHARS), tuple(keywords),
                 tuple(spots), method, model), []


def _number(value: Any) -> float | None:
    """A finite JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _span(entry: Any, what: str, duration_s: float, problems: list[str]) -> tuple[float, float] | None:
    if not isinstance(entry, dict):
        problems.append(f"{what} is not an object")
        return None
    start, end = _number(entry.get("start_s")), _number(entry.get("end_s"))
    if start is None or end is None:
        problems.append(f"{what} has no numeric start_s and end_s")
    elif not 0 <= start < end <= duration_s + TIME_SLACK_S:
        problems.append(f"{what} runs from {start:g} s to {end:g} s, not inside the episode "
                        f"(0 to {duration_s:.1f} s) with its start before its end")
    else:
        return round(start, 2), round(min(end, duration_s), 2)
    return None


def _chapters(value: Any, duration_s: float, problems: list[str]) -> list[Chapter]:
    most = max_chapters(duration_s)
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        problems.append(f"chapters must be a list of 1 to {most} chapters for {duration_s:.0f} s")
        return []
    chapters: list[Chapter] = []
    for number, entry in enumerate(value, 1):
        span = _span(entry, f"chapter {number}", duration_s, problems)
        if span is None:
            continue
        if chapters and span[0] < chapters[-1].end_s - TIME_SLACK_S:
            problems.append(f"chapter {number} starts at {span[0]:g} s, before chapter "
                            f"{number - 1} ends ({chapters[-1].end_s:g} s): chapters go in order")
            continue
        title = xml_text(entry["title"]) if isinstance(entry.get("title"), str) else ""
        if not 0 < len(title) <= MAX_TITLE_CHARS:
            problems.append(f"chapter {number}'s title has {len(title)} characters (1 to {MAX_TITLE_CHARS})")
            continue
        summary = entry.get("summary") if isinstance(entry.get("summary"), str) else ""
        chapters.append(Chapter(*span, title, clipped(xml_text(summary), MAX_CHAPTER_SUMMARY_CHARS)))
    return chapters


def _spots(value: Any, duration_s: float, problems: list[str]) -> list[SponsorSpot]:
    if not isinstance(value, list) or len(value) > MAX_SPONSOR_SPOTS:
        problems.append(f"sponsor_spots must be a list of at most {MAX_SPONSOR_SPOTS}")
        return []
    spots = []
    for number, entry in enumerate(value, 1):
        span = _span(entry, f"sponsor spot {number}", duration_s, problems)
        if span is None:
            continue
        sponsor = entry.get("sponsor")
        name = clipped(xml_text(sponsor), MAX_SPONSOR_CHARS) if isinstance(sponsor, str) else ""
        spots.append(SponsorSpot(*span, name or None))
    return sorted(spots, key=lambda spot: spot.start_s)


def _keywords(value: Any, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        problems.append("keywords must be a list of strings")
        return []
    kept: list[str] = []
    for keyword in value:
        keyword = clipped(xml_text(keyword), MAX_KEYWORD_CHARS)
        if keyword and keyword not in kept:
            kept.append(keyword)
    return kept[:MAX_KEYWORDS]
