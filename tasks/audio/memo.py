"""Answers of an expensive, deterministic function of an array, remembered by the array's content.

Two stages often look at the same audio: Silero VAD runs on a chunk for the transcript checks
and again for the aligner's word edges; the aligner encodes the window Whisper has just heard.
`ContentMemo` keeps the last few answers, keyed by a digest of the array's dtype, shape and
bytes, so the second look costs a hash (~1 ms per MB) instead of the model.

Invariant: an answer is only ever returned for an array equal byte for byte to the one it was
computed from, so remembering never changes a result. It is thread-safe; two threads that miss
on the same array at once both compute (the answers are equal).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def content_key(array: np.ndarray) -> bytes:
    contiguous = np.ascontiguousarray(array)
    digest = hashlib.blake2b(f"{contiguous.dtype}{contiguous.shape}".encode(), digest_size=16)
    digest.update(contiguous.data)
    return digest.digest()


class ContentMemo(Generic[T]):
    """The last `size` answers of a function of one array."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self._answers: OrderedDict[bytes, T] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, array: np.ndarray) -> T | None:
        """The remembered answer for `array`, or None (nothing is computed)."""
        return self.by_key(content_key(array))

    def answer(self, array: np.ndarray, compute: Callable[[np.ndarray], T]) -> T:
        key = content_key(array)
        remembered = self.by_key(key)
        if remembered is not None:
            return remembered
        answer = compute(array)
        self.remember(key, answer)
        return answer

    def remember(self, key: bytes, answer: T) -> None:
        """Keep `answer` (computed by the caller) for the array whose `content_key` is `key`."""
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)

    def by_key(self, key: bytes) -> T | None:
        """The remembered answer for the array whose `content_key` is `key`, or None."""
        with self._lock:
            if key not in self._answers:
                return None
            self._answers.move_to_end(key)
            self.hits += 1
            return self._answers[key]
