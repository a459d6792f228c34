"""What fetching a source may do, and the checks that hold a fetch to it.

Sources come from data that others write (docs/security.md), so by default:
- http(s) downloads connect only to public addresses, checked on every connection and
  redirect hop (`tasks.inputs.netguard`), within a total deadline and above a minimum rate
  (`RateCheck`), up to a size cap, and only when what they serve may be audio;
- local files are read only where the policy says: anywhere for the operator's own manifest
  (`local_roots=None`), inside the data roots for manifests from others, never for a feed
  (`within_roots`);
- other fsspec schemes (s3, gs, ...) only once the user enabled them (--allow-scheme).

Kept apart from tasks/inputs/sources.py, which does the fetching (streaming, resuming, retrying), so
that the rules a hostile source meets are read in one place, away from the mechanics.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.netguard import AddressPolicy

AUDIO_CONTENT_TYPES = frozenset({"audio/*", "video/*", "application/ogg",
                                 "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True)
class FetchPolicy:
    """What one fetch may reach and take: sizes, times, retries, schemes, addresses, folders."""

    max_bytes: int = 4 * 1024**3
    timeout_s: float = 60.0  # connect and read timeouts
    # Users enable other fsspec schemes (s3, gs, memory...) explicitly: --allow-scheme.
    allowed_schemes: frozenset[str] = frozenset({"file", "http", "https"})
    # A response without Content-Type is accepted too; "type/*" matches a whole family.
    allowed_content_types: frozenset[str] = AUDIO_CONTENT_TYPES
    max_redirects: int = 10
    attempts: int = 4  # tries for 5xx, 408, 429 and dropped or refused connections
    backoff_s: float = 1.0  # wait before the first retry; doubles each time
    # Who may be connected to: public addresses plus the opt-ins (None: no check, for a URL
    # the operator typed, such as the feed's own).
    addresses: AddressPolicy | None = AddressPolicy()
    # Local files: None = any (the operator's own manifest), () = none (URLs from a feed),
    # else only inside these folders (manifests from the inbox, `submit`, the Prefect API).
    local_roots: tuple[str, ...] | None = None
    deadline_s: float = 3600.0  # for the whole download, retries included
    min_rate_bytes_s: float = 16 * 1024  # averaged over each rate window; 0: no minimum
    rate_window_s: float = 30.0


def within_roots(path: Path, roots: tuple[str, ...], label: str, suffixes: tuple[str, ...]) -> Path:
    """The real path (symlinks followed) of a local file inside `roots`, with one of `suffixes`
    when given; with no roots no local file may be read."""
    if not roots:
        raise InputError(f"{label}: {path} is a local path, and this run reads no local files: "
                         "a feed's items never do (a feed must give http(s) URLs), nor do runs "
                         "started by others where the operator named no data roots.")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        raise InputError(f"{label}: {path} is outside the folders this run may read "
                         f"({', '.join(roots)}). Manifests from the inbox, `submit` or the "
                         "Prefect API may only name files inside those folders: move the file "
                         "there, or ask the operator to add its folder (deploy --data-root, or "
                         "AUDIOBATCH_DATA_ROOTS on the worker).")
    if suffixes and real.suffix.lower() not in suffixes:
        raise InputError(f"{label}: {path} is not a {' or '.join(suffixes)} file (it leads to "
                         f"'{real.name}'): give the text file itself.")
    return real


def too_big(label: str, shown: str, size: int | None, policy: FetchPolicy) -> InputError:
    """The error for a source over the size cap (`size`: what its server announced, if anything)."""
    said = f" ({size:,} bytes)" if size else ""
    return InputError(f"{label}: {shown} is larger than the download cap of {policy.max_bytes:,} "
                      f"bytes{said}: raise --max-download-mb or give a shorter file.")


class RateCheck:
    """Fails a download whose server sends less than the minimum rate over a whole window
    (a server dripping a byte now and then never trips a read timeout)."""

    def __init__(self, policy: FetchPolicy, label: str, shown: str) -> None:
        self.policy, self.label, self.shown = policy, label, shown
        self.window_start, self.window_bytes = time.monotonic(), 0

    def received(self, size: int) -> None:
        self.window_bytes += size
        elapsed = time.monotonic() - self.window_start
        if self.policy.min_rate_bytes_s <= 0 or elapsed < self.policy.rate_window_s:
            return
        if self.window_bytes < self.policy.min_rate_bytes_s * elapsed:
            raise InputError(
                f"{self.label}: {self.shown} is sending too slowly: {self.window_bytes:,} bytes in "
                f"the last {elapsed:.0f} s, below the minimum of "
                f"{self.policy.min_rate_bytes_s / 1024:g} KB/s. Try again later (the partial "
                "download resumes), or lower --min-download-kb-s.")
        self.window_start, self.window_bytes = time.monotonic(), 0


def content_type_problem(value: str | None, allowed: frozenset[str]) -> str | None:
    """Why a Content-Type is not one `allowed` may be audio, or None (no Content-Type is accepted)."""
    if not value:
        return None
    mime = value.split(";")[0].strip().lower()
    if mime in allowed or f"{mime.split('/')[0]}/*" in allowed:
        return None
    if mime in ("text/html", "application/xhtml+xml"):
        return ("the URL serves an HTML page, not audio (a web or login page?): give the direct "
                "link to the audio file")
    return f"the URL serves '{mime}', not audio: give the direct link to the audio file"
