"""Written forms that voices read badly, rewritten the way a narrator says them.

Engines expand ordinary numbers, money and titles well; these they do not (measured with the
embedded Piper voice and Whisper listening back): Latin abbreviations ("e.g." came out as
"e g"), degree and suffix abbreviations read letter by letter ("Ph.D." -> "P H dot D dot"),
year ranges read as one long number ("1469-1470"), and URLs (a listener cannot use a path,
so only the domain is kept; voices read "example.com" as "example dot com").
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

_ABBREVIATIONS = {
    "e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "&c.": "et cetera",
    "vs.": "versus", "viz.": "namely", "cf.": "compare", "Ph.D.": "PhD", "Jr.": "Junior",
    "Sr.": "Senior",
}
_ABBREVIATION = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?=[\s,;:)\]\"'”’]|$)",
    re.IGNORECASE)
_CANONICAL = {a.lower(): spoken for a, spoken in _ABBREVIATIONS.items()}
# These can close a sentence, and then their full stop is the sentence's too ("a Ph.D. She...").
_MAY_END_SENTENCE = {"etc.", "&c.", "ph.d.", "jr.", "sr."}
_NEXT_SENTENCE = re.compile(r"\s*$|\s+[\"'“‘(\[]?[A-Z0-9]")
# 1469-1470, 1850–1900: two plausible years joined by a hyphen or dash are a range.
_YEAR_RANGE = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\s*[-–—]\s*(1[0-9]{3}|20[0-9]{2})\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
_URL_TRAILER = re.compile(r"[.,;:!?)\]}'\"]+$")


def spoken_forms(text: str) -> str:
    text = _URL.sub(_speak_url, text)
    text = _ABBREVIATION.sub(_expand, text)
    return _YEAR_RANGE.sub(r"\1 to \2", text)


def _expand(match: re.Match[str]) -> str:
    written = match.group(1).lower()
    ends_sentence = written in _MAY_END_SENTENCE and _NEXT_SENTENCE.match(match.string, match.end())
    return _CANONICAL[written] + ("." if ends_sentence else "")


def _speak_url(match: re.Match[str]) -> str:
    """A URL as its domain: "https://www.example.com/a/b" -> "example.com" (voices say "dot")."""
    url, trailer = match.group(0), ""
    if found := _URL_TRAILER.search(url):
        url, trailer = url[:found.start()], found.group(0)
        if trailer.startswith(")") and url.count("(") > url.count(")"):
            url, trailer = url + ")", trailer[1:]  # a wiki-style URL owns its closing bracket
    host = urlsplit(url if "://" in url else "http://" + url).hostname or url
    host = host.removeprefix("www.")
    return host.strip(".") + trailer
