"""Sponsor reads, found by what they say (offline; English phrasing).

A read is recognised by a strong cue ("brought to you by", "sponsored by", "our sponsor",
"use code X", "promo code"); it runs on through the sentences after it while they keep giving
weak cues (a spoken web address such as "acme dot com", "percent off", "free trial", "sign up")
with at most `MAX_PLAIN_SENTENCES` plain sentences between two cues, and never longer than
`MAX_SPOT_S`. The sponsor is the name after the strong cue, else the spoken address. Reads in
other languages are not found: the model path (or nothing) covers them.
"""
from __future__ import annotations

import re

from audiobatch.tasks.extract.notes import MAX_SPONSOR_CHARS, MAX_SPONSOR_SPOTS, SponsorSpot, xml_text
from audiobatch.tasks.extract.sentences import Sentence

MAX_SPOT_S = 150.0
MAX_PLAIN_SENTENCES = 2
_NAME = r"((?:[A-Z][\w&'-]*|\d[\w-]*)(?: (?:[A-Z][\w&'-]*|\d[\w-]*|&|of|and)){0,3})"  # ends at a stop
_STRONG = re.compile(r"\b(brought to you by|sponsored by|our sponsors?\b|today's sponsor|"
                     r"this (?:episode|show|week)'s sponsor|thanks to .{1,40}? for sponsoring|"
                     r"(?:use|with|enter) (?:the )?(?:promo |discount |offer )?code|promo code|"
                     r"discount code)", re.IGNORECASE)
_DOMAIN = re.compile(r"\b([a-z][a-z0-9-]{1,40})\s*(?:\.|\bdot\s+)(com|org|net|io|co|fm|ai|app)\b",
                     re.IGNORECASE)
_WEAK = re.compile(r"(\bpercent off\b|%\s*off\b|\bfree trial\b|\bsign up\b|\bslash\b|"
                   r"\bfirst (?:month|order|box)\b|\bdiscount\b|\boffer\b|\bcheck out\b|"
                   r"\bgo to\b|\bhead (?:over )?to\b|\bvisit\b)", re.IGNORECASE)
_NAMED = [re.compile(rf"(?:brought to you by|sponsored by|thanks to)\s+"
                     rf"(?:the folks at\s+|our friends at\s+)?{_NAME}"),
          re.compile(rf"(?:[Oo]ur|[Tt]oday's|[Tt]his (?:episode|show|week)'s) sponsors?"
                     rf"(?:,| is| this week,| today,)\s+{_NAME}")]


def cue_strength(text: str) -> int:
    """2: a sponsor read's own words; 1: an ad's habits (an address, an offer); 0: neither."""
    if _STRONG.search(text):
        return 2
    return 1 if _DOMAIN.search(text) or _WEAK.search(text) else 0


def sponsor_spots(sentences: list[Sentence]) -> list[tuple[int, int, SponsorSpot]]:
    """(first sentence, last sentence, spot) of each sponsor read, in order, not overlapping."""
    strengths = [cue_strength(s.text) for s in sentences]
    spots: list[tuple[int, int, SponsorSpot]] = []
    index = 0
    while index < len(sentences) and len(spots) < MAX_SPONSOR_SPOTS:
        if strengths[index] < 2:
            index += 1
            continue
        first = index - 1 if index and strengths[index - 1] == 1 else index
        last = _read_end(sentences, strengths, first, index)
        texts = " ".join(s.text for s in sentences[first:last + 1])
        spots.append((first, last, SponsorSpot(sentences[first].start_s, sentences[last].end_s,
                                               sponsor_name(texts))))
        index = last + 1
    return spots


def _read_end(sentences: list[Sentence], strengths: list[int], first: int, cue: int) -> int:
    last, plain = cue, 0
    for index in range(cue + 1, len(sentences)):
        if sentences[index].end_s - sentences[first].start_s > MAX_SPOT_S:
            break
        if strengths[index]:
            last, plain = index, 0
        else:
            plain += 1
            if plain > MAX_PLAIN_SENTENCES:
                break
    return last


def sponsor_name(text: str) -> str | None:
    """The sponsor a read names: after "brought to you by" and the like, else its web address."""
    for pattern in _NAMED:
        if match := pattern.search(text):
            return xml_text(match.group(1).rstrip(".,;:"))[:MAX_SPONSOR_CHARS] or None
    if match := _DOMAIN.search(text):
        return f"{match.group(1)}.{match.group(2)}".lower()[:MAX_SPONSOR_CHARS]
    return None
