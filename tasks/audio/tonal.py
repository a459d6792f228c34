"""Held notes: how much of the sound is tones that keep their pitch (music), per VAD window.

Silero VAD scores some music as it scores a voice on a bad telephone line (0.2-0.55), so on
its own it cannot be sure nobody speaks there (`tasks.audio.vad.no_speech_stretches`). Music
and speech differ in a way that is cheap to hear: a note holds its frequency, to a fraction of
a semitone, for hundreds of milliseconds, with most of the sound's energy in such partials;
speech glides (pitch and formants move within a syllable), is cut by consonants 2-8 times a
second and has broadband fricatives, so at most a moment of a long vowel holds still.

The rule (`held_tone_share`): in 128 ms Hann frames every 32 ms (one per Silero window), a
spectral peak between 80 Hz and 4 kHz, 10 dB above its neighbours 3 bins away, is *held*
when a peak stays within one bin (7.8 Hz: 0.6 semitone at 220 Hz, less above) for
HELD_FRAMES frames in a row (256 ms of frame starts, ~0.4 s of sound). A window's share is the
energy within 2 bins of held peaks over all the energy in the band, averaged over ~1 s.

Measured (issue 24; all 26 files of the shared corpus, clean, through both telephone lines and
in both noisy rooms of tests/helpers, 1,300 s): speech reached a share of 0.53 (an LJ Speech
sentence through a telephone line); decaying harmonic notes of a scale held 0.91 or more
throughout, a chord bed with bass and hi-hat 0.88 or more (`vad.HELD_TONES` is 0.7). Noise,
silence and a siren-like sweep score ~0.

Cost: numpy FFTs, linear in the audio: 0.0009 s of CPU per second of audio (measured on the
1,300 s above, machine loaded; docs/performance.md); memory bounded by BLOCK_FRAMES whatever
the length.

Invariant: input is float32 mono at 16 kHz (callers resample), as for `tasks.audio.vad`.
"""
from __future__ import annotations

import numpy as np

RATE = 16_000
HOP = 512  # Silero's window: one share per window
FRAME = 2048  # 128 ms: 7.8 Hz bins, enough to tell a held partial from a gliding one
BIN_HZ = RATE / FRAME
LOW_BIN, HIGH_BIN = round(80 / BIN_HZ), round(4000 / BIN_HZ)  # where voices and notes carry energy
PROMINENCE_DB = 10.0  # a peak, not a ripple of noise: this far above the bins 3 away
FLOOR_DB = 50.0  # peaks this far below the frame's strongest are ignored
HELD_FRAMES = 8  # a peak held over this many frames in a row (within one bin) is a note
SMOOTH_WINDOWS = 31  # ~1 s: a note's attack or a beat between notes does not break the run
BLOCK_FRAMES = 256  # frames transformed at once (~8 s, ~10 MB at peak): memory does not grow with the audio


def held_tone_share(samples: np.ndarray) -> np.ndarray:
    """For each 32 ms window of 16 kHz mono `samples` (as `vad.speech_probabilities`), the
    share of the sound's energy in partials that hold their frequency, averaged over ~1 s:
    near 1 for sustained notes, low for speech, noise and silence."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = -(-samples.size // HOP)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    context = HELD_FRAMES  # frames beyond a block that decide whether its edge peaks are held
    raw = np.empty(n, dtype=np.float32)
    for first in range(0, n, BLOCK_FRAMES):
        last = min(first + BLOCK_FRAMES, n)
        lo, hi = max(0, first - context), min(n, last + context)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf samples: a share of 0
            raw[first:last] = _share(_spectra(samples, lo, hi))[first - lo:last - lo]
    kernel = np.ones(SMOOTH_WINDOWS, dtype=np.float32) / SMOOTH_WINDOWS
    padded = np.pad(raw, SMOOTH_WINDOWS // 2, mode="edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


def _spectra(samples: np.ndarray, first: int, last: int) -> np.ndarray:
    """Power spectra (bins LOW_BIN - 3 to HIGH_BIN + 3) of frames `first` to `last`, each
    centred on its Silero window."""
    start = first * HOP + HOP // 2 - FRAME // 2
    stop = (last - 1) * HOP + HOP // 2 + FRAME // 2
    piece = samples[max(0, start):max(0, min(stop, samples.size))]
    piece = np.pad(piece, (max(0, -start), stop - start - piece.size - max(0, -start)))
    frames = np.lib.stride_tricks.sliding_window_view(piece, FRAME)[::HOP]  # a view: no copy
    frames = frames * np.hanning(FRAME).astype(np.float32)
    spectrum = np.fft.rfft(frames, axis=1)[:, LOW_BIN - 3:HIGH_BIN + 4]
    return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)


def _share(power: np.ndarray) -> np.ndarray:
    """Per frame: the energy near held peaks over all the energy of the band."""
    level = 10 * np.log10(power + 1e-12)
    centre = level[:, 3:-3]
    peaks = ((centre > level[:, 2:-4]) & (centre >= level[:, 4:-2])
             & (centre - np.maximum(level[:, :-6], level[:, 6:]) > PROMINENCE_DB)
             & (centre > centre.max(axis=1, keepdims=True) - FLOOR_DB))
    near = _widened(peaks, 1)  # a held note may wander by a bin (vibrato, rounding)
    held = _in_runs(near, HELD_FRAMES) & peaks
    band = power[:, 3:-3]
    total = band.sum(axis=1)
    in_notes = (band * _widened(held, 2)).sum(axis=1)  # a Hann peak spreads over +-2 bins
    return np.where(total > 0, in_notes / np.maximum(total, 1e-30), 0.0).astype(np.float32)


def _widened(mask: np.ndarray, bins: int) -> np.ndarray:
    wide = mask.copy()
    for shift in range(1, bins + 1):
        wide[:, shift:] |= mask[:, :-shift]
        wide[:, :-shift] |= mask[:, shift:]
    return wide


def _in_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """True where `mask` is True within a run of at least `length` frames (along axis 0):
    a morphological opening, by cumulative sums (linear, no per-frame loop)."""
    frames = mask.shape[0]
    if frames < length:
        return np.zeros_like(mask)
    counts = np.concatenate([np.zeros((1, mask.shape[1]), dtype=np.int32),
                             np.cumsum(mask, axis=0, dtype=np.int32)])
    full = (counts[length:] - counts[:-length]) == length  # a run of `length` starts here
    inside = np.zeros_like(mask)
    for offset in range(length):
        inside[offset:offset + full.shape[0]] |= full
    return inside
