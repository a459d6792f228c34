"""Two pronunciation mends for the embedded Piper voice, made on espeak-ng's phonemes.

Piper reads text through espeak-ng, which writes each word as phonemes with stress marks
(primary "ˈ", secondary "ˌ"). Two of its choices made the joe voice hard to understand;
measured with the embedded Whisper listening back to ../shared/data/texts (3,600 words,
each chunk straight from Piper into faster-whisper):

- "is" is written unstressed ("ɪz") and the voice all but swallows it: heard as "as" or not
  at all (13 of ~130). With a stress mark it is said as a word; this halved those errors.
- "fourteen seventy": before another number espeak moves the stress to the first syllable
  ("fˈɔːɹtiːn") and the voice then drops "-teen": heard as "4070", "465", "8th". A secondary
  stress on "-teen", which espeak already gives "seventeen" ("sˈɛvəntˌiːn"), restores them.

Word error rate 8.8% -> 8.1% (is) -> 7.4% (both). Other words are left exactly as espeak
writes them: "in" given a stress was heard as "and" twice as often, so it stays weak.
"""
from __future__ import annotations

import re

_WORD_END = r"([,.;:!?…]*)"
_IS = re.compile(r"^ɪz" + _WORD_END + "$")
# thirteen, fourteen, fifteen, sixteen, eighteen, nineteen (+ -th, -s) with stress on the first
# syllable only; "seventeen" already carries its secondary stress.
_TEEN = re.compile(r"^(θˈɜː|fˈɔːɹ|fˈɪf|sˈɪks|ˈeɪ|nˈaɪn)tiːn(θs?|z)?" + _WORD_END + "$")


def clearer_word(word: str) -> str:
    """One espeak word (phonemes between spaces), with the mends above applied."""
    if _IS.match(word):
        return "ˈ" + word
    return _TEEN.sub(r"\1tˌiːn\2\3", word)


def clearer_phonemes(phonemes: list[str]) -> list[str]:
    """A sentence's phonemes (as Piper's phonemize gives them), mended word by word."""
    words = "".join(phonemes).split(" ")
    return list(" ".join(clearer_word(word) for word in words))
