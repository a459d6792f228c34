"""Where the topic changes: TextTiling (Hearst, 1997) on a transcript's timed sentences.

At every gap between two sentences, the content words of about `WINDOW_WORDS` before it and
after it are compared (cosine of tf-idf weights): within one topic both sides share words,
across a change of topic they share few. The similarity curve is smoothed, and each low point's
depth is how far it lies under the peaks on either side. The deepest become chapter starts, the
deepest first, while they stand out (at least `MIN_DEPTH`, and `DEPTH_SD` deviations over the
mean depth), at least `MIN_CHAPTER_S` from each other and from both ends. A start then moves to
the pause before its sentence, or to a neighbour's pause when that one is clearly longer: a
speaker's break is where listeners expect a new chapter.

Pure functions on words and times: no model, no download, no network.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import Counter

from audiobatch.tasks.extract.sentences import Sentence

WINDOW_WORDS = 45  # content words on each side of a gap (~40 s of speech at 150 words/min)
WINDOW_SENTENCES = 30  # ... and at most this many sentences: a side costs the same everywhere
MIN_CHAPTER_S = 40.0
MAX_CHAPTERS = 40
MIN_DEPTH = 0.12
DEPTH_SD = 0.5
SNAP_RATIO = 1.5  # a neighbour's pause must be this much longer to take the start
SNAP_MIN_PAUSE_S = 0.5
LEAD_S = 0.25  # a chapter starts this much before its first word (at most half the pause)
_WORD = re.compile(r"[^\W\d_]{3,}")


def stem(word: str) -> str:
    """A light suffix strip, enough to match "bees"/"bee" and "baking"/"bake" for counting."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[:-len(suffix)] + keep
    return word


def content_words(text: str, stopwords: frozenset[str]) -> list[str]:
    """Stems of the words that carry a topic: letters only, three or more, no stop words."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in stopwords]


def topic_starts(sentences: list[Sentence], words: list[list[str]], duration_s: float) -> list[int]:
    """Indices of the sentences that start a new topic (never 0), in order."""
    if len(sentences) < 3 or duration_s < 2 * MIN_CHAPTER_S:
        return []
    weights = _idf(words)
    scores = _smoothed([_similarity(words, gap, weights) for gap in range(1, len(sentences))])
    depths = _depths(scores)
    floor = max(MIN_DEPTH, statistics.fmean(depths) + DEPTH_SD * statistics.pstdev(depths))
    chosen: list[int] = []
    most = min(MAX_CHAPTERS - 1, int(duration_s // MIN_CHAPTER_S))
    for depth, gap in sorted(((d, g + 1) for g, d in enumerate(depths) if _is_low(scores, g)),
                             reverse=True):
        if depth < floor or len(chosen) >= most:
            break
        start = sentences[gap].start_s
        if start < MIN_CHAPTER_S or duration_s - start < MIN_CHAPTER_S:
            continue
        if all(abs(start - sentences[other].start_s) >= MIN_CHAPTER_S for other in chosen):
            chosen.append(gap)
    return sorted(chosen)


def _idf(words: list[list[str]]) -> dict[str, float]:
    """Inverse sentence frequency: a word said everywhere tells little about where topics change."""
    frequency = Counter(word for sentence in words for word in set(sentence))
    total = len(words)
    return {word: math.log((1 + total) / (1 + count)) + 1.0 for word, count in frequency.items()}


def _side(words: list[list[str]], indices: range) -> Counter:
    bag: Counter = Counter()
    for index in indices[:WINDOW_SENTENCES]:
        bag.update(words[index])
        if bag.total() >= WINDOW_WORDS:
            break
    return bag


def _similarity(words: list[list[str]], gap: int, weights: dict[str, float]) -> float:
    left = _side(words, range(gap - 1, -1, -1))
    right = _side(words, range(gap, len(words)))
    dot = sum(left[w] * right[w] * weights[w] ** 2 for w in left.keys() & right.keys())
    norm = math.sqrt(sum((c * weights[w]) ** 2 for w, c in left.items()) *
                     sum((c * weights[w]) ** 2 for w, c in right.items()))
    return dot / norm if norm else 0.0


def _smoothed(scores: list[float]) -> list[float]:
    return [statistics.fmean(scores[max(0, i - 1):i + 2]) for i in range(len(scores))]


def _depths(scores: list[float]) -> list[float]:
    """Each gap's depth: the climb to the highest point on its left plus on its right (where
    the curve stops rising), found in one pass each way: a flat curve costs no more."""
    left, right = list(scores), list(scores)
    for i in range(1, len(scores)):
        if scores[i - 1] >= scores[i]:
            left[i] = left[i - 1]
    for i in range(len(scores) - 2, -1, -1):
        if scores[i + 1] >= scores[i]:
            right[i] = right[i + 1]
    return [a - s + b - s for a, s, b in zip(left, scores, right)]


def _is_low(scores: list[float], i: int) -> bool:
    return all(scores[i] <= scores[j] for j in (i - 1, i + 1) if 0 <= j < len(scores))


def snapped_start(sentences: list[Sentence], index: int) -> float:
    """Where a chapter starting at sentence `index` begins: in the pause before it, or before
    a neighbour when that pause is clearly longer."""
    best = index
    for other in (index - 1, index + 1):
        if 0 < other < len(sentences):
            pause = sentences[other].pause_before_s
            if pause >= SNAP_MIN_PAUSE_S and pause >= SNAP_RATIO * sentences[best].pause_before_s:
                best = other
    sentence = sentences[best]
    return round(max(0.0, sentence.start_s - min(LEAD_S, sentence.pause_before_s / 2)), 2)
