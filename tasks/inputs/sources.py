"""Fetch an item's source to a local file the decoder can read.

Local paths are used in place. http(s) URLs are streamed into the work dir with a size cap,
retries for passing failures and resumable partial downloads (`<name>.part` + `Range`).
Other fsspec URLs (s3://, gs://, memory://...) are copied in blocks, only when the user has
enabled their scheme. Every failure is an `InputError` naming the item and the source, with
credentials stripped from the URL.

Sources come from data that others write (docs/security.md): what a fetch may reach
and take (`FetchPolicy`) and the checks that hold it to that are in tasks/inputs/fetch_policy.py,
which network addresses a download may connect to in tasks/inputs/netguard.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import os
import posixpath
import re
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import fsspec
import httpx

from audiobatch.tasks.bounded import BodyDecoder, Budget, OverBudget, Undecodable
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.fetch_policy import (FetchPolicy, RateCheck, content_type_problem, too_big,
                                                  within_roots)
from audiobatch.tasks.inputs.locations import CHAINED, scheme_of
from audiobatch.tasks.inputs.netguard import BlockedAddress, guarded_transport, tls_context

try:  # advisory file locks: one download per target, across tasks and processes (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SECRET_PARAM = re.compile(r"(?i)token|sig|secret|key|passw|auth|credential|session")
_TOKEN_LIKE = re.compile(r"^[A-Za-z0-9_\-+/=%.~]{24,}$")
# In a path: a run of 20+ letters and digits mixing both (a subscriber token, a signature);
# words, dates and UUID parts are shorter or unmixed.
_PATH_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])"
                         r"[A-Za-z0-9]{20,}(?![A-Za-z0-9])")
_BLOCK = 1 << 16


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size_bytes: int
    content_type: str | None
    downloaded: bool  # True: a copy in work_dir that the caller may delete


class _Retryable(Exception):
    """A passing failure: try again (resuming the partial file)."""


def safe_url(url: str) -> str:
    """The URL without user:password@, with token-like query values and path parts masked:
    for messages, outputs and names."""
    if not _SCHEME.match(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=***" if _SECRET_PARAM.search(name) or _TOKEN_LIKE.match(value) else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, _PATH_TOKEN.sub("***", parts.path), query, ""))


async def fetch(source: str, work_dir: Path, policy: FetchPolicy, *, label: str) -> FetchedFile:
    """Make `source` available as a local file; raises InputError naming `label` on failure."""
    scheme = scheme_of(source)
    if scheme == CHAINED:
        raise InputError(f"{label}: {safe_url(source)} is a chained fsspec URL (a::b): these are "
                         "never read, as each link opens its own way elsewhere; give a plain URL.")
    if scheme not in policy.allowed_schemes:
        raise InputError(f"{label}: URL scheme '{scheme}' is not enabled: pass --allow-scheme "
                         f"{scheme} to read {safe_url(source)}")
    if scheme == "file":
        return local_file(source, policy, label)
    try:
        target = work_dir / _download_name(source)
    except ValueError as exc:  # urlsplit: e.g. "Invalid IPv6 URL"
        raise InputError(f"{label}: {safe_url(source)} is not a usable URL ({exc}).") from None
    work_dir.mkdir(parents=True, exist_ok=True)
    async with _exclusive(target):  # the same URL twice in a run must not share a .part file
        if (done := _completed(target)) is not None and done.size_bytes <= policy.max_bytes:
            return done
        if scheme in ("http", "https"):
            return await _download_http(source, target, policy, label)
        return await asyncio.to_thread(_copy_fsspec, source, target, policy, label)


# --- local files -------------------------------------------------------------------------

def local_file(source: str, policy: FetchPolicy, label: str,
               suffixes: tuple[str, ...] = ()) -> FetchedFile:
    """A readable, non-empty regular local file that `policy` lets this item read.

    Outside the operator's own manifests, the file is judged by its real path (after
    symlinks): inside a data root and, when `suffixes` are given, with one of them."""
    is_url = source.lower().startswith("file:")
    path = Path(url2pathname(urlsplit(source).path)) if is_url else Path(source).expanduser()
    if policy.local_roots is not None:
        path = within_roots(path, policy.local_roots, label, suffixes)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{label}: file not found: {path}. Check the path (relative paths in a "
                         "manifest start from the manifest's folder).") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path} ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{label}: {path} is a folder, not an audio file: list the files "
                         "inside it, one per manifest row.")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{label}: {path} is not a regular file (a pipe, socket or device): "
                         "give a path to an audio file.")
    if info.st_size == 0:
        raise InputError(f"{label}: {path} is empty (0 bytes): re-export or re-copy the file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{label}: no permission to read {path}: fix its permissions.")
    return FetchedFile(path, info.st_size, mimetypes.guess_type(path.name)[0], downloaded=False)


# --- the download area: names, locks, completed downloads --------------------------------

def _download_name(source: str) -> str:
    """Same URL -> same file name: a readable stem, a hash of the URL, the URL's extension."""
    stem, ext = posixpath.splitext(posixpath.basename(unquote(urlsplit(source).path)))
    ext = ext.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", ext.lower()) else ""
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "-", stem).strip("-")[:40]
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{slug}-{digest}{ext}" if slug else f"{digest}{ext}"


def _sidecar(path: Path, suffix: str = ".json") -> Path:
    return path.with_name(path.name + suffix)


def _completed(target: Path) -> FetchedFile | None:
    """A finished download from an earlier call or run (only complete files are renamed)."""
    try:
        meta = json.loads(_sidecar(target).read_text())
        size = target.stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("size") != size:
        return None
    return FetchedFile(target, size, meta.get("content_type"), downloaded=True)


def _finish(part: Path, target: Path, content_type: str | None, label: str, shown: str) -> FetchedFile:
    size = part.stat().st_size
    if size == 0:
        part.unlink()
        raise InputError(f"{label}: {shown} sent an empty file (0 bytes): check the URL.")
    _sidecar(target).write_text(json.dumps({"size": size, "content_type": content_type}))
    os.replace(part, target)  # atomic: a target file is always complete
    _sidecar(part).unlink(missing_ok=True)
    return FetchedFile(target, size, content_type, downloaded=True)


@asynccontextmanager
async def _exclusive(target: Path) -> AsyncIterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(_sidecar(target, ".lock"), "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- http(s) -----------------------------------------------------------------------------

async def _download_http(url: str, target: Path, policy: FetchPolicy, label: str) -> FetchedFile:
    shown = safe_url(url)
    try:
        async with asyncio.timeout(policy.deadline_s):
            return await _download_with_retries(url, target, policy, label)
    except TimeoutError:
        raise InputError(f"{label}: downloading {shown} took longer than the download deadline of "
                         f"{policy.deadline_s:g} s. Try again later (the partial download "
                         "resumes), or raise --download-deadline-s.") from None
    except BlockedAddress as blocked:
        raise InputError(
            f"{label}: {shown} was not fetched: it leads to {blocked}. Only public addresses are "
            "fetched for URLs found in manifests and feeds; if this host is yours, allow it with "
            f"--allow-host {blocked.host} (or AUDIOBATCH_ALLOW_HOSTS).") from None


async def _download_with_retries(url: str, target: Path, policy: FetchPolicy, label: str) -> FetchedFile:
    shown, part = safe_url(url), _sidecar(target, ".part")
    timeout = httpx.Timeout(policy.timeout_s)
    transport = guarded_transport(policy.addresses) if policy.addresses is not None else None
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, transport=transport,
                                 verify=tls_context(), max_redirects=policy.max_redirects) as client:
        for attempt in range(1, policy.attempts + 1):
            try:
                content_type = await _stream_once(client, url, part, policy, label)
                return _finish(part, target, content_type, label, shown)
            except _Retryable as exc:
                problem = str(exc)
            except httpx.TooManyRedirects:
                raise InputError(f"{label}: {shown} redirects more than {policy.max_redirects} "
                                 "times: give the final address of the audio file.") from None
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise InputError(f"{label}: {shown} is not a usable URL "
                                 f"({_describe(exc, url)}).") from None
            except httpx.ConnectError as exc:
                if _is_name_lookup_failure(exc):
                    raise InputError(f"{label}: cannot reach {shown}: the host name "
                                     f"'{urlsplit(url).hostname}' does not resolve. Check the URL "
                                     "and the network.") from None
                problem = f"could not connect ({_describe(exc, url)})"
            except httpx.TransportError as exc:  # timeouts, dropped connections
                problem = f"{type(exc).__name__}: {_describe(exc, url)}"
            if attempt < policy.attempts:
                await asyncio.sleep(policy.backoff_s * 2 ** (attempt - 1))
    kept = " The partial download is kept and resumes next time." if part.exists() else ""
    raise InputError(f"{label}: could not download {shown} after {policy.attempts} attempts "
                     f"(last problem: {problem}).{kept}")


async def _stream_once(client: httpx.AsyncClient, url: str, part: Path, policy: FetchPolicy,
                       label: str) -> str | None:
    """One GET into `part`, resuming it when it exists; returns the Content-Type."""
    shown = safe_url(url)
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte ranges must refer to the file itself, not to a gzip of it
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator := _read_validator(part):
            headers["If-Range"] = validator  # the file changed on the server: get it whole
    async with client.stream("GET", url, headers=headers) as response:
        _check_status(response, offset, part, label, shown)
        content_type = response.headers.get("content-type")
        if problem := content_type_problem(content_type, policy.allowed_content_types):
            part.unlink(missing_ok=True)
            raise InputError(f"{label}: {problem} ({shown}).")
        resuming = offset > 0 and response.status_code == 206
        if not resuming:
            offset = 0
            _save_validator(part, response)
        length = response.headers.get("content-length")
        expected = offset + int(length) if length and length.isdigit() else None
        if expected is not None and expected > policy.max_bytes:
            part.unlink(missing_ok=True)
            raise too_big(label, shown, expected, policy)
        await _write_body(response, part, resuming, offset, policy, label, shown)
    return content_type


def _check_status(response: httpx.Response, offset: int, part: Path, label: str, shown: str) -> None:
    code = response.status_code
    if code == 200 or (code == 206 and _range_start(response) == offset):
        return
    if code in (206, 416):  # a range we did not ask for, or a stale partial file: start over
        part.unlink(missing_ok=True)
        raise _Retryable(f"HTTP {code} for the resumed range; restarting the download")
    if code in (408, 429) or code >= 500:
        raise _Retryable(f"HTTP {code} {response.reason_phrase}")
    hint = {404: "the file is not there: check the URL", 410: "the file was removed",
            401: "it needs a login: use a URL that works without one",
            403: "access is denied: use a URL that works without a login"}.get(
                code, "check the URL")
    raise InputError(f"{label}: {shown} answered HTTP {code} {response.reason_phrase}: {hint}.")


async def _write_body(response: httpx.Response, part: Path, resuming: bool, offset: int,
                      policy: FetchPolicy, label: str, shown: str) -> None:
    """The body into `part`, decoded as it arrives within the size cap (tasks/bounded.py: at
    most one content-coding, inflated a piece at a time; httpx would inflate a whole network
    read, and stacked codings multiply)."""
    rate = RateCheck(policy, label, shown)
    room = Budget(policy.max_bytes - offset, str(too_big(label, shown, None, policy)))
    try:
        decoder = BodyDecoder(response.headers.get("content-encoding"), room, f"{label}: {shown}")
        with open(part, "ab" if resuming else "wb") as out:
            async for raw in response.aiter_raw():  # as received: a drop loses nothing kept
                for block in decoder.feed(raw):
                    out.write(block)
                rate.received(len(raw))
        decoder.finish()
    except (OverBudget, Undecodable):  # over the cap (sent more than announced, or nothing said)
        part.unlink(missing_ok=True)
        raise


def _range_start(response: httpx.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _save_validator(part: Path, response: httpx.Response) -> None:
    validator = response.headers.get("etag") or response.headers.get("last-modified")
    if validator:
        _sidecar(part).write_text(json.dumps({"validator": validator}))
    else:
        _sidecar(part).unlink(missing_ok=True)


def _read_validator(part: Path) -> str | None:
    try:
        return json.loads(_sidecar(part).read_text()).get("validator")
    except (OSError, ValueError):
        return None


def _is_name_lookup_failure(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, socket.gaierror):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: Exception, url: str) -> str:
    """An exception's text with the raw URL (and any credentials in it) replaced."""
    return (str(exc) or type(exc).__name__).replace(url, safe_url(url))


# --- other fsspec schemes ----------------------------------------------------------------

def _copy_fsspec(source: str, target: Path, policy: FetchPolicy, label: str) -> FetchedFile:
    shown, part = safe_url(source), _sidecar(target, ".part")
    try:
        with fsspec.open(source, "rb") as src:
            size = getattr(src, "size", None)
            if size is not None and size > policy.max_bytes:
                raise too_big(label, shown, size, policy)
            with open(part, "wb") as out:
                written = 0
                while block := src.read(_BLOCK):
                    written += len(block)
                    if written > policy.max_bytes:
                        raise too_big(label, shown, None, policy)
                    out.write(block)
    except InputError:
        part.unlink(missing_ok=True)
        raise
    except FileNotFoundError:
        raise InputError(f"{label}: {shown} does not exist: check the URL.") from None
    except ImportError as exc:  # fsspec names the package, e.g. "Install s3fs to access S3"
        raise InputError(f"{label}: reading {scheme_of(source)}:// needs an extra package "
                         f"({exc}).") from None
    except (OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"{label}: cannot read {shown} ({_describe(exc, source)}).") from None
    return _finish(part, target, mimetypes.guess_type(target.name)[0], label, shown)
