"""Short alignment windows encoded together: one Whisper encoder pass for several chunks.

Forced alignment's cost is Whisper's encoder, and the encoder never runs on less than 15 s
(`localmodel/encoder.py`: shorter windows lost the aligner its judgement). A run of short
chunks - a manifest of 3 s clips, or QA of a remote model, which aligns every reply - paid a
15 s encoder pass per 3 s of audio, and its re-ask paid it again: 0.28 CPU-s a 3 s clip.

Windows of at most PACKED_MAX_S whose alignments wait for the inference thread at the same
time (`WindowPacker.offered`, while the caller waits) are laid side by side, MARGIN_S of
silence around each, into one stretch of at most PACK_S; the encoder runs once over it, and
each window's decoder pass sees only its own frames and margins (`Slice`). A slice is
remembered by the window's content, so the re-ask of the same chunk is aligned with no encoder
pass at all. A window waiting alone is laid out the same way, alone: its words do not depend
on whether company came.

Measured 2026-12-07 on the 23 English reference clips of at most 12 s, clean and through a
telephone line (46 windows), packed against aligned alone: true texts scored 0.27-0.93 against
0.28-0.97, every wrong text stayed below LOW_FIT (at most 0.17); a window's words cannot be
placed in a neighbour's audio, which its decoder never sees. Company moves a score a little
(a telephone clip: 0.63 alone, 0.29 in one pack of 40 tried), so the aligner aligns a packed
window alone again when its score is unsure (localmodel/align.py, UNSURE_PACKED_FIT). Issue
24's 96 clips of 3 s: 0.307 -> 0.113 CPU s per second of audio (docs/performance.md).

Invariant: a slice is only ever used for a window equal byte for byte to the one it was cut
for (`ContentMemo`).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audiobatch.localmodel.encoder import encode_content
from audiobatch.tasks.audio.memo import ContentMemo, content_key

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

RATE = 16_000
FRAME_SAMPLES = 320  # one encoder frame: 20 ms
PACKED_MAX_S = 8.0  # longer windows are encoded alone (packing them saves little)
PACK_S = 15.0  # a pack, margins included: about the 15 s the encoder always runs
MARGIN_S = 0.3  # silence either side of a window; its decoder pass sees them too
SLICES_REMEMBERED = 48  # until a chunk's re-ask (a 3 s slice of tiny.en: 0.3 MB)


@dataclass(frozen=True)
class Slice:
    """A window's frames of a pack's encoding, from MARGIN_S before it to MARGIN_S after."""

    encoding: Any  # ctranslate2.StorageView over `frames_kept`
    frames_kept: np.ndarray  # (1, frames, width): the memory the view reads

    @property
    def mel_frames(self) -> int:
        """Its length as Whisper's aligner counts it (two mel frames an encoder frame)."""
        return 2 * self.frames_kept.shape[1]


@dataclass(frozen=True, eq=False)  # one offer is itself only (its audio is an array)
class Offer:
    key: bytes
    audio: np.ndarray
    model: Hashable  # which Whisper will align it: windows share a pack only on one model


class WindowPacker:
    """Windows offered while they wait for the inference thread, and the slices cut for them."""

    def __init__(self) -> None:
        self.passes = 0  # encoder passes run (for tests and benchmarks)
        self._waiting: list[Offer] = []
        self._slices: ContentMemo[Slice] = ContentMemo(SLICES_REMEMBERED)
        self._lock = threading.Lock()

    @staticmethod
    def packs(audio: np.ndarray) -> bool:
        return len(audio) <= PACKED_MAX_S * RATE

    @contextmanager
    def offered(self, audio: np.ndarray, model: Hashable) -> Iterator[None]:
        """While inside, `audio` (a window to align) may be encoded with another's."""
        offer = Offer(content_key(audio), audio, model) if audio.size and self.packs(audio) else None
        if offer is not None:
            with self._lock:
                self._waiting.append(offer)
        try:
            yield
        finally:
            with self._lock:
                if offer in self._waiting:
                    self._waiting.remove(offer)

    def slice_for(self, whisper: WhisperModel, audio: np.ndarray, model: Hashable) -> Slice:
        """The window's slice: remembered, or cut from a pack with the windows waiting now."""
        own = Offer(content_key(audio), audio, model)
        remembered = self._slices.by_key(own.key)
        if remembered is not None:
            return remembered
        pack = [own, *self._company(own, PACK_S - _laid_s(audio))]
        slices = self._encoded_together(whisper, [offer.audio for offer in pack])
        for offer, cut in zip(pack, slices):
            self._slices.remember(offer.key, cut)  # the keys are known: no second hash
        return slices[0]

    def _company(self, own: Offer, room_s: float) -> list[Offer]:
        """Waiting windows for the same model that fit in `room_s`, taken off the list."""
        taken: list[Offer] = []
        with self._lock:
            for offer in self._waiting:
                if offer.key == own.key or offer.model != own.model \
                        or self._slices.by_key(offer.key) is not None:
                    continue
                if _laid_s(offer.audio) <= room_s:
                    taken.append(offer)
                    room_s -= _laid_s(offer.audio)
            for offer in taken:
                self._waiting.remove(offer)
        return taken

    def _encoded_together(self, whisper: WhisperModel, windows: list[np.ndarray]) -> list[Slice]:
        margin = _frames(MARGIN_S * RATE)
        pieces, starts, position = [], [], 0
        for audio in windows:
            starts.append(position + margin)  # in encoder frames
            pieces += [np.zeros(margin * FRAME_SAMPLES, np.float32), audio.astype(np.float32),
                       np.zeros(_frames(len(audio)) * FRAME_SAMPLES - len(audio) + margin * FRAME_SAMPLES,
                                np.float32)]
            position += 2 * margin + _frames(len(audio))
        packed = np.concatenate(pieces)
        from faster_whisper.audio import pad_or_trim

        features = whisper.feature_extractor(packed)
        encoded = np.asarray(encode_content(whisper, pad_or_trim(features[:, :-1])))
        self.passes += 1
        return [_slice(encoded, start - margin, start + _frames(len(audio)) + margin)
                for start, audio in zip(starts, windows)]


def _frames(samples: float) -> int:
    return math.ceil(samples / FRAME_SAMPLES)


def _laid_s(audio: np.ndarray) -> float:
    """Seconds a window takes in a pack, with its margins."""
    return (_frames(len(audio)) + 2 * _frames(MARGIN_S * RATE)) * FRAME_SAMPLES / RATE


def _slice(encoded: np.ndarray, first: int, end: int) -> Slice:
    import ctranslate2

    kept = np.ascontiguousarray(encoded[:, first:end, :])
    return Slice(ctranslate2.StorageView.from_array(kept), kept)
