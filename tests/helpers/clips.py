"""Many distinct short clips of real speech, for tests and benchmarks of many-item manifests.

Each clip is a one-second window of the shared LJ Speech recording at its own offset (windows
with too little sound are passed over) with a tiny level change, so no two clips have the same
bytes and the result cache cannot answer one from another.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode
from tests.helpers.data import SPEECH

SOURCE = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"
RATE = 16000


def distinct_clips(folder: Path, count: int, seconds: float = 1.0) -> list[Path]:
    """Write `count` clips to `folder` (names c00000.wav, ...); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    speech = decode(SOURCE, RATE, label=SOURCE.name)
    size = round(seconds * RATE)
    loud = 0.25 * float(np.sqrt(np.mean(speech ** 2)))
    paths, offset, step = [], 0, 3119  # a prime step: windows wander through the recording
    while len(paths) < count:
        offset = (offset + step) % (len(speech) - size)
        clip = speech[offset:offset + size]
        if float(np.sqrt(np.mean(clip ** 2))) < loud:
            continue
        clip = clip * np.float32(1.0 - 1e-4 * (len(paths) % 1000))
        path = folder / f"c{len(paths):05d}.wav"
        sf.write(path, clip, RATE, subtype="PCM_16")
        paths.append(path)
    return paths
