"""Exact captions of a narration: the text's own words, timed by forced alignment of that text
to the narrated audio (the embedded Whisper's aligner, `tasks.captions.words.Aligner`, the one the
transcription side uses for word times; flows/runtime.py wires it, tasks never import it).

Each chunk is aligned as soon as its take is kept, beside the synthesis of the others: its
words (the chunk's speakable text, as `tasks.text.speakable.word_breaks` cuts it) get times within the
chunk. When the narration is rendered, each chunk's place in the file is known
(`stitch.finish_narration(placements=...)`: trimmed edges, pauses between chunks, pauses
shortened and the speed), so a word at t in its chunk is at clock(t). Captions are made as
transcripts' are (`captions.segments.caption_segments`: the broadcast rules of captions/cues.py),
and a caption's words are the text's: nothing is re-spelled by a model.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.audio.stitch import PartClock
from audiobatch.tasks.captions.cues import CaptionRules
from audiobatch.tasks.captions.segments import Segment, caption_segments as segments_of, chunk_words
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.text.speakable import word_breaks

ALIGN_RATE = 16_000  # what Whisper hears


def text_words(text: str) -> list[str]:
    """The words of a chunk's text, one per caption word (`word_breaks`' tokens)."""
    spans, _ = word_breaks(text)
    return [text[a:b] for a, b in spans]


async def align_chunk(aligner: Any, samples: np.ndarray, sample_rate: int, text: str,
                      language: str | None) -> list[Word]:
    """The chunk's words with their times in the chunk (as narrated, before any stretch)."""
    audio = await asyncio.to_thread(codecs.resample, samples, sample_rate, ALIGN_RATE)
    return await aligner.align(audio, text_words(text), language)


def caption_segments(chunks: list[tuple[int, str, list[Word], PartClock | None]],
                     offset_s: float = 0.0, rules: CaptionRules = CaptionRules(),
                     end_s: float | None = None) -> list[Segment]:
    """Captions of a narration (or of one audiobook chapter starting at `offset_s` and
    ending at `end_s`) from (chunk index, chunk text, its aligned words, its clock in the
    narration) per chunk."""
    pieces = []
    for index, text, words, clock in chunks:
        if clock is None or not words:
            continue  # a silent chunk left out of the narration
        placed = [replace(w, start_s=clock(w.start_s), end_s=clock(w.end_s)) for w in words]
        pieces.append(chunk_words(index, text, placed, offset_s))
    return segments_of(pieces, rules, end_s)
