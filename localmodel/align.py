"""Forced alignment with the embedded Whisper: known words placed in their audio.

CTranslate2's `Whisper.align` (what faster-whisper's `find_alignment` calls) runs the encoder
on at most 30 s of audio and the decoder's cross-attention over the given text tokens, and
DTW turns that into a time per token - no decoding, so the text stays exactly what it was.

Audio longer than one window is walked through in windows of WINDOW_S: each window is given
the next words (its share of the text at the text's mean pace, with a margin, at most
MAX_TEXT_TOKENS); words that end more than EDGE_S before the
window's end are kept (words near the end may belong to audio beyond it, where DTW squeezes
them) and the next window starts where the last kept word ended. Word edges are then clamped
to the speech Silero VAD hears, its onsets refined by level (`tasks.captions.words.clamp_to_speech`,
`tasks.audio.vad.refined_onsets`).
"""
from __future__ import annotations

import asyncio
import bisect
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiobatch.localmodel.encoder import encoding_to_align
from audiobatch.localmodel.engines import WHISPER_SAMPLE_RATE, Engines, Stopped, speaks_english
from audiobatch.localmodel.packing import MARGIN_S, WindowPacker
from audiobatch.tasks.audio.pauses import quiet_stretches
from audiobatch.tasks.audio.vad import no_speech_stretches, refined_onsets, speech_spans
from audiobatch.tasks.captions.words import MIN_QUIET_EDGE_S, Word, clamp_to_speech, off_quiet
from audiobatch.tasks.transcription.qa import SQUEEZED_S

WINDOW_S = 30.0  # 15 s windows for long audio would halve the encoder's cost (0.16 CPU-s
# against 0.56) but put fewer first words within 0.3 s of their voice (held-out 90% -> 80%)
EDGE_S = 1.0
MAX_TEXT_TOKENS = 220  # with the start-of-transcript tokens, well inside Whisper's 448
MEDIAN_FILTER_WIDTH = 7  # faster-whisper's default
WORDS_MARGIN = 1.6  # words given to a window beyond its share of the text (speech rate varies)
UNSURE_PACKED_FIT = (0.1, 0.6)  # a packed window's mean word probability here: align it alone
KEPT_GAP_S = 1.0  # a stretch where nobody speaks (vad.no_speech_stretches) is cut to this


class WhisperAligner:
    """The `tasks.captions.words.Aligner` of the embedded model; runs on the engines' inference thread."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    async def align(self, samples: np.ndarray, words: list[str], language: str | None) -> list[Word]:
        """Cancelling the caller (a run stopped, SIGTERM) stops the walk at its next window.
        While it waits for the inference thread, a short text's audio is offered to be encoded
        with other waiting ones (localmodel/packing.py)."""
        if not words:
            return []
        cut = await asyncio.to_thread(speech_cut, samples)
        with self.engines.packer.offered(cut[0], speaks_english(language)):
            return await self.engines.stoppable(self.align_blocking, samples, words, language, cut=cut)

    def align_blocking(self, samples: np.ndarray, words: list[str], language: str | None,
                       stop: threading.Event | None = None,
                       cut: tuple[np.ndarray, Timeline] | None = None) -> list[Word]:
        """`cut`: `speech_cut(samples)`, when the caller has it already."""
        if not words:
            return []
        model = self.engines.whisper_for(language)
        tokenizer = _tokenizer(model, language)
        tokens = [tokenizer.encode(_as_whisper_writes(word, first=i == 0)) or [tokenizer.eot - 1]
                  for i, word in enumerate(words)]
        heard = speech_spans(samples) if samples.size else []
        speech, timeline = cut or speech_cut(samples)
        packing = Packing(self.engines.packer, speaks_english(language))
        walked = _walk_windows(model, tokenizer, speech, words, tokens, packing, stop)
        aligned = [timeline.word(w) for w in walked]
        spans = refined_onsets(samples, heard) if samples.size else []
        quiet = quiet_stretches(samples, WHISPER_SAMPLE_RATE, MIN_QUIET_EDGE_S)
        placed = off_quiet(clamp_to_speech(aligned, spans), quiet)
        return _monotonic(placed, len(samples) / WHISPER_SAMPLE_RATE)


@dataclass(frozen=True)
class Timeline:
    """Where the pieces of `speech_only`'s audio lie in the original: (start in the cut audio,
    start in the original) per piece, in order."""

    pieces: tuple[tuple[float, float], ...]

    def at(self, t: float, *, ending: bool = False) -> float:
        """The original time of cut-audio time `t`; exactly at a splice, a start belongs to
        the piece after it and an end (`ending`) to the piece before."""
        cut, original = self.pieces[self._piece(t, ending)]
        return original + t - cut

    def _piece(self, t: float, ending: bool = False) -> int:
        starts = [cut for cut, _ in self.pieces]
        return max((bisect.bisect_left if ending else bisect.bisect_right)(starts, t) - 1, 0)

    def word(self, word: Word) -> Word:
        """The word on the original timeline; one that straddles a splice keeps the side where
        it has more time (else it would span the whole stretch that was cut out)."""
        start, end = word.start_s, word.end_s
        first, last = self._piece(start), self._piece(end, ending=True)
        if last > first:
            splice_after, splice_before = self.pieces[first + 1][0], self.pieces[last][0]
            if splice_after - start >= end - splice_before:
                end = splice_after
            else:
                start = splice_before
        original_start = self.at(start)
        return Word(word.word, original_start, max(original_start, self.at(end, ending=True)),
                    word.probability)


def speech_cut(samples: np.ndarray) -> tuple[np.ndarray, Timeline]:
    """The audio the aligner walks: `speech_only`, cut where the voice detector hears none."""
    return speech_only(samples, no_speech_stretches(samples) if samples.size else [])


def speech_only(samples: np.ndarray, stretches: list[tuple[float, float]]
                ) -> tuple[np.ndarray, Timeline]:
    """The audio with every stretch where nobody speaks (`tasks.audio.vad.no_speech_stretches`)
    cut to KEPT_GAP_S (half of it kept beside the audio on each side), and where its pieces lie.

    Given 30 s of music between two sentences, DTW has to put the window's words somewhere and
    spread the second sentence over the music (seen: 20 words there, probability ~0). Cut
    out, the aligner sees speech wherever it looks, and text invented over the music has no
    time to be given (`tasks.transcription.qa`: squeezed words)."""
    rate, half = WHISPER_SAMPLE_RATE, KEPT_GAP_S / 2
    total = len(samples) / rate
    kept, position = [], 0.0
    for start, end in stretches:
        if end - start <= KEPT_GAP_S:
            continue
        kept.append((position, start + half if start > 0 else 0.0))
        position = end - half if end < total else total
    kept.append((position, total))
    kept = [(a, b) for a, b in kept if b > a]
    if sum(b - a for a, b in kept) >= total - 1e-6:
        return samples, Timeline(((0.0, 0.0),))
    pieces, cut = [], 0.0
    for a, b in kept:
        pieces.append((cut, a))
        cut += b - a
    audio = np.concatenate([samples[round(a * rate):round(b * rate)] for a, b in kept])
    return audio, Timeline(tuple(pieces))


def _as_whisper_writes(word: str, *, first: bool) -> str:
    """A word as it stands in the text (with the whitespace before it), as Whisper's decoder
    would write it: one leading space at most (a transcript's first word has one too)."""
    stripped = word.lstrip()
    return " " + stripped if first or stripped != word else stripped


def _tokenizer(model: Any, language: str | None) -> Any:
    from faster_whisper.tokenizer import Tokenizer

    multilingual = model.model.is_multilingual
    return Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                     language=(language or "en").split("-")[0].lower() if multilingual else None)


@dataclass(frozen=True)
class Packing:
    """Where a short window's encoding comes from: the engines' packer, for this model."""

    packer: WindowPacker
    model_key: bool


def _walk_windows(model: Any, tokenizer: Any, samples: np.ndarray, words: list[str],
                  tokens: list[list[int]], packing: Packing,
                  stop: threading.Event | None = None) -> list[Word]:
    rate, window = WHISPER_SAMPLE_RATE, round(WINDOW_S * WHISPER_SAMPLE_RATE)
    result: list[Word] = []
    position, i = 0, 0
    while i < len(words):
        if stop is not None and stop.is_set():
            raise Stopped()  # nobody waits for these words any more
        audio = samples[position:position + window]
        last = position + window >= len(samples)
        n = min(_words_that_fit(tokens, i),
                _words_expected(len(words) - i, len(samples) - position, len(audio)))
        times = _align_window(model, tokenizer, audio, tokens[i:i + n], packing)
        limit = len(audio) / rate - (0.0 if last else EDGE_S)
        keep = len(times) if last else _unsqueezed(times[:sum(1 for _, end, _ in times if end <= limit)])
        if keep == 0 and not last:
            position += window - round(EDGE_S * rate)  # no word ends here: a long pause
            continue
        offset = position / rate
        for word, (start, end, probability) in zip(words[i:i + keep], times[:keep]):
            result.append(Word(word, offset + start, offset + end, probability))
        i += keep
        position = max(position + 1, round(result[-1].end_s * rate))
    return result


def _padded_features(model: Any, audio: np.ndarray) -> np.ndarray:
    """The window's mel features as Whisper's encoder takes them (padded to 30 s)."""
    from faster_whisper.audio import pad_or_trim

    features = model.feature_extractor(audio)
    return pad_or_trim(features[:, :features.shape[-1] - 1])


def _unsqueezed(times: list[tuple[float, float, float]]) -> int:
    """How many of a window's words to keep: not a run of words squeezed into no time at its
    end. DTW packs words the window was given but does not hold (dense speech: economy's sped-up
    audio) into one instant, which may lie before the edge; the next window places them."""
    keep = len(times)
    while keep > 0 and times[keep - 1][1] - times[keep - 1][0] <= SQUEEZED_S:
        keep -= 1
    return keep if len(times) - keep >= 2 else len(times)  # one short word may be real speech


def _words_expected(words_left: int, samples_left: int, window_samples: int) -> int:
    """Words to give a window: what the rest of the text's pace puts in it, with room to spare
    (the decoder's cost grows with the text; words beyond the window are not kept anyway)."""
    if window_samples >= samples_left:
        return words_left
    return max(8, math.ceil(WORDS_MARGIN * words_left * window_samples / max(samples_left, 1)))


def _words_that_fit(tokens: list[list[int]], first: int) -> int:
    total, n = 0, 0
    for word_tokens in tokens[first:]:
        if n and total + len(word_tokens) > MAX_TEXT_TOKENS:
            break
        total += len(word_tokens)
        n += 1
    return n


def _align_window(model: Any, tokenizer: Any, audio: np.ndarray,
                  word_tokens: list[list[int]], packing: Packing) -> list[tuple[float, float, float]]:
    """(start_s, end_s, probability) of each word in one window of at most 30 s. A packed
    window whose words score neither clearly in nor clearly out of it is aligned again alone:
    the company in a pack moved a true text's score by up to 0.35 (localmodel/packing.py)."""
    padded = _padded_features(model, audio)
    frames = min(padded.shape[-1], len(audio) // model.feature_extractor.hop_length)
    heard = model.encodings.known(padded)
    if heard is None and packing.packer.packs(audio):
        piece = packing.packer.slice_for(model, audio, packing.model_key)
        times = _placed(model, tokenizer, audio, word_tokens, piece.encoding, piece.mel_frames, MARGIN_S)
        low, high = UNSURE_PACKED_FIT
        if not low <= _mean_probability(times) < high:
            return times
    encoding = heard if heard is not None else encoding_to_align(model, padded)
    return _placed(model, tokenizer, audio, word_tokens, encoding, frames, 0.0)


def _placed(model: Any, tokenizer: Any, audio: np.ndarray, word_tokens: list[list[int]],
            encoding: Any, frames: int, lead_s: float) -> list[tuple[float, float, float]]:
    """The words aligned on `encoding` (`frames` mel frames, the audio starting `lead_s` in)."""
    flat = [token for word in word_tokens for token in word]
    result = model.model.align(encoding, tokenizer.sot_sequence, [flat], frames,
                               median_filter_width=MEDIAN_FILTER_WIDTH)[0]
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = np.clip(time_indices[jumps] / model.tokens_per_second - lead_s,
                         0.0, len(audio) / WHISPER_SAMPLE_RATE)
    bounds = np.pad(np.cumsum([len(w) for w in word_tokens]), (1, 0))
    bounds = np.minimum(bounds, len(jump_times) - 1)
    probabilities = result.text_token_probs
    return [(float(jump_times[a]), float(jump_times[b]),
             float(np.mean(probabilities[a:b])) if b > a else 0.0)
            for a, b in zip(bounds[:-1], bounds[1:])]


def _mean_probability(times: list[tuple[float, float, float]]) -> float:
    return float(np.mean([probability for _, _, probability in times])) if times else 0.0


def _monotonic(words: list[Word], duration_s: float) -> list[Word]:
    """Starts never go back, every time inside the audio (the Aligner invariant)."""
    fixed, floor = [], 0.0
    for word in words:
        start = min(max(word.start_s, floor), duration_s)
        end = min(max(word.end_s, start), duration_s)
        fixed.append(Word(word.word, start, end, word.probability))
        floor = start
    return fixed


class LocalEars:
    """What the embedded Whisper hears in a chunk: the reference transcript QA compares a
    remote model's reply with (`tasks.transcription.qa`, coverage and "answer" checks)."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    async def hear(self, samples: np.ndarray, language: str | None) -> str:
        heard = await self.engines.hear(samples, multilingual=not speaks_english(language),
                                        language=language, reference=True)
        return heard.text
