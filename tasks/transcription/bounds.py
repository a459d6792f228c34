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


DIGIT_NAMES = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+(?:['’]\w+)*", text.lower())


def digits_one_by_one(words: list[str]) -> list[str]:
    """`words` with every number split into its digits, and a digit's name beside another
    digit written as that digit. Whisper writes the digits a speaker reads out as "1 0 0 0 1",
    "10001", "1,0001" or "one zero zero zero one", depending on the window: all read alike."""
    tokens = [t for word in words for t in (list(word) if word.isdigit() else [word])]
    numeric = [t.isdigit() or t in DIGIT_NAMES for t in tokens]
    return [DIGIT_NAMES[t] if t in DIGIT_NAMES and ((i > 0 and numeric[i - 1]) or
                                                   (i + 1 < len(tokens) and numeric[i + 1])) else t
            for i, t in enumerate(tokens)]


def spoken_words(text: str) -> list[str]:
    """The words of `text` as said: a number written in digits counts a word per digit."""
    return digits_one_by_one(words_of(text))


def units(text: str) -> int:
    """Words as said (`spoken_words`), or characters for scripts written without spaces."""
    no_space = len(NO_SPACE_SCRIPT.findall(text))
    if no_space:
        return no_space + _spoken_count(NO_SPACE_SCRIPT.sub(" ", text))
    return _spoken_count(text)


def _spoken_count(text: str) -> int:
    """len(spoken_words(text)), without building the list (a reply may be hostile)."""
    return sum(len(word) if word.isdigit() else 1 for word in words_of(text))


def overlong(text: str, audio_s: float) -> bool:
    """More words (characters, for scripts without spaces) than `audio_s` of audio can hold."""
    limit = MAX_CHARS_PER_S * audio_s + MAX_UNITS_EXTRA
    if len(text) <= limit:  # fewer characters than the most words: within the bound
        return False
    if len(text) > 64 * limit:  # no need to count 50,000 words
        return True
    per_s = MAX_CHARS_PER_S if NO_SPACE_SCRIPT.search(text) else MAX_WORDS_PER_S
    return units(text) > per_s * audio_s + MAX_UNITS_EXTRA
