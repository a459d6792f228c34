"""Exclusive claims under an output root (a local folder or an fsspec store): who works on what.

Invariant: a claim has at most one live holder. It is a small JSON file (host, pid, since)
created exclusively (O_EXCL on a local disk, mode "xb" on stores that have it); the holder may
renew it while it works and removes it when done. A claim nobody renewed for `stale_s` (its
holder stopped), or whose holder was a process of this host that is gone, is taken over: it is
first renamed aside, so of two runs taking it over at once only one succeeds.

Used by the inbox (one run per manifest) and by runs (one process per run id: two runs of the
same job would otherwise resume the same run at once, doing its items twice and removing each
other's work files).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.outputs.datasets import OutputRoot

log = logging.getLogger("audiobatch")


class Claim:
    def __init__(self, root: OutputRoot, relative: str, stale_s: float) -> None:
        self.root = root
        self.path = root.full(relative)
        self.stale_s = stale_s

    def take(self) -> bool:
        """Hold the claim; False while another live holder has it."""
        folder = self.path.rsplit("/", 1)[0]
        self.root.fs.makedirs(folder, exist_ok=True)
        return self._create() or (self._take_over_stale() and self._create())

    def holder(self) -> dict[str, Any]:
        """Who holds it, as recorded (empty when nobody does, or the record is unreadable)."""
        try:
            return json.loads(self.root.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return {}

    def renew(self) -> None:
        """Show that the holder is still at work (the claim's modification time moves on)."""
        self.root.fs.pipe_file(self.path, self._record())

    def release(self) -> None:
        try:
            self.root.fs.rm_file(self.path)
        except FileNotFoundError:
            pass

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": datetime.now(timezone.utc).isoformat()}).encode()

    def _create(self) -> bool:
        try:
            if self.root.is_local:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(self._record())
            else:
                with self.root.fs.open(self.path, "xb") as handle:
                    handle.write(self._record())
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # this store cannot create exclusively
            log.warning("%s cannot create files exclusively: claims there only hold between runs "
                        "that do not start at the same moment", safe_url(self.root.url))
            if self.root.fs.exists(self.path):
                return False
            self.root.fs.pipe_file(self.path, self._record())
            return True

    def _take_over_stale(self) -> bool:
        """Rename a stale claim out of the way; only one taker's rename succeeds."""
        try:
            age = time.time() - _modified(self.root.fs.info(self.path))
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if age < self.stale_s and not self._holder_is_gone():
            return False
        aside = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            self.root.fs.mv(self.path, aside)
        except FileNotFoundError:
            return False  # another taker was first
        self.root.fs.rm_file(aside)
        log.info("took over %s: its holder stopped (%.0f s since it was last renewed)", self.path, age)
        return True

    def _holder_is_gone(self) -> bool:
        """A holder on this host whose process no longer exists (it was killed, or crashed)."""
        holder = self.holder()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _modified(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
    return value.timestamp() if isinstance(value, datetime) else float(value)
