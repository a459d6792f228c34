"""Chunk transcripts -> one document, timed segments, and .txt/.srt/.vtt files.

The model answers each chunk with plain text (Chat Completions gives no timestamps), so
segment times are estimated from the chunk's audio: speech islands are found from frame
levels, long pauses are matched to sentence and clause breaks in the text (anchors), and the
words between anchors are spread over the speech between them in proportion to their length.
A segment that starts after a pause therefore starts where the speech does.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from tasks.audio import Chunk
from tasks.pauses import frame_levels_db, quiet_runs, quiet_threshold_db
from tasks.text import CLAUSE, SENTENCE, word_breaks

FRAME_S = 0.02
MIN_GAP_S = 0.15  # quiet stretches shorter than this are inside words
ANCHOR_GAP_S = 0.4  # pauses at least this long are matched to breaks in the text
ANCHOR_TOLERANCE = 0.15  # how far (as a share of the chunk's text) a pause may sit from its break
CAPTION_MAX_WORDS = 16


@dataclass(frozen=True)
class Segment:
    chunk_index: int
    start_s: float
    end_s: float
    text: str


# --- joining chunk transcripts ---------------------------------------------------------------

def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def _overlap_cut(previous: list[str], current: list[str], window: int, min_match: int) -> tuple[int, int] | None:
    """Where the overlap of two transcripts lines up: (words of `previous` to keep, words of
    `current` to drop), or None when their edges do not repeat each other."""
    tail, head = previous[-window:], current[:window]
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in tail], b=[_norm(w) for w in head],
                                      autojunk=False)
    match = matcher.find_longest_match(0, len(tail), 0, len(head))
    if match.size < min_match:
        return None
    if window == min_match and not (match.a + match.size == len(tail) and match.b == 0):
        return None
    return len(previous) - len(tail) + match.a, match.b


def dedupe_chunk_texts(texts: list[str], overlap_s: float = 0.0) -> list[str]:
    """Each chunk's text with words repeated from the previous chunk removed.

    With overlap, the overlapped stretch is transcribed twice: the two versions are aligned
    and the later one is kept (the earlier chunk's last word may be cut off). Without overlap,
    only an exact repeat of two or more words right at the boundary is dropped.
    """
    words = [text.split() for text in texts]
    window = max(4, int(overlap_s * 4) + 4) if overlap_s > 0 else 2
    for i in range(1, len(words)):
        previous = next((w for w in reversed(words[:i]) if w), None)
        if not previous or not words[i]:
            continue
        cut = _overlap_cut(previous, words[i], window, min_match=2)
        if cut is None:
            continue
        keep_previous, drop_current = cut
        del previous[keep_previous:]
        del words[i][:drop_current]
    return [" ".join(w) for w in words]


def join_transcripts(texts: list[str], overlap_s: float = 0.0) -> str:
    return " ".join(t for t in dedupe_chunk_texts(texts, overlap_s) if t)


# --- timing ----------------------------------------------------------------------------------

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


def _anchor_pairs(islands: list[tuple[float, float]], fractions: list[float],
                  strengths: list[int]) -> list[tuple[int, int]]:
    """(island index, word index): long pauses matched, in order, to text breaks near them."""
    before = _voiced_before(islands)
    total = before[-1] or 1.0
    pairs, last_word = [], 0
    for k in range(1, len(islands)):
        if islands[k][0] - islands[k - 1][1] < ANCHOR_GAP_S:
            continue
        share = before[k] / total
        candidates = [(abs(fractions[i] - share) - 0.03 * strengths[i - 1], i)
                      for i in range(last_word + 1, len(fractions))
                      if strengths[i - 1] >= CLAUSE and abs(fractions[i] - share) <= ANCHOR_TOLERANCE]
        if candidates:
            last_word = min(candidates)[1]
            pairs.append((k, last_word))
    return pairs


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
               duration_s: float) -> list[float]:
    """Estimated start time (in the chunk) of every word."""
    if not islands:
        islands = [(0.0, duration_s)]
    weights = [len(w) + 1.0 for w in words]
    cumulative = np.concatenate(([0.0], np.cumsum(weights)))
    fractions = (cumulative[:-1] / cumulative[-1]).tolist()
    bounds = [(0, 0)] + _anchor_pairs(islands, fractions, strengths) + [(len(islands), len(words))]
    times: list[float] = []
    for (island_a, word_a), (island_b, word_b) in zip(bounds, bounds[1:]):
        if word_b > word_a:
            times += _spread(islands[island_a:island_b] or [islands[-1]], weights[word_a:word_b])
    return times


def _caption_groups(words: list[str], strengths: list[int]) -> list[tuple[int, int]]:
    """Word ranges of captions: break at sentence ends, or at the best break before the cap."""
    groups, start = [], 0
    while start < len(words):
        end = start
        while end < len(words) and end - start < CAPTION_MAX_WORDS:
            end += 1
            if strengths[end - 1] >= SENTENCE and end - start >= 3:
                break
        if end < len(words) and end - start >= CAPTION_MAX_WORDS:
            best = max(range(start + CAPTION_MAX_WORDS // 2, end), key=lambda i: strengths[i - 1])
            end = best if strengths[best - 1] >= CLAUSE else end
        groups.append((start, end))
        start = end
    return groups


def chunk_segments(chunk: Chunk, text: str, samples: np.ndarray, sample_rate: int) -> list[Segment]:
    spans, strengths = word_breaks(text)
    if not spans:
        return []
    words = [text[a:b] for a, b in spans]
    islands = speech_islands(samples, sample_rate)
    starts = word_times(words, strengths, islands, chunk.duration_s)
    speech_end = islands[-1][1] if islands else chunk.duration_s
    segments = []
    for a, b in _caption_groups(words, strengths):
        end = starts[b] if b < len(words) else speech_end
        segments.append(Segment(chunk.index, round(chunk.start_s + starts[a], 3),
                                round(chunk.start_s + max(end, starts[a]), 3),
                                text[spans[a][0]:spans[b - 1][1]]))
    return segments


def build_segments(chunks: list[Chunk], texts: list[str], overlap_s: float = 0.0) -> list[Segment]:
    """Timed caption segments for the whole item (reads each chunk's wav back from disk)."""
    segments: list[Segment] = []
    for chunk, text in zip(chunks, dedupe_chunk_texts(texts, overlap_s)):
        samples, rate = sf.read(chunk.path, dtype="float32")
        segments += chunk_segments(chunk, text, samples, rate)
    return segments


# --- subtitle files --------------------------------------------------------------------------

def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render_srt(segments: list[Segment]) -> str:
    blocks = [f"{i}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{s.text}\n"
              for i, s in enumerate(segments, start=1)]
    return "\n".join(blocks)


def render_vtt(segments: list[Segment]) -> str:
    blocks = [f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{s.text}\n"
              for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)
