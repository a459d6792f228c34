"""Whisper's encoder answers, remembered by content, and run short for forced alignment.

The aligner encodes the window Whisper has just heard: for a request of at most 30 s the mel
features are identical (same samples, same padding), so the encoder's output - most of an
alignment's cost, ~0.4 s a window for tiny.en on 2 cores - is remembered (`ContentMemo`) and
reused, exactly.

Whisper's encoder always takes a 30 s window: faster-whisper pads the mel features of a
shorter stretch with zeros to 3,000 frames, so a 3 s chunk costs the encoder what 30 s does.
The encoder itself takes any length (CTranslate2). Forced alignment, which is given the text,
uses `encoding_to_align`: the remembered encoding when Whisper heard the window, else the
encoder run on what the window holds plus a margin, never below MIN_FRAMES (measured below).
Decoding stays on full windows: measured on the held-out clips (2026-12-07), Whisper decoding
a 15-20 s context lost a whole 1 s clip ("five five" -> nothing) and looped on digits, though
it scored a lower WER over all 23 short clips (11.6% -> 7.4%) at 2.2x less CPU.

Invariant: an encoding is a function of the features it was computed from, so remembering it
never changes a result.
"""
from __future__ import annotations

import functools
import math
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


def remembering_encodings(model: WhisperModel) -> WhisperModel:
    """`model`, its encoder's answers remembered by the features' content."""
    model.encodings = ContentMemo(ENCODINGS_REMEMBERED)  # type: ignore[attr-defined]
    model.encode = functools.partial(model.encodings.answer, compute=model.encode)  # type: ignore
    return model


def encoding_to_align(model: WhisperModel, padded: np.ndarray) -> Any:
    """The encoding of a window of `padded` mel features (3,000 frames) for forced alignment:
    the one Whisper made when it heard these very features, else the encoder run on the
    window's content (`kept_frames`)."""
    heard = model.encodings.known(padded)  # type: ignore[attr-defined]
    if heard is not None:
        return heard
    return model.encode(np.ascontiguousarray(padded[..., :kept_frames(padded)]))
