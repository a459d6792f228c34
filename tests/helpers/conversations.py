"""Multi-speaker recordings with exact truth, built from the shared speech (one reader per
source: LJ Speech, a LibriVox reader, JFK, an AN4 speaker, the CMU "cards" speaker, a Russian
clip): turns of different readers in random order, each at its own loudness, with pauses of
0.2-1.5 s and 15% of turns starting 0.5-2 s before the previous one ends (overlap).

The truth is each inserted excerpt's speech, found with an energy detector (25 ms frames;
speech is louder than 35 dB below the excerpt's loud frames and 30% of the way up from its
noise floor; gaps under 0.3 s bridged), so a clip's own silences are not counted as speech.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations
from pathlib import Path

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode
from tests.helpers.data import SPEECH

RATE = 16000
Turn = tuple[float, float, str]


@dataclass(frozen=True)
class Reader:
    name: str
    files: tuple[str, ...]
    long: bool = False  # excerpts of 2-8 s are drawn from its clips


READERS = {
    "LJ": Reader("LJ", ("derived__LJ001-0009_to_0032_concat.wav",), long=True),
    "Austen": Reader("Austen", tuple(f"pocketsphinx__sense_and_sensibility_01_austen_64kb-0{n}.wav"
                                     for n in (870, 880, 890, 920, 930))),
    "JFK": Reader("JFK", ("openai-whisper__jfk.flac",), long=True),
    "AN4": Reader("AN4", ("sphinx4__10001-90210-01803.wav",), long=True),
    "Cards": Reader("Cards", tuple(f"pocketsphinx__cards_00{i}.wav" for i in range(1, 6))),
    "RU": Reader("RU", ("deepspeech__ru.wav",)),
}


@lru_cache(maxsize=None)
def clip(name: str) -> np.ndarray:
    return decode(SPEECH / name, RATE)


def speech_regions(x: np.ndarray) -> list[tuple[float, float]]:
    """Speech stretches (s) of a one-speaker excerpt, by level (see the module docstring)."""
    hop, window = RATE // 100, RATE // 40
    n = max(1, 1 + (len(x) - window) // hop)
    index = np.minimum(np.arange(window)[None, :] + hop * np.arange(n)[:, None], len(x) - 1)
    level = 10 * np.log10(np.mean(x[index] ** 2, axis=1) + 1e-10)
    loud, floor = np.percentile(level, 95), np.percentile(level, 5)
    on = np.append(level > max(loud - 35.0, floor + 0.3 * (loud - floor)), False)
    regions: list[list[float]] = []
    start = None
    for i, speech in enumerate(on):
        if speech and start is None:
            start = i
        elif not speech and start is not None:
            begin, end = start * hop / RATE, (i - 1) * hop / RATE + window / RATE
            if regions and begin - regions[-1][1] < 0.3:
                regions[-1][1] = end
            else:
                regions.append([begin, end])
            start = None
    return [(a, min(b, len(x) / RATE)) for a, b in regions if b - a >= 0.1]


def _excerpt(reader: Reader, rng: np.random.Generator) -> np.ndarray:
    x = clip(reader.files[rng.integers(len(reader.files))])
    if reader.long and len(x) > 8 * RATE:
        length = int(rng.uniform(2.0, 8.0) * RATE)
        start = rng.integers(0, len(x) - length)
        return x[start:start + length]
    return x


def conversation(names: list[str], seconds: float, seed: int,
                 overlap_share: float = 0.15) -> tuple[np.ndarray, list[Turn]]:
    """(16 kHz mono audio, its true turns) of the readers `names` taking turns for `seconds`."""
    rng = np.random.default_rng(seed)
    readers = [READERS[n] for n in names]
    level = {r.name: rng.uniform(-30, -22) for r in readers}  # dBFS rms per reader
    pieces: list[tuple[int, np.ndarray, str]] = []
    previous, end = None, 0
    while end < seconds * RATE:
        unheard = [r for r in readers if r.name not in {p[2] for p in pieces}]
        others = [r for r in readers if r.name != previous] or readers
        reader = unheard[0] if unheard and rng.random() < 0.7 else others[rng.integers(len(others))]
        x = _excerpt(reader, rng)
        regions = speech_regions(x)
        if not regions:
            continue
        x = x[int(regions[0][0] * RATE):int(regions[-1][1] * RATE)]
        x = x * (10 ** ((level[reader.name] + rng.uniform(-2, 2)) / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-9))
        if pieces and rng.random() < overlap_share:
            start = max(0, end - int(rng.uniform(0.5, 2.0) * RATE))
        else:
            start = end + int(rng.uniform(0.2, 1.5) * RATE)
        pieces.append((start, x.astype(np.float32), reader.name))
        previous, end = reader.name, start + len(x)
    audio = (rng.standard_normal(end + RATE // 2) * 1e-3).astype(np.float32)  # a -60 dBFS floor
    truth = []
    for start, x, name in pieces:
        audio[start:start + len(x)] += x
        truth += [(start / RATE + a, start / RATE + b, name) for a, b in speech_regions(x)]
    audio *= min(1.0, 0.99 / np.abs(audio).max())
    return audio, sorted(truth)


def write_conversation(path: Path, names: list[str], seconds: float, seed: int) -> list[Turn]:
    audio, truth = conversation(names, seconds, seed)
    sf.write(path, audio, RATE, subtype="PCM_16")
    return truth


def _matrix(turns: list, n: int) -> tuple[np.ndarray, list]:
    labels = sorted({t[2] for t in turns}, key=str)
    m = np.zeros((n, len(labels)), bool)
    for start, end, who in turns:
        m[max(0, round(start * 100)):max(0, min(n, round(end * 100))), labels.index(who)] = True
    return m, labels


def speaker_mapping(truth: list, found: list, duration_s: float) -> dict:
    """The one-to-one map of found speakers to true ones that maximises their common time."""
    n = int(np.ceil(duration_s * 100))
    (t, t_labels), (f, f_labels) = _matrix(truth, n), _matrix(found, n)
    common = t.T.astype(np.float64) @ f.astype(np.float64)  # (true, found)
    best, pairs = -1.0, {}
    if len(f_labels) <= len(t_labels):
        for order in permutations(range(len(t_labels)), len(f_labels)):
            score = common[list(order), list(range(len(f_labels)))].sum()
            if score > best:
                best, pairs = score, {f_labels[j]: t_labels[i] for j, i in enumerate(order)}
    else:
        for order in permutations(range(len(f_labels)), len(t_labels)):
            score = common[list(range(len(t_labels))), list(order)].sum()
            if score > best:
                best, pairs = score, {f_labels[j]: t_labels[i] for i, j in enumerate(order)}
    return pairs


def der(truth: list, found: list, duration_s: float, collar_s: float = 0.25) -> float:
    """Diarization error rate (NIST md-eval): missed + false alarm + confused speaker time over
    true speaker time, 10 ms frames, overlap scored, `collar_s` around every true boundary not
    scored; found speakers mapped one-to-one to true ones (`speaker_mapping`)."""
    n = int(np.ceil(duration_s * 100))
    scored = np.ones(n, bool)
    c = round(collar_s * 100)
    for start, end, _ in truth:
        for edge in (round(start * 100), round(end * 100)):
            scored[max(0, edge - c):min(n, edge + c)] = False
    (t, t_labels), (f, f_labels) = _matrix(truth, n), _matrix(found, n)
    t, f = t[scored], f[scored]
    mapping = speaker_mapping(truth, found, duration_s)
    n_true, n_found = t.sum(1), f.sum(1)
    correct = np.zeros(len(t))
    for found_label, true_label in mapping.items():
        correct += t[:, t_labels.index(true_label)] & f[:, f_labels.index(found_label)]
    errors = np.maximum(0, n_true - n_found) + np.maximum(0, n_found - n_true) \
        + (np.minimum(n_true, n_found) - correct)
    return float(errors.sum() / max(1, n_true.sum()))
