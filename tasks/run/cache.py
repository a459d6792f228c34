"""Content-addressed result cache: no request that succeeded is sent or paid for twice.

The key is a SHA-256 over everything that decides the answer: the request's payload bytes
(chunk audio or chunk text), the model, the endpoint (the full normalised base URL: scheme,
host, port and path; two endpoints never share answers, whatever provider label they are
priced under), the prompt and the parameters.
Entries live under `<output root>/_cache/` as `<key>.json` (text, usage, ids) plus
`<key>.audio` for narrated audio; the JSON is written last, so an entry exists only once whole.
A hit is recorded in `costs` with `cached=True` and $0. An entry that cannot be read or has
the wrong shape is a miss (logged): the request is made again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audiobatch.tasks.model.cost import Usage
from audiobatch.tasks.outputs.datasets import OutputRoot

log = logging.getLogger("audiobatch")
_ENTRY_TYPES = {"text": str, "audio_format": (str, type(None)), "model": str, "usage": dict,
                "request_id": (str, type(None)), "has_audio": bool}


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
    tool_name: str | None = None  # a tool call's function and raw arguments (tasks/extract)
    tool_arguments: str | None = None


def payload_digest(payload: bytes | Path) -> bytes:
    """SHA-256 of the request's payload: bytes, or a file's bytes read in blocks (a long
    chunk's audio is hashed without being held in memory)."""
    if isinstance(payload, Path):
        with open(payload, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").digest()
    return hashlib.sha256(payload).digest()


def cache_key(payload: bytes | Path, *, model: str, endpoint: str, params: dict[str, Any]) -> str:
    """`endpoint`: the normalised base URL (tasks.inputs.trust.normal_base_url), or "embedded"."""
    digest = hashlib.sha256()
    digest.update(payload_digest(payload))
    header = json.dumps({"model": model, "endpoint": endpoint, "params": params},
                        sort_keys=True, ensure_ascii=False, default=str)
    digest.update(header.encode("utf-8"))
    return digest.hexdigest()


_OPTIONAL = ("finish_reason", "refusal", "language", "language_probability", "tool_name",
             "tool_arguments")


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
            return self._read(key)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # a damaged entry is a miss: the request is simply made again (and the entry replaced)
            log.warning("ignoring the damaged cache entry %s (%s); the request is sent again",
                        self.out.display(self._base(key) + ".json"), exc)
            return None

    def _read(self, key: str) -> ReplyRecord:
        entry = json.loads(self.out.read_bytes(self._base(key) + ".json"))
        if not isinstance(entry, dict):
            raise ValueError(f"a JSON {type(entry).__name__}, not an object")
        for name, kind in _ENTRY_TYPES.items():
            if not isinstance(entry.get(name), kind):
                raise ValueError(f"'{name}' is missing or has the wrong type")
        usage = Usage(**entry["usage"])
        if not all(isinstance(v, int) and v >= 0 for v in asdict(usage).values()):
            raise ValueError("usage counts are not whole numbers")
        audio = self.out.read_bytes(self._base(key) + ".audio") if entry["has_audio"] else None
        return ReplyRecord(text=entry["text"], audio=audio, audio_format=entry["audio_format"],
                           model=entry["model"], usage=usage,
                           request_id=entry["request_id"], **{k: entry.get(k) for k in _OPTIONAL})

    def put(self, key: str, reply: ReplyRecord) -> None:
        if not self.enabled:
            return
        if reply.audio is not None:
            self.out.write_bytes(self._base(key) + ".audio", reply.audio, durable=False)
        entry = {"text": reply.text, "audio_format": reply.audio_format, "model": reply.model,
                 "usage": asdict(reply.usage), "request_id": reply.request_id,
                 "has_audio": reply.audio is not None,
                 **{k: getattr(reply, k) for k in _OPTIONAL}}
        # not fsync'd: an entry lost with the machine costs one request again, not a wrong answer
        self.out.write_bytes(self._base(key) + ".json", json.dumps(entry).encode("utf-8"), durable=False)
