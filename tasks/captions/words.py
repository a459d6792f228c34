"""Word times: the interface to a forced aligner, and what the pipeline does with its answer.

A Chat Completions model returns text without times. An `Aligner` (the embedded Whisper's,
`audiobatch.localmodel.align.WhisperAligner`, wired by flows/runtime.py: tasks never import
localmodel) places each word of a known text in a stretch of 16 kHz mono audio. This module
keeps the tasks side of it:

- `Word` (one word, its start/end in seconds, the aligner's probability);
- `Aligner`: `await aligner.align(samples, words, language)` -> one `Word` per given word, in
  order, times relative to `samples[0]`;
- `clamp_to_speech(words, spans)`: moves word edges that fall in a pause (per `tasks.audio.vad`)
  to the speech beside it - aligners smear a word over the silence before or after it;
- `word_rows(...)`: the rows of the `words` dataset, on the recording's own timeline;
- `align_chunk` / `align_item`: a chunk's text (as `tasks.text.speakable.word_breaks` splits it, the
  words captions are made of) aligned to the chunk's wav; an item's chunks and its rows.

Invariant: `align` returns exactly as many words as it was given, each with
0 <= start_s <= end_s <= the audio's duration, starts never going back.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.errors import AudiobatchError
from audiobatch.tasks.text.speakable import word_breaks

log = logging.getLogger("audiobatch")


MAX_ONSET_SNAP_S = 0.5  # how far a first word's start may move back to its speech's onset
ANCHORED_S = 0.3  # of a word in the stretch where it starts, to keep it there (_stretch_for)


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    probability: float


class Aligner(Protocol):
    async def align(self, samples: np.ndarray, words: list[str],
                    language: str | None) -> list[Word]: ...


def clamp_to_speech(words: list[Word], spans: list[tuple[float, float]]) -> list[Word]:
    """Each word kept inside the stretch of speech it overlaps most (or, after a pause, the
    one it starts in: `_stretch_for`): an edge that lies in a
    pause moves to the speech, a word stretched over a pause (aligners smear a word over the
    silence before or after it) loses the side where it has less speech, and the first word
    of a stretch starts where the stretch does (Whisper's alignment places it up to ~0.2 s
    late)."""
    if not spans:
        return words
    starts = [a for a, _ in spans]
    clamped = []
    for word in words:
        first = max(0, bisect.bisect_right(starts, word.start_s) - 1)
        last = bisect.bisect_left(starts, word.end_s)
        overlaps = [(min(b, word.end_s) - max(a, word.start_s), a, b) for a, b in spans[first:last]]
        overlaps = [o for o in overlaps if o[0] > 0]
        if not overlaps:
            clamped.append(word)  # wholly in a pause: nothing better to say
            continue
        previous_end = clamped[-1].end_s if clamped else float("-inf")
        _, a, b = _stretch_for(word, overlaps, previous_end)
        start = max(word.start_s, a)
        if previous_end <= a and start - a < MAX_ONSET_SNAP_S:
            start = a  # the first word after a pause starts with the speech (DTW starts late)
        clamped.append(replace(word, start_s=start, end_s=max(start, min(word.end_s, b))))
    return clamped


def _stretch_for(word: Word, overlaps: list[tuple[float, float, float]],
                 previous_end: float) -> tuple[float, float, float]:
    """Of the stretches a word overlaps ((overlap, start, end), in order), the one it belongs
    to: the one it overlaps most, unless it starts inside an earlier one, after a pause, with
    at least ANCHORED_S of itself there. DTW finds the onset after a pause, then may smear the
    word's end over the next pause into the next word's speech ("Basle," after 4.7 s of
    silence: 0.54 s on its own voice, 0.66 s on "Paris"), and the larger overlap put it 1 s late."""
    most, first = max(overlaps), overlaps[0]
    if first != most and first[1] <= word.start_s and first[0] >= ANCHORED_S \
            and previous_end <= first[1]:
        return first
    return most


MIN_QUIET_EDGE_S = 0.3  # quiet this long inside a word's edge is a pause, not a soft consonant


def off_quiet(words: list[Word], quiet: list[tuple[float, float]]) -> list[Word]:
    """Each word without the quiet (by level: room tone, silence) it was stretched over: an
    edge lying in a quiet run of at least MIN_QUIET_EDGE_S moves out of it, and a word that
    spans a whole quiet run keeps the side where it has more time. Levels see pauses the voice
    detector misses (it slept through band-limited and noisy speech, and the words there were
    left spanning whole pauses)."""
    result = []
    for word in words:
        start, end = word.start_s, word.end_s
        for a, b in quiet:
            if b - a < MIN_QUIET_EDGE_S or b <= start or a >= end:
                continue
            if a <= start:
                start = min(b, end)  # the word begins in the pause: it starts after it
            elif b >= end:
                end = max(a, start)  # it ends in the pause: it ends before it
            elif a - start >= end - b:
                end = a  # it spans the pause: the longer side is the word
            else:
                start = b
        result.append(replace(word, start_s=start, end_s=max(start, end)))
    return result


def word_rows(run_id: str, item_id: str, chunk_index: int, offset_s: float, words: list[Word],
              first_index: int = 0) -> list[dict[str, Any]]:
    """`words` dataset rows: chunk-relative times moved to the recording's timeline."""
    return [{"run_id": run_id, "item_id": item_id, "chunk_index": chunk_index,
             "word_index": first_index + i, "word": w.word,
             "start_s": round(offset_s + w.start_s, 3), "end_s": round(offset_s + w.end_s, 3),
             "probability": round(float(w.probability), 4)}
            for i, w in enumerate(words)]


def text_words(text: str) -> list[tuple[int, int]]:
    """(start, end) characters of each word of `text`, as captions and the aligner count them."""
    return word_breaks(text)[0]


def word_pieces(text: str) -> list[str]:
    """Each word of `text` with the whitespace before it: what `Aligner.align` is given."""
    spans = text_words(text)
    return [text[(spans[i - 1][1] if i else 0):b] for i, (_, b) in enumerate(spans)]


async def align_chunk(aligner: Aligner, chunk: Chunk, text: str,
                      language: str | None) -> list[Word] | None:
    """One `Word` per `word_breaks` word of the chunk's text, placed in the chunk's wav; None
    when there is nothing to align or the aligner cannot (captions then use estimates)."""
    pieces = word_pieces(text)
    if not pieces or chunk.silent:
        return None
    samples, _ = await asyncio.to_thread(sf.read, chunk.path, dtype="float32")
    try:
        words = await aligner.align(samples, pieces, language)
    except AudiobatchError as error:
        log.warning("%s: no word times for chunk %d (%s); caption times estimated",
                    chunk.path.name, chunk.index, error)
        return None
    return [replace(w, word=w.word.strip()) for w in words]


async def align_item(aligner: Aligner | None, run_id: str, item_id: str, chunks: list[Chunk],
                     texts: list[str], language: str | None, kept: list[tuple[int, int]],
                     known: list[list[Word] | None] | None = None
                     ) -> tuple[list[list[Word] | None], list[dict[str, Any]]]:
    """Every chunk's aligned words (None without an aligner), and the `words` rows of the words
    the joined transcript keeps (`kept`: each chunk's range, `assemble.kept_word_ranges`),
    numbered through the item. `known`: words already aligned (by QA) for a chunk's text."""
    if aligner is None:
        return [None] * len(chunks), []
    known = known or [None] * len(chunks)
    aligned = [words if words is not None and len(words) == len(text_words(text))
               else await align_chunk(aligner, chunk, text, language)
               for chunk, text, words in zip(chunks, texts, known)]
    rows: list[dict[str, Any]] = []
    for chunk, words, (a, b) in zip(chunks, aligned, kept):
        if words:
            rows += word_rows(run_id, item_id, chunk.index, chunk.start_s, words[a:b],
                              first_index=len(rows))
    return aligned, rows
