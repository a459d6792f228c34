"""A transcript's sentences with times on the recording's timeline, and the pause before each.

Words keep the times the forced alignment gave them (`Segment.words`); a segment without
aligned words (word times off, a feed's own transcript) spreads its words over its time span
in proportion to their length. Sentences are found by pysbd (rules, no download) in the joined
words, so a sentence may run across segments; it starts at its first word and ends with its
last. Pure functions: no I/O, nothing kept between calls but pysbd's segmenters.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass

import pysbd

from audiobatch.tasks.captions.segments import Segment

PIECE_CHARS = 1000
# pysbd's languages; others are split with the English rules (full stops are much alike).
_PYSBD_LANGUAGES = {"en", "hi", "mr", "zh", "es", "am", "ar", "hy", "bg", "ur", "ru", "pl", "fa",
                    "nl", "da", "fr", "my", "el", "it", "ja", "de", "kk", "sk"}


@dataclass(frozen=True)
class TimedWord:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Sentence:
    start_s: float
    end_s: float
    text: str
    pause_before_s: float  # silence between the previous sentence's last word and this one


def timed_words(segments: list[Segment]) -> list[TimedWord]:
    """Every word of the transcript in order, with its time (aligned, else estimated)."""
    words: list[TimedWord] = []
    for segment in segments:
        aligned = [TimedWord(w.word.strip(), w.start_s, w.end_s) for w in segment.words if w.word.strip()]
        words += aligned or _spread(segment)
    return words


def _spread(segment: Segment) -> list[TimedWord]:
    """A segment's words over its span, each as long as its share of the letters."""
    texts = segment.text.split()
    total = sum(len(t) + 1 for t in texts)
    span = max(0.0, segment.end_s - segment.start_s)
    words, at = [], segment.start_s
    for text in texts:
        length = span * (len(text) + 1) / total
        words.append(TimedWord(text, round(at, 3), round(at + length, 3)))
        at += length
    return words


@functools.lru_cache(maxsize=8)
def _segmenter(language: str) -> pysbd.Segmenter:
    return pysbd.Segmenter(language=language if language in _PYSBD_LANGUAGES else "en",
                           clean=False, char_span=True)


def timed_sentences(segments: list[Segment], language: str | None = None) -> list[Sentence]:
    """The transcript's sentences, in order, with times and the pause before each."""
    words = timed_words(segments)
    segmenter = _segmenter((language or "en").split("-")[0].lower())
    sentences: list[Sentence] = []
    for start, end in _pieces(words):
        offsets, at = [], 0
        for word in words[start:end]:
            offsets.append(at)
            at += len(word.text) + 1
        first = 0
        for span in segmenter.segment(" ".join(word.text for word in words[start:end])):
            last = bisect.bisect_left(offsets, span.end) - 1  # the last word starting inside
            if last >= first:
                sentences.append(_sentence(words, start + first, start + last))
                first = last + 1
        if first < end - start:  # whatever pysbd left after its last span
            sentences.append(_sentence(words, start + first, end - 1))
    return sentences


def _pieces(words: list[TimedWord]) -> list[tuple[int, int]]:
    """(first, end) word ranges of about PIECE_CHARS, ending after a full stop when one comes
    before twice that: pysbd's time grows faster than the text (a 4,200-character run of
    "a. a. a." took 0.4 s, 20,000 of them over a minute), so it reads pieces of bounded size."""
    pieces, start, size = [], 0, 0
    for index, word in enumerate(words):
        size += len(word.text) + 1
        if (size >= PIECE_CHARS and word.text[-1:] in ".!?") or size >= 2 * PIECE_CHARS:
            pieces.append((start, index + 1))
            start, size = index + 1, 0
    return pieces + ([(start, len(words))] if start < len(words) else [])


def _sentence(words: list[TimedWord], first: int, last: int) -> Sentence:
    start = words[first].start_s
    pause = max(0.0, start - words[first - 1].end_s) if first else 0.0
    return Sentence(start, max(start, words[last].end_s),
                    " ".join(w.text for w in words[first:last + 1]), round(pause, 3))
