"""Audio decoding and encoding with PyAV (FFmpeg's libraries, bundled; no system ffmpeg).

Samples inside audiobatch are float32 mono numpy arrays in [-1, 1] at a stated rate.
Decoding streams: `iter_decoded` yields blocks, so a 3-hour file is never held whole.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
import soundfile as sf

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
    return container.streams.audio[0]


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


def iter_decoded(source: Source, sample_rate: int, label: str = "audio",
                 report: DecodeReport | None = None) -> Iterator[np.ndarray]:
    """Decode any FFmpeg-readable audio to float32 mono blocks at `sample_rate`, streaming.

    Like the ffmpeg tool, it decodes through damage: a packet the decoder refuses is left out
    (counted in `report`), junk between frames is skipped by FFmpeg's demuxer, a stream that
    changes rate or layout mid-way (podcast segments with their own tags, joined) gets a new
    resampler, and non-finite samples become silence. It fails (InputError naming `label`)
    only when more than MAX_UNREADABLE_SHARE of the audio data could not be decoded.
    """
    report = report if report is not None else DecodeReport()
    container = _open(source, label)
    with container:
        stream = _audio_stream(container, label)
        resampler = _Resampler(sample_rate)
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
    if report.unreadable_share > MAX_UNREADABLE_SHARE:
        raise InputError(f"{label}: {report.unreadable_share:.0%} of the audio data could not be "
                         f"decoded ({report.skipped_packets} of {report.packets} packets). The file "
                         "is too damaged to transcribe; re-download or re-export it.")


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

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler: av.AudioResampler | None = None
        self._setup: tuple[str, str, int] | None = None
        self._layout: Any = None
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0

    def add(self, frame: av.AudioFrame, report: DecodeReport) -> list[np.ndarray]:
        """Take one decoded frame; returns the blocks that are ready."""
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        blocks = []
        if setup != self._setup:
            blocks += self._convert_pending(report)
            if self._setup is not None:
                blocks += self._drain()
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
            blocks += self._convert_pending(report)
        return blocks

    def flush(self, report: DecodeReport) -> list[np.ndarray]:
        return self._convert_pending(report) + self._drain()

    def _convert_pending(self, report: DecodeReport) -> list[np.ndarray]:
        if not self._pending:
            return []
        samples = np.concatenate(self._pending, axis=-1) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_samples = [], 0
        samples = _finite(samples, report)
        if self._resampler is None:
            return [_as_float(samples)]
        sample_format, _, rate = self._setup  # type: ignore[misc]
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=self._layout)
        frame.sample_rate = rate  # no pts: the resampler ignores gaps in broken timestamps
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]

    def _drain(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(None)]

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


def decode(source: Source, sample_rate: int, label: str = "audio") -> np.ndarray:
    """Whole-file decode; for short audio (request bodies, narrated chunks) only."""
    blocks = list(iter_decoded(source, sample_rate, label))
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
