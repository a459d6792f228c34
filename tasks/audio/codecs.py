"""Audio decoding and encoding with PyAV (FFmpeg's libraries, bundled; no system ffmpeg).

Samples inside audiobatch are float32 mono numpy arrays in [-1, 1] at a stated rate.
Decoding streams: `iter_decoded` yields blocks, so a 3-hour file is never held whole.

Audio comes from others (manifests, feeds, `serve` requests, model replies), and a few bytes
can claim hours (FLAC at 8 Hz: one 65,536-sample frame is 2.3 hours at 16 kHz). So decoding
works within budgets of output samples (tasks/bounded.py), charged for each frame before it is
resampled: always the file's own (MAX_AUDIO_S_PER_BYTE: more audio than any real recording of
that size holds), and the caller's when it has one (a served request's --max-audio-s, a
narrated reply's length). The resampler's output is made in blocks of at most RESAMPLED_BLOCK,
so no single step holds more. A caller that knows the format (`declared`) gets the codec it
declared or an InputError: an ID3 tag in front of FLAC is not an mp3.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
import soundfile as sf

from audiobatch.tasks.bounded import Budget
from audiobatch.tasks.errors import InputError

Source = str | Path | BinaryIO | bytes
ENCODABLE_FORMATS = ("wav", "mp3", "flac", "opus", "pcm16")
# container, codec and the sample rate the codec insists on (None: keep the input's)
_AV_ENCODERS = {"mp3": ("mp3", "libmp3lame", None), "opus": ("ogg", "libopus", 48000)}


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float | None  # None when the container does not say
    sample_rate: int
    channels: int
    codec: str


def _open(source: Source, label: str) -> av.container.InputContainer:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        return av.open(source if not isinstance(source, Path) else str(source), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{label}: not a readable audio file ({exc.__class__.__name__}: {exc}). "
                         "Check that the file is complete and is audio (wav, mp3, flac, m4a, ogg...).") from exc


def _audio_stream(container: av.container.InputContainer, label: str) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        container.close()
        raise InputError(f"{label}: the file has no audio track. Give a file with sound in it.")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for what the header names
        container.close()
        raise InputError(f"{label}: the audio is in a codec that cannot be decoded here (or its "
                         "header is damaged). Re-export it as wav, mp3, flac or m4a.")
    return stream


def probe(source: Source, label: str = "audio") -> AudioInfo:
    """Header facts without decoding; raises InputError for non-audio input."""
    container = _open(source, label)
    with container:
        stream = _audio_stream(container, label)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        ctx = stream.codec_context
        return AudioInfo(duration, int(ctx.sample_rate or 0), int(ctx.channels or 0), ctx.name)


@dataclass
class DecodeReport:
    """What a decode had to step over: filled in as `iter_decoded` goes (read it at the end)."""

    packets: int = 0
    packet_bytes: int = 0
    skipped_packets: int = 0  # packets the decoder refused (corrupt data), left out
    skipped_bytes: int = 0
    skipped_s: float = 0.0  # their duration, as the container states it
    repaired_samples: int = 0  # NaN or infinite output samples, set to 0
    restarts: int = 0  # the stream changed rate or layout mid-way (concatenated segments)

    @property
    def unreadable_share(self) -> float:
        return self.skipped_bytes / self.packet_bytes if self.packet_bytes else 0.0


MAX_UNREADABLE_SHARE = 0.25  # more than this of the audio data refused: fail the file
# The most audio a file may decode to, per byte of it. Real recordings hold far less: digital
# silence in FLAC, the most compressible audio there is, 21 ms a byte (measured); speech in
# Opus 0.1 ms.
MAX_AUDIO_S_PER_BYTE = 1.0
MIN_AUDIO_BUDGET_S = 60.0  # what any file may hold, however small
# The codecs a declared format may open as (container names as FFmpeg reports them).
DECLARED_CODECS = {"wav": ("wav", ("pcm_",)), "mp3": ("mp3", ("mp3",)),
                   "flac": ("flac", ("flac",)), "opus": ("ogg", ("opus",))}


def iter_decoded(source: Source, sample_rate: int, label: str = "audio",
                 report: DecodeReport | None = None, *, budget: Budget | None = None,
                 declared: str | None = None) -> Iterator[np.ndarray]:
    """Decode any FFmpeg-readable audio to float32 mono blocks at `sample_rate`, streaming.

    Like the ffmpeg tool, it decodes through damage: a packet the decoder refuses is left out
    (counted in `report`), junk between frames is skipped by FFmpeg's demuxer, a stream that
    changes rate or layout mid-way (podcast segments with their own tags, joined) gets a new
    resampler, and non-finite samples become silence. It fails (InputError naming `label`)
    when more than MAX_UNREADABLE_SHARE of the audio data could not be decoded, when the file
    holds more audio than its size allows or `budget` (samples at `sample_rate`) takes
    (OverBudget, before the frame that would pass it is resampled), and when `declared`
    (wav, mp3, flac, opus) is not what FFmpeg opened.
    """
    report = report if report is not None else DecodeReport()
    container = _open(source, label)
    budgets = [size_budget(source, sample_rate, label), *([budget] if budget is not None else [])]
    with container:
        stream = _audio_stream(container, label)
        if declared is not None:
            check_declared(container, stream, declared, label)
        try:
            yield from _blocks(container, stream, _Resampler(sample_rate, budgets), report, label)
        except av.error.FFmpegError as exc:  # the resampler's: a layout or rate it cannot take
            raise InputError(f"{label}: the audio cannot be converted to mono at {sample_rate} Hz "
                             f"({exc}); its header may be damaged. Re-export it.") from None
    if report.unreadable_share > MAX_UNREADABLE_SHARE:
        raise InputError(f"{label}: {report.unreadable_share:.0%} of the audio data could not be "
                         f"decoded ({report.skipped_packets} of {report.packets} packets). The file "
                         "is too damaged to transcribe; re-download or re-export it.")


def _blocks(container: av.container.InputContainer, stream: Any, resampler: _Resampler,
            report: DecodeReport, label: str) -> Iterator[np.ndarray]:
    for packet in _packets(container, stream, label):
        report.packets += 1
        report.packet_bytes += packet.size
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            _skip(packet, report)
            continue
        for frame in frames:
            for block in resampler.add(frame, report):
                yield _finite(block, report)
    for block in resampler.flush(report):
        yield _finite(block, report)


def size_budget(source: Source, sample_rate: int, label: str) -> Budget:
    """The most samples a file of this size may decode to (MAX_AUDIO_S_PER_BYTE)."""
    size = _size_of(source)
    seconds = max(MIN_AUDIO_BUDGET_S, size * MAX_AUDIO_S_PER_BYTE)
    return Budget(round(seconds * sample_rate), (
        f"{label}: the file ({size:,} bytes) holds more than {seconds:,.0f} s of audio, more than "
        f"any real recording of its size ({MAX_AUDIO_S_PER_BYTE:g} s a byte at most); decoding "
        "stopped there. It is crafted or broken: re-export it."))


def _size_of(source: Source) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, (str, Path)):
        return os.path.getsize(source)
    here = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(here)  # FFmpeg reads on from here
    return size


def check_declared(container: av.container.InputContainer, stream: Any, declared: str,
                   label: str) -> None:
    """InputError unless FFmpeg opened what `declared` names (container and codec)."""
    if declared not in DECLARED_CODECS:
        raise ValueError(f"no codec check for format {declared!r}")
    container_name, codec_prefixes = DECLARED_CODECS[declared]
    opened, codec = container.format.name, stream.codec_context.name
    if container_name not in opened.split(",") or not codec.startswith(codec_prefixes):
        raise InputError(f"{label}: said to be {declared}, but the data opens as {codec} in "
                         f"{opened.split(',')[0]}: refused. Send {declared} data, or say what "
                         "format it is.")


def _packets(container: av.container.InputContainer, stream: Any, label: str) -> Iterator[Any]:
    """The stream's packets; a demuxer that gives up part-way ends the stream (what was read
    is kept), except at the very start, where nothing is readable."""
    read_any = False
    try:
        for packet in container.demux(stream):
            read_any = True
            if packet.size:  # the demuxer's empty flush packet carries no data
                yield packet
    except av.error.FFmpegError as exc:  # raised by the demuxer: the consumer's never reach here
        if not read_any:
            raise InputError(f"{label}: decoding failed at the start ({exc}). The file may be "
                             "corrupt or not audio; re-export or re-download it.") from exc


def _skip(packet: Any, report: DecodeReport) -> None:
    report.skipped_packets += 1
    report.skipped_bytes += packet.size
    if packet.duration and packet.time_base:
        report.skipped_s += float(packet.duration * packet.time_base)


BATCH_SAMPLES = 65_536  # per channel: decoded frames (~1,000 samples each) joined before conversion
RESAMPLED_BLOCK = 65_536  # the most samples one resampler call may make (8 Hz -> 16 kHz is x2000)


class _Resampler:
    """Decoded frames to float mono at one rate, through an av.AudioResampler rebuilt when the
    input's rate, layout or sample format changes (PyAV refuses frames that do not match its
    first one).

    Frames are joined into blocks of BATCH_SAMPLES before conversion: per frame, the calls
    into FFmpeg and numpy cost more than the work (a 3-hour mp3 is 400,000 frames; measured
    6.7 s of 14.5 s preparing it). The resampler is a stream, so its output does not depend on
    where the input is split. Mono 16-bit or float input already at the rate needs no
    resampler: its samples are converted as FFmpeg's would be (x / 32768 is exact in float32),
    without building a filter graph per file, ~1 ms of held GIL per short clip."""

    def __init__(self, sample_rate: int, budgets: list[Budget] = ()) -> None:  # type: ignore[assignment]
        self.sample_rate = sample_rate
        self._budgets = budgets
        self._resampler: av.AudioResampler | None = None
        self._setup: tuple[str, str, int] | None = None
        self._layout: Any = None
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0

    def add(self, frame: av.AudioFrame, report: DecodeReport) -> Iterator[np.ndarray]:
        """Take one decoded frame; yields the blocks that are ready. The frame's samples at
        the output rate are charged to the budgets first: over budget, nothing is made."""
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        output = -(-frame.samples * self.sample_rate // max(1, frame.sample_rate))
        for budget in self._budgets:
            budget.charge(output)
        if setup != self._setup:
            yield from self._convert_pending(report)
            if self._setup is not None:
                yield from self._drain()
                report.restarts += 1
            self._resampler = None if self._passes_through(frame) else av.AudioResampler(
                format="flt", layout="mono", rate=self.sample_rate)
            self._setup, self._layout = setup, frame.layout
        samples = frame.samples
        if self._resampler is None:  # a view of the mono frame's buffer, (n,): PyAV's to_ndarray
            # stacks the planes (np.vstack, even of one), a third of decoding a 16 kHz mp3
            self._pending.append(np.frombuffer(frame.planes[0], _PASS_FORMATS[setup[0]], samples))
        else:
            self._pending.append(frame.to_ndarray())
        self._pending_samples += samples
        if self._pending_samples >= BATCH_SAMPLES:
            yield from self._convert_pending(report)

    def flush(self, report: DecodeReport) -> Iterator[np.ndarray]:
        yield from self._convert_pending(report)
        yield from self._drain()

    def _convert_pending(self, report: DecodeReport) -> Iterator[np.ndarray]:
        if not self._pending:
            return
        samples = np.concatenate(self._pending, axis=-1) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_samples = [], 0
        samples = _finite(samples, report)
        if self._resampler is None:
            yield _as_float(samples)
            return
        sample_format, _, rate = self._setup  # type: ignore[misc]
        # Upsampling multiplies: at most RESAMPLED_BLOCK out of each resampler call.
        step = max(1, RESAMPLED_BLOCK * rate // self.sample_rate)
        packed = samples.shape[0] == 1 and len(self._layout.channels) > 1
        width = len(self._layout.channels) if packed else 1  # packed: channels interleaved
        for start in range(0, samples.shape[-1] // width, step):
            piece = samples[:, start * width:(start + step) * width]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=sample_format,
                                               layout=self._layout)
            frame.sample_rate = rate  # no pts: the resampler ignores gaps in broken timestamps
            for out in self._resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)

    def _drain(self) -> Iterator[np.ndarray]:
        if self._resampler is None:
            return
        for out in self._resampler.resample(None):
            yield out.to_ndarray().reshape(-1)

    def _passes_through(self, frame: av.AudioFrame) -> bool:
        return (len(frame.layout.channels) == 1 and frame.sample_rate == self.sample_rate
                and frame.format.name in _PASS_FORMATS)


_PASS_FORMATS = {"s16": np.int16, "s16p": np.int16, "flt": np.float32, "fltp": np.float32}


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) * np.float32(1 / 32768)
    return samples.astype(np.float32, copy=False)


def _finite(samples: np.ndarray, report: DecodeReport) -> np.ndarray:
    """NaN/inf float samples set to 0, counted: before resampling, which would smear each one
    over the filter's length, and after it (one would poison every level and gain). A finite
    sum (in float64) means every sample is finite: one cheap pass in the common case."""
    if samples.dtype.kind != "f" or np.isfinite(samples.sum(dtype=np.float64)):
        return samples
    bad = ~np.isfinite(samples)
    if not bad.any():  # huge samples overflowed the sum; none is bad
        return samples
    report.repaired_samples += int(bad.sum())
    return np.where(bad, 0, samples).astype(samples.dtype)


def decode(source: Source, sample_rate: int, label: str = "audio", *, budget: Budget | None = None,
           declared: str | None = None) -> np.ndarray:
    """Whole-file decode; for short audio (request bodies, narrated chunks) only: give it the
    `budget` the audio's purpose allows (see `iter_decoded`)."""
    blocks = list(iter_decoded(source, sample_rate, label, budget=budget, declared=declared))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 mono samples at another rate, with FFmpeg's resampler (flushed: nothing lost)."""
    frame = av.AudioFrame.from_ndarray(np.asarray(samples, dtype=np.float32).reshape(1, -1),
                                       format="flt", layout="mono")
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    blocks = [out.to_ndarray().reshape(-1) for out in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def encode(samples: np.ndarray, sample_rate: int, fmt: str, title: str | None = None) -> bytes:
    """Encode float32 mono samples as wav (16-bit), flac, mp3, opus (ogg) or raw pcm16."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if fmt == "pcm16":
        return to_int16(samples).tobytes()
    if fmt in ("wav", "flac"):
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", samplerate=sample_rate, channels=1,
                          format=fmt.upper(), subtype="PCM_16") as out:
            if title:
                out.title = title
            out.write(samples)
        return buffer.getvalue()
    if fmt in _AV_ENCODERS:
        return _encode_with_av(samples, sample_rate, fmt, title)
    raise ValueError(f"unsupported audio format {fmt!r}; choose one of {', '.join(ENCODABLE_FORMATS)}")


def _encode_with_av(samples: np.ndarray, sample_rate: int, fmt: str, title: str | None) -> bytes:
    container_format, codec, forced_rate = _AV_ENCODERS[fmt]
    rate = forced_rate or sample_rate
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if title:
            container.metadata["title"] = title
            stream.metadata["title"] = title  # ogg keeps tags on the stream
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return buffer.getvalue()
