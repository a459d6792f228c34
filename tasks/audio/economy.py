"""Pay only for speech: shorten long pauses before sending, speed speech up, map times back.

Remote audio models bill every 100 ms of input audio, silence included. With an `Economy`
setting, `tasks.audio.prepare.prepare_chunks` sends less audio for the same words:

1. `shorten_pauses` listens to the decoded stream with the Silero VAD (`tasks.audio.vad`) and its
   levels, and leaves out the middle of every pause of at least `pause_s` - audio the VAD hears
   no speech in, that is quiet for its stretch of the recording AND not beside loud audio the
   VAD hears no speech in (speech it is unsure of) - keeping `gap_s` of it (half from each
   end, with 8 ms fades at the splice);
2. the chunker packs the shortened stream into requests within the same audio-token budget;
3. each chunk is played `speed` times faster, pitch kept (`tasks.audio.stitch.time_stretch`;
   the preset keeps speed 1.0).

`TimeMap` records where every sent sample came from, so segment, word and caption times stay on
the original recording's timeline: sent seconds -> (x speed) -> shortened stream -> original.

Invariants: every window the VAD hears as speech, or that is loud for its stretch, is sent
whole and in order; only the middles
of pauses at least `pause_s` long are dropped; the map is non-decreasing, takes 0 to 0 and the
end of the sent audio to the end of the recording. Memory is bounded: the stream holds about
`STEP_S` of audio plus one undecided pause, never the recording.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiobatch.tasks.audio.pauses import frame_levels_db, quiet_threshold_db
from audiobatch.tasks.audio.vad import VAD_RATE, WINDOW_S, WINDOW_SAMPLES, speech_spans
from audiobatch.tasks.errors import ConfigError

MIN_SPEED, MAX_SPEED = 1.0, 2.0  # atempo keeps one WSOLA stage up to 2x
STEP_S = 30.0  # audio labelled per VAD call
CONTEXT_S = 1.0  # heard before each step (the VAD's state is reset on every call)
AHEAD_S = 1.0  # heard after each step, so a word starting at the step's end is heard as speech
# Speech as the VAD hears it, widened: Silero answers late on soft onsets (up to ~0.25 s on the
# held-in clips, e.g. LJ001-0001's first word) and a word's tail can fade under its threshold.
ONSET_PAD_S = 0.25
OFFSET_PAD_S = 0.1
# Where the VAD hears no speech in loud audio (a telephone line, a noisy room: speech it is
# unsure of), the pauses beside it are kept whole this far: the embedded Whisper drops text
# over what Silero takes for 4 s of non-speech (localmodel.engines.over_speech), and with the
# pauses around such speech shortened that stretch grew over whole sentences (varied episodes,
# tests/helpers/varied.py). At most CONTEXT_S and AHEAD_S: the labels see no further.
UNSURE_REACH_S = 1.0
# What is kept of a shortened pause (the part the VAD hears no speech in, pads aside) lasts at
# least this long once sped up: the caption timer marks it as a phrase break of 0.4 s
# (tasks.captions.segments.ANCHOR_GAP_S) around each splice (`TimeMap.splices`).
MIN_SENT_GAP_S = 0.45
FADE_SAMPLES = 128  # 8 ms at 16 kHz: no click where a pause's middle was cut out
OUT_BLOCK = 1 << 14  # samples per yielded block (the chunker's buffer expects decoder-sized blocks)


@dataclass(frozen=True)
class Economy:
    """How to send less audio: pauses of at least `pause_s` become `gap_s`; speech `speed`x."""

    pause_s: float
    gap_s: float
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gap_s) and self.gap_s >= 2 * WINDOW_S):
            raise ConfigError(f"economy gap {self.gap_s} s is too short: keep at least "
                              f"{2 * WINDOW_S:.3f} s of each shortened pause")
        if not (math.isfinite(self.pause_s) and self.pause_s > self.gap_s + WINDOW_S):
            raise ConfigError(f"economy pause threshold {self.pause_s} s must exceed the gap "
                              f"({self.gap_s} s) it is shortened to")
        if not MIN_SPEED <= self.speed <= MAX_SPEED:  # also rejects NaN
            raise ConfigError(f"economy speed {self.speed} is outside {MIN_SPEED}-{MAX_SPEED}: "
                              "use --economy-speed 1.0 (pauses only) up to 2.0")

    @property
    def long_windows(self) -> int:
        """A silent run of this many VAD windows is a pause to shorten (always longer than
        what is kept of it)."""
        return max(math.ceil(self.pause_s / WINDOW_S - 1e-9), 2 * self.keep_windows + 1)

    @property
    def keep_windows(self) -> int:
        """Windows kept at each end of a shortened pause: half the gap, and at least half of
        MIN_SENT_GAP_S once sped up."""
        return max(round(self.gap_s / 2 / WINDOW_S),
                   math.ceil(MIN_SENT_GAP_S * self.speed / 2 / WINDOW_S - 1e-9))


# Chosen by benchmarks/economy.py: the most audio tokens saved with WER within 0.5 points of
# the default run on every tuning corpus (docs/performance.md, "How the economy preset was
# chosen"). Pauses of 1 s or more, speech at its own speed: sped up 1.15x, the embedded Whisper
# dropped whole passages of varied speech (+5.2 points) and lost words on plain clips (+0.86);
# pauses from 0.5 s cost 0.57 points on the recordings with pauses. --economy-speed opts in.
PRESET = Economy(pause_s=1.0, gap_s=0.1, speed=1.0)


def economy_for(enabled: bool, speed: float | None = None,
                row: bool | None = None) -> Economy | None:
    """An item's economy setting (None: off): the manifest row's `economy` column wins over
    the run's `economy`; `speed` (--economy-speed) overrides the preset's and implies economy."""
    if row is False or not (row or enabled or speed is not None):
        return None
    return PRESET if speed is None else Economy(PRESET.pause_s, PRESET.gap_s, float(speed))


# --- which windows to keep (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Keep:
    """VAD windows [first, end) to send; a fade where a pause's middle was cut out."""

    first: int
    end: int
    fade_in: bool = False
    fade_out: bool = False


def _runs(silent: np.ndarray, offset: int) -> list[tuple[bool, int, int]]:
    """(value, first, end) of each run of equal labels, in absolute window indices."""
    if silent.size == 0:
        return []
    edges = np.flatnonzero(np.diff(silent.astype(np.int8))) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [silent.size]))
    return [(bool(silent[a]), offset + int(a), offset + int(b)) for a, b in zip(starts, ends)]


class PauseShortener:
    """Decides, window by window as labels arrive, which VAD windows are sent.

    Speech windows are always kept. A silent run shorter than `long_windows` is kept whole;
    a longer one keeps `keep_windows` at each end. Labels may arrive in any split: the
    decisions are the same as for the whole sequence at once.
    """

    def __init__(self, long_windows: int, keep_windows: int) -> None:
        if long_windows <= 2 * keep_windows:
            raise ConfigError("a pause to shorten must be longer than the gap it keeps")
        self.long = long_windows
        self.keep = keep_windows
        self.position = 0  # windows labelled so far
        self._run_start: int | None = None  # first window of the silent run in progress
        self._run_long = False

    def push(self, silent: np.ndarray) -> list[Keep]:
        """Labels of the next windows (True = nobody speaks); the windows now known to be sent."""
        keeps: list[Keep] = []
        for is_silent, first, end in _runs(np.asarray(silent, dtype=bool), self.position):
            if is_silent:
                self._extend_run(first, end, keeps)
            else:
                self._close_run(first, keeps)
                keeps.append(Keep(first, end))
        self.position += len(silent)
        return _merged(keeps)

    def finish(self) -> list[Keep]:
        """The end of the stream: the pause in progress (if any) is decided."""
        keeps: list[Keep] = []
        self._close_run(self.position, keeps)
        return keeps

    @property
    def undecided_from(self) -> int:
        """The first window whose fate is not known yet (its samples must be kept)."""
        if self._run_start is None:
            return self.position
        if not self._run_long:
            return self._run_start
        return max(self._run_start + self.keep, self.position - self.keep)

    def _extend_run(self, first: int, end: int, keeps: list[Keep]) -> None:
        if self._run_start is None:
            self._run_start = first
        if not self._run_long and end - self._run_start >= self.long:
            self._run_long = True
            keeps.append(Keep(self._run_start, self._run_start + self.keep, fade_out=True))

    def _close_run(self, end: int, keeps: list[Keep]) -> None:
        if self._run_start is None:
            return
        if self._run_long:
            keeps.append(Keep(end - self.keep, end, fade_in=True))
        elif end > self._run_start:
            keeps.append(Keep(self._run_start, end))
        self._run_start, self._run_long = None, False


def _merged(keeps: list[Keep]) -> list[Keep]:
    """Adjacent keeps joined where no splice lies between them."""
    merged: list[Keep] = []
    for keep in keeps:
        last = merged[-1] if merged else None
        if last and last.end == keep.first and not last.fade_out and not keep.fade_in:
            merged[-1] = Keep(last.first, keep.end, last.fade_in, keep.fade_out)
        else:
            merged.append(keep)
    return merged


# --- the timeline map -------------------------------------------------------------------------------

class TimeMap:
    """Where the sent audio came from: sent seconds -> original seconds.

    Built piece by piece as `shorten_pauses` keeps stretches of the original (`keep`). Within
    a piece time runs at `speed` (sent audio is the shortened stream played `speed`x faster);
    between pieces the original jumps over the dropped middle of a pause.
    """

    def __init__(self, sample_rate: int = VAD_RATE, speed: float = 1.0) -> None:
        self.sample_rate = sample_rate
        self.speed = speed
        self._short: list[int] = []  # start of each piece in the shortened stream (samples)
        self._original: list[int] = []  # start of each piece in the original (samples)
        self._length: list[int] = []
        self.short_samples = 0  # length of the shortened stream so far
        self.original_samples = 0  # length of the original, once `finish` is called

    def keep(self, original_start: int, n: int) -> None:
        """The next `n` samples of the shortened stream are original [start, start + n)."""
        if n <= 0:
            return
        if self._length and self._original[-1] + self._length[-1] == original_start:
            self._length[-1] += n
        else:
            self._short.append(self.short_samples)
            self._original.append(original_start)
            self._length.append(n)
        self.short_samples += n
        self.original_samples = max(self.original_samples, original_start + n)

    def finish(self, original_samples: int) -> None:
        self.original_samples = original_samples

    def sent_seconds(self, short_sample: int) -> float:
        """A position in the shortened stream as seconds of sent (sped-up) audio."""
        return short_sample / self.sample_rate / self.speed

    @property
    def sent_s(self) -> float:
        return self.sent_seconds(self.short_samples)

    @property
    def original_s(self) -> float:
        return self.original_samples / self.sample_rate

    def splices(self, first_s: float, end_s: float) -> list[float]:
        """Sent times in [first_s, end_s) where a pause's middle was left out."""
        positions = np.asarray(self._short[1:], dtype=float) / self.sample_rate / self.speed
        return positions[(positions >= first_s) & (positions < end_s)].tolist()

    def to_original(self, sent_s: float | np.ndarray) -> float | np.ndarray:
        """Original seconds of sent seconds (vectorised); times past either end are clamped."""
        if not self._length:
            return np.zeros_like(np.asarray(sent_s, dtype=float)) if np.ndim(sent_s) else 0.0
        short = np.asarray(self._short)
        position = np.asarray(sent_s, dtype=float) * self.speed * self.sample_rate
        piece = np.clip(np.searchsorted(short, position, side="right") - 1, 0, len(short) - 1)
        offset = np.clip(position - short[piece], 0, np.asarray(self._length)[piece])
        original = (np.asarray(self._original)[piece] + offset) / self.sample_rate
        return float(original) if np.ndim(original) == 0 else original


# --- the audio stream ------------------------------------------------------------------------------

class _Pending:
    """Decoded samples from absolute position `start` on, grown by a list of blocks and
    joined once per VAD step (decoder blocks are small; joining each would be quadratic)."""

    def __init__(self) -> None:
        self.start = 0
        self._data = np.zeros(0, dtype=np.float32)
        self._blocks: list[np.ndarray] = []
        self.end = 0

    def append(self, block: np.ndarray) -> None:
        self._blocks.append(np.asarray(block, dtype=np.float32).reshape(-1))
        self.end += len(self._blocks[-1])

    def samples(self, a: int, b: int) -> np.ndarray:
        if self._blocks:
            self._data = np.concatenate([self._data, *self._blocks])
            self._blocks = []
        return self._data[a - self.start: b - self.start]

    def drop_before(self, position: int) -> None:
        position = min(max(position, self.start), self.end)
        self.samples(self.start, self.start)  # join pending blocks first
        self._data = self._data[position - self.start:].copy()
        self.start = position


def _silent_windows(pending: _Pending, first: int, end: int, heard_until: int) -> np.ndarray:
    """Labels of windows [first, end): True where nobody speaks - no VAD speech span (widened
    by the pads) covers the window's centre, the window is quiet for this stretch of audio
    (`quiet_threshold_db` of its levels), AND no window within UNSURE_REACH_S is loud where
    the VAD hears no speech. The detector hears CONTEXT_S before and up to AHEAD_S after
    (sample `heard_until`)."""
    context = max(pending.start // WINDOW_SAMPLES, first - round(CONTEXT_S / WINDOW_S))
    offset = context * WINDOW_SAMPLES
    samples = pending.samples(offset, heard_until)
    spans = np.asarray(speech_spans(samples, pad_s=0.0), dtype=float).reshape(-1, 2)
    spans += (-ONSET_PAD_S, OFFSET_PAD_S)  # spans may now overlap: starts and ends stay sorted
    centres = ((np.arange(-(-len(samples) // WINDOW_SAMPLES)) + 0.5) * WINDOW_SAMPLES) / VAD_RATE
    inside = np.searchsorted(spans[:, 0], centres, side="right") - 1
    covered = (inside >= 0) & (centres < spans[np.maximum(inside, 0), 1])
    quiet = _quiet(samples, 0, centres.size)
    unsure = _widened(~covered & ~quiet, round(UNSURE_REACH_S / WINDOW_S))
    return (~covered & quiet & ~unsure)[first - context:end - context]


def _widened(marked: np.ndarray, reach: int) -> np.ndarray:
    """`marked` grown by `reach` windows on each side."""
    if reach <= 0 or not marked.any():
        return marked
    counts = np.convolve(marked.astype(np.int32), np.ones(2 * reach + 1, dtype=np.int32), mode="same")
    return counts > 0


def _quiet(samples: np.ndarray, first: int, end: int) -> np.ndarray:
    """Whether windows [first, end) of `samples` are quiet: close to this stretch's noise
    floor and far below its loud windows. Silero does not hear all speech: on held-out
    telephone and noisy-room clips it called whole sentences pauses, and economy left them
    out (WER 5.5% -> 12.2%); a window loud for its stretch is never left out."""
    levels = frame_levels_db(samples, WINDOW_SAMPLES)
    if levels.size == 0:
        return np.ones(end - first, dtype=bool)
    index = np.minimum(np.arange(first, end), levels.size - 1)  # a trailing partial window
    return levels[index] <= quiet_threshold_db(levels)


def _faded(samples: np.ndarray, keep: Keep) -> np.ndarray:
    if not (keep.fade_in or keep.fade_out):
        return samples
    samples = samples.copy()
    n = min(FADE_SAMPLES, len(samples))
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    if keep.fade_in:
        samples[:n] *= ramp
    if keep.fade_out:
        samples[len(samples) - n:] *= ramp[::-1]
    return samples


def shorten_pauses(blocks: Iterable[np.ndarray], economy: Economy,
                   timeline: TimeMap) -> Iterator[np.ndarray]:
    """The 16 kHz mono `blocks` with the middles of long pauses left out, as blocks again;
    `timeline` records where each yielded sample came from (complete when the stream ends)."""
    shortener = PauseShortener(economy.long_windows, economy.keep_windows)
    pending = _Pending()
    step = round(STEP_S / WINDOW_S)
    ahead = round(AHEAD_S / WINDOW_S) * WINDOW_SAMPLES
    context = round(CONTEXT_S / WINDOW_S)

    def emit(keeps: list[Keep]) -> Iterator[np.ndarray]:
        for keep in keeps:
            a, b = keep.first * WINDOW_SAMPLES, min(keep.end * WINDOW_SAMPLES, pending.end)
            samples = _faded(pending.samples(a, b), keep)
            timeline.keep(a, len(samples))
            for offset in range(0, len(samples), OUT_BLOCK):
                yield samples[offset:offset + OUT_BLOCK].copy()

    for block in blocks:
        pending.append(block)
        while pending.end >= (shortener.position + step) * WINDOW_SAMPLES + ahead:
            first = shortener.position
            labels = _silent_windows(pending, first, first + step,
                                     (first + step) * WINDOW_SAMPLES + ahead)
            yield from emit(shortener.push(labels))
            pending.drop_before(min(shortener.undecided_from, shortener.position - context)
                                * WINDOW_SAMPLES)
    last = -(-pending.end // WINDOW_SAMPLES)  # a trailing partial window counts
    if last > shortener.position:
        yield from emit(shortener.push(_silent_windows(pending, shortener.position, last,
                                                       pending.end)))
    yield from emit(shortener.finish())
    timeline.finish(pending.end)


def shortened_seconds(path: Path, economy: Economy, label: str) -> tuple[float, float]:
    """(recorded, sent) seconds of a local file under `economy`, without writing anything:
    what `audiobatch estimate --economy` predicts (the same VAD pass the run makes)."""
    from audiobatch.tasks.audio.codecs import iter_decoded

    timeline = TimeMap(VAD_RATE, economy.speed)
    for _ in shorten_pauses(iter_decoded(path, VAD_RATE, label), economy, timeline):
        pass
    return timeline.original_s, timeline.sent_s
