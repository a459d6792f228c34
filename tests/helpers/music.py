"""Music-like sound for the tests of where nobody speaks (tasks/audio/tonal.py, issue 24):
notes of a scale and noise, all seeded."""
from __future__ import annotations

import numpy as np

RATE = 16_000


def music_and_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Half music-like tones (notes of a scale with harmonics, a 0.3% vibrato, decaying), half
    noise (a fan's rumble and bursts of hiss)."""
    half = round(seconds * RATE / 2)
    t = np.arange(half) / RATE
    return np.concatenate([0.25 * notes(t[:half], rng), noise(t, rng)]).astype(np.float32)


def notes(t: np.ndarray, rng: np.random.Generator, note_s: float = 0.5) -> np.ndarray:
    """Notes of a scale, `note_s` each, peak 1. The vibrato is in the phase (its integral), so
    each partial's frequency moves by 0.3% at 5 Hz, as a held note's does. (Until issue 24 the
    vibrato multiplied time inside the phase, so the deviation grew with time, to +-140% after
    15 s: a siren, which Silero scored as speech up to 0.81, not notes.)"""
    tones = np.zeros(t.size)
    for k in range(int(np.ceil(t.size / RATE / note_s))):
        a, b = round(k * note_s * RATE), min(round((k + 1) * note_s * RATE), t.size)
        frequency = [220, 247, 262, 294, 330, 349, 392, 440][rng.integers(8)]
        since = t[a:b] - t[a]
        envelope = np.exp(-3 * since)
        for harmonic, amplitude in [(1, 1.0), (1.5, 0.4), (2, 0.5), (3, 0.3), (5, 0.15)]:
            f = frequency * harmonic
            tones[a:b] += amplitude * envelope * np.sin(
                2 * np.pi * f * since - 0.003 * f / 5 * np.cos(2 * np.pi * 5 * since))
    return tones / np.abs(tones).max()


def noise(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fan's rumble and bursts of hiss."""
    rumble = np.cumsum(rng.standard_normal(t.size)) * 1e-3
    rumble -= np.convolve(rumble, np.ones(400) / 400, mode="same")
    hiss = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    return 0.2 * rumble / np.abs(rumble).max() + 0.05 * hiss
