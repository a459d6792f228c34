"""Narration audio: join the narrated chunks, set loudness, apply the narration speed.

`finish_narration` is the whole path: `stitch` (trim each chunk's edge silence, fade its edges,
put a pause of true silence between chunks) -> `loudness_normalise` (BS.1770 integrated loudness
to a target, then a peak ceiling) -> `speed_up` (pauses shortened more than the speech, then
FFmpeg's pitch-preserving `atempo` over the whole).
Encoding to a file format is `tasks.audio.codecs.encode`.

Samples are float32 mono arrays in [-1, 1]. Joins go through pydub on 16-bit PCM, which is
what every narration ends up as; `AudioSegment.from_file` is never used (it needs ffprobe).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
import numpy as np

from audiobatch.tasks.audio.codecs import to_int16
from audiobatch.tasks.audio.loudness import BLOCK_S, measure_lufs
from audiobatch.tasks.errors import InputError

with warnings.catch_warnings():
    # pydub looks for an ffmpeg binary at import and warns when there is none; we never use it.
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    from pydub import AudioSegment
    from pydub.silence import detect_leading_silence

MIN_SPEED, MAX_SPEED = 0.25, 4.0
_PEAK_DBFS = -1.0              # sample-peak ceiling of every finished narration
_SILENCE_BELOW_PEAK_DB = 45.0  # 10 ms windows this far under the part's peak count as silence
_KEEP_LEAD_MS = 30             # room for a soft onset before the first loud window
_KEEP_TAIL_MS = 120            # the natural decay of the last word
_LIMITER_WINDOW_S = 0.04       # peak limiter: gain changes over ~40 ms
_STRETCH_BLOCK = 8192          # samples per frame pushed through the filter graph
_STRETCH_TAIL_S = 0.25         # silence fed after the audio so atempo releases all of it
_PAUSE_FRAME_S = 0.01          # speed_up: pauses are found in 10 ms frames ...
_PAUSE_MIN_S = 0.1             # ... at least this long (shorter gaps are inside words)
_PAUSE_KEEP_S = 0.15           # a pause is never cut shorter than this (if it was longer)

PartClock = Callable[[float], float]  # a time in a narrated part -> its time in the narration


def finish_narration(parts: list[np.ndarray], sample_rate: int, *, speed: float = 1.0,
                     target_lufs: float = -16.0, pause_s: float = 0.35,
                     placements: list[PartClock | None] | None = None) -> np.ndarray:
    """Narrated chunks -> one narration: stitch, then loudness, then speed (in that order).

    `placements`, when given, is filled with one clock per part: the time in the finished
    narration of a time in the part as narrated (None for a silent part left out), so captions
    timed within each part land on the narration.

    Loudness is set before the stretch, so the speed moves it a little (measured on 172 s of
    speech: -15.5 LUFS at 0.25, -15.9 at 0.5, -16.2 at 1.25, -16.5 at 2.0, -16.8 at 4.0).
    """
    _check_speed(speed)  # fail before doing the work
    starts: list[float | None] = []
    joined = stitch(parts, sample_rate, pause_s=pause_s, placements=starts)
    levelled = loudness_normalise(joined, sample_rate, target_lufs=target_lufs)
    stretched, timeline = speed_up(levelled, sample_rate, speed)
    if placements is not None:
        placements[:] = [None if at is None else _clock(timeline, at) for at in starts]
    # atempo's overlap-add has not been seen to raise peaks, but the ceiling is a promise
    return _limit_peaks(stretched, sample_rate, 10.0 ** (_PEAK_DBFS / 20.0))


# --- joins ------------------------------------------------------------------------------

def stitch(parts: list[np.ndarray], sample_rate: int, *, pause_s: float = 0.35,
           fade_ms: float = 10.0, placements: list[float | None] | None = None) -> np.ndarray:
    """Join narrated chunks with `pause_s` of true silence between them and no clicks.

    Each part loses its leading/trailing near-silence (keeping a short onset and tail) and is
    faded in and out over `fade_ms`, so a part that starts or stops mid-waveform joins cleanly.
    Wholly silent parts are left out; if every part is silent that is an InputError.
    """
    if not parts:
        raise InputError("no narrated audio to stitch: the model returned no audio chunks; "
                         "check the text is not empty and the model supports audio output.")
    if sample_rate <= 0 or pause_s < 0 or fade_ms < 0:
        raise InputError(f"cannot stitch at sample_rate={sample_rate}, pause_s={pause_s}, "
                         f"fade_ms={fade_ms}: the rate must be positive and the pause and "
                         "fade not negative.")
    trimmed = [_trim_and_fade(_segment(part, sample_rate, index), fade_ms)
               for index, part in enumerate(parts)]
    segments = [segment for segment, _ in trimmed]
    spoken = [segment.raw_data for segment in segments if len(segment.raw_data)]
    if not spoken:
        raise InputError(f"all {len(parts)} narrated audio chunks are silent: the model returned "
                         "no speech; check the voice and the text sent to it.")
    pause = AudioSegment.silent(duration=pause_s * 1000.0, frame_rate=sample_rate).raw_data
    if placements is not None:
        placements[:] = _placements(trimmed, len(pause) // 2, sample_rate)
    # One bytes join rather than repeated `+`, which would copy the whole narration per part.
    return _to_float(pause.join(spoken))


def _segment(part: np.ndarray, sample_rate: int, index: int) -> AudioSegment:
    part = np.asarray(part, dtype=np.float32)
    if part.ndim != 1:
        raise InputError(f"narrated chunk {index}: expected mono samples (1-D), got shape "
                         f"{part.shape}; decode the chunk with tasks.audio.codecs.decode.")
    return AudioSegment(data=to_int16(part).tobytes(), sample_width=2, frame_rate=sample_rate,
                        channels=1)


def _trim_and_fade(segment: AudioSegment, fade_ms: float) -> tuple[AudioSegment, int]:
    """(the part without its edge silence, faded; the samples cut from its start)."""
    if len(segment) == 0 or segment.rms == 0:
        return segment[:0], 0
    threshold = segment.max_dBFS - _SILENCE_BELOW_PEAK_DB
    lead = detect_leading_silence(segment, silence_threshold=threshold)
    trail = detect_leading_silence(segment.reverse(), silence_threshold=threshold)
    if lead >= len(segment):
        return segment[:0], 0
    start = max(0, lead - _KEEP_LEAD_MS)
    end = len(segment) - max(0, trail - _KEEP_TAIL_MS)
    trimmed = segment[start:end]
    if fade_ms > 0:
        fade = min(fade_ms, len(trimmed) / 2)
        trimmed = trimmed.fade_in(fade).fade_out(fade)
    return trimmed, round(start * segment.frame_rate / 1000)


def _placements(trimmed: list[tuple[AudioSegment, int]], pause_samples: int,
                sample_rate: int) -> list[float | None]:
    """Where each part's first sample falls in the joined audio (None: a silent part)."""
    found: list[float | None] = []
    position = 0
    for segment, cut in trimmed:
        samples = len(segment.raw_data) // 2
        if not samples:
            found.append(None)
            continue
        found.append((position - cut) / sample_rate)
        position += samples + pause_samples
    return found


def _to_float(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32767.0


# --- loudness ---------------------------------------------------------------------------

def loudness_normalise(samples: np.ndarray, sample_rate: int, target_lufs: float = -16.0,
                       peak_dbfs: float = _PEAK_DBFS) -> np.ndarray:
    """Gain to `target_lufs` integrated loudness (ITU-R BS.1770), then a peak ceiling.

    Peaks above `peak_dbfs` are brought down by a short look-around limiter rather than by
    lowering everything, so speech with sharp peaks still reaches the target loudness.
    Audio too short to measure (< 0.4 s) or silent is only peak-limited.
    """
    samples = np.asarray(samples, dtype=np.float32)
    ceiling = 10.0 ** (peak_dbfs / 20.0)
    for _ in range(2):  # the limiter takes a little loudness off; the second pass gives it back
        loudness = _integrated_loudness(samples, sample_rate)
        if loudness is None:
            break
        gain = 10.0 ** ((target_lufs - loudness) / 20.0)
        samples = _limit_peaks(samples * np.float32(gain), sample_rate, ceiling)
    return _limit_peaks(samples, sample_rate, ceiling)


def _integrated_loudness(samples: np.ndarray, sample_rate: int) -> float | None:
    """LUFS with the streaming meter (pyloudnorm's copies the whole narration twice as float64:
    over a gigabyte for an hour of speech); None when too short or silent."""
    if len(samples) < BLOCK_S * sample_rate:
        return None
    loudness = measure_lufs(samples, sample_rate)
    return loudness if math.isfinite(loudness) else None


def _limit_peaks(samples: np.ndarray, sample_rate: int, ceiling: float) -> np.ndarray:
    """Smooth gain reduction so that no sample exceeds `ceiling`.

    The gain each sample needs is spread to its neighbours with a running minimum over
    `_LIMITER_WINDOW_S`, then smoothed with a running mean over the same window. The mean of
    minima over a window that contains the sample is never above what the sample needs, so
    nothing exceeds the ceiling, and the gain moves over tens of milliseconds: no clicks, and
    no gain wobble at the voice's pitch (a 5 ms limiter distorted speech enough to cost the
    embedded Whisper 1-2 points of WER when narrations were transcribed back).
    """
    if len(samples) == 0 or np.abs(samples).max() <= ceiling:
        return samples.astype(np.float32)
    window = max(1, int(sample_rate * _LIMITER_WINDOW_S)) | 1  # odd: centred on the sample
    needed = np.minimum(1.0, ceiling / np.maximum(np.abs(samples), 1e-12)).astype(np.float32)
    gain = running_mean(running_min(needed, window), window)
    return np.clip(samples * gain, -ceiling, ceiling)  # the clip only absorbs rounding


def _edge_padded(values: np.ndarray, window: int) -> np.ndarray:
    """`values` with window//2 copies of each end value on both sides (centred windows)."""
    half = window // 2
    return np.concatenate([np.full(half, values[0]), values, np.full(half, values[-1])])


def running_min(values: np.ndarray, window: int) -> np.ndarray:
    """Minimum over a centred window of odd length, in O(n) (van Herk / Gil-Werman: minima
    running forward and backward within window-sized blocks, combined at each position)."""
    padded = _edge_padded(values, window)
    n_blocks = -(-len(padded) // window)
    blocks = np.concatenate([padded, np.full(n_blocks * window - len(padded), np.inf,
                                             dtype=padded.dtype)]).reshape(n_blocks, window)
    forward = np.minimum.accumulate(blocks, axis=1).reshape(-1)
    backward = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    return np.minimum(backward[:len(values)], forward[window - 1:window - 1 + len(values)])


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over a centred window of odd length (cumulative sums in float64)."""
    sums = np.concatenate([[0.0], np.cumsum(_edge_padded(values, window), dtype=np.float64)])
    return ((sums[window:] - sums[:-window]) / window).astype(values.dtype)


# --- speed ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timeline:
    """Where a time of the narration before `speed_up` lands after it: the pieces kept (pauses
    cut shorter), joined, then all stretched `factor` times faster."""

    kept: np.ndarray  # (n, 2) sample ranges [start, end) of the input kept, in order
    factor: float
    sample_rate: int

    def at(self, seconds: float) -> float:
        sample = seconds * self.sample_rate
        piece = max(0, int(np.searchsorted(self.kept[:, 0], sample, side="right")) - 1)
        start, end = self.kept[piece]
        before = int((self.kept[:piece, 1] - self.kept[:piece, 0]).sum())
        within = min(max(sample - start, 0.0), end - start)  # a cut-out moment: its pause's cut
        return (before + within) / self.factor / self.sample_rate


def _clock(timeline: Timeline, start_s: float) -> PartClock:
    return lambda t: timeline.at(start_s + t)


def speed_up(samples: np.ndarray, sample_rate: int, speed: float) -> tuple[np.ndarray, Timeline]:
    """`speed` times shorter, the pitch kept, with exactly round(len / speed) samples.

    Faster than 1.0, pauses of 0.1 s or more (45 dB under the peak) are first cut to 1/speed²
    of their length (keeping at least 0.15 s), then the whole is stretched by what is still
    needed: at 1.5 the speech itself is played ~1.4x and the pauses ~2.2x. Whisper tiny.en hears
    this voice better so (three shared texts, 3,600 words: 8.96% WER against 9.67% with the
    same speed-up spread evenly; 7.27% at 1.0; docs/performance.md "Speed"). Slower speeds stretch evenly.
    """
    _check_speed(speed)
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    whole = np.array([[0, len(samples)]], dtype=np.int64)
    kept = _kept_around_pauses(samples, sample_rate, speed) if speed > 1.0 else whole
    shortened = np.concatenate([samples[a:b] for a, b in kept]) if len(kept) > 1 else samples
    target = round(len(samples) / speed)
    if len(shortened) < target:  # mostly pauses: cutting them would slow the speech down
        kept, shortened = whole, samples
    factor = len(shortened) / target if target else speed
    stretched = time_stretch(shortened, sample_rate, factor) if target else shortened[:0]
    return stretched, Timeline(kept, factor, sample_rate)


def _kept_around_pauses(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Sample ranges to keep: everything but the middle of each pause, of which 1/speed² is
    kept (half at each end, at least _PAUSE_KEEP_S)."""
    frame = max(1, round(_PAUSE_FRAME_S * sample_rate))
    n = len(samples) // frame
    if n == 0 or not np.any(samples):
        return np.array([[0, len(samples)]], dtype=np.int64)
    frames = samples[:n * frame].reshape(n, frame)
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames) / frame)
    quiet = rms < np.abs(samples).max() * 10.0 ** (-_SILENCE_BELOW_PEAK_DB / 20.0)
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1) * frame, np.flatnonzero(edges == -1) * frame
    kept, at = [], 0
    for start, end in zip(starts, ends):
        length = end - start
        if length < _PAUSE_MIN_S * sample_rate:
            continue
        keep = min(length, max(round(_PAUSE_KEEP_S * sample_rate), round(length / speed ** 2)))
        kept.append((at, start + keep // 2))
        at = end - (keep - keep // 2)
    kept.append((at, len(samples)))
    return np.array(kept, dtype=np.int64)


def time_stretch(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Play `speed` times faster (0.25-4.0) without changing pitch, with FFmpeg's atempo.

    The result has exactly round(len(samples) / speed) samples. atempo blends overlapping
    windows (WSOLA) only for factors within 0.5-2.0 (above 2 it drops samples), so larger
    changes chain several instances: 4.0 = 2.0 x 2.0.
    """
    _check_speed(speed)
    if speed == 1.0:
        return samples
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    # atempo holds back about one analysis window at the end of the stream: feed it some
    # silence after the audio, then cut the result to the exact length.
    tail = np.zeros(int(_STRETCH_TAIL_S * sample_rate), dtype=np.float32)
    stretched = _atempo(np.concatenate([samples, tail]), sample_rate, speed)
    expected = round(len(samples) / speed)
    if len(stretched) < expected:
        stretched = np.concatenate([stretched, np.zeros(expected - len(stretched), np.float32)])
    return stretched[:expected]


def _atempo(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    stages = max(1, math.ceil(abs(math.log2(speed)) - 1e-9))
    factor = speed ** (1.0 / stages)
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono",
                               time_base=Fraction(1, sample_rate))
    tempos = [graph.add("atempo", tempo=f"{factor:.10f}") for _ in range(stages)]
    graph.link_nodes(source, *tempos, graph.add("abuffersink")).configure()
    out: list[np.ndarray] = []
    for offset in range(0, len(samples), _STRETCH_BLOCK):
        graph.push(_frame(samples[offset:offset + _STRETCH_BLOCK], sample_rate, offset))
        out.extend(_drain(graph))
    graph.push(None)  # end of stream: flush what atempo still holds
    out.extend(_drain(graph))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _check_speed(speed: float) -> None:
    if not (MIN_SPEED <= speed <= MAX_SPEED):  # also rejects NaN
        raise InputError(f"narration speed {speed} is outside {MIN_SPEED}-{MAX_SPEED}; "
                         "choose a speed in that range (1.0 = as narrated, 2.0 = twice as fast).")


def _frame(block: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.reshape(1, -1)),
                                       format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    return frame


def _drain(graph: av.filter.Graph) -> list[np.ndarray]:
    blocks = []
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return blocks
        blocks.append(frame.to_ndarray().reshape(-1).astype(np.float32, copy=False))
