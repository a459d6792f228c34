"""Nasty inputs, made on the spot from real speech: the bad-input corpus of the reliability tests."""
from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from audiobatch.tasks.audio import codecs
from tests.helpers.data import SPEECH

SPEECH_CLIP = SPEECH / "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav"


def speech(rate: int = 16000) -> np.ndarray:
    return codecs.decode(SPEECH_CLIP, rate)


def png(path: Path) -> Path:
    """A real 8x8 PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * 8 for _ in range(8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def multichannel(path: Path, channels: int = 8, rate: int = 96000) -> Path:
    mono = speech(rate)
    sf.write(path, np.repeat(mono[:, None] * 0.5, channels, axis=1), rate, subtype="PCM_24")
    return path


def telephone(path: Path) -> Path:
    sf.write(path, speech(8000), 8000, subtype="PCM_16")
    return path


def truncated_mp3(path: Path) -> Path:
    data = codecs.encode(speech(16000), 16000, "mp3")
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def one_second(path: Path) -> Path:
    sf.write(path, speech(16000)[:16000], 16000)
    return path


def silence(path: Path, seconds: float = 20.0) -> Path:
    sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
    return path


def long_recording(path: Path, hours: float = 3.0, rate: int = 8000) -> Path:
    """`hours` of audio, speech at the start then silence, written block by block (FLAC)."""
    block = np.zeros(rate * 600, dtype=np.float32)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, format="FLAC") as out:
        out.write(speech(rate))
        for _ in range(int(hours * 6)):
            out.write(block)
    return path


def video(path: Path, *, with_audio: bool) -> Path:
    """An MP4 with a moving picture and, optionally, the speech as an AAC track."""
    with av.open(str(path), "w", format="mp4") as container:
        picture = container.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=16000) if with_audio else None
        for i in range(70):  # 7 s of video
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 3 % 255, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        if sound is not None:
            samples = speech(16000)
            resampler = av.AudioResampler(format=sound.format, layout="mono", rate=16000)
            audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            audio.sample_rate = 16000
            for part in [*resampler.resample(audio), *resampler.resample(None)]:
                container.mux(sound.encode(part))
            container.mux(sound.encode(None))
    return path
