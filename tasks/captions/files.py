"""Subtitle and transcript files from timed segments: SRT, WebVTT and Whisper's JSON; and the
Podcasting 2.0 JSON chapters file that players read beside them.

Caption text is written as data, never as markup: WebVTT escapes `&`, `<` and `>`; a caption
never holds a blank line (which would end its cue).
"""
from __future__ import annotations

import html
import json
import textwrap

from audiobatch.tasks.captions.segments import Segment

CAPTION_LINE_CHARS = 42  # the usual subtitle line length (for segments not made by the cue builder)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _speaker(segment: Segment) -> dict[str, str]:
    """A labelled segment's speaker, for the JSON segment and each of its words (a segment
    holds one speaker's words); nothing when speakers were not asked for."""
    return {"speaker": segment.speaker} if segment.speaker else {}


def render_json(text: str, language: str | None, segments: list[Segment]) -> str:
    """Whisper's JSON shape (`text`, `language`, `segments` with `words`), as its CLI writes it."""
    document = {"text": text, "language": language, "segments": [
        {"id": i, "start": s.start_s, "end": s.end_s, "text": s.text,
         **_speaker(s), "words": [{"word": w.word, "start": w.start_s, "end": w.end_s,
                                   "probability": round(w.probability, 4), **_speaker(s)}
                                  for w in s.words]}
        for i, s in enumerate(segments)]}
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def caption_lines(segment: Segment) -> str:
    """A caption's lines as the cue builder broke them (tasks/captions/cues.py); a segment
    made elsewhere (a feed's own transcript) is wrapped at CAPTION_LINE_CHARS. Never a blank
    line, which would end the cue."""
    lines = [" ".join(line.split()) for line in segment.lines] or \
        textwrap.wrap(" ".join(segment.text.split()), CAPTION_LINE_CHARS)
    return "\n".join(line for line in lines if line) or " "


def _srt_text(segment: Segment) -> str:
    """SRT has no voices: a speaker leads the caption as WhisperX writes it (`[SPEAKER_1]: ...`)."""
    text = caption_lines(segment)
    return f"[{segment.speaker}]: {text}" if segment.speaker else text


def render_srt(segments: list[Segment]) -> str:
    blocks = [f"{i}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{_srt_text(s)}\n"
              for i, s in enumerate(segments, start=1)]
    return "\n".join(blocks)


def _vtt_text(segment: Segment) -> str:
    """Cue text escaped; a speaker as WebVTT's voice span (`<v SPEAKER_1>`)."""
    text = html.escape(caption_lines(segment), quote=False)
    if segment.speaker:
        text = f"<v {html.escape(' '.join(segment.speaker.split()), quote=False)}>{text}"
    return text


def render_vtt(segments: list[Segment]) -> str:
    """WebVTT: cue text is markup there, so `&`, `<` and `>` are escaped (a `-->` in the text
    would otherwise end the timing line's meaning, a `<` start a tag)."""
    blocks = [f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{_vtt_text(s)}\n"
              for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


CHAPTERS_VERSION = "1.2.0"  # the Podcasting 2.0 JSON chapters format (podcastindex.org)


def render_chapters_json(chapters: list[tuple[float, float, str]]) -> str:
    """`{version, chapters: [{startTime, endTime, title}]}` from (start_s, end_s, title),
    times in seconds; players list the chapters by `startTime` and show `title`."""
    document = {"version": CHAPTERS_VERSION, "chapters": [
        {"startTime": round(start, 2), "endTime": round(end, 2), "title": title}
        for start, end, title in chapters]}
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"
