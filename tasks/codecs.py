"""Audio decoding and encoding with PyAV (FFmpeg's libraries, bundled; no system ffmpeg).

Samples inside audiobatch are float32 mono numpy arrays in [-1, 1] at a stated rate.
Decoding streams: `iter_decoded` yields blocks, so a 3-hour file is never held whole.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


def iter_decoded(source: Source, sample_rate: int, label: str = "audio") -> Iterator[np.ndarray]:
    """Decode any FFmpeg-readable audio to float32 mono blocks at `sample_rate`, streaming."""
    container = _open(source, label)
    with container:
        stream = _audio_stream(container, label)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler ignore gaps in broken timestamps
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.error.FFmpegError as exc:
            raise InputError(f"{label}: decoding failed part-way ({exc}). The file may be "
                             "truncated or corrupt; re-export or re-download it.") from exc


def decode(source: Source, sample_rate: int, label: str = "audio") -> np.ndarray:
    """Whole-file decode; for short audio (request bodies, narrated chunks) only."""
    blocks = list(iter_decoded(source, sample_rate, label))
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
