"""How many words a reply may hold: the hard bound per second of audio that every reply meets
before anything reads it further (a hostile reply of 50,000 words for 2 s of audio would
otherwise be aligned for minutes), and the word count it is measured in.

Inputs are model replies: hostile (DESIGN.md "Trust model"); they are only counted here.
"""
from __future__ import annotations

import re

# The hard bound per second of audio (not of speech): far above any speaker (auctioneers ~6).
MAX_WORDS_PER_S, MAX_CHARS_PER_S, MAX_UNITS_EXTRA = 10.0, 20.0, 20
NO_SPACE_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+(?:['’]\w+)*", text.lower())


def units(text: str) -> int:
    """Words, or characters for scripts written without spaces."""
    no_space = len(NO_SPACE_SCRIPT.findall(text))
    return no_space + len(words_of(NO_SPACE_SCRIPT.sub(" ", text))) if no_space else len(words_of(text))


def overlong(text: str, audio_s: float) -> bool:
    """More words (characters, for scripts without spaces) than `audio_s` of audio can hold."""
    limit = MAX_CHARS_PER_S * audio_s + MAX_UNITS_EXTRA
    if len(text) <= limit:  # fewer characters than the most words: within the bound
        return False
    if len(text) > 64 * limit:  # no need to count 50,000 words
        return True
    per_s = MAX_CHARS_PER_S if NO_SPACE_SCRIPT.search(text) else MAX_WORDS_PER_S
    return units(text) > per_s * audio_s + MAX_UNITS_EXTRA
