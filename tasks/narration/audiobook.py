"""Audiobooks: an `.m4b` file (AAC in MP4) written chapter by chapter, with chapter marks,
title/author tags and cover art.

`AudiobookWriter` keeps the MP4 open on disk and encodes each chapter as it is added, so a
book of any length needs memory for one chapter's audio, never the whole book's. Chapter
marks are written when the file is closed (`set_chapters`: one per chapter, titled from the
book, read back by players and by PyAV's `container.chapters()`); the cover is an attached
picture stream (MP4 `covr`). The moov atom is moved to the front (`faststart`) so that players
and podcast apps can start before the download ends.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from audiobatch.tasks.errors import InputError

AAC_BIT_RATE = 64_000  # mono speech: transparent at 64 kb/s
_CHAPTER_TIME_BASE = Fraction(1, 1000)
_COVER_CODECS = {"image/jpeg": ("mjpeg", "yuvj420p"), "image/png": ("png", "rgb24")}


class AudiobookWriter:
    """`with AudiobookWriter(path, rate, title=..., author=..., cover=...) as book:
    book.add_chapter("One", samples)`; the file is complete when the block ends."""

    def __init__(self, path: Path, sample_rate: int, *, title: str | None = None,
                 author: str | None = None, cover: bytes | None = None,
                 cover_type: str | None = None) -> None:
        self.path, self.sample_rate = path, sample_rate
        self.chapters: list[dict] = []
        self.samples_written = 0
        self._container = av.open(str(path), "w", format="mp4",
                                  options={"movflags": "+faststart", "brand": "M4B "})
        self._stream = self._container.add_stream("aac", rate=sample_rate)
        self._stream.layout = "mono"
        self._stream.bit_rate = AAC_BIT_RATE
        for key, value in (("title", title), ("album", title), ("artist", author),
                           ("album_artist", author), ("genre", "Audiobook")):
            if value:
                self._container.metadata[key] = value
        self._cover = self._add_cover(cover, cover_type) if cover else None
        self._resampler = av.AudioResampler(format=self._stream.format, layout="mono", rate=sample_rate)

    def _add_cover(self, cover: bytes, cover_type: str | None) -> tuple[av.video.stream.VideoStream, bytes]:
        if cover_type not in _COVER_CODECS:
            raise InputError(f"cover art of type {cover_type!r} cannot go in an m4b: JPEG or PNG only")
        codec, pixel_format = _COVER_CODECS[cover_type]
        stream = self._container.add_stream(codec)
        stream.width = stream.height = 1  # container fields; the picture's own header rules
        stream.pix_fmt = pixel_format
        stream.disposition = av.stream.Disposition.attached_pic
        return stream, cover

    def add_chapter(self, title: str, samples: np.ndarray) -> None:
        """Encode one chapter's audio (float32 mono at the writer's rate) and mark it."""
        start = self.samples_written
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
                                           format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        for chunk in self._resampler.resample(frame):
            self._container.mux(self._stream.encode(chunk))
        self.samples_written += len(samples)
        self.chapters.append({"id": len(self.chapters) + 1, "title": title, "start": start,
                              "end": self.samples_written})

    def close(self) -> None:
        for chunk in self._resampler.resample(None):
            self._container.mux(self._stream.encode(chunk))
        self._container.mux(self._stream.encode(None))
        if self._cover is not None:
            stream, data = self._cover
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, 0, 0
            packet.time_base = Fraction(1, 90_000)
            self._container.mux(packet)
        self._container.set_chapters([
            {"id": mark["id"], "start": self._ms(mark["start"]), "end": self._ms(mark["end"]),
             "time_base": _CHAPTER_TIME_BASE, "metadata": {"title": mark["title"]}}
            for mark in self.chapters])
        self._container.close()

    def _ms(self, samples: int) -> int:
        return round(samples * 1000 / self.sample_rate)

    def __enter__(self) -> AudiobookWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:  # leave no half-written book behind
            self._container.close()
            self.path.unlink(missing_ok=True)
