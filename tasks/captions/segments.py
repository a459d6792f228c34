"""Timed captions of an item: its words (aligned, or timed by estimate) made into cues.

The model answers each chunk with plain text (Chat Completions gives no timestamps). With word
times (the aligner's, tasks.captions.words) every word has its own. Without them, word times
are estimated from the chunk's audio (`estimated_words`): speech islands are found from frame
levels and grouped into phrases at long pauses; a small dynamic program gives each phrase the
words whose length fits its voiced time, preferring to start phrases at sentence and clause
breaks; within a phrase words are spread over its speech in proportion to their length.

Either way the item's words, on the recording's timeline, become cues by the broadcast rules
of tasks.captions.cues (`caption_segments`). Both jobs use this: transcripts and the exact
captions of a narration.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from audiobatch.tasks.audio.pauses import frame_levels_db, quiet_runs, quiet_threshold_db
from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.captions.cues import CaptionRules, CueWord, build_cues
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.text.speakable import CLAUSE, SENTENCE, WORD, word_breaks

FRAME_S = 0.02
MIN_GAP_S = 0.15  # quiet stretches shorter than this are inside words
ANCHOR_GAP_S = 0.4  # pauses at least this long separate phrases, matched to breaks in the text
# How much a phrase's speaking rate may differ from the chunk's: (seconds, share of the phrase).
RATE_SLACK = (0.3, 0.2)
# Cost of a phrase starting after a break of each strength (WORD, CLAUSE, SENTENCE), in units
# of a squared RATE_SLACK: a pause is put at a plain word boundary only when no punctuation
# lies within about two slacks.
BREAK_COST = {WORD: 4.0, CLAUSE: 1.0, SENTENCE: 0.0}


@dataclass(frozen=True)
class Segment:
    """A caption (and a row of the `segments` dataset): times on the recording's timeline."""

    chunk_index: int
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()  # aligned words, on the recording's timeline (if aligned)
    lines: tuple[str, ...] = ()  # as the caption shows it (empty: wrap `text`)
    speaker: str | None = None  # who speaks (tasks.speakers labels them)


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


def estimated_words(chunk: Chunk, text: str, samples: np.ndarray, sample_rate: int) -> list[Word]:
    """One `Word` per `word_breaks` word of the chunk's text, its times (in the chunk)
    estimated from the audio's levels: a word lasts until the next starts, or until its
    speech stops (a pause follows). Probability 0: nobody heard it there."""
    spans, strengths = word_breaks(text)
    if not spans:
        return []
    words = [text[a:b] for a, b in spans]
    islands = _broken_at(speech_islands(samples, sample_rate), chunk.splices_s) or \
        [(0.0, chunk.duration_s)]  # nothing heard: the text is spread over the chunk
    starts, _ = word_times(words, strengths, islands, chunk.duration_s)
    ends = [min(following, _speech_end_after(islands, start))
            for start, following in zip(starts, [*starts[1:], chunk.duration_s])]
    return [Word(w, round(a, 3), round(max(a, b), 3), 0.0) for w, a, b in zip(words, starts, ends)]


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
    return next((end for _, end in islands if end > time_s), islands[-1][1])


@dataclass(frozen=True)
class ChunkWords:
    """A chunk's words as captions use them: on the recording's timeline, with the text's
    breaks; `aligned` tells whether their times are the aligner's (JSON lists those)."""

    chunk_index: int
    words: tuple[CueWord, ...]
    timed: tuple[Word, ...]
    aligned: bool


def chunk_words(chunk_index: int, text: str, words: list[Word], offset_s: float = 0.0,
                kept: tuple[int, int] | None = None, aligned: bool = True,
                to_recording: Callable[[float], float] | None = None) -> ChunkWords:
    """The words of a chunk's text (`word_breaks`' tokens, one `Word` each, chunk-relative)
    that the transcript keeps (`kept`: a range of word indices), moved to the recording's
    timeline: + `offset_s`, then `to_recording` (economy's map from sent audio back)."""
    spans, strengths = word_breaks(text)
    first, last = kept if kept is not None else (0, len(spans))
    if first >= last or len(words) != len(spans):
        return ChunkWords(chunk_index, (), (), aligned)
    place = to_recording or (lambda t: t)
    timed = tuple(replace(w, word=text[a:b], start_s=round(place(offset_s + w.start_s), 3),
                          end_s=round(place(offset_s + w.end_s), 3))
                  for w, (a, b) in zip(words[first:last], spans[first:last]))
    cue_words = tuple(CueWord(w.word, w.start_s, w.end_s, strengths[i],
                              " " if i == first or text[spans[i - 1][1]:spans[i][0]] else "")
                      for i, w in zip(range(first, last), timed))
    return ChunkWords(chunk_index, cue_words, timed, aligned)


SpeakerAt = Callable[[float, float], str | None]  # who speaks in [start_s, end_s] (tasks.speakers)


def caption_segments(chunks: list[ChunkWords], rules: CaptionRules = CaptionRules(),
                     end_s: float | None = None, speaker_at: SpeakerAt | None = None) -> list[Segment]:
    """Timed captions of a whole item, by the rules (tasks.captions.cues), from its chunks'
    words; a caption may run across a cut between chunks, and belongs to its first word's
    chunk. `end_s`: the recording's end, which no caption passes. `speaker_at`: each word's
    speaker, so a caption never holds two voices and is still cut by the rules."""
    words = [w for c in chunks for w in c.words]
    if speaker_at is not None:
        words = [replace(w, speaker=speaker_at(w.start_s, w.end_s)) for w in words]
    owners = [(c, k) for c in chunks for k in range(len(c.words))]
    segments = []
    for cue in build_cues(words, rules, end_s):
        chunk, _ = owners[cue.first]
        timed = tuple(owner.timed[k] for owner, k in owners[cue.first:cue.end] if owner.aligned)
        segments.append(Segment(chunk.chunk_index, round(cue.start_s, 3), round(cue.end_s, 3),
                                cue.text, timed, cue.lines, words[cue.first].speaker))
    return segments


def chunk_segments(chunk: Chunk, text: str, samples: np.ndarray, sample_rate: int,
                   kept: tuple[int, int] | None = None,
                   rules: CaptionRules = CaptionRules()) -> list[Segment]:
    """Timed captions of one chunk without word times: word times are estimated from the
    chunk's whole text and audio; only the words in `kept` (default all) become captions,
    so words handed to the next chunk by the overlap join keep their place in the timing."""
    estimated = estimated_words(chunk, text, samples, sample_rate)
    words = chunk_words(chunk.index, text, estimated, chunk.start_s, kept, aligned=False)
    return caption_segments([words], rules, chunk.start_s + chunk.duration_s)
