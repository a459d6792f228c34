"""Where a path or URL leads, for every check of the kind "is X inside Y" (README "Security model").

Runs started by others name paths and URLs (their manifest, their output root, narrower data
roots); the operator names the roots they must stay in. Such a check is only as good as the
spellings it understands, so locations are normalised before they are compared, never compared
as strings:
- a local path or `file:` URL becomes its real path, read both as the kernel does (links first,
  then `..`) and as lexical normalisers do (`..` first); a `file:` URL both with and without its
  %-escapes decoded (urllib decodes them, fsspec keeps them); every reading must be inside;
- any other URL becomes `scheme://host/seg/ments` with scheme and host lower-cased; a URL that
  a store could read two ways is refused rather than guessed at: `.`/`..`/empty segments
  (spelled plainly or %-escaped), an escaped `/` or `\\`, credentials, a query or fragment;
- a chained fsspec URL (`simplecache::http://...`, `zip::s3://...`) is never a location: each
  link of the chain opens its own way to somewhere else (`scheme_of` gives CHAINED, which no
  allow-list holds).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
CHAINED = "::"  # the "scheme" of a chained fsspec URL: no allow-list may hold it


def scheme_of(source: str) -> str:
    """The URL scheme, lower-cased; "file" for plain paths; CHAINED for `a::b` fsspec chains."""
    if is_chained(source):
        return CHAINED
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else "file"


def is_chained(source: str) -> bool:
    """fsspec reads `a::b` as a chain of filesystems wherever a URL holds `::`. Exceptions: an
    http(s) URL's bracketed IPv6 host (`http://[::1]/`: such URLs go to httpx, not fsspec), and
    a plain local path like /data/a::b.wav (read by audiobatch, not fsspec)."""
    if "::" not in source:
        return False
    match = _SCHEME.match(source)
    if match and match.group(1).lower() in ("http", "https"):
        rest = source[match.end():]
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        host = netloc.rpartition("@")[2]
        return "::" in rest[len(netloc):] or "::" in netloc.rpartition("@")[0] \
            or "::" in re.sub(r"^\[[0-9A-Fa-f:.%\w-]*\]", "", host)
    return "://" in source or bool(_PROTOCOL.match(source.split("::", 1)[0]))


def local_path(text: str) -> Path:
    """An absolute local path for a plain path or a file:// URL (%-escapes decoded)."""
    if text.lower().startswith("file:"):
        text = url2pathname(urlsplit(text).path)
    return Path(os.path.abspath(os.path.expanduser(text)))


def readings(value: str) -> list[str] | None:
    """Every place `value` may lead to, normalised; None when it cannot be read one way."""
    scheme = scheme_of(value)
    if scheme == CHAINED:
        return None
    if scheme == "file":
        return _local_readings(value)
    url = _normal_url(value, scheme)
    return None if url is None else [url]


def _local_readings(value: str) -> list[str] | None:
    is_url = value.lower().startswith("file:")
    if is_url and _file_host(value) not in ("", "localhost"):
        return None  # a file URL naming another machine
    try:
        texts = [url2pathname(urlsplit(value).path), urlsplit(value).path or "/"] if is_url else [value]
        # `a/link/..`: the kernel follows the link first, a lexical normaliser (abspath, fsspec)
        # drops both parts; either may be what opens the file
        places = {os.path.realpath(path) for text in texts
                  for path in (os.path.expanduser(text), os.path.abspath(os.path.expanduser(text)))}
    except ValueError:  # a NUL byte, an unparseable URL
        return None
    return sorted(places)


def _file_host(value: str) -> str | None:
    try:
        return urlsplit(value).netloc.lower()
    except ValueError:
        return None


def _normal_url(value: str, scheme: str) -> str | None:
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.query or parts.fragment or "@" in parts.netloc or "\\" in value:
        return None
    raw = parts.path.split("/")
    inner = raw[1:-1] if parts.path.endswith("/") else raw[1:]
    segments = []
    for segment in inner:
        decoded = unquote(segment)
        if segment in ("", ".", "..") or decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            return None
        segments.append(segment)
    return f"{scheme}://{parts.netloc.lower()}" + "".join(f"/{segment}" for segment in segments)


def normal_location(value: str) -> str | None:
    """The one normalised spelling of `value` (its first reading), or None."""
    places = readings(value)
    return places[0] if places else None


def inside(path: str, root: str) -> bool:
    """Every reading of `path` is `root` or below it; False when either cannot be read."""
    places, base = readings(path), normal_location(root)
    if not places or base is None:
        return False
    return all(_within(place, base) for place in places)


def _within(place: str, base: str) -> bool:
    if "://" in place or "://" in base:  # URLs: whole segments of the same scheme and host
        return place == base or place.startswith(base + "/")
    return place == base or place.startswith(base.rstrip(os.sep) + os.sep)
