"""Content-addressed result cache: no request that succeeded is sent or paid for twice.

The key is a SHA-256 over everything that decides the answer: the request's payload bytes
(chunk audio or chunk text), the model, the provider/endpoint, the prompt and the parameters.
Entries live under `<output root>/_cache/` as `<key>.json` (text, usage, ids) plus
`<key>.audio` for narrated audio; the JSON is written last, so an entry exists only once whole.
A hit is recorded in `costs` with `cached=True` and $0.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiobatch.tasks.cost import Usage
from audiobatch.tasks.outputs import OutputRoot


@dataclass(frozen=True)
class ReplyRecord:
    text: str
    audio: bytes | None
    audio_format: str | None
    model: str
    usage: Usage
    request_id: str | None
    finish_reason: str | None = None
    refusal: str | None = None
    language: str | None = None
    language_probability: float | None = None


def payload_digest(payload: bytes | Path) -> bytes:
    """SHA-256 of the request's payload: bytes, or a file's bytes read in blocks (a long
    chunk's audio is hashed without being held in memory)."""
    if isinstance(payload, Path):
        with open(payload, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").digest()
    return hashlib.sha256(payload).digest()


def cache_key(payload: bytes | Path, *, model: str, provider: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(payload_digest(payload))
    header = json.dumps({"model": model, "provider": provider, "params": params},
                        sort_keys=True, ensure_ascii=False, default=str)
    digest.update(header.encode("utf-8"))
    return digest.hexdigest()


_OPTIONAL = ("finish_reason", "refusal", "language", "language_probability")


class ResultCache:
    def __init__(self, out: OutputRoot, *, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled

    @staticmethod
    def _base(key: str) -> str:
        return f"_cache/{key[:2]}/{key}"

    def get(self, key: str) -> ReplyRecord | None:
        if not self.enabled or not self.out.exists(self._base(key) + ".json"):
            return None
        try:
            entry = json.loads(self.out.read_bytes(self._base(key) + ".json"))
            audio = self.out.read_bytes(self._base(key) + ".audio") if entry["has_audio"] else None
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is a miss: the request is simply made again
        return ReplyRecord(text=entry["text"], audio=audio, audio_format=entry["audio_format"],
                           model=entry["model"], usage=Usage(**entry["usage"]),
                           request_id=entry["request_id"], **{k: entry.get(k) for k in _OPTIONAL})

    def put(self, key: str, reply: ReplyRecord) -> None:
        if not self.enabled:
            return
        if reply.audio is not None:
            self.out.write_bytes(self._base(key) + ".audio", reply.audio)
        entry = {"text": reply.text, "audio_format": reply.audio_format, "model": reply.model,
                 "usage": asdict(reply.usage), "request_id": reply.request_id,
                 "has_audio": reply.audio is not None,
                 **{k: getattr(reply, k) for k in _OPTIONAL}}
        self.out.write_bytes(self._base(key) + ".json", json.dumps(entry).encode("utf-8"))
