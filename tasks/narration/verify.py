"""Verified narration: each narrated chunk is transcribed back by the embedded speech model and
compared with the text it should say.

A chunk passes when its word error rate against the chunk's speakable text is at most the
language's threshold (`THRESHOLDS`, set from measurement: docs/performance.md "Verification"), or when it
has at most `MIN_ERRORS` errors in all (one misheard word in a ten-word chunk is not a reason to
pay again), and when no run of `MAX_GAP` or more consecutive words of the text is missing: a
voice that skips a sentence in a 500-word chunk adds only ~4% to its WER, within Whisper
tiny.en's own noise, but leaves a hole that its scattered mishearings do not. A chunk that fails is narrated again (another priced attempt, a new take) up to
`--verify-attempts`; the take heard best is kept; what still fails is flagged in
`narrations.qa_flags`. Every check is a `narration_checks` row.

The listener is the embedded model (Whisper tiny.en; other languages when the embedded model
hears them), reached through a model client the flow wires in (`RunContext.verifier`): tasks
never import localmodel. Text and transcript go through Whisper's English normaliser (numbers,
spellings, punctuation), the same one the round-trip WER bars use.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein
from whisper_normalizer.english import EnglishTextNormalizer

from audiobatch.tasks.model.profiles import LOCAL_MODEL, get_profile

# Word error rate a chunk may have and still pass, per language. English: the embedded voice
# heard back by Whisper tiny.en, 27 chunks of the three shared texts (docs/performance.md "Verification"):
# median 6.9%, worst 15.2%; with one sentence missing 14.5% and up (median 19.5%), which is
# why a hole of MAX_GAP missing words fails a chunk too.
THRESHOLDS = {"en": 0.15}
MIN_ERRORS = 2
MAX_GAP = 4  # consecutive text words missing from what was heard (clean chunks: at most 1)
_NORMALISE = EnglishTextNormalizer()
_BRACKETS = re.compile(r"[()\[\]{}<>]")


@dataclass(frozen=True)
class Check:
    wer: float
    errors: int
    gap: int  # the longest run of consecutive text words not heard
    passed: bool
    heard: str


def normalised_words(text: str) -> list[str]:
    """Whisper's English normalisation (brackets kept as words: our texts read them aloud)."""
    return _NORMALISE(_BRACKETS.sub(" ", text)).split()


def word_errors(reference: str, heard: str) -> tuple[int, int, int]:
    """(substitutions + deletions + insertions, reference words, longest run of consecutive
    reference words deleted) after normalisation."""
    expected, got = normalised_words(reference), normalised_words(heard)
    gap = longest = 0
    last = -2
    for operation in Levenshtein.editops(expected, got):
        if operation.tag != "delete":
            continue
        gap = gap + 1 if operation.src_pos == last + 1 else 1
        longest, last = max(longest, gap), operation.src_pos
    return Levenshtein.distance(expected, got), len(expected), longest


def listener_hears(language: str) -> bool:
    """Whether the embedded model can verify narrations in `language` (and a threshold is known)."""
    languages = get_profile(LOCAL_MODEL).languages
    return language in THRESHOLDS and (not languages or language in languages)


def check(reference: str, heard: str, language: str) -> Check:
    errors, words, gap = word_errors(reference, heard)
    wer = errors / words if words else (0.0 if not heard.strip() else 1.0)
    allowed = max(MIN_ERRORS, math.floor(THRESHOLDS[language] * words))
    return Check(wer=wer, errors=errors, gap=gap, passed=errors <= allowed and gap < MAX_GAP, heard=heard)
