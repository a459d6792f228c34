"""What extraction produces, whoever made it: chapters, show notes and sponsor spots.

Invariant: a `Notes` holds only checked text and times. Chapters are in order, each inside the
item and after the one before; texts are valid XML character data (no control characters, no
lone surrogates) on one line, and no longer than the limits below, so that the chapters file,
the feed and the HTML report can carry them as they are (each escapes them as its format needs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TITLE_CHARS = 80
MAX_CHAPTER_SUMMARY_CHARS = 400
MAX_SUMMARY_CHARS = 1200
MAX_KEYWORDS = 12
MAX_KEYWORD_CHARS = 60
MAX_SPONSOR_CHARS = 80
MAX_SPONSOR_SPOTS = 20
# Characters XML 1.0 cannot carry (besides tab, newline, carriage return, which become spaces).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Chapter:
    start_s: float
    end_s: float
    title: str
    summary: str = ""


@dataclass(frozen=True)
class SponsorSpot:
    start_s: float
    end_s: float
    sponsor: str | None = None


@dataclass(frozen=True)
class Notes:
    chapters: tuple[Chapter, ...]
    summary: str
    keywords: tuple[str, ...]
    sponsor_spots: tuple[SponsorSpot, ...]
    method: str  # model | model-reask | offline | offline-fallback
    model: str | None = None  # the model whose tool call made them (None: offline)
    problems: tuple[str, ...] = ()  # why a model's answer was asked again or refused


def xml_text(value: str) -> str:
    """`value` as one line of text any XML document can hold: characters XML forbids are
    dropped, all whitespace runs (line breaks too) become one space."""
    return " ".join(_NOT_XML.sub("", value).split())


def clipped(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1].rsplit(" ", 1)[0] if " " in text[:limit - 1] else text[:limit - 1]
    return cut.rstrip(" ,;:-") + "…"
