"""The diarization engine the pipeline uses (`tasks.speakers.labels.SpeakerFinder`): one shared,
lazily loaded pair of networks, one recording at a time per process.

A recording is decoded (streaming, 16 kHz mono) into an unnamed temporary file of 16-bit
samples (115 MB an hour, as the transcription's own chunks hold them), and the pipeline reads
its windows from there: memory stays flat with the length (a float32 hour would be 230 MB).
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from audiobatch.tasks.audio.codecs import iter_decoded, to_int16
from audiobatch.tasks.audio.memory import return_large_buffers

if TYPE_CHECKING:  # onnx and the graphs load with the engine, not with every transcription run
    from audiobatch.localmodel.diarization.pipeline import Diarizer, Turn

SAMPLE_RATE = 16000

ENGINE_ID = "seg3.0+campplus/segments-v1"  # part of cached turns' keys: change it when results change


class FileSamples:
    """16-bit samples in a file, read by range with pread as float32 (nothing kept in memory)."""

    def __init__(self, handle: IO[bytes], n_samples: int) -> None:
        self.handle, self.n_samples = handle, n_samples

    def __len__(self) -> int:
        return self.n_samples

    def read(self, start: int, stop: int) -> np.ndarray:
        raw = os.pread(self.handle.fileno(), 2 * max(0, stop - start), 2 * start)
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32767.0


class ArraySamples:
    """Samples already in memory (tests, short clips)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = np.asarray(samples, np.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.samples[start:stop]


def load_diarizer() -> Diarizer:
    """Both networks from the checked weight files, as ONNX graphs built in memory (~1 s)."""
    from audiobatch.localmodel.diarization import graphs, weights
    from audiobatch.localmodel.diarization.models import Embedder, Segmenter
    from audiobatch.localmodel.diarization.pipeline import Diarizer

    folder = weights.models_folder()
    segmenter = Segmenter(graphs.build_segmentation_graph(weights.segmentation_state(folder)), threads=2)
    embedder = Embedder(graphs.build_campplus_graph(weights.embedding_state(folder)), threads=1)
    return Diarizer(segmenter, embedder)


class SpeakerEngine:
    """Finds the turns of a recording file; loads on first use. One recording at a time, on
    the engine's own thread (two would double the networks' working memory for no speed on 2
    cores; items waiting their turn hold no thread of the loop's pool meanwhile)."""

    id = ENGINE_ID

    def __init__(self) -> None:
        self._diarizer: Diarizer | None = None  # loaded on first use
        self._lock = threading.Lock()  # for direct callers of turns_blocking
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiobatch-speakers")
        self.load_s = 0.0

    def diarizer(self) -> Diarizer:
        if self._diarizer is None:
            return_large_buffers()  # batches of windows (2.5 MB) freed, not kept by a thread's heap
            started = time.perf_counter()
            self._diarizer = load_diarizer()
            self.load_s = time.perf_counter() - started
        return self._diarizer

    def turns_blocking(self, path: Path, num_speakers: int | None, label: str) -> list[Turn]:
        with self._lock, tempfile.TemporaryFile(prefix="audiobatch-speakers-") as handle:
            n_samples = 0
            for block in iter_decoded(path, SAMPLE_RATE, label):
                handle.write(to_int16(block).tobytes())
                n_samples += len(block)
            handle.flush()
            return self.diarizer().diarize(FileSamples(handle, n_samples), num_speakers)

    async def turns(self, path: Path, num_speakers: int | None, label: str) -> list[Turn]:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self.turns_blocking, path, num_speakers, label)


_shared: SpeakerEngine | None = None
_shared_lock = threading.Lock()


def shared_speaker_engine() -> SpeakerEngine:
    """One engine per process, whatever the number of runs or items."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SpeakerEngine()
        return _shared
