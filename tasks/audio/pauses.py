"""Where to cut long audio into chunks: pure planning on frame levels, no audio I/O.

The recording is seen as a grid of short frames (25 ms) aligned to sample 0, each with its
RMS level in dBFS. A chunk starting at sample `start` may end at most `max_chunk_samples`
later; its end is chosen in a search window just before that limit:

- in the middle of the longest (then quietest) pause that reaches into the window, so that
  no chunk is cut inside speech when a pause exists there;
- failing that (continuous sound), at the quietest pair of adjacent frames in the window.

Only the frames between the chunk start and the limit are looked at, so the streaming code in
`tasks.audio.prepare` can decide with one chunk of audio buffered, and `plan_cuts` (the same rules over
a whole recording's levels) can be property-tested without audio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audiobatch.tasks.errors import ConfigError

FRAME_S = 0.025
MIN_PAUSE_S = 0.15  # shorter quiet stretches are mostly stop consonants, not pauses
MIN_CHUNK_S = 0.5
QUIET_FLOOR_DB = -60.0  # frames below this are quiet whatever the recording's level
SPEECH_MARGIN_DB = 25.0  # a pause is this far below the loud frames...
NOISE_MARGIN_DB = 12.0  # ...and within this of the noise floor
LEVEL_FLOOR_DB = -120.0


@dataclass(frozen=True)
class CutRules:
    """Chunking rules in samples (see `from_seconds` for the usual way to build them)."""

    frame_samples: int
    max_chunk_samples: int
    window_samples: int
    overlap_samples: int = 0
    min_pause_frames: int = 6

    def __post_init__(self) -> None:
        span_frames = (self.max_chunk_samples - self.overlap_samples) // max(self.frame_samples, 1)
        if self.frame_samples < 1 or self.overlap_samples < 0 or self.min_pause_frames < 2:
            raise ConfigError(f"invalid chunking rules {self}: frame, overlap and pause sizes "
                              "must be positive")
        if span_frames < round(MIN_CHUNK_S / FRAME_S):
            raise ConfigError(f"chunks of {self.max_chunk_samples} samples with an overlap of "
                              f"{self.overlap_samples} leave less than {MIN_CHUNK_S} s of new audio "
                              "per chunk: raise the audio-token budget or lower the overlap")
        if not 2 * self.frame_samples <= self.window_samples <= (
                self.max_chunk_samples - self.overlap_samples) // 2:
            raise ConfigError(f"search window of {self.window_samples} samples must be between two "
                              "frames and half a chunk (minus the overlap)")

    @classmethod
    def from_seconds(cls, sample_rate: int, *, max_chunk_s: float, search_window_s: float,
                     overlap_s: float = 0.0, frame_s: float = FRAME_S,
                     min_pause_s: float = MIN_PAUSE_S) -> CutRules:
        """Rules for `sample_rate`; the window is capped at half a chunk so every chunk advances."""
        if not (math.isfinite(max_chunk_s) and max_chunk_s > 0):
            raise ConfigError(f"max_chunk_s must be a positive number of seconds, got {max_chunk_s}")
        max_samples = seconds_to_samples_within(max_chunk_s, sample_rate)
        overlap = round(max(overlap_s, 0.0) * sample_rate)
        frame = max(1, round(frame_s * sample_rate))
        window = min(round(max(search_window_s, 0.0) * sample_rate), (max_samples - overlap) // 2)
        return cls(frame_samples=frame, max_chunk_samples=max_samples,
                   window_samples=max(window, 2 * frame), overlap_samples=overlap,
                   min_pause_frames=max(2, round(min_pause_s / frame_s)))


@dataclass(frozen=True)
class Span:
    """One planned chunk: samples [start, end) of the recording and how its end was chosen."""

    start: int
    end: int
    cut: str  # "pause", "vad" (a pause in speech under other sound), "quietest" (no pause in
    # the window) or "end" (end of the recording)


def seconds_to_samples_within(seconds: float, sample_rate: int) -> int:
    """The most samples whose duration (n / rate, as computed in floats) is <= seconds."""
    n = math.floor(seconds * sample_rate)
    while n > 0 and n / sample_rate > seconds:
        n -= 1
    return n


def frame_levels_db(samples: np.ndarray, frame_samples: int) -> np.ndarray:
    """RMS level in dBFS of each whole frame of `samples` (a trailing partial frame is dropped)."""
    n = len(samples) // frame_samples
    frames = np.asarray(samples[: n * frame_samples], dtype=np.float32).reshape(n, frame_samples)
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frame_samples
    return np.maximum(10.0 * np.log10(power + 1e-12), LEVEL_FLOOR_DB)


def quiet_threshold_db(levels_db: np.ndarray) -> float:
    """Level at or below which a frame counts as quiet, adapted to this stretch of audio.

    Quiet means well below the loud frames and close to the noise floor; a stretch with little
    dynamic range (music, noise) has no quiet frames. Digital near-silence is always quiet.
    """
    loud, floor = np.percentile(levels_db, [95, 10])
    return float(max(QUIET_FLOOR_DB, min(loud - SPEECH_MARGIN_DB, floor + NOISE_MARGIN_DB)))


def quiet_runs(quiet: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """(first, end) frame indices of the runs of quiet frames at least `min_frames` long."""
    edges = np.diff(np.concatenate(([0], quiet.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = ends - starts >= min_frames
    return list(zip(starts[keep].tolist(), ends[keep].tolist()))


def quiet_stretches(samples: np.ndarray, sample_rate: int, min_s: float,
                    frame_s: float = 0.01) -> list[tuple[float, float]]:
    """(start_s, end_s) of the quiet runs of at least `min_s` (by level: `quiet_threshold_db`)."""
    frame = round(frame_s * sample_rate)
    levels = frame_levels_db(samples, frame)
    if levels.size == 0:
        return []
    runs = quiet_runs(levels <= quiet_threshold_db(levels), max(1, round(min_s / frame_s)))
    return [(a * frame_s, b * frame_s) for a, b in runs]


def sounding(quiet: list[tuple[float, float]], total_s: float) -> list[tuple[float, float]]:
    """The stretches between quiet runs: where something sounds."""
    edges = [0.0] + [t for run in quiet for t in run] + [total_s]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]


def first_frame(start: int, rules: CutRules) -> int:
    """The first whole frame of a chunk starting at sample `start`."""
    return -(-start // rules.frame_samples)


def search_window(start: int, rules: CutRules) -> tuple[int, int]:
    """(earliest, limit) frame boundaries where a chunk starting at `start` may end.

    `limit` is the last frame boundary within the chunk budget; the window is the last
    `window_samples` before it (the rules guarantee it lies well after the chunk start).
    """
    limit = (start + rules.max_chunk_samples) // rules.frame_samples
    return limit - rules.window_samples // rules.frame_samples, limit


def choose_end(levels_db: np.ndarray, start: int, rules: CutRules,
               pauses: np.ndarray | None = None) -> tuple[int, str]:
    """End sample of the chunk starting at `start` that is longer than the budget.

    `levels_db` holds the levels of frames first_frame(start) .. limit-1, i.e. the chunk so far.
    `pauses`, when given, marks the same frames where a voice detector hears no speech
    (`tasks.audio.vad.pause_mask`). Tried in turn: quiet by level and free of speech ("pause"),
    free of speech under other sound, e.g. a music bed ("vad"), quiet by level alone
    ("pause"), and failing all, the quietest boundary ("quietest").
    """
    f0 = first_frame(start, rules)
    earliest, limit = search_window(start, rules)
    lo, hi = earliest - f0, limit - 1 - f0  # candidate boundaries, relative to f0
    quiet = levels_db <= quiet_threshold_db(levels_db)
    no_speech = pauses[:len(levels_db)] if pauses is not None else None
    candidates = [(quiet, "pause")] if no_speech is None else [
        (quiet & no_speech, "pause"), (no_speech, "vad"), (quiet, "pause")]
    for mask, how in candidates:
        inside = _middle_of_best_pause(mask, levels_db, lo, hi, rules)
        if inside is not None:
            return (f0 + inside) * rules.frame_samples, how
    pair_levels = levels_db[lo - 1:hi] + levels_db[lo:hi + 1]  # frames on both sides of k
    k = lo + int(np.argmin(pair_levels))
    return (f0 + k) * rules.frame_samples, "quietest"


def _middle_of_best_pause(quiet: np.ndarray, levels_db: np.ndarray, lo: int, hi: int,
                          rules: CutRules) -> int | None:
    """The boundary in [lo, hi] in the middle of the longest (then quietest, then latest)
    run of `quiet` frames that reaches into the window, or None."""
    best: tuple[tuple[int, float, int], int] | None = None
    for a, b in quiet_runs(quiet, rules.min_pause_frames):
        # a boundary k is inside the pause when frames k-1 and k are both quiet
        inside_lo, inside_hi = max(a + 1, lo), min(b - 1, hi)
        if inside_lo > inside_hi:
            continue
        key = (b - a, -float(levels_db[a:b].mean()), a)  # longest, then quietest, then latest
        if best is None or key > best[0]:
            best = (key, min(max((a + b) // 2, inside_lo), inside_hi))
    return None if best is None else best[1]


def plan_cuts(levels_db: np.ndarray, total_samples: int, rules: CutRules) -> list[Span]:
    """Plan the chunks of a whole recording from its frame levels (`frame_levels_db`).

    Chunks tile [0, total_samples) exactly, or overlap by `rules.overlap_samples`; each is at
    most `rules.max_chunk_samples` long. The same rules as the streaming `prepare_chunks`.
    """
    spans: list[Span] = []
    start = 0
    while total_samples - start > rules.max_chunk_samples:
        _, limit = search_window(start, rules)
        end, how = choose_end(levels_db[first_frame(start, rules):limit], start, rules)
        spans.append(Span(start, end, how))
        start = end - rules.overlap_samples
    if total_samples > start:
        spans.append(Span(start, total_samples, "end"))
    return spans
