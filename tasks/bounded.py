"""Bounded decoding: whatever others send, no decoder makes more than its budget.

A small input can stand for a huge output: hours of audio in a 1 KB FLAC, 600 MiB in a
500-byte bzip2 entry of an EPUB, 400 MiB in 825 bytes of `Content-Encoding: gzip, gzip`.
So every decoder of input from others (README "Security model") is given a `Budget` of output
(samples or bytes) and charges it *before* each expensive step, on that step's input side: an
audio frame's samples before they are resampled (tasks/audio/codecs.py), each piece a
decompressor may make (at most STEP bytes a call) before the next call (`Inflater`). Reaching
the budget raises `OverBudget` with the budget's own message and the decoder stops there: what
it would have made beyond is never made.

The budget's owner says what it is and what to do: the size of the file for audio from
manifests and feeds, `--max-audio-s` for a `serve` request, the text's length for a narrated
reply, the book's limit for an EPUB, the reply or download cap for an HTTP body. Callers turn
`OverBudget` (an InputError: an item fails with it) into their own answer where they need
another (`serve` answers 400, the model client refuses the reply).
"""
from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from audiobatch.tasks.errors import InputError

STEP = 64 * 1024  # most bytes one decompressor call may make


class OverBudget(InputError):
    """A decoder reached its budget and stopped; the message is the budget's."""


class Undecodable(InputError):
    """Compressed data that cannot be (or is not allowed to be) decoded."""


@dataclass
class Budget:
    """At most `limit` units of output (samples, bytes), charged before they are made."""

    limit: int
    message: str  # the whole error: what reached what, and what to do
    used: int = 0

    def charge(self, amount: int) -> None:
        self.used += amount
        if self.used > self.limit:
            raise OverBudget(self.message)

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


# --- decompression ---------------------------------------------------------------------------

KINDS = ("gzip", "deflate", "zlib", "raw-deflate", "bzip2", "lzma-zip")


class Inflater:
    """One compressed stream, decompressed at most STEP bytes a call, each piece charged to
    `budget` before the next is made.

    Kinds: "gzip"; "deflate" (HTTP's: zlib-wrapped, or raw as some servers send it; told apart
    by the first two bytes); "zlib"; "raw-deflate" (zip entries); "bzip2"; "lzma-zip" (a zip
    entry's LZMA: a 4-byte header and the properties, then raw LZMA1)."""

    def __init__(self, kind: str, budget: Budget, what: str = "the data") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown compression {kind!r}; one of {', '.join(KINDS)}")
        self.kind, self.budget, self.what = kind, budget, what
        self._engine: Any = None if kind in ("deflate", "lzma-zip") else _engine(kind)
        self._head = b""  # the first bytes, until the kind's header can be read

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The output of `data`, piece by piece (each at most STEP bytes)."""
        if self._engine is None:
            self._head += data
            if not self._ready():
                return
            data, self._head = self._head, b""
            data = self._start(data)
        try:
            yield from self._pieces(data)
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as error:
            raise Undecodable(f"{self.what} is not valid {self.kind} data ({error}).") from None

    def finish(self) -> None:
        """Check that the stream ended where it should (truncated data is refused)."""
        if self._engine is None or not self._engine.eof:
            raise Undecodable(f"{self.what} ends before its {self.kind} stream does (truncated).")

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        engine = self._engine
        if isinstance(engine, _ZlibStep):
            yield from engine.pieces(data, self.budget)
            return
        out = engine.decompress(data, STEP)
        while True:
            self.budget.charge(len(out))
            if out:
                yield out
            if engine.eof or engine.needs_input:
                return
            out = engine.decompress(b"", STEP)

    def _ready(self) -> bool:
        return len(self._head) >= (2 if self.kind == "deflate" else _LZMA_ZIP_HEADER)

    def _start(self, data: bytes) -> bytes:
        """Pick the engine from the stream's first bytes; returns the data after any header."""
        if self.kind == "deflate":
            zlib_wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._engine = _engine("zlib" if zlib_wrapped else "raw-deflate")
            return data
        size = int.from_bytes(data[2:4], "little")
        if len(data) < 4 + size:
            raise Undecodable(f"{self.what}: its LZMA header is cut short.")
        try:
            lzma1 = lzma._decode_filter_properties(lzma.FILTER_LZMA1, data[4:4 + size])  # type: ignore[attr-defined]
        except lzma.LZMAError as error:
            raise Undecodable(f"{self.what}: its LZMA properties are not valid ({error}).") from None
        self._engine = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])
        return data[4 + size:]


_LZMA_ZIP_HEADER = 4 + 5  # version (2), properties size (2), LZMA1 properties (5)


class _ZlibStep:
    """zlib's decompressobj with the `eof`/`needs_input` of bz2 and lzma: its `max_length`
    leaves the rest of the input in `unconsumed_tail` instead of keeping it."""

    def __init__(self, wbits: int) -> None:
        self._zlib = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    def pieces(self, data: bytes, budget: Budget) -> Iterator[bytes]:
        while True:
            out = self._zlib.decompress(data, STEP)
            budget.charge(len(out))
            if out:
                yield out
            data = self._zlib.unconsumed_tail
            # a full piece may leave output pending inside zlib even with no input left
            if self._zlib.eof or (not data and len(out) < STEP):
                return


def _engine(kind: str) -> Any:
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "zlib": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}[kind]
    return _ZlibStep(wbits)


def inflate(data: bytes, kind: str, budget: Budget, what: str = "the data") -> bytes:
    """All of a compressed `data`, within `budget` (OverBudget as soon as it would pass it)."""
    inflater = Inflater(kind, budget, what)
    out = b"".join(inflater.feed(data))
    inflater.finish()
    return out


# --- HTTP bodies -------------------------------------------------------------------------------

HTTP_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
ACCEPT_ENCODING = "gzip, deflate"  # what clients that decode with `BodyDecoder` ask for


class BodyDecoder:
    """An HTTP body as sent (`aiter_raw`) -> its bytes, within `budget`.

    At most one content-coding (gzip or deflate): a stack such as `gzip, gzip` multiplies the
    expansion of each layer and is refused, as urllib3 2.6 limits its chain for the same
    reason; raw bytes count against the budget as well as decoded ones."""

    def __init__(self, content_encoding: str | None, budget: Budget, what: str) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise Undecodable(f"{what} is sent with {len(codings)} content-codings stacked "
                              f"({content_encoding}): refused, at most one is decoded.")
        if codings and codings[0] not in HTTP_CODINGS:
            raise Undecodable(f"{what} is sent with content-coding {codings[0]!r}, which is not "
                              f"decoded here (asked for: {ACCEPT_ENCODING}).")
        self.budget = budget
        self._raw = Budget(budget.limit, budget.message)
        self._inflater = Inflater(HTTP_CODINGS[codings[0]], budget, what) if codings else None

    def feed(self, raw: bytes) -> Iterator[bytes]:
        self._raw.charge(len(raw))
        if self._inflater is None:
            self.budget.charge(len(raw))
            yield raw
        else:
            yield from self._inflater.feed(raw)

    def finish(self) -> None:
        if self._inflater is not None:
            self._inflater.finish()
