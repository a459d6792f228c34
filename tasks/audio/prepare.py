"""Prepare one audio file for the model: streaming decode -> chunks cut in pauses -> loudness.

`prepare_chunks` decodes any FFmpeg-readable file block by block (`tasks.audio.codecs.iter_decoded`)
to mono at 16 kHz, keeps at most about one chunk of samples, and whenever the buffer holds
more than the per-request budget it picks the cut (`tasks.audio.pauses`: in a pause when there is
one), loudness-normalises the chunk and writes it as a 16-bit wav in the work directory. A
3-hour recording is never held in memory; the function returns metadata only.

With `economy` (`tasks.audio.economy`), the decoded stream first has its long pauses shortened,
the chunks are cut from what is left (more speech per request in the same token budget) and
each is sped up before it is written; chunk times are then positions in the sent audio, and
`PreparedAudio.timeline` maps them back to the recording.

`stream_chunks` runs the same in a thread and hands each chunk to the event loop as soon as
it is written, through a bounded queue (`tasks.audio.streaming`): requests start while the rest of
the file is still decoding, and decoding waits while `depth` chunks are left untaken.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiobatch.tasks.audio.codecs import DecodeReport, iter_decoded, to_int16
from audiobatch.tasks.audio.economy import Economy, TimeMap, shorten_pauses
from audiobatch.tasks.audio.loudness import BLOCK_S, StreamingLoudness, loudness_gain_db
from audiobatch.tasks.audio.pauses import (CutRules, Span, choose_end, first_frame, frame_levels_db,
                                           plan_cuts, search_window)
from audiobatch.tasks.audio.stitch import time_stretch
from audiobatch.tasks.audio.streaming import HandedOver, Produced, produced_in_thread
from audiobatch.tasks.audio.vad import VAD_RATE, pause_mask
from audiobatch.tasks.errors import ConfigError, InputError

__all__ = ["PREPARE_RATE", "DEFAULT_SEARCH_WINDOW_S", "Chunk", "PreparedAudio", "CutRules", "Span",
           "max_chunk_seconds", "context_words_for", "plan_cuts", "prepare_chunks", "stream_chunks", "chunk_rules",
           "remove_chunk_files"]

PREPARE_RATE = 16000
DEFAULT_SEARCH_WINDOW_S = 8.0  # capped at half a chunk for small budgets
DEFAULT_MARGIN_TOKENS = 10  # slack for providers that count a little more than seconds x rate
VAD_CONTEXT_S = 2.0  # audio the detector hears before the search window
_SLACK_SAMPLES = 1 << 15  # buffer room beyond one chunk for the decoder block that overfills it
# Audio a file prepared on the event loop may hold (`stream_chunks(in_thread=False)`): a
# small file is not always short audio (1 MB of FLAC can hold hours of silence), and the
# loop must not stop for longer than a fraction of a second.
ON_LOOP_MAX_AUDIO_S = 120.0


class AudioLongerThan(Exception):
    """prepare_chunks(max_audio_s=...) found more audio than allowed (its chunks are removed)."""


@dataclass(frozen=True)
class Chunk:
    index: int
    start_s: float  # position in the sent audio (= in the recording, unless economy)
    end_s: float
    path: Path  # 16 kHz mono 16-bit wav in work_dir
    start_sample: int = 0
    end_sample: int = 0
    cut: str = "end"  # how the end was chosen: "pause", "vad", "quietest" or "end"
    gain_db: float = 0.0  # loudness gain applied to this chunk
    silent: bool = False  # nothing above the silence floor: the caller may skip the request
    # Where the chunk's audio lies in the original recording (None: at start_s/end_s; they
    # differ only with economy, whose chunks leave out pause middles and may be sped up).
    source_start_s: float | None = None
    source_end_s: float | None = None
    splices_s: tuple[float, ...] = ()  # economy: where a long pause was shortened (chunk time)

    @property
    def duration_s(self) -> float:
        """Seconds of audio sent."""
        return self.end_s - self.start_s

    @property
    def recorded_s(self) -> float:
        """Seconds of the original recording that the chunk stands for."""
        if self.source_start_s is None or self.source_end_s is None:
            return self.duration_s
        return self.source_end_s - self.source_start_s


@dataclass(frozen=True)
class PreparedAudio:
    duration_s: float
    sample_rate: int
    chunks: list[Chunk]
    source_loudness_lufs: float | None  # BS.1770 integrated; None when silent or too short
    silent: bool  # every chunk is silent: the recording has no signal above the floor
    decoding: DecodeReport = field(default_factory=DecodeReport)  # damage stepped over
    timeline: TimeMap | None = None  # economy: sent seconds -> the recording's seconds

    @property
    def sent_s(self) -> float:
        """Seconds of audio in the chunks (what requests carry, silent chunks included)."""
        return self.timeline.sent_s if self.timeline else self.duration_s

    def to_original(self, sent_s: float) -> float:
        """A time in the sent audio (chunk start + offset) as a time in the recording."""
        return float(self.timeline.to_original(sent_s)) if self.timeline else sent_s


# Context across cuts (the transcript so far, sent with the next request) helps short requests
# and harms long ones. Measured with the embedded Whisper on the narrated LJ001 chapter (990 s,
# 60 words of context vs none, 2026-12-01): 30 s requests 8.22% -> 7.53% WER, 60 s 7.88% ->
# 15.72%, 120 s 7.53% -> 13.09%, ~400 s (the default budget) 7.19% -> 12.00%. Primed at the
# start of a request longer than its one 30 s window, Whisper drops whole passages; within a
# long request its own windows carry their context anyway.
CONTEXT_MAX_REQUEST_S = 30.0


def context_words_for(context_words: int, max_request_s: float, overlap_s: float = 0.0) -> int:
    """The words of context each request after an item's first carries: none for requests
    longer than CONTEXT_MAX_REQUEST_S, and none with overlapping chunks (the overlap already
    repeats the audio, and a model told what was just said skips the words it hears again:
    measured 47 of 439 words lost with 3 s overlap)."""
    if overlap_s or max_request_s > CONTEXT_MAX_REQUEST_S:
        return 0
    return context_words


def max_chunk_seconds(max_audio_tokens: int, tokens_per_s: float,
                      margin_tokens: int = DEFAULT_MARGIN_TOKENS) -> float:
    """The longest chunk whose tokens, ceil(seconds * tokens_per_s), fit the budget minus a margin."""
    usable = int(max_audio_tokens) - int(margin_tokens)
    if not (math.isfinite(tokens_per_s) and tokens_per_s > 0):
        raise ConfigError(f"input audio tokens per second must be positive, got {tokens_per_s}; "
                          "fix input_audio_tokens_per_s in the model profile")
    if usable < 1:
        raise ConfigError(f"an audio-token budget of {max_audio_tokens} leaves no room for audio "
                          f"after the {margin_tokens}-token safety margin: raise --max-audio-tokens")
    seconds = usable / tokens_per_s
    while math.ceil(seconds * tokens_per_s) > usable:  # float rounding may overshoot by one token
        seconds = math.nextafter(seconds, 0.0)
    return seconds


def chunk_rules(max_chunk_s: float, sample_rate: int = PREPARE_RATE,
                search_window_s: float = DEFAULT_SEARCH_WINDOW_S, overlap_s: float = 0.0) -> CutRules:
    """The cut rules `prepare_chunks` uses (also for planning from precomputed levels)."""
    if overlap_s < 0 or not math.isfinite(overlap_s):
        raise ConfigError(f"overlap_s must be zero or positive seconds, got {overlap_s}")
    return CutRules.from_seconds(sample_rate, max_chunk_s=max_chunk_s,
                                 search_window_s=search_window_s, overlap_s=overlap_s)


class _SampleBuffer:
    """Decoded samples from absolute position `start` on, in one preallocated array.

    Sized for one chunk plus slack, so appending never reallocates in the usual case and
    cutting a chunk is a view, not a copy.
    """

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(capacity, dtype=np.float32)
        self._used = 0
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + self._used

    def append(self, block: np.ndarray) -> None:
        needed = self._used + len(block)
        if needed > len(self._data):  # only for a decoder block larger than the slack
            grown = np.empty(max(needed, len(self._data) * 5 // 4), dtype=np.float32)
            grown[: self._used] = self._data[: self._used]
            self._data = grown
        self._data[self._used:needed] = block
        self._used = needed

    def samples(self, start: int, stop: int) -> np.ndarray:
        """A view of samples [start, stop) in absolute positions; valid until the next change."""
        return self._data[start - self.start: stop - self.start]

    def drop_before(self, position: int) -> None:
        keep = self.end - position
        self._data[:keep] = self._data[position - self.start: self._used]
        self._used = keep
        self.start = position


class _ChunkWriter:
    """Levels and writes chunk wavs piece by piece; records their metadata."""

    _PIECE = 1 << 16  # samples converted to 16-bit at a time: no full-chunk temporaries

    def __init__(self, work_dir: Path, label: str, sample_rate: int, target_lufs: float,
                 on_chunk: Callable[[Chunk], None] | None = None,
                 timeline: TimeMap | None = None) -> None:
        self.work_dir = work_dir
        self.stem = _file_stem(label)
        self.sample_rate = sample_rate
        self.target_lufs = target_lufs
        self.on_chunk = on_chunk
        self.timeline = timeline
        self.chunks: list[Chunk] = []

    def _times(self, span: Span) -> dict[str, float]:
        """The chunk's place in the sent audio and, with economy, in the recording."""
        rate, timeline = self.sample_rate, self.timeline
        if timeline is None:
            return {"start_s": span.start / rate, "end_s": span.end / rate}
        start_s, end_s = timeline.sent_seconds(span.start), timeline.sent_seconds(span.end)
        return {"start_s": start_s, "end_s": end_s,
                "source_start_s": float(timeline.to_original(start_s)),
                "source_end_s": float(timeline.to_original(end_s)),
                "splices_s": tuple(t - start_s for t in timeline.splices(start_s, end_s))}

    def write(self, samples: np.ndarray, span: Span, lufs: float | None = None) -> None:
        """`lufs`: the samples' loudness if already known (measured again when stretched)."""
        if self.timeline is not None and self.timeline.speed != 1.0:
            samples, lufs = time_stretch(samples, self.sample_rate, self.timeline.speed), None
        gain_db, silent = loudness_gain_db(samples, self.sample_rate, self.target_lufs, lufs)
        index = len(self.chunks)
        path = self.work_dir / f"{self.stem}.{index:05d}.wav"
        partial = path.with_suffix(".wav.part")
        gain = np.float32(10.0 ** (gain_db / 20.0))
        with open(partial, "wb") as out:  # not libsndfile: its close fsyncs every chunk file
            out.write(pcm16_wav_header(len(samples), self.sample_rate))
            for start in range(0, len(samples), self._PIECE):
                out.write(to_int16(samples[start:start + self._PIECE] * gain).tobytes())
        partial.replace(path)  # a crash never leaves a truncated chunk under the final name
        chunk = Chunk(index=index, path=path, start_sample=span.start, end_sample=span.end,
                      cut=span.cut, gain_db=gain_db, silent=silent, **self._times(span))
        self.chunks.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(chunk)  # may block: the consumer takes chunks at its own pace

    def remove_files(self) -> None:
        for chunk in self.chunks:
            chunk.path.unlink(missing_ok=True)
        for partial in self.work_dir.glob(f"{self.stem}.*.wav.part"):
            partial.unlink(missing_ok=True)


def pcm16_wav_header(n_samples: int, sample_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM wav (byte for byte what libsndfile writes)."""
    size = n_samples * 2
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, 1,
                       sample_rate, sample_rate * 2, 2, 16, b"data", size)


def remove_chunk_files(work_dir: Path, label: str) -> None:
    """Delete the chunk files `prepare_chunks` wrote for `label` (items share a work folder).
    A prefix test, not Path.glob, which compiles its pattern on every call (per item)."""
    prefix = f"{_file_stem(label)}."
    try:
        entries = list(os.scandir(work_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(prefix):
            Path(entry.path).unlink(missing_ok=True)


def _file_stem(label: str) -> str:
    """A file-name-safe stem unique to the label, so items can share a work directory."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(label).stem or label).strip("_")[:48] or "audio"
    return f"{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def _window_pauses(frames: np.ndarray, n_frames: int, window_first: int,
                   rules: CutRules) -> np.ndarray:
    """Where the VAD hears no speech, per frame of the chunk; only the search window (plus a
    little audio before it, for the detector's state) is listened to."""
    first = max(0, window_first - round(VAD_CONTEXT_S * PREPARE_RATE) // rules.frame_samples)
    mask = np.zeros(n_frames, dtype=bool)
    heard = pause_mask(frames[first * rules.frame_samples:], rules.frame_samples)
    mask[first:first + len(heard)] = heard
    return mask


def _next_span(buffer: _SampleBuffer, start: int, rules: CutRules, use_vad: bool) -> Span:
    """Cut the chunk starting at `start`; the buffer holds more than one chunk from there."""
    earliest, limit = search_window(start, rules)
    f0 = first_frame(start, rules)
    frames = buffer.samples(f0 * rules.frame_samples, limit * rules.frame_samples)
    levels = frame_levels_db(frames, rules.frame_samples)
    pauses = _window_pauses(frames, len(levels), earliest - f0, rules) if use_vad else None
    end, how = choose_end(levels, start, rules, pauses)
    return Span(start, end, how)


def _cut_stream(blocks: Iterable[np.ndarray], rules: CutRules, writer: _ChunkWriter,
                meter: StreamingLoudness, use_vad: bool, max_samples: float = math.inf) -> int:
    """Feed decoded blocks through the buffer, writing every chunk; returns the sample count."""
    buffer = _SampleBuffer(rules.max_chunk_samples + 2 * _SLACK_SAMPLES)
    start = 0
    for block in blocks:
        meter.add(block)
        buffer.append(block)
        if buffer.end > max_samples:
            raise AudioLongerThan(f"more than {max_samples / meter.sample_rate:g} s of audio")
        while buffer.end - start > rules.max_chunk_samples:
            span = _next_span(buffer, start, rules, use_vad)
            writer.write(buffer.samples(span.start, span.end), span, meter.segment_lufs(span.start, span.end))
            start = span.end - rules.overlap_samples
            buffer.drop_before(start)
            meter.forget_before(start)
    if buffer.end > start:
        # a file that is one chunk (many short clips): its loudness is the stream's, measured
        whole = start == 0 and buffer.end >= round(BLOCK_S * meter.sample_rate)
        measured = meter.integrated_lufs() if whole else meter.segment_lufs(start, buffer.end)
        known = -math.inf if whole and measured is None else measured
        writer.write(buffer.samples(start, buffer.end), Span(start, buffer.end, "end"), known)
    return buffer.end


def prepare_chunks(path: Path, work_dir: Path, *, max_chunk_s: float, label: str,
                   target_lufs: float = -20.0, search_window_s: float = DEFAULT_SEARCH_WINDOW_S,
                   overlap_s: float = 0.0, sample_rate: int = PREPARE_RATE,
                   vad: bool = True, on_chunk: Callable[[Chunk], None] | None = None,
                   economy: Economy | None = None, max_audio_s: float | None = None) -> PreparedAudio:
    """Decode `path`, cut it into chunks of at most `max_chunk_s` and write them to `work_dir`.

    Chunks tile the recording exactly (or overlap by `overlap_s`), end in pauses when a pause
    lies in the last `search_window_s` before the limit, and are loudness-normalised to
    `target_lufs` with the peak kept below -1 dBFS. With `vad` (16 kHz only), cuts prefer
    pauses the voice detector hears (`tasks.audio.vad`), also under music. `on_chunk` is called with
    each chunk as soon as its file is complete. With `economy` (16 kHz only), long pauses are
    shortened and speech sped up first; `max_chunk_s` and `overlap_s` then count sent seconds.
    With `max_audio_s`, more decoded audio than that raises `AudioLongerThan`.
    Raises `InputError` naming `label` for
    unreadable or empty audio, `ConfigError` for impossible chunk settings.
    """
    if economy is not None and sample_rate != VAD_RATE:
        raise ConfigError(f"economy listens at {VAD_RATE} Hz; prepare at that rate")
    speed = economy.speed if economy else 1.0  # chunks are cut before they are sped up
    rules = chunk_rules(max_chunk_s * speed, sample_rate, search_window_s, overlap_s * speed)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timeline = TimeMap(sample_rate, speed) if economy else None
    writer = _ChunkWriter(work_dir, label, sample_rate, target_lufs, on_chunk, timeline)
    meter = StreamingLoudness(sample_rate)
    report = DecodeReport()
    blocks = iter_decoded(Path(path), sample_rate, label, report)
    if economy is not None and timeline is not None:
        blocks = shorten_pauses(blocks, economy, timeline)
    try:
        total = _cut_stream(blocks, rules, writer, meter, use_vad=vad and sample_rate == VAD_RATE,
                            max_samples=math.inf if max_audio_s is None else max_audio_s * sample_rate)
    except BaseException:
        writer.remove_files()  # a failed item leaves no half set of chunks behind
        raise
    if total == 0:
        raise InputError(f"{label}: the file decodes to no audio at all (zero length). "
                         "Check that the recording is not empty and re-export it.")
    duration_s = timeline.original_s if timeline else total / sample_rate
    return PreparedAudio(duration_s=duration_s, sample_rate=sample_rate,
                         chunks=writer.chunks, source_loudness_lufs=meter.integrated_lufs(),
                         silent=all(chunk.silent for chunk in writer.chunks), decoding=report,
                         timeline=timeline)


@asynccontextmanager
async def stream_chunks(path: Path, work_dir: Path, *, max_chunk_s: float, label: str, depth: int = 1,
                        in_thread: bool = True,
                        **settings: Any) -> AsyncIterator[HandedOver[Chunk, PreparedAudio]]:
    """`prepare_chunks` in a thread, its chunks handed over one by one as they are written
    (with `in_thread=False`, for a short file: all at once, on the event loop).

        async with stream_chunks(path, work, max_chunk_s=409, label="ep-1") as chunks:
            while (chunk := await chunks.next_item()) is not None:
                ...                       # request it; decoding goes on meanwhile
        prepared = chunks.result          # the whole file's PreparedAudio

    At most `depth` chunks wait untaken; leaving the block early stops the decoder at its
    next chunk (the error that made you leave is the one raised).
    """
    def produce(put: Callable[[Chunk], None], limit_s: float | None = None) -> PreparedAudio:
        return prepare_chunks(path, work_dir, max_chunk_s=max_chunk_s, label=label,
                              on_chunk=put, max_audio_s=limit_s, **settings)

    if not in_thread:
        try:
            produced = Produced(lambda put: produce(put, ON_LOOP_MAX_AUDIO_S))
        except AudioLongerThan:
            pass  # a small file holding long audio (compressed silence, say): in a thread after all
        else:
            yield produced
            return
    async with produced_in_thread(produce, depth) as handoff:
        yield handoff
