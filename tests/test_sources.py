"""fetch(): local files, real HTTP on 127.0.0.1 (a scripted server in a thread), fsspec schemes."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.netguard import AddressPolicy
from audiobatch.tasks.inputs.sources import fetch, safe_url, scheme_of
from tests.helpers.data import SPEECH


JFK = SPEECH / "openai-whisper__jfk.flac"  # 1.15 MB of real FLAC
JFK_BYTES = JFK.read_bytes()
# The scripted server is on 127.0.0.1: opted in as an operator would (--allow-host 127.0.0.1).
LOOPBACK = AddressPolicy(allow_hosts=frozenset({"127.0.0.1"}))
FAST = FetchPolicy(attempts=3, backoff_s=0.01, timeout_s=5.0, addresses=LOOPBACK)


class Script(BaseHTTPRequestHandler):
    """Routes for each case; every request's path and Range header is logged on the server."""

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        server: ScriptedServer = self.server  # type: ignore[assignment]
        server.log.append((self.path, self.headers.get("Range")))
        server.if_range.append(self.headers.get("If-Range"))
        route = self.path.split("?")[0]
        seen = sum(1 for path, _ in server.log if path == self.path)  # tries of this exact URL
        try:
            self.route(route, seen)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (size cap)

    def route(self, route: str, seen: int) -> None:
        if route.startswith("/audio/"):
            self.send_file(JFK_BYTES, "audio/flac")
        elif route == "/octet":
            self.send_file(JFK_BYTES, "application/octet-stream")
        elif route == "/video":
            self.send_file(JFK_BYTES, "video/mp4")
        elif route == "/untyped":
            self.send_file(JFK_BYTES, None)
        elif route == "/page.html":
            self.send_file(b"<html><body>Sign in to download</body></html>", "text/html; charset=utf-8")
        elif route == "/data.json":
            self.send_file(b'{"audio": "elsewhere"}', "application/json")
        elif route == "/empty":
            self.send_file(b"", "audio/mpeg")
        elif route == "/missing":
            self.send_error(404, "Not Found")
        elif route == "/forbidden":
            self.send_error(403, "Forbidden")
        elif route == "/broken":
            self.send_error(500, "Internal Server Error")
        elif route == "/flaky":  # 503 twice, then the file
            self.send_error(503, "Service Unavailable") if seen <= 2 else self.send_file(JFK_BYTES, "audio/flac")
        elif m := re.fullmatch(r"/redirect/(\d+)", route):
            hops = int(m.group(1))
            self.redirect(f"/redirect/{hops - 1}" if hops > 1 else "/audio/jfk.flac")
        elif route == "/loop":
            self.redirect("/loop")
        elif route == "/huge":  # announces 10 MB; only the headers should ever be read
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(10 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"\0" * 1024)
        elif route == "/unannounced":  # no Content-Length: the body runs until the connection closes
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)  # 4 MB in all
        elif route == "/short-length":  # announces 1,000 bytes, then keeps sending (4 MB)
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\1" * 65536)
        elif route == "/drop-once":  # the first answer breaks off half-way; later ones honour Range
            if seen == 1:
                self.send_response(200)
                self.send_header("Content-Type", "audio/flac")
                self.send_header("Content-Length", str(len(JFK_BYTES)))
                self.send_header("ETag", '"jfk-v1"')
                self.end_headers()
                self.wfile.write(JFK_BYTES[: len(JFK_BYTES) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self.send_file(JFK_BYTES, "audio/flac")
        elif route == "/no-ranges":  # ignores Range: always the whole file
            self.send_file(JFK_BYTES, "audio/flac", ranges=False)
        elif route == "/slow":
            time.sleep(1.0)
            self.send_file(JFK_BYTES, "audio/flac")
        else:
            self.send_error(404, "Not Found")

    def send_file(self, body: bytes, content_type: str | None, ranges: bool = True) -> None:
        start = 0
        wanted = self.headers.get("Range")
        if ranges and wanted and (m := re.fullmatch(r"bytes=(\d+)-", wanted)):
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", '"jfk-v1"')
        self.end_headers()
        self.wfile.write(body[start:])

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Script)
        self.log: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []  # parallel to log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.log if p == path]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    httpd = ScriptedServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def unique(path: str) -> str:
    """A path whose request count starts at zero (the server counts per exact path)."""
    return f"{path}?t={uuid.uuid4().hex[:8]}"


# --- local files ---------------------------------------------------------------------------

async def test_local_file_is_used_in_place(tmp_path: Path) -> None:
    fetched = await fetch(str(JFK), tmp_path, FAST, label="jfk")
    assert (fetched.path, fetched.size_bytes, fetched.downloaded) == (JFK, len(JFK_BYTES), False)
    assert fetched.content_type == "audio/flac"
    assert list(tmp_path.iterdir()) == []  # nothing copied


async def test_file_url_and_unicode_names_with_spaces(tmp_path: Path) -> None:
    audio = tmp_path / "Wörds and spaces" / "épisode 1.flac"
    audio.parent.mkdir()
    audio.write_bytes(JFK_BYTES)
    fetched = await fetch(audio.as_uri(), tmp_path / "work", FAST, label="ep1")
    assert fetched.path == audio and not fetched.downloaded


@pytest.mark.parametrize("case,message", [
    ("missing", "ep: file not found: {path}. Check the path"),
    ("folder", "ep: {path} is a folder, not an audio file"),
    ("empty", "ep: {path} is empty (0 bytes)"),
])
async def test_local_file_problems(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "thing.wav"
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        await fetch(str(path), tmp_path / "work", FAST, label="ep")
    assert str(caught.value).startswith(message.format(path=path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file: permissions cannot be tested")
async def test_unreadable_local_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.wav"
    path.write_bytes(JFK_BYTES)
    path.chmod(0)
    with pytest.raises(InputError, match="no permission to read"):
        await fetch(str(path), tmp_path, FAST, label="ep")


# --- http(s) -------------------------------------------------------------------------------

@pytest.mark.parametrize("route,content_type", [
    ("/audio/jfk.flac", "audio/flac"), ("/octet", "application/octet-stream"),
    ("/video", "video/mp4"), ("/untyped", None)])
async def test_download_is_byte_identical(server: ScriptedServer, tmp_path: Path, route: str,
                                          content_type: str | None) -> None:
    fetched = await fetch(server.url(route), tmp_path, FAST, label="ep")
    assert fetched.path.read_bytes() == JFK_BYTES
    assert (fetched.size_bytes, fetched.content_type, fetched.downloaded) == (len(JFK_BYTES), content_type, True)
    assert fetched.path.parent == tmp_path
    assert not list(tmp_path.glob("*.part"))


async def test_same_url_maps_to_the_same_file_and_is_not_downloaded_twice(
        server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/audio/jfk.flac")
    first = await fetch(server.url(path), tmp_path, FAST, label="a")
    second = await fetch(server.url(path), tmp_path, FAST, label="b")
    assert first == second and first.path.suffix == ".flac" and first.path.name.startswith("jfk-")
    assert len(server.requests_for(path)) == 1
    other = await fetch(server.url(unique("/audio/jfk.flac")), tmp_path, FAST, label="c")
    assert other.path != first.path


async def test_concurrent_fetches_of_one_url_share_one_download(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/audio/jfk.flac")
    results = await asyncio.gather(*(fetch(server.url(path), tmp_path, FAST, label=f"i{n}") for n in range(3)))
    assert {r.path for r in results} == {results[0].path}
    assert results[0].path.read_bytes() == JFK_BYTES
    assert len(server.requests_for(path)) == 1


async def test_redirect_chain_is_followed(server: ScriptedServer, tmp_path: Path) -> None:
    fetched = await fetch(server.url("/redirect/3"), tmp_path, FAST, label="ep")
    assert fetched.path.read_bytes() == JFK_BYTES


async def test_endless_redirects_are_refused(server: ScriptedServer, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ep: .*/loop redirects more than 10 times"):
        await fetch(server.url("/loop"), tmp_path, FAST, label="ep")


async def test_html_page_is_not_audio(server: ScriptedServer, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        await fetch(server.url("/page.html"), tmp_path, FAST, label="ep7")
    assert str(caught.value).startswith("ep7: the URL serves an HTML page, not audio")
    assert server.url("/page.html") in str(caught.value)
    with pytest.raises(InputError, match="the URL serves 'application/json', not audio"):
        await fetch(server.url("/data.json"), tmp_path, FAST, label="ep8")
    assert not any(tmp_path.glob("*.part"))


@pytest.mark.parametrize("route,status", [("/missing", "404 Not Found"), ("/forbidden", "403 Forbidden")])
async def test_client_errors_are_not_retried(server: ScriptedServer, tmp_path: Path, route: str, status: str) -> None:
    path = unique(route)
    with pytest.raises(InputError, match=f"ep: .* answered HTTP {status}"):
        await fetch(server.url(path), tmp_path, FAST, label="ep")
    assert len(server.requests_for(path)) == 1


async def test_server_errors_are_retried_then_reported(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/broken")
    with pytest.raises(InputError, match=r"could not download .* after 3 attempts \(last problem: HTTP 500"):
        await fetch(server.url(path), tmp_path, FAST, label="ep")
    assert len(server.requests_for(path)) == 3


async def test_passing_server_errors_recover(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/flaky")
    fetched = await fetch(server.url(path), tmp_path, FAST, label="ep")
    assert fetched.path.read_bytes() == JFK_BYTES
    assert len(server.requests_for(path)) == 3


async def test_announced_size_over_the_cap_is_refused_before_download(server: ScriptedServer, tmp_path: Path) -> None:
    policy = FetchPolicy(max_bytes=1024 * 1024, attempts=1, addresses=LOOPBACK)
    with pytest.raises(InputError, match=r"larger than the download cap of 1,048,576 bytes \(10,485,760 bytes\)"):
        await fetch(server.url("/huge"), tmp_path, policy, label="ep")
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


async def test_unannounced_body_over_the_cap_is_cut_off(server: ScriptedServer, tmp_path: Path) -> None:
    policy = FetchPolicy(max_bytes=1024 * 1024, attempts=1, addresses=LOOPBACK)
    with pytest.raises(InputError, match=r"larger than the download cap of 1,048,576 bytes"):
        await fetch(server.url("/unannounced"), tmp_path, policy, label="ep")
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # partial file deleted


async def test_content_length_lie_cannot_push_past_the_cap(server: ScriptedServer, tmp_path: Path) -> None:
    policy = FetchPolicy(max_bytes=1024 * 1024, attempts=1, addresses=LOOPBACK)
    fetched = await fetch(server.url("/short-length"), tmp_path, policy, label="ep")
    assert fetched.size_bytes == 1000 and fetched.path.read_bytes() == b"\1" * 1000  # the rest never hit disk


async def test_empty_body_is_refused(server: ScriptedServer, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ep: .*/empty sent an empty file \(0 bytes\)"):
        await fetch(server.url("/empty"), tmp_path, FAST, label="ep")


async def test_dropped_connection_resumes_on_the_next_run(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/drop-once")
    one_try = FetchPolicy(attempts=1, addresses=LOOPBACK)
    with pytest.raises(InputError, match="resumes next time"):
        await fetch(server.url(path), tmp_path, one_try, label="ep")
    [part] = tmp_path.glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept <= len(JFK_BYTES) // 2 and part.read_bytes() == JFK_BYTES[:kept]
    fetched = await fetch(server.url(path), tmp_path, one_try, label="ep")
    assert server.requests_for(path) == [None, f"bytes={kept}-"]
    assert server.if_range[-1] == '"jfk-v1"'  # a changed file on the server would come whole
    assert fetched.path.read_bytes() == JFK_BYTES
    assert not part.exists()


async def test_dropped_connection_resumes_within_one_fetch(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/drop-once")
    fetched = await fetch(server.url(path), tmp_path, FAST, label="ep")
    first, resumed = server.requests_for(path)
    assert first is None and re.fullmatch(r"bytes=[1-9]\d*-", resumed or "")
    assert fetched.path.read_bytes() == JFK_BYTES


async def test_server_without_ranges_restarts_from_zero(server: ScriptedServer, tmp_path: Path) -> None:
    path = unique("/no-ranges")
    url = server.url(path)
    from audiobatch.tasks.inputs.sources import _download_name  # the stale partial file of an earlier run

    (tmp_path / (_download_name(url) + ".part")).write_bytes(b"stale bytes from another run")
    fetched = await fetch(url, tmp_path, FAST, label="ep")
    assert server.requests_for(path) == ["bytes=28-"]
    assert fetched.path.read_bytes() == JFK_BYTES


async def test_timeouts_are_retried_then_reported(server: ScriptedServer, tmp_path: Path) -> None:
    policy = FetchPolicy(timeout_s=0.2, attempts=2, backoff_s=0.01, addresses=LOOPBACK)
    path = unique("/slow")
    with pytest.raises(InputError, match=r"after 2 attempts \(last problem: ReadTimeout"):
        await fetch(server.url(path), tmp_path, policy, label="ep")
    assert len(server.requests_for(path)) == 2


async def test_refused_connection_and_unknown_host(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputError, match=r"ep: could not download .* after 3 attempts \(last problem: could not connect"):
        await fetch(f"http://127.0.0.1:{port}/a.wav", tmp_path, FAST, label="ep")
    with pytest.raises(InputError, match="the host name 'no-such-host.invalid' does not resolve"):
        await fetch("http://no-such-host.invalid/a.wav", tmp_path, FAST, label="ep")


async def test_malformed_url_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ep: <unparseable URL> is not a usable URL \(Invalid IPv6 URL\)"):
        await fetch("http://[broken/a.wav", tmp_path, FAST, label="ep")
    with pytest.raises(InputError, match=r"ep: http:///a.wav is not a usable URL"):
        await fetch("http:///a.wav", tmp_path, FAST, label="ep")


async def test_credentials_never_reach_messages(server: ScriptedServer, tmp_path: Path) -> None:
    port = server.server_address[1]
    url = f"http://alice:hunter2secret@127.0.0.1:{port}/missing?token=abc123&sig=zz9&episode=4"
    with pytest.raises(InputError) as caught:
        await fetch(url, tmp_path, FAST, label="ep")
    message = str(caught.value)
    assert "hunter2secret" not in message and "abc123" not in message and "zz9" not in message
    assert "answered HTTP 404" in message and "episode=4" in message


def test_safe_url_and_scheme_of() -> None:
    assert safe_url("https://u:p@host.example/a.mp3?X-Amz-Signature=deadbeef&n=2") == \
        "https://host.example/a.mp3?X-Amz-Signature=***&n=2"
    assert safe_url("https://h/a.mp3?v=" + "A" * 40) == "https://h/a.mp3?v=***"  # token-shaped value
    assert safe_url("/plain/path.wav") == "/plain/path.wav"
    assert [scheme_of(s) for s in ["/a.wav", "a b.wav", "C:\\x.wav", "HTTPS://h/x", "s3://b/k", "file:///a"]] == \
        ["file", "file", "file", "https", "s3", "file"]


# --- other schemes -------------------------------------------------------------------------

async def test_schemes_must_be_enabled(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ep: URL scheme 's3' is not enabled: pass --allow-scheme s3"):
        await fetch("s3://bucket/show/ep.mp3", tmp_path, FetchPolicy(), label="ep")
    with pytest.raises(InputError, match="URL scheme 'https' is not enabled"):
        await fetch("https://example.com/a.mp3", tmp_path, FetchPolicy(allowed_schemes=frozenset({"file"})), label="ep")


async def test_enabled_fsspec_scheme_is_copied(tmp_path: Path) -> None:
    url = f"memory://bucket-{uuid.uuid4().hex}/jfk.flac"
    with fsspec.open(url, "wb") as handle:
        handle.write(JFK_BYTES)
    policy = FetchPolicy(allowed_schemes=frozenset({"file", "memory"}))
    fetched = await fetch(url, tmp_path, policy, label="ep")
    assert fetched.downloaded and fetched.path.parent == tmp_path
    assert fetched.path.read_bytes() == JFK_BYTES and fetched.content_type == "audio/flac"
    small = FetchPolicy(allowed_schemes=policy.allowed_schemes, max_bytes=100_000)
    with pytest.raises(InputError, match=r"larger than the download cap of 100,000 bytes"):
        await fetch(url, tmp_path / "fresh", small, label="ep")
    assert [p.name for p in (tmp_path / "fresh").iterdir() if not p.name.endswith(".lock")] == []


async def test_missing_fsspec_object_and_missing_backend(tmp_path: Path) -> None:
    policy = FetchPolicy(allowed_schemes=frozenset({"memory", "gs"}))  # gcsfs is not installed
    with pytest.raises(InputError, match=r"ep: memory://nowhere/x.wav does not exist"):
        await fetch("memory://nowhere/x.wav", tmp_path, policy, label="ep")
    with pytest.raises(InputError, match=r"reading gs:// needs an extra package .*gcsfs"):
        await fetch("gs://bucket/x.wav", tmp_path, policy, label="ep")


def test_safe_url_masks_tokens_in_paths_but_keeps_names() -> None:
    assert safe_url("https://feeds.example.com/private/8f3a9c2e1b7d4f6a9c2e1b7d/feed.xml") == \
        "https://feeds.example.com/private/***/feed.xml"
    assert safe_url("https://h/feed-Sub5cr1berT0ken8f3a9c2e.xml") == "https://h/feed-***.xml"
    for kept in ("https://cdn.example.com/2024-01-15/the-history-of-printing-episode-12.mp3",
                 "https://x.example/a/550e8400-e29b-41d4-a716-446655440000.mp3",
                 "https://x.example/sense_and_sensibility_01_austen_64kb-0880.wav"):
        assert safe_url(kept) == kept
