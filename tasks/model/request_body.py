"""A JSON request body with a file's bytes inside as base64, sent piece by piece.

Invariant: the bytes sent are the body as JSON with each `FileAsBase64` replaced by the file's
base64 string, and the Content-Length says exactly how many; at most one piece of the file
(PIECE_BYTES, and its base64) is in memory at a time.

Why: a long recording's chunk (409 s: a 13 MB wav) built as one JSON string is held several
times over while it is sent: the base64 (18 MB), the JSON text, its UTF-8 bytes, and the HTTP
stack's own copies of the body. Streamed, a request costs a few megabytes however long its
chunk is.
"""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from audiobatch.tasks.errors import InputError

PIECE_BYTES = 3 * (1 << 18)  # 768 KiB of file: a multiple of 3, so base64 pieces join unpadded


class FileAsBase64:
    """Stands in a request body for a file's base64 text; read only while it is sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    @property
    def encoded_size(self) -> int:
        return 4 * ((self.size + 2) // 3)

    def encoded(self) -> bytes:
        """The whole base64 text at once (for a file of at most one piece)."""
        return base64.b64encode(self.path.read_bytes())

    async def pieces(self) -> AsyncIterator[bytes]:
        with open(self.path, "rb") as handle:
            while piece := handle.read(PIECE_BYTES):
                yield base64.b64encode(piece)


def json_content(body: dict[str, Any]) -> tuple[dict[str, str], bytes | AsyncIterator[bytes]]:
    """(headers, content) for an httpx request sending `body` as JSON."""
    files: list[FileAsBase64] = []
    mark = f"audiobatch-file-{uuid.uuid4().hex}"  # unguessable: a prompt (data) cannot fake it

    def marked(value: Any) -> str:
        if isinstance(value, FileAsBase64):
            files.append(value)
            return mark
        raise TypeError(f"cannot send {type(value).__name__} in a JSON body")

    text = json.dumps(body, default=marked, ensure_ascii=False, separators=(",", ":"))
    parts = [part.encode("utf-8") for part in text.split(f'"{mark}"')]
    headers = {"content-type": "application/json"}
    if not files:
        return headers, parts[0]
    if sum(file.size for file in files) <= PIECE_BYTES:  # a short clip: one piece anyway, and
        # one bytes body is one write for the HTTP stack instead of an async stream of parts
        return headers, b"".join(part + b'"' + file.encoded() + b'"'
                                 for part, file in zip(parts, files)) + parts[-1]
    size = sum(len(part) for part in parts) + sum(2 + file.encoded_size for file in files)
    headers["content-length"] = str(size)

    async def stream() -> AsyncIterator[bytes]:
        for part, file in zip(parts, files):
            yield part + b'"'
            async for piece in file.pieces():
                yield piece
            yield b'"'
        yield parts[-1]

    return headers, stream()


NO_AUDIO = "no audio to transcribe (0 bytes). Check the chunk or file."


def require_audio(audio: bytes) -> bytes:
    if not audio:
        raise InputError(NO_AUDIO)
    return audio


def audio_data(audio: bytes | Path) -> str | FileAsBase64:
    """A request's base64 audio: a file (a chunk) is read piece by piece as it is sent."""
    if isinstance(audio, Path):
        data = FileAsBase64(audio)
        if not data.size:
            raise InputError(NO_AUDIO)
        return data
    return base64.b64encode(require_audio(audio)).decode("ascii")
