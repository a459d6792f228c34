"""Where people speak: Silero VAD (the ONNX model bundled in faster-whisper), as time spans.

Levels alone cannot tell a pause under a music bed from speech; Silero VAD hears speech
itself. It runs on 16 kHz mono in windows of 512 samples (32 ms) at ~0.003 of real time on
one thread here, so it can be asked about any stretch of audio, however often. The last few
answers are remembered by content (`tasks.audio.memo`): the transcript checks and the aligner ask
about the same chunk.

The interface other stages use (cut planning here, the aligner's clamp in #13, pause
shortening in #16):

- `speech_probabilities(samples)` -> one probability per 32 ms window (`WINDOW_S`);
- `speech_spans(samples)` -> [(start_s, end_s)] of speech, joined over short gaps, padded;
- `pause_mask(samples, frame_samples)` -> per frame of any grid: True where nobody speaks;
- `no_speech_stretches(samples, min_s)` -> [(start_s, end_s)] where nobody speaks (music, noise,
  silence) for at least `min_s`: Silero sure of it where the level beats no syllables
  (`tasks.audio.syllables`), or held notes (`tasks.audio.tonal`) Silero does not call speech;
- `refined_onsets(samples, spans)` -> the spans with starts moved back to where the sound
  rises (Silero can answer ~0.2 s late at an onset).

Invariant: input must be float32 mono at `VAD_RATE` (callers resample; nothing here does),
and the functions are pure: the model's recurrent state is reset on every call.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from audiobatch.tasks.audio.memo import ContentMemo
from audiobatch.tasks.audio.pauses import frame_levels_db, quiet_runs
from audiobatch.tasks.audio.syllables import near_syllables
from audiobatch.tasks.audio.tonal import held_tone_share

VAD_RATE = 16_000
WINDOW_SAMPLES = 512
WINDOW_S = WINDOW_SAMPLES / VAD_RATE
SPEECH_THRESHOLD = 0.5  # Silero's own default: above it, speech
PAUSE_THRESHOLD = 0.35  # below it, surely not speech (Silero's neg_threshold: 0.5 - 0.15)


@lru_cache(maxsize=1)
def _model() -> Any:
    from faster_whisper.vad import get_vad_model  # onnxruntime loads only when VAD is used

    return get_vad_model()


# The transcript checks and the aligner (of a reply and of its re-ask) ask about the same
# chunk: hear it once. Answers are one number a 32 ms window (4 KB for 30 s): remembered for
# as many chunks as a run has in flight (--concurrency 16, each judged twice, was missing 4).
REMEMBERED_CHUNKS = 64
_heard: ContentMemo[np.ndarray] = ContentMemo(REMEMBERED_CHUNKS)
_tones: ContentMemo[np.ndarray] = ContentMemo(REMEMBERED_CHUNKS)  # the held-notes share
_beats: ContentMemo[np.ndarray] = ContentMemo(REMEMBERED_CHUNKS)  # syllable-like beats


def load() -> None:
    """Load Silero now (onnxruntime and its session), not at the first question."""
    _model()


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 32 ms window of 16 kHz mono `samples`."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    return _heard.answer(samples, _probabilities).copy()


def _probabilities(samples: np.ndarray) -> np.ndarray:
    padded = np.pad(samples, (0, -samples.size % WINDOW_SAMPLES))
    return np.asarray(_model()(padded), dtype=np.float32).reshape(-1)


def speech_spans(samples: np.ndarray, *, min_gap_s: float = 0.1, pad_s: float = 0.03,
                 min_speech_s: float = 0.05) -> list[tuple[float, float]]:
    """(start_s, end_s) of speech in 16 kHz mono `samples`.

    A window is speech above SPEECH_THRESHOLD; once speaking, it stays speech until the
    probability falls below PAUSE_THRESHOLD (hysteresis, as Silero's reference code does).
    Gaps shorter than `min_gap_s` are joined, spans shorter than `min_speech_s` dropped, and
    each span is widened by `pad_s` (Silero answers ~one window late at onsets).
    """
    probabilities = speech_probabilities(samples)
    speaking = _hysteresis(probabilities)
    spans = quiet_runs(speaking, 1)  # runs of True, whatever they mean
    joined: list[list[int]] = []
    for first, end in spans:
        if joined and (first - joined[-1][1]) * WINDOW_S < min_gap_s:
            joined[-1][1] = end
        else:
            joined.append([first, end])
    total_s = len(samples) / VAD_RATE
    return [(max(0.0, a * WINDOW_S - pad_s), min(total_s, b * WINDOW_S + pad_s))
            for a, b in joined if (b - a) * WINDOW_S >= min_speech_s]


ONSET_FRAME_S = 0.01
ONSET_ABOVE_FLOOR_DB = 15.0


def refined_onsets(samples: np.ndarray, spans: list[tuple[float, float]],
                   max_back_s: float = 0.3) -> list[tuple[float, float]]:
    """`spans` with each start moved back to where the sound itself begins: Silero answers
    late at some onsets (0.2 s after the "Pr" of "Printing", measured), levels do not. A start
    moves back through 10 ms frames louder than the recording's noise floor + 15 dB, at most
    `max_back_s`, never into the previous span, and only where something quieter lies before
    (under a music bed, levels cannot tell)."""
    frame = round(ONSET_FRAME_S * VAD_RATE)
    levels = frame_levels_db(samples, frame)
    if levels.size == 0:
        return spans
    loud = levels > np.percentile(levels, 10) + ONSET_ABOVE_FLOOR_DB
    refined, previous_end = [], 0.0
    for start, end in spans:
        k = int(start / ONSET_FRAME_S)
        limit = max(int(max(start - max_back_s, previous_end) / ONSET_FRAME_S), 0)
        if loud[limit:k].all():
            limit = k  # no quiet before it (a music bed, a noisy room): levels cannot tell
        while k - 1 >= limit and k - 1 < len(loud) and loud[k - 1]:
            k -= 1
        refined.append((min(start, k * ONSET_FRAME_S), end))
        previous_end = end
    return refined


SURELY_NOT_SPEECH = 0.15  # below this in every window: nobody speaks (music, noise, silence)
HELD_TONES = 0.7  # tonal.held_tone_share from this: notes (speech reached 0.53, music 0.88+)


NO_SPEECH_MIN_S = 4.0  # shorter stretches below SURELY_NOT_SPEECH were seen inside telephone speech


def no_speech_stretches(samples: np.ndarray, min_s: float = NO_SPEECH_MIN_S) -> list[tuple[float, float]]:
    """(start_s, end_s) of stretches of at least `min_s` where, in every window, Silero's
    speech probability is below SURELY_NOT_SPEECH and the level beats no syllables
    (`tasks.audio.syllables.near_syllables`), or the sound is held notes
    (`tasks.audio.tonal.held_tone_share` >= HELD_TONES) and Silero does not call it speech
    (below SPEECH_THRESHOLD).

    Stricter than the gaps between `speech_spans`: Silero hears some speech poorly (band-limited
    telephone speech scored 0.2-0.6 here, below its 0.5 threshold for whole sentences, under
    0.15 for 2-4 s at a time, and a few clips under 0.15 from end to end), and what is decided
    on these stretches (text dropped, audio cut before aligning) must never take a speaker on a
    bad line for music: the syllables of a voice show in its level on any line. Music is where
    Silero is unsure too (notes scored up to 0.42, other tones 0.55) and beats like syllables:
    held notes are told by their steady pitch, which speech never keeps for long (measured on
    the whole corpus in five conditions: the notes rule added no window inside speech to a
    stretch), and speech over a music bed stays speech (Silero scores it above 0.5)."""
    probabilities = speech_probabilities(samples)
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    quiet = probabilities < SURELY_NOT_SPEECH
    if quiet.any():
        quiet &= ~_beats.answer(flat, near_syllables)[:len(probabilities)]
    unsure = (probabilities < SPEECH_THRESHOLD) & ~quiet
    if unsure.any():  # only then is it worth listening for notes
        share = _tones.answer(flat, held_tone_share)[:len(probabilities)]
        quiet |= unsure & (share >= HELD_TONES)
    runs = quiet_runs(quiet, max(1, round(min_s / WINDOW_S)))
    total_s = len(samples) / VAD_RATE
    return [(a * WINDOW_S, min(total_s, b * WINDOW_S)) for a, b in runs]


def pause_mask(samples: np.ndarray, frame_samples: int) -> np.ndarray:
    """For each whole frame of `frame_samples` (a trailing part dropped): True when the VAD
    is sure nobody speaks at the frame's centre."""
    probabilities = speech_probabilities(samples)
    n = len(samples) // frame_samples
    centres = (np.arange(n) * frame_samples + frame_samples // 2) // WINDOW_SAMPLES
    centres = np.minimum(centres, max(len(probabilities) - 1, 0))
    if probabilities.size == 0:
        return np.zeros(n, dtype=bool)
    return probabilities[centres] < PAUSE_THRESHOLD


def _hysteresis(probabilities: np.ndarray) -> np.ndarray:
    speaking = np.zeros(len(probabilities), dtype=bool)
    state = False
    for i, p in enumerate(probabilities):
        state = p >= SPEECH_THRESHOLD or (state and p >= PAUSE_THRESHOLD)
        speaking[i] = state
    return speaking
