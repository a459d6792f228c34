"""Loudness after ITU-R BS.1770 (K-weighting, 400 ms gating blocks), in constant memory.

`StreamingLoudness` applies the K-weighting filters (the RBJ-cookbook biquads pyloudnorm uses:
a +4 dB shelf at 1,500 Hz, a 38 Hz high pass) block by block with FFmpeg's `biquad` filter
through PyAV in float64, and keeps the gating blocks as a fine histogram, so it measures a
3-hour stream or one chunk with a few hundred KB. It agrees with pyloudnorm to within 0.01 LU
(see tests/test_audio.py), without pyloudnorm's whole-signal float64 copies or SciPy.
"""
from __future__ import annotations

import math

import av
import numpy as np
from av.filter import Graph

SILENCE_LUFS = -60.0  # quieter than this is treated as silence: no gain, flagged silent
PEAK_CEILING_DBFS = -1.0  # gain is limited so that the sample peak stays below this
BLOCK_S = 0.4  # BS.1770 gating block; measured in 4 steps of 100 ms (75 % overlap)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_HIST_TOP_LUFS = 10.0
_HIST_BIN_LU = 0.01  # gate decisions are exact to within this
_BATCH_S = 2.0  # filter this much at a time: per-call overhead dominates small decoder blocks
# A segment's loudness is taken from the stream's steps only from this length on: the grid's
# edges (up to 100 ms each side) moved 1 s segments by up to 5 LU, 20-400 s ones by <= 0.06 LU.
SEGMENT_FROM_STEPS_MIN_S = 30.0
_BIN_EVERY = 4096  # gating blocks (~7 minutes of audio) collected before they are binned


class StreamingLoudness:
    """Integrated loudness of a mono stream fed block by block, in constant memory."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._filter = _KWeighting(sample_rate)
        self._step = max(1, round(BLOCK_S / 4 * sample_rate))
        self._batch = max(1, round(_BATCH_S * sample_rate))
        self._queued: list[np.ndarray] = []
        self._queued_samples = 0
        self._pending = np.zeros(0)  # weighted samples short of a whole 100 ms step
        self._recent_steps = np.zeros(0)  # mean squares of the last three steps
        n_bins = round((_HIST_TOP_LUFS - ABSOLUTE_GATE_LUFS) / _HIST_BIN_LU) + 1
        self._counts = np.zeros(n_bins, dtype=np.int64)
        self._power_sums = np.zeros(n_bins)
        self._unbinned: list[np.ndarray] = []  # gating blocks not yet in the histogram
        self._unbinned_count = 0
        self._kept_steps: list[np.ndarray] = []  # mean squares of every step since `_first_kept`
        self._first_kept = 0

    def add(self, block: np.ndarray) -> None:
        for start in range(0, len(block), self._batch):  # big blocks in batch-sized pieces
            piece = block[start:start + self._batch]
            self._queued.append(piece)
            self._queued_samples += len(piece)
            if self._queued_samples >= self._batch:
                self._flush()

    def integrated_lufs(self) -> float | None:
        """BS.1770 gated loudness so far; None when no block passes the -70 LUFS gate."""
        self._flush()
        self._bin_blocks()
        if self._counts.sum() == 0:
            return None
        mean_power = self._power_sums.sum() / self._counts.sum()
        relative_gate = -0.691 + 10.0 * math.log10(mean_power) + RELATIVE_GATE_LU
        bin_floor = ABSOLUTE_GATE_LUFS + _HIST_BIN_LU * np.arange(len(self._counts))
        above = bin_floor >= relative_gate - _HIST_BIN_LU / 2
        count = self._counts[above].sum()
        return -0.691 + 10.0 * math.log10(self._power_sums[above].sum() / count) if count else None

    def segment_lufs(self, start: int, stop: int) -> float | None:
        """Gated loudness of samples [start, stop) of the stream so far, from the steps the
        stream was weighted in (no second filter pass): the 400 ms blocks that lie inside the
        segment on the stream's 100 ms grid. -inf when silent; None for a segment shorter than
        SEGMENT_FROM_STEPS_MIN_S or starting before what was forgotten (measure its samples)."""
        self._flush()
        first, last = -(-start // self._step), stop // self._step
        if first < self._first_kept or stop - start < SEGMENT_FROM_STEPS_MIN_S * self.sample_rate:
            return None
        kept = np.concatenate(self._kept_steps) if len(self._kept_steps) > 1 else self._kept_steps[0]
        self._kept_steps = [kept]
        steps = kept[first - self._first_kept: last - self._first_kept]
        block_power = np.convolve(steps, np.full(4, 0.25), mode="valid")
        return _gated_lufs(block_power)

    def forget_before(self, position: int) -> None:
        """Drop the steps before sample `position`: no segment will start earlier."""
        drop = position // self._step - self._first_kept
        if drop > 0 and self._kept_steps:
            kept = np.concatenate(self._kept_steps)
            self._kept_steps = [kept[drop:]]
            self._first_kept += min(drop, len(kept))

    def _flush(self) -> None:
        if not self._queued:
            return
        batch = np.concatenate(self._queued).astype(np.float64)
        self._queued, self._queued_samples = [], 0
        weighted = self._filter.apply(batch)
        weighted = np.concatenate([self._pending, weighted])
        n_steps = len(weighted) // self._step
        self._pending = weighted[n_steps * self._step:]
        if n_steps == 0:
            return
        whole = weighted[: n_steps * self._step].reshape(n_steps, self._step)
        new_steps = np.mean(whole * whole, axis=1)
        self._kept_steps.append(new_steps)
        steps = np.concatenate([self._recent_steps, new_steps])
        self._recent_steps = steps[-3:]
        if len(steps) >= 4:  # a gating block is four steps (np.convolve would swap shorter input)
            self._add_blocks(np.convolve(steps, np.full(4, 0.25), mode="valid"))

    def _add_blocks(self, block_power: np.ndarray) -> None:
        """Into the histogram, a few thousand blocks at a time: per call, binning costs more
        than the ~20 blocks of one batch."""
        self._unbinned.append(block_power)
        self._unbinned_count += len(block_power)
        if self._unbinned_count >= _BIN_EVERY:
            self._bin_blocks()

    def _bin_blocks(self) -> None:
        if not self._unbinned:
            return
        block_power = np.concatenate(self._unbinned)
        self._unbinned, self._unbinned_count = [], 0
        with np.errstate(divide="ignore"):
            lufs = -0.691 + 10.0 * np.log10(block_power)
        keep = lufs >= ABSOLUTE_GATE_LUFS
        bins = np.minimum(((lufs[keep] - ABSOLUTE_GATE_LUFS) / _HIST_BIN_LU).astype(np.int64),
                          len(self._counts) - 1)
        self._counts += np.bincount(bins, minlength=len(self._counts))
        self._power_sums += np.bincount(bins, weights=block_power[keep], minlength=len(self._counts))


def _gated_lufs(block_power: np.ndarray) -> float:
    """BS.1770 integrated loudness of these gating blocks' mean squares (-inf: none above
    the absolute gate)."""
    with np.errstate(divide="ignore"):
        lufs = -0.691 + 10.0 * np.log10(block_power)
    audible = block_power[lufs >= ABSOLUTE_GATE_LUFS]
    if len(audible) == 0:
        return -math.inf
    relative_gate = -0.691 + 10.0 * math.log10(audible.mean()) + RELATIVE_GATE_LU
    return -0.691 + 10.0 * math.log10(block_power[lufs >= max(relative_gate, ABSOLUTE_GATE_LUFS)].mean())


def k_weighting(sample_rate: int) -> list[tuple[float, ...]]:
    """(b0, b1, b2, a1, a2) of the two K-weighting biquads, normalised by a0 (RBJ cookbook)."""
    def normalised(b: tuple[float, float, float], a: tuple[float, float, float]) -> tuple[float, ...]:
        return (*(x / a[0] for x in b), a[1] / a[0], a[2] / a[0])

    w0 = 2.0 * math.pi * 1500.0 / sample_rate  # high shelf, +4 dB, Q = 1/sqrt(2)
    gain, cos_w0 = 10.0 ** (4.0 / 40.0), math.cos(w0)
    alpha = math.sin(w0) / (2.0 / math.sqrt(2.0))
    root = 2.0 * math.sqrt(gain) * alpha
    shelf = normalised(
        (gain * ((gain + 1) + (gain - 1) * cos_w0 + root), -2 * gain * ((gain - 1) + (gain + 1) * cos_w0),
         gain * ((gain + 1) + (gain - 1) * cos_w0 - root)),
        ((gain + 1) - (gain - 1) * cos_w0 + root, 2 * ((gain - 1) - (gain + 1) * cos_w0),
         (gain + 1) - (gain - 1) * cos_w0 - root))
    w0 = 2.0 * math.pi * 38.0 / sample_rate  # high pass, Q = 0.5
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * 0.5)
    high_pass = normalised(((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2),
                           (1 + alpha, -2 * cos_w0, 1 - alpha))
    return [shelf, high_pass]


class _KWeighting:
    """The K-weighting filters as an FFmpeg filter graph; it keeps the filter state between
    calls, so consecutive blocks are filtered as one stream."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.graph = Graph()
        # One thread: by default each graph starts a pool of one per core (mono has nothing
        # to split), two thread starts per file, which was half of building the graph.
        self.graph.threads = 1
        node = self.graph.add_abuffer(format="dbl", sample_rate=sample_rate, layout="mono")
        for b0, b1, b2, a1, a2 in k_weighting(sample_rate):
            stage = self.graph.add("biquad", f"b0={b0!r}:b1={b1!r}:b2={b2!r}:a0=1:a1={a1!r}:"
                                   f"a2={a2!r}:precision=f64")
            node.link_to(stage)
            node = stage
        node.link_to(self.graph.add("abuffersink"))
        self.graph.configure()

    def apply(self, samples: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="dbl", layout="mono")
        frame.sample_rate = self.sample_rate
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull().to_ndarray().reshape(-1))
            except (av.BlockingIOError, av.EOFError):
                break
        return np.concatenate(out) if out else np.zeros(0)


def measure_lufs(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (-inf for silence); clips under 400 ms are measured looped."""
    samples = np.asarray(samples).reshape(-1)
    if len(samples) == 0:
        return -math.inf
    one_block = math.ceil(BLOCK_S * sample_rate)
    if len(samples) < one_block:  # BS.1770 needs one whole block; a looped clip has its loudness
        samples = np.resize(samples, one_block)
    meter = StreamingLoudness(sample_rate)
    meter.add(samples)
    loudness = meter.integrated_lufs()
    return -math.inf if loudness is None else loudness


def sample_peak(samples: np.ndarray) -> float:
    """Largest absolute sample, without an |x| copy of a long chunk."""
    return float(max(samples.max(), -samples.min())) if len(samples) else 0.0


def loudness_gain_db(samples: np.ndarray, sample_rate: int, target_lufs: float,
                     loudness: float | None = None) -> tuple[float, bool]:
    """(gain in dB that brings `samples` to `target_lufs` with the peak under -1 dBFS, silent).

    Silence (below -60 LUFS) gets no gain, so that noise is not pumped up to speech level.
    `loudness`: the samples' loudness when already measured (a file that is one chunk).
    """
    if loudness is None:
        loudness = measure_lufs(samples, sample_rate)
    if not loudness > SILENCE_LUFS:
        return 0.0, True
    gain_db = target_lufs - loudness
    peak = sample_peak(samples)
    if peak > 0:
        gain_db = min(gain_db, PEAK_CEILING_DBFS - 20.0 * math.log10(peak))
    return float(gain_db), False


def normalise_loudness(samples: np.ndarray, sample_rate: int,
                       target_lufs: float) -> tuple[np.ndarray, float, bool]:
    """(levelled float32 samples, gain in dB, silent) for audio that fits in memory."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    gain_db, silent = loudness_gain_db(samples, sample_rate, target_lufs)
    return samples * np.float32(10.0 ** (gain_db / 20.0)), gain_db, silent
