"""The shared English clips in two parts: `TUNING`, what transcript QA's thresholds and the word
timing rules were chosen on, and `HELD_OUT`, measured only after the choice (issue 24). Held-out
clips are also heard through a telephone line and in a noisy room (`CONDITIONS`), which nothing
was tuned on either.

`episode(...)`: clips joined by pauses of room tone into one recording, with where each clip
begins and where its voice begins (`speech_onset_s`, measured on the clean clip: the noise
added by a condition does not move the voice).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode, resample
from tests.helpers.data import SPEECH
from tests.helpers.e2e import room_tone

RATE = 16_000
TUNING = [f"coqui-tts__LJ001-000{i}.wav" for i in range(1, 9)] + [
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0890.wav",
    "pocketsphinx__cards_001.wav", "pocketsphinx__cards_003.wav",
]
HELD_OUT = [
    "openai-whisper__jfk.flac", "pocketsphinx__goforward.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0920.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
    "pocketsphinx__cards_002.wav", "pocketsphinx__cards_004.wav", "pocketsphinx__cards_005.wav",
    "deepspeech__LDC93S1.wav", "speech_recognition__english.wav",
    "sphinx4__10001-90210-01803.wav",
]
CONDITIONS = ("clean", "telephone", "noisy")


def telephone(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone line: 300-3,400 Hz, through 8 kHz, with a little hiss."""
    spectrum = np.fft.rfft(samples)
    frequencies = np.fft.rfftfreq(len(samples), 1 / RATE)
    spectrum[(frequencies < 300) | (frequencies > 3400)] = 0
    narrow = resample(np.fft.irfft(spectrum, len(samples)).astype(np.float32), RATE, 8000)
    narrow = narrow + rng.standard_normal(len(narrow)).astype(np.float32) * 2e-3
    return resample(narrow, 8000, RATE)[:len(samples)]


def noisy(samples: np.ndarray, rng: np.random.Generator, snr_db: float = 12.0) -> np.ndarray:
    """A fan's brown-ish noise under the voice, `snr_db` below it."""
    noise = np.cumsum(rng.standard_normal(len(samples))) * 1e-3
    noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    voice_power = float(np.mean(samples ** 2))
    noise *= np.sqrt(voice_power / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return np.clip(samples + noise, -1, 1).astype(np.float32)


def in_condition(samples: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    if condition == "telephone":
        return telephone(samples, rng)
    if condition == "noisy":
        return noisy(samples, rng)
    return samples


def speech_onset_s(samples: np.ndarray) -> float:
    """Where the voice starts in a clean clip: the first 10 ms frame 20 dB above the clip's
    floor (its quietest tenth) and within 40 dB of its loudest frame, followed by two more."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160).astype(np.float64)
    level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    loud = (level > np.percentile(level, 10) + 20) & (level > level.max() - 40)
    for k in range(len(loud) - 2):
        if loud[k] and loud[k + 1] and loud[k + 2]:
            return k * 0.01
    return 0.0


@dataclass(frozen=True)
class Episode:
    path: Path
    clips: list[str]
    conditions: list[str]
    references: list[str]
    starts_s: list[float]  # where each clip begins
    onsets_s: list[float]  # where each clip's voice begins
    ends_s: list[float]  # where each clip ends (its pause follows)
    duration_s: float


def episode(folder: Path, clips: Sequence[str], conditions: Sequence[str], *,
            pause_s: float = 1.5, seed: int = 24, name: str = "episode") -> Episode:
    """The clips, each in its condition, joined by `pause_s` of room tone (a 16-bit wav)."""
    from tests.helpers.pauses import english_references

    references = english_references()
    rng = np.random.default_rng(seed)
    pieces, starts, onsets, ends, position = [room_tone(rng, 1.0, RATE)], [], [], [], RATE
    for index, (clip, condition) in enumerate(zip(clips, conditions)):
        clean = decode(SPEECH / clip, RATE, label=clip)
        starts.append(position / RATE)
        onsets.append(position / RATE + speech_onset_s(clean))
        pieces.append(in_condition(clean, condition, rng))
        position += len(clean)
        ends.append(position / RATE)
        pieces.append(room_tone(rng, pause_s if index < len(clips) - 1 else 1.0, RATE))
        position += len(pieces[-1])
    audio = np.concatenate(pieces)
    path = folder / f"{name}.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return Episode(path, list(clips), list(conditions), [references[c] for c in clips],
                   starts, onsets, ends, len(audio) / RATE)


def held_out_episode(folder: Path, pause_s: float = 1.5) -> Episode:
    """Every held-out clip in each condition, in an order that mixes them."""
    plan = [(clip, condition) for k, condition in enumerate(CONDITIONS)
            for clip in HELD_OUT[k:] + HELD_OUT[:k]]
    return episode(folder, [c for c, _ in plan], [c for _, c in plan], pause_s=pause_s,
                   name="held-out")


def first_word_errors(words: Sequence[tuple[float, float]], recording: Episode,
                      signed: bool = False) -> list[float]:
    """For each clip, how far its first word starts from its voice's onset (s, after it when
    `signed`; nan: no word).
    A word is the clip's when its middle lies within the clip or half a pause from it."""
    errors = []
    for k, onset in enumerate(recording.onsets_s):
        before = (recording.starts_s[k] + recording.ends_s[k - 1]) / 2 if k else 0.0
        after = (recording.ends_s[k] + recording.starts_s[k + 1]) / 2 \
            if k + 1 < len(recording.starts_s) else recording.duration_s
        mine = [start for start, end in words if before <= (start + end) / 2 < after]
        error = min(mine) - onset if mine else float("nan")
        errors.append(error if signed else abs(error))
    return errors


def words_over_pauses(words: Sequence[tuple[float, float]], recording: Episode,
                      longer_than_s: float = 1.0) -> list[tuple[float, float]]:
    """The words that span more than `longer_than_s` of a pause between two clips."""
    pauses = list(zip(recording.ends_s, recording.starts_s[1:]))
    return [(start, end) for start, end in words
            if any(min(end, b) - max(start, a) > longer_than_s for a, b in pauses)]
