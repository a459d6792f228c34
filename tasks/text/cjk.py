"""Scripts written without spaces: Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar.

Narration text is counted and cut in words, but these scripts have no spaces to find words by.
Here each of their characters is a token of its own (the punctuation after it attached), with
a weight: how long it takes to say against an English word, so that a word budget stays a
speaking-time budget. Their full stops always end a sentence; their commas and colons end a
clause. tasks/text/speakable.py counts, splits and packs every text with these tokens and marks; they are
kept apart so that what is specific to these scripts, and measured for them, is in one place.
"""
from __future__ import annotations

import re

# Scripts written without spaces between words, and how long one character takes to say in
# English words (the profiles' speaking rates are in words per minute). Mandarin is read at
# ~240 characters a minute against ~160 English words (2/3 word per character); Japanese mixes
# kanji and kana at ~350 a minute (0.45, so Chinese's 2/3 leaves it more room than it needs);
# Thai, Lao, Khmer and Myanmar spell a syllable in ~3 characters (~0.2). Overestimating a
# character only makes requests shorter than they could be; underestimating would overrun the
# audio budget, so the heavier figure is taken where scripts share characters.
_NO_SPACE_SCRIPTS = (
    ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f", 2 / 3),  # Han
    ("\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d", 2 / 3),                         # kana
    ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff", 0.2),  # Thai, Lao, Myanmar, Khmer
)
CHARACTER_WEIGHTS = tuple((re.compile(f"[{chars}]"), weight) for chars, weight in _NO_SPACE_SCRIPTS)
_NO_SPACE = "".join(chars for chars, _ in _NO_SPACE_SCRIPTS)
# Punctuation that belongs to the character before it (full-width forms survive NFKC only
# for some; the ASCII forms NFKC makes of the others are in tasks/text/speakable.py's sentence and
# clause marks).
_CJK_TRAILING = "。．｡、，；：！？」』）》〉】〕ー〜…・\"'”’)\\]!?.,;:"
# A word of any script: one character of these (with its trailing marks), else a run of
# non-space characters.
WORD_TOKEN = re.compile(f"[{_NO_SPACE}][{_CJK_TRAILING}]*|[^\\s{_NO_SPACE}]+")


# Their marks, full-width (tasks/text/speakable.py adds the ASCII ones): full stops end a sentence
# whatever follows, the others here a clause; closing brackets may follow either.
CJK_SENTENCE_END = "。．｡！？"
CJK_CLAUSE_END = "，、；："
CJK_CLOSERS = "」』）》】"


def token_weight(token: str) -> float:
    """How long a token takes to say in English words: a character's weight, else 1 (a word)."""
    for pattern, weight in CHARACTER_WEIGHTS:
        if pattern.match(token):
            return weight
    return 1.0
