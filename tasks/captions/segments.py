"""Timed caption segments of a chunk: from aligned words, or estimated from the audio's levels.

The model answers each chunk with plain text (Chat Completions gives no timestamps). With word
times (the aligner's, tasks.captions.words) a caption runs from its first word's start to its
last word's end. Without them, segment times are estimated from the chunk's audio: speech
islands are found from frame levels and grouped into phrases at long pauses; a small dynamic
program gives each phrase the words whose length fits its voiced time, preferring to start
phrases at sentence and clause breaks; within a phrase words are spread over its speech in
proportion to their length. Captions also break where a phrase starts, so a caption that
follows a pause starts where the speech does. Both jobs use this: transcripts and the exact
captions of a narration.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from audiobatch.tasks.audio.pauses import frame_levels_db, quiet_runs, quiet_threshold_db
from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.text.speakable import CLAUSE, PARAGRAPH, SENTENCE, WORD, word_breaks

FRAME_S = 0.02
MIN_GAP_S = 0.15  # quiet stretches shorter than this are inside words
ANCHOR_GAP_S = 0.4  # pauses at least this long separate phrases, matched to breaks in the text
# How much a phrase's speaking rate may differ from the chunk's: (seconds, share of the phrase).
RATE_SLACK = (0.3, 0.2)
# Cost of a phrase starting after a break of each strength (WORD, CLAUSE, SENTENCE), in units
# of a squared RATE_SLACK: a pause is put at a plain word boundary only when no punctuation
# lies within about two slacks.
BREAK_COST = {WORD: 4.0, CLAUSE: 1.0, SENTENCE: 0.0}
CAPTION_MAX_WORDS = 16

@dataclass(frozen=True)
class Segment:
    chunk_index: int
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()  # aligned words, on the recording's timeline (if aligned)


def speech_islands(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """(start_s, end_s) of the stretches of sound between pauses of at least MIN_GAP_S."""
    frame = max(1, round(FRAME_S * sample_rate))
    levels = frame_levels_db(samples, frame)
    if levels.size == 0:
        return []
    quiet = levels <= quiet_threshold_db(levels)
    gaps = quiet_runs(quiet, max(1, round(MIN_GAP_S / FRAME_S)))
    islands, position = [], 0
    for first, end in gaps + [(len(levels), len(levels))]:
        if first > position:
            islands.append((position * FRAME_S, first * FRAME_S))
        position = end
    return islands


def _voiced_before(islands: list[tuple[float, float]]) -> list[float]:
    total, before = 0.0, []
    for start, end in islands:
        before.append(total)
        total += end - start
    return before + [total]


def _phrases(islands: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The islands grouped into phrases: runs of speech separated by pauses >= ANCHOR_GAP_S."""
    phrases = [[islands[0]]]
    for previous, island in zip(islands, islands[1:]):
        if island[0] - previous[1] >= ANCHOR_GAP_S:
            phrases.append([])
        phrases[-1].append(island)
    return phrases


def _phrase_starts(voiced_s: list[float], weights: list[float], strengths: list[int]) -> list[int]:
    """Index of the first word of each phrase, by dynamic programming over the word boundaries.

    Each phrase should hold words whose length matches its voiced time at the chunk's mean
    rate (a phrase's cost is its squared deviation in units of RATE_SLACK); starting a phrase
    at a word costs BREAK_COST of the break before it, so pauses fall at sentence and clause
    ends when the lengths allow, and at a plain word boundary when the transcript has no mark
    there. The whole chunk is solved at once, so one long pause cannot pull the rest astray.
    """
    n, total_s = len(weights), sum(voiced_s) or 1.0
    cumulative = np.concatenate(([0.0], np.cumsum(weights)))
    rate = cumulative[-1] / total_s  # weight per voiced second
    start_cost = np.array([0.0] + [BREAK_COST[min(s, SENTENCE)] for s in strengths[:-1]] + [0.0])
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0  # cost[b]: the best split of words[:b] over the phrases so far
    ends = np.arange(n + 1)
    choices = []
    for j, voiced in enumerate(voiced_s):
        expected, slack = rate * voiced, rate * (RATE_SLACK[0] + RATE_SLACK[1] * voiced)
        longest = min(n, int(3 * expected / min(weights)) + 4)  # longer phrases cost far too much
        firsts = ends[None, :] - np.arange(longest + 1)[:, None]  # [length, end] -> first word
        possible = firsts >= 0
        firsts = np.maximum(firsts, 0)
        deviation = (cumulative[ends] - cumulative[firsts] - expected) / slack
        total = np.where(possible, cost[firsts] + deviation ** 2, np.inf)
        length = total.argmin(axis=0)
        cost = total[length, ends] + (start_cost if j < len(voiced_s) - 1 else 0.0)
        choices.append(ends - length)
    starts, b = [], n
    for choice in reversed(choices):
        b = int(choice[b])
        starts.append(b)
    return starts[::-1]


def _spread(islands: list[tuple[float, float]], weights: list[float]) -> list[float]:
    """Start times of consecutive words with these weights, spread over the islands' speech."""
    before = _voiced_before(islands)
    total_weight = sum(weights) or 1.0
    starts, position = [], 0.0
    for weight in weights:
        voiced = position / total_weight * before[-1]
        k = max(0, int(np.searchsorted(before, voiced, side="right")) - 1)
        k = min(k, len(islands) - 1)
        starts.append(islands[k][0] + min(voiced - before[k], islands[k][1] - islands[k][0]))
        position += weight
    return starts


def word_times(words: list[str], strengths: list[int], islands: list[tuple[float, float]],
               duration_s: float) -> tuple[list[float], list[int]]:
    """Estimated start time (in the chunk) of every word, and the words that begin a phrase
    after a long pause (a caption should start there)."""
    phrases = _phrases(islands or [(0.0, duration_s)])
    weights = [len(w) + 1.0 for w in words]
    voiced = [sum(end - start for start, end in phrase) for phrase in phrases]
    starts = _phrase_starts(voiced, weights, strengths) + [len(words)]
    times: list[float] = []
    for phrase, a, b in zip(phrases, starts, starts[1:]):
        times += _spread(phrase, weights[a:b]) if b > a else []
    return times, [a for a, b in zip(starts[1:-1], starts[2:]) if 0 < a < b]


def _caption_groups(words: list[str], strengths: list[int]) -> list[tuple[int, int]]:
    """Word ranges of captions: break at paragraph ends (and pauses, which the caller marks as
    such) always, at sentence ends unless the caption would be a scrap of one or two words,
    or at the best break before the cap."""
    groups, start = [], 0
    while start < len(words):
        end = start
        while end < len(words) and end - start < CAPTION_MAX_WORDS:
            end += 1
            if strengths[end - 1] >= PARAGRAPH or (strengths[end - 1] >= SENTENCE and end - start >= 3):
                break
        if end < len(words) and end - start >= CAPTION_MAX_WORDS:
            best = max(range(start + CAPTION_MAX_WORDS // 2, end), key=lambda i: strengths[i - 1])
            end = best if strengths[best - 1] >= CLAUSE else end
        groups.append((start, end))
        start = end
    return groups


def chunk_segments(chunk: Chunk, text: str, samples: np.ndarray, sample_rate: int,
                   kept: tuple[int, int] | None = None) -> list[Segment]:
    """Timed captions of one chunk. Word times are estimated from the chunk's whole text and
    audio; only the words in `kept` (a range of word indices; default all) become captions,
    so words handed to the next chunk by the overlap join keep their place in the timing."""
    spans, strengths = word_breaks(text)
    first, last = kept if kept is not None else (0, len(spans))
    if first >= last:
        return []
    words = [text[a:b] for a, b in spans]
    islands = _broken_at(speech_islands(samples, sample_rate), chunk.splices_s)
    starts, anchors = word_times(words, strengths, islands, chunk.duration_s)
    speech_end = islands[-1][1] if islands else chunk.duration_s
    caption_breaks = list(strengths)
    for word in anchors:  # a long pause always ends a caption: the next starts with the speech
        caption_breaks[word - 1] = PARAGRAPH
    segments = []
    for a, b in _caption_groups(words[first:last], caption_breaks[first:last]):
        a, b = a + first, b + first
        end = min(starts[b], _speech_end_after(islands, starts[b - 1])) if b < len(words) else speech_end
        segments.append(Segment(chunk.index, round(chunk.start_s + starts[a], 3),
                                round(chunk.start_s + max(end, starts[a]), 3),
                                text[spans[a][0]:spans[b - 1][1]]))
    return segments


def _broken_at(islands: list[tuple[float, float]], splices: tuple[float, ...]) -> list[tuple[float, float]]:
    """Islands with a phrase-long pause around each splice (economy shortened a long pause
    there, and kept only speechless audio around it, which a noisy level may not show)."""
    half = ANCHOR_GAP_S / 2
    for t in splices:
        islands = [piece for a, b in islands
                   for piece in ((a, min(b, t - half)), (max(a, t + half), b)) if piece[1] > piece[0]]
    return islands


def _speech_end_after(islands: list[tuple[float, float]], time_s: float) -> float:
    """Where the speech running at `time_s` stops: a caption leaves the screen with its last
    word, not when the next caption starts after a pause."""
    return next((end for _, end in islands if end > time_s), float("inf"))


def in_order(segments: list[Segment]) -> list[Segment]:
    """Starts never go back and a segment ends by the time the next starts (estimates from
    overlapping chunks could otherwise cross by a fraction of a second)."""
    ordered: list[Segment] = []
    for segment in segments:
        if ordered and segment.start_s < ordered[-1].start_s:
            segment = replace(segment, start_s=ordered[-1].start_s,
                              end_s=max(segment.end_s, ordered[-1].start_s))
        if ordered and ordered[-1].end_s > segment.start_s:
            ordered[-1] = replace(ordered[-1], end_s=segment.start_s)
        ordered.append(segment)
    return ordered


def aligned_segments(chunk: Chunk, text: str, words: list[Word],
                     kept: tuple[int, int] | None = None) -> list[Segment]:
    """Timed captions of one chunk from its aligned words (one `Word` per `word_breaks` word,
    chunk-relative): a caption runs from its first word's start to its last word's end, and
    a pause of ANCHOR_GAP_S or more between words always ends one."""
    spans, strengths = word_breaks(text)
    first, last = kept if kept is not None else (0, len(spans))
    if first >= last or len(words) != len(spans):
        return []
    breaks = list(strengths)
    for i in range(len(words) - 1):
        if words[i + 1].start_s - words[i].end_s >= ANCHOR_GAP_S:
            breaks[i] = PARAGRAPH
    offset = chunk.start_s
    timeline = [replace(w, start_s=round(offset + w.start_s, 3), end_s=round(offset + w.end_s, 3))
                for w in words]
    segments = []
    for a, b in _caption_groups([w.word for w in timeline[first:last]], breaks[first:last]):
        a, b = a + first, b + first
        segments.append(Segment(chunk.index, timeline[a].start_s,
                                max(timeline[b - 1].end_s, timeline[a].start_s),
                                text[spans[a][0]:spans[b - 1][1]], tuple(timeline[a:b])))
    return segments
