"""Whisper's encoder answers, remembered by content, and run short for forced alignment.

The aligner encodes the window Whisper has just heard: for a request of at most 30 s the mel
features are identical (same samples, same padding), so the encoder's output - most of an
alignment's cost, ~0.4 s a window for tiny.en on 2 cores - is remembered (`ContentMemo`) and
reused, exactly.

Whisper's encoder always takes a 30 s window: faster-whisper pads the mel features of a
shorter stretch with zeros to 3,000 frames, so a 3 s chunk costs the encoder what 30 s does.
The encoder itself takes any length (CTranslate2). Inside `content_windows()` an encoding is
of what the window holds plus a margin (`kept_frames`), never below MIN_FRAMES: forced
alignment (`encoding_to_align`, given the text) and QA's reference hearing of a remote
model's chunk use it; the embedded model's own transcripts keep full windows.

Measured 2026-12-07 on the 23 English reference clips of at most 30 s, clean, through a
telephone line and in a noisy room (69 recordings), against full windows: alignment put every
clip's first word at the same onset (97.1% within 0.3 s either way), QA's verdicts on the true
texts and on a wrong one were the same, and it took 2.4x less CPU; with 10 s, a true
telephone clip was called a mismatch. Hearing scored a lower WER (11.6% -> 7.4% clean, 17.8%
-> 13.2% telephone, 11.2% -> 11.6% noisy) in 2.2x less CPU, but lost a whole 1 s clip ("five
five" -> nothing) and looped on a digit string: good enough for QA's reference, which weighs
few words lightly, not for a transcript.

Invariant: an encoding is a function of the features it was computed from, so remembering it
never changes a result.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from audiobatch.tasks.audio.memo import ContentMemo

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

ENCODINGS_REMEMBERED = 4  # a few windows: one tiny.en encoding is 2.3 MB, base's 3 MB
MIN_FRAMES = 1500  # 15 s of 10 ms mel frames (see the measurements above)
MARGIN_FRAMES = 100  # 1 s of the padding kept after what the window holds
FRAME_STEP = 100  # lengths rounded up to whole seconds: fewer distinct shapes


def content_frames(features: np.ndarray) -> int:
    """How many mel frames hold audio: those before the trailing all-zero padding
    (faster-whisper's pad_or_trim pads with 0.0; a real log-mel frame is never all zeros)."""
    padding = np.all(features == 0.0, axis=tuple(range(features.ndim - 1)))
    if padding.all():
        return 0
    return len(padding) - int(np.argmin(padding[::-1]))


def kept_frames(features: np.ndarray) -> int:
    total = features.shape[-1]
    wanted = math.ceil((content_frames(features) + MARGIN_FRAMES) / FRAME_STEP) * FRAME_STEP
    return min(total, max(MIN_FRAMES, wanted))


_windows = threading.local()


@contextmanager
def content_windows() -> Iterator[None]:
    """Within it, this thread's encodings are of each window's content (`kept_frames`)."""
    _windows.content = True
    try:
        yield
    finally:
        _windows.content = False


def remembering_encodings(model: WhisperModel) -> WhisperModel:
    """`model`, its encoder's answers remembered by the features' content, and of each
    window's content only inside `content_windows()`."""
    encode = model.encode
    memo: ContentMemo[Any] = ContentMemo(ENCODINGS_REMEMBERED)

    def remembered(features: np.ndarray) -> Any:
        if getattr(_windows, "content", False):
            features = features[..., :kept_frames(features)]
        return memo.answer(np.ascontiguousarray(features), encode)

    model.encodings = memo  # type: ignore[attr-defined]
    model.encode_afresh = encode  # type: ignore[attr-defined]
    model.encode = remembered  # type: ignore[method-assign]
    return model


def encode_content(model: WhisperModel, padded: np.ndarray) -> Any:
    """The encoding of what a window of `padded` features holds (`kept_frames`), not
    remembered: a pack of short windows (localmodel/packing.py) is encoded once and cut up."""
    return model.encode_afresh(np.ascontiguousarray(padded[..., :kept_frames(padded)]))  # type: ignore[attr-defined]


def encoding_to_align(model: WhisperModel, padded: np.ndarray) -> Any:
    """The encoding of a window of `padded` mel features (3,000 frames) for forced alignment:
    the one Whisper made when it heard these very features, else of the window's content."""
    heard = model.encodings.known(padded)  # type: ignore[attr-defined]
    if heard is not None:
        return heard
    with content_windows():
        return model.encode(padded)
