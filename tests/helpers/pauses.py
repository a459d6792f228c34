"""Recordings with pauses, made from the real speech in ../shared/data (for --economy).

The shared corpus is clips with little silence and one 171 s reading with only the pauses of
read speech; talk shows, interviews and meetings carry far more. So these recordings join the
real clips with room tone (about -70 dBFS noise, `concatenate_clips`), in pause lengths drawn
from a fixed, seeded mix: half short turn-taking gaps (0.3-1 s), a third thinking pauses and
dead air (1-3 s), the rest long breaks (3-8 s). The words and their order are unchanged, so
the clips' reference texts stay the reference.

- `conversation`: the 23 short English clips (many readers and microphones), in a seeded order;
- `lecture`: the 171 s LJ Speech reading cut at its own pauses (found by level) and put back
  together with a drawn pause added at every other one.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.audio.pauses import frame_levels_db, quiet_runs, quiet_threshold_db
from tests.helpers.data import REFERENCES, SPEECH
from tests.helpers.e2e import room_tone, concatenate_clips

RATE = 16_000
LONG = "derived__LJ001-0009_to_0032_concat.wav"


@dataclass(frozen=True)
class Recording:
    path: Path
    reference: str  # what is said, in order
    duration_s: float
    starts_s: list[float]  # where each joined piece begins
    pauses_s: list[float]  # the room tone put between piece k and k + 1


def english_references() -> dict[str, str]:
    with open(REFERENCES, newline="", encoding="utf-8") as handle:
        return {row["file"]: row["reference_text"] for row in csv.DictReader(handle)
                if row["language"] == "en"}


def drawn_pauses(n: int, seed: int) -> list[float]:
    """`n` pause lengths from the mix in the module docstring."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(3, size=n, p=[0.5, 0.35, 0.15])
    ranges = np.array([(0.3, 1.0), (1.0, 3.0), (3.0, 8.0)])[kinds]
    return [round(float(rng.uniform(a, b)), 2) for a, b in ranges]


def conversation(folder: Path, seed: int = 16) -> Recording:
    references = english_references()
    names = [name for name in references if name != LONG]
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    pauses = drawn_pauses(len(order) - 1, seed)
    joined = concatenate_clips([SPEECH / name for name in order], pauses,
                               folder / "conversation.wav", lead_s=1.0)
    return Recording(joined.path, " ".join(references[name] for name in order),
                     joined.duration_s, joined.starts_s, pauses)


def natural_pauses(samples: np.ndarray, min_s: float = 0.25) -> list[int]:
    """Sample positions in the middle of the recording's own pauses (by level, not by VAD)."""
    frame = RATE // 100
    levels = frame_levels_db(samples, frame)
    quiet = levels <= quiet_threshold_db(levels)
    return [(a + b) // 2 * frame for a, b in quiet_runs(quiet, round(min_s * 100))
            if a > 0 and b < len(levels)]


def lecture(folder: Path, seed: int = 16) -> Recording:
    samples = decode(SPEECH / LONG, RATE)
    cuts = natural_pauses(samples)[::2]
    rng = np.random.default_rng(seed)
    pauses = [drawn_pauses(1, seed + 2 * k + 1)[0] for k in range(len(cuts))]  # one draw each
    pieces, starts, position = [], [], 0
    for k, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(samples)])):
        starts.append(position / RATE)
        pieces.append(samples[start:end])
        position += end - start
        if k < len(pauses):
            pieces.append(room_tone(rng, pauses[k], RATE))
            position += len(pieces[-1])
    audio = np.concatenate(pieces)
    path = folder / "lecture.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return Recording(path, english_references()[LONG], len(audio) / RATE, starts, pauses)


def start_errors(starts_s: list[float], recording: Recording, min_pause_s: float = 1.0) -> list[float]:
    """For each piece that follows a pause of at least `min_pause_s` (those --economy shortens):
    how far the nearest segment start lies from where the piece starts in the recording."""
    after = [start for start, pause in zip(recording.starts_s[1:], recording.pauses_s)
             if pause >= min_pause_s]
    return [min(abs(s - start) for s in starts_s) for start in after]
