"""Chunk transcripts -> one document, and the item's timed segments.

Chunks may overlap by a few seconds (`overlap_s`), so the words a chunk repeats from the one
before are found and kept once (no lost or doubled words at the cuts). The item's captions come
from tasks.captions.segments: aligned words where a chunk has them, else estimated from its audio.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import soundfile as sf

from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.captions.cues import CaptionRules
from audiobatch.tasks.captions.segments import (Segment, SpeakerAt, caption_segments, chunk_words,
                                                estimated_words)
from audiobatch.tasks.captions.words import Word


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


SAME_WORD_RATIO = 0.8  # "guttenberg" and "gutenberg": one word heard twice, spelled two ways


def _spelled_as(word: str, others: list[str]) -> str:
    """`word`, or the word of `others` it is a respelling of: the two chunks of an overlap hear
    the same words, and Whisper does not always spell them the same (measured: a 3 s overlap's
    words doubled because no two in a row were spelled alike)."""
    if len(word) < 4 or word in others:
        return word
    close = difflib.get_close_matches(word, [w for w in others if len(w) >= 4], n=1,
                                      cutoff=SAME_WORD_RATIO)
    return close[0] if close else word


def _overlap_cut(previous: list[str], current: list[str], window: int, min_match: int) -> tuple[int, int] | None:
    """Where the overlap of two transcripts lines up: (words of `previous` to keep, words of
    `current` to drop), or None when their edges do not repeat each other."""
    tail, head = previous[-window:], current[:window]
    tail_words = [_norm(w) for w in tail]
    matcher = difflib.SequenceMatcher(a=tail_words, b=[_spelled_as(_norm(w), tail_words) for w in head],
                                      autojunk=False)
    match = matcher.find_longest_match(0, len(tail), 0, len(head))
    if match.size < min_match:
        return None
    if window == min_match and not (match.a + match.size == len(tail) and match.b == 0):
        return None
    return len(previous) - len(tail) + match.a, match.b


def kept_word_ranges(texts: list[str], overlap_s: float = 0.0) -> list[tuple[int, int]]:
    """For each chunk's text, the range of its words (whitespace-separated) that the joined
    transcript keeps, once words repeated from the previous chunk are removed.

    With overlap, the overlapped stretch is transcribed twice: the two versions are aligned
    and the later one is kept (the earlier chunk's last word may be cut off). Without overlap,
    only an exact repeat of two or more words right at the boundary is dropped.
    """
    words = [text.split() for text in texts]
    kept = [[0, len(w)] for w in words]
    window = max(4, int(overlap_s * 4) + 4) if overlap_s > 0 else 2
    for i in range(1, len(words)):
        j = next((j for j in reversed(range(i)) if kept[j][1] > kept[j][0]), None)
        if j is None or not words[i]:
            continue
        cut = _overlap_cut(words[j][kept[j][0]:kept[j][1]], words[i], window, min_match=2)
        if cut is not None:
            keep_previous, drop_current = cut
            kept[j][1] = kept[j][0] + keep_previous
            kept[i][0] = drop_current
    return [(a, b) for a, b in kept]


def dedupe_chunk_texts(texts: list[str], overlap_s: float = 0.0) -> list[str]:
    """Each chunk's text with words repeated from the previous chunk removed."""
    ranges = kept_word_ranges(texts, overlap_s)
    return [" ".join(text.split()[a:b]) for text, (a, b) in zip(texts, ranges)]


def join_transcripts(texts: list[str], overlap_s: float = 0.0) -> str:
    return " ".join(t for t in dedupe_chunk_texts(texts, overlap_s) if t)


def build_segments(chunks: list[Chunk], texts: list[str], overlap_s: float = 0.0,
                   aligned: list[list[Word] | None] | None = None,
                   rules: CaptionRules = CaptionRules(),
                   to_recording: Callable[[float], float] | None = None,
                   end_s: float | None = None, speaker_at: SpeakerAt | None = None) -> list[Segment]:
    """The item's captions: each chunk's kept words, timed by the aligner where a chunk has
    aligned words, else estimated from its audio (read back from disk), on the recording's
    timeline (`to_recording`: economy's map; `end_s`: the recording's end), made into cues
    by `rules`, a cue per speaker (`speaker_at`, when speakers are labelled)."""
    pieces = []
    aligned = aligned or [None] * len(chunks)
    for chunk, text, kept, words in zip(chunks, texts, kept_word_ranges(texts, overlap_s), aligned):
        if words is None:
            samples, rate = sf.read(chunk.path, dtype="float32")
            estimated = estimated_words(chunk, text, samples, rate)
            pieces.append(chunk_words(chunk.index, text, estimated, chunk.start_s, kept,
                                      aligned=False, to_recording=to_recording))
        else:
            pieces.append(chunk_words(chunk.index, text, words, chunk.start_s, kept,
                                      to_recording=to_recording))
    return caption_segments(pieces, rules, end_s, speaker_at)
