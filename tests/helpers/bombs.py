"""Small inputs that stand for huge outputs (issue 23), made here byte by byte.

- `flac_hours`: FLAC frames of one constant sample, 65,535 samples each at a few Hz: 13 bytes
  a frame, 2.3 hours at 16 kHz each; no total length stated unless `stated` (`id3=True` puts an
  empty ID3 tag first, which FFmpeg skips, so a sniffer that trusts "ID3" calls it mp3).
- `wav_hours`: an 8-bit wav at a few Hz: one byte a sample.
- `bzip2_epub`: an EPUB whose chapter is a bzip2 entry that states its few hundred bytes and
  inflates to `inflated_mb`.
- `gzip_gzip`: a body compressed twice (`Content-Encoding: gzip, gzip`).
- `peak_rss_mb`: the peak memory of a Python snippet run in a fresh process (what a user
  meets), and of the same process's imports alone, measured in the same run.
"""
from __future__ import annotations

import bz2
import gzip
import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers.books import write_epub
from tests.helpers.data import ROOT

FLAC_BLOCK = 65_535


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def flac_hours(frames: int, sample_rate: int = 8, *, id3: bool = False, value: int = 1000,
               stated: bool = False) -> bytes:
    """`frames` (< 128) FLAC frames of FLAC_BLOCK samples of one value, 16-bit mono at `sample_rate`."""
    assert frames < 128, "frame numbers above 127 take more than one byte"
    info = struct.pack(">HH", FLAC_BLOCK, FLAC_BLOCK) + (0).to_bytes(3, "big") + (0).to_bytes(3, "big")
    # sample rate (20 bits), channels - 1 (3), bits per sample - 1 (5), total samples (36)
    packed = (sample_rate << 44) | (0 << 41) | (15 << 36) | (frames * FLAC_BLOCK if stated else 0)
    info += packed.to_bytes(8, "big") + bytes(16)  # no MD5
    stream = b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info
    for number in range(frames):
        # sync + fixed blocksize; block size "16 bits at the end", rate from STREAMINFO;
        # mono, sample size from STREAMINFO; frame number (UTF-8 coded); block size - 1
        header = b"\xff\xf8" + bytes([0x70, 0x00]) + bytes([number]) + struct.pack(">H", FLAC_BLOCK - 1)
        header += bytes([_crc8(header)])
        frame = header + b"\x00" + struct.pack(">h", value)  # one CONSTANT subframe
        stream += frame + struct.pack(">H", _crc16(frame))
    return (b"ID3\x03\x00\x00\x00\x00\x00\x00" if id3 else b"") + stream


def wav_hours(hours: float, sample_rate: int = 8) -> bytes:
    """An 8-bit mono wav of a quiet tone at `sample_rate`: one byte a sample."""
    count = round(hours * 3600 * sample_rate)
    data = bytes((128 + (i % 2) * 4) for i in range(count))
    header = (b"RIFF" + struct.pack("<I", 36 + count) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate, 1, 8) + b"data" + struct.pack("<I", count))
    return header + data


def bzip2_epub(path: Path, inflated_mb: int) -> Path:
    """A real EPUB (tests/helpers/books.py) whose first chapter is swapped for a bzip2 entry
    of `inflated_mb` of spaces, still stating the chapter's few hundred bytes (and its CRC)."""
    compressor, piece = bz2.BZ2Compressor(9), b" " * (1 << 20)
    bomb = b"".join(compressor.compress(piece) for _ in range(inflated_mb)) + compressor.flush()
    write_epub(path, [("One", ["The first chapter."]), ("Two", ["The second chapter."])])
    path.write_bytes(_with_entry_replaced(path.read_bytes(), b"OEBPS/chapter1.xhtml", bomb,
                                          zipfile.ZIP_BZIP2))
    return path


def _with_entry_replaced(data: bytes, name: bytes, payload: bytes, method: int) -> bytes:
    """The zip with `name`'s bytes replaced by `payload` (compressed size and method updated,
    the stated unpacked size and CRC left as they were)."""
    local = 0  # the first entry's header
    while True:
        name_len, extra_len = struct.unpack("<HH", data[local + 26:local + 30])
        if data[local + 30:local + 30 + name_len] == name:
            break
        size = struct.unpack("<I", data[local + 18:local + 22])[0]
        local += 30 + name_len + extra_len + size
    old_size = struct.unpack("<I", data[local + 18:local + 22])[0]
    start = local + 30 + name_len + extra_len
    header = bytearray(data[local:start])
    header[8:10] = struct.pack("<H", method)
    header[18:22] = struct.pack("<I", len(payload))
    shift = len(payload) - old_size
    rest = bytearray(data[start + old_size:])
    central = rest.index(b"PK\x01\x02")
    while central >= 0:
        name_len = struct.unpack("<H", rest[central + 28:central + 30])[0]
        offset = struct.unpack("<I", rest[central + 42:central + 46])[0]
        if rest[central + 46:central + 46 + name_len] == name:
            rest[central + 10:central + 12] = struct.pack("<H", method)
            rest[central + 20:central + 24] = struct.pack("<I", len(payload))
        elif offset > local:
            rest[central + 42:central + 46] = struct.pack("<I", offset + shift)
        extra, comment = struct.unpack("<HH", rest[central + 30:central + 34])
        nxt = central + 46 + name_len + extra + comment
        central = nxt if rest[nxt:nxt + 4] == b"PK\x01\x02" else -1
    end = rest.index(b"PK\x05\x06")
    directory_offset = struct.unpack("<I", rest[end + 16:end + 20])[0]
    rest[end + 16:end + 20] = struct.pack("<I", directory_offset + shift)
    return data[:local] + bytes(header) + payload + bytes(rest)


def gzip_gzip(inflated_mb: int) -> bytes:
    """`inflated_mb` of zeros, gzip-compressed twice."""
    inner = io.BytesIO()
    with gzip.GzipFile(fileobj=inner, mode="wb", compresslevel=9, mtime=0) as once:
        piece = bytes(1 << 20)
        for _ in range(inflated_mb):
            once.write(piece)
    return gzip.compress(inner.getvalue(), compresslevel=9, mtime=0)


def peak_rss_mb(snippet: str, setup: str = "", timeout_s: float = 300) -> tuple[float, float, str]:
    """(peak RSS of `setup` + `snippet`, peak RSS of `setup` alone, what the snippet printed),
    each in a fresh interpreter; the snippet's exceptions are printed, not raised."""
    def run(code: str) -> tuple[float, str]:
        program = (f"{setup}\nimport resource, sys, traceback\ntry:\n"
                   + "".join(f"    {line}\n" for line in (code or "pass").splitlines())
                   + "except BaseException as error:\n    print(type(error).__name__, error)\n"
                   "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
        done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = done.stdout.strip().splitlines()
        assert lines and lines[-1].startswith("PEAK"), done.stdout + done.stderr
        return int(lines[-1].split()[1]) / 1024, "\n".join(lines[:-1])

    peak, said = run(snippet)
    base, _ = run("")
    return peak, base, said
