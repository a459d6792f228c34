"""Syllable-like beats of the level: where a voice may be that Silero VAD does not hear.

Silero scored some telephone speech under 0.15 from end to end (a short clip through a
300-3,400 Hz line, a clip and a Russian one through 8-bit mu-law), so a rule that trusts its
"surely not speech" (`tasks.audio.vad.no_speech_stretches`) took whole telephone sentences for
silence once pauses joined them (issue 24). Speech has a signature levels show on any line:
the voice band's level rises and falls with each syllable, 2-8 times a second, by 10 dB and
more. Silence, room tone, hum and steady or slowly swelling noise (a fan, bursts of hiss a
second long) do not.

The rule (`near_syllables`): per 32 ms window (Silero's), the level of 300-3,400 Hz. A *beat*
is a window that is the loudest within +-96 ms, at least PEAK_DB above the recording's floor
(its quietest tenth), with a dip of DIP_DB or more within 256 ms on each side. A window is
near syllables when BEATS_NEEDED beats lie within +-NEAR_S of it.

Measured (issue 24): the three clips Silero missed (held-out and varied episodes, the Russian
clip through mu-law) are near syllables throughout, and no stretch lies over any corpus file in
five conditions; a 6 s room-tone pause between sentences loses 0.27 s and 0.42 s at its edges,
the 30 s of notes and noise of tests/test_qa_audio.py nothing. Cost: one 512-point FFT per
window, 0.0001-0.0003 s of CPU per second of audio (a tenth of Silero's); memory one float per
window beyond a block's FFT.
Invariant: 16 kHz mono float32 input, as `tasks.audio.vad`.
"""
from __future__ import annotations

import numpy as np

RATE = 16_000
HOP = 512  # Silero's window
BAND_HZ = (300.0, 3400.0)  # a telephone line's band: what every voice here keeps
PEAK_DB = 10.0  # a beat stands this far above the floor (room tone flickers less)
DIP_DB = 6.0  # and the level falls this much on each side, within DIP_WINDOWS
DIP_WINDOWS = 8  # 256 ms: a syllable's length; a second-long burst of hiss has no dip in it
LOCAL_WINDOWS = 3  # the loudest within +-96 ms: one beat per syllable
NEAR_S = 0.75
BEATS_NEEDED = 2  # a click or a knock alone is not speech
BLOCK_WINDOWS = 4096  # windows transformed at once (~2 s of work memory whatever the length)


def band_levels_db(samples: np.ndarray) -> np.ndarray:
    """The level of BAND_HZ in each 32 ms window, in dB."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = -(-samples.size // HOP)
    frequencies = np.fft.rfftfreq(HOP, 1 / RATE)
    band = (frequencies >= BAND_HZ[0]) & (frequencies <= BAND_HZ[1])
    window = np.hanning(HOP).astype(np.float32)
    levels = np.empty(n, dtype=np.float32)
    for first in range(0, n, BLOCK_WINDOWS):
        last = min(first + BLOCK_WINDOWS, n)
        piece = samples[first * HOP:last * HOP]
        piece = np.pad(piece, (0, (last - first) * HOP - piece.size)).reshape(-1, HOP)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf samples: the floor
            spectrum = np.fft.rfft(piece * window, axis=1)[:, band]
            energy = (spectrum.real ** 2 + spectrum.imag ** 2).sum(axis=1)
        levels[first:last] = 10 * np.log10(np.nan_to_num(energy, nan=0.0, posinf=0.0) + 1e-10)
    return levels


def near_syllables(samples: np.ndarray) -> np.ndarray:
    """For each 32 ms window of 16 kHz mono `samples`: True when syllable-like beats of the
    voice band's level lie around it (see the module's rule)."""
    levels = band_levels_db(samples)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    windows = np.lib.stride_tricks.sliding_window_view
    around = windows(np.pad(levels, LOCAL_WINDOWS, mode="edge"), 2 * LOCAL_WINDOWS + 1)
    padded = np.pad(levels, DIP_WINDOWS, mode="edge")
    before = windows(padded[:-DIP_WINDOWS - 1], DIP_WINDOWS).min(axis=1)
    after = windows(padded[DIP_WINDOWS + 1:], DIP_WINDOWS).min(axis=1)
    beats = ((levels >= around.max(axis=1)) & (levels > np.percentile(levels, 10) + PEAK_DB)
             & (before <= levels - DIP_DB) & (after <= levels - DIP_DB))
    reach = round(NEAR_S * RATE / HOP)
    total = np.concatenate([[0], np.cumsum(np.pad(beats, reach), dtype=np.int32)])
    return total[2 * reach + 1:] - total[:-2 * reach - 1] >= BEATS_NEEDED  # beats within reach
