"""URLs found inside data (manifest rows, feed enclosures and transcripts) are fetched only from
public addresses, within a deadline and above a minimum rate; feeds never name local files.

Real HTTP on 127.0.0.1: an "internal service" that must never be reached, and a "site" that is
(the site's own port is opted in, as an operator allows an intranet host with --allow-host).
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd
import pytest

from audiobatch.flows.common import summary_of
from audiobatch.flows.podcast import transcribe_podcast
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.netguard import AddressPolicy, refusal
from audiobatch.tasks.inputs.sources import fetch
from audiobatch.tasks.options import TranscribeOptions
from tests.helpers.data import SPEECH
from tests.helpers.e2e import all_files_text, run_transcribe, write_manifest

CLIP = (SPEECH / "pocketsphinx__goforward.wav").read_bytes()
SECRET = "INTERNAL-ONLY-ANSWER-7c1e"


class Routes(BaseHTTPRequestHandler):
    """GET routes: /clip.wav, /feed.xml, /to?url=... (302), /drip (a byte every 0.2 s),
    /trickle (1 KB every 0.05 s); anything else answers SECRET (the internal service)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        server.paths.append(self.path)
        try:
            self.route(server)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, on purpose

    def route(self, server: Server) -> None:
        if self.path == "/clip.wav":
            self.answer(CLIP, "audio/wav")
        elif self.path == "/feed.xml":
            self.answer(server.feed.encode(), "application/rss+xml")
        elif self.path.startswith("/to?url="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path in ("/drip", "/trickle"):
            size, pause = (1, 0.2) if self.path == "/drip" else (1024, 0.05)
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            for _ in range(400):
                self.wfile.write(b"\0" * size)
                self.wfile.flush()
                time.sleep(pause)
        else:
            self.answer(SECRET.encode(), "text/plain")

    def answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Routes)
        self.paths: list[str] = []
        self.feed = ""
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def internal() -> Iterator[Server]:
    """A service only the worker's own network can reach: nothing may ever ask it anything."""
    server = Server()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def site() -> Iterator[Server]:
    server = Server()
    yield server
    server.shutdown()


def site_only(site: Server, **changes) -> FetchPolicy:
    """The site's own port opted in (--allow-host 127.0.0.1:PORT); the internal service is not."""
    return FetchPolicy(attempts=1, addresses=AddressPolicy(allow_hosts=frozenset({f"127.0.0.1:{site.port}"})),
                       **changes)


# --- which addresses ---------------------------------------------------------------------------

@pytest.mark.parametrize("address,why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.9", "private"),
    ("172.16.5.4", "private"), ("fd12::1", "private"), ("169.254.10.10", "link-local"),
    ("fe80::1", "link-local"), ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"), ("100.100.100.200", "a cloud metadata address"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.1.1", "not a public address"),
    # IPv4 wrapped in IPv6: mapped, compatible, 6to4, NAT64
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("::127.0.0.1", "loopback"), ("2002:7f00:1::", "loopback"), ("64:ff9b::a00:1", "private"),
    ("93.184.215.14", None), ("2606:4700::1111", None),
])
def test_address_classes(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f.0.0.1", "127.1",
                                  "[::ffff:127.0.0.1]"])
async def test_loopback_in_any_spelling_is_refused_before_connecting(internal, tmp_path, host) -> None:
    asked = len(internal.paths)
    with pytest.raises(InputError) as caught:
        await fetch(internal.url("/a.wav", host), tmp_path, FetchPolicy(attempts=1), label="ep")
    message = str(caught.value)
    assert message.startswith("ep: ") and "is loopback" in message and "--allow-host" in message
    assert len(internal.paths) == asked  # never connected


async def test_every_redirect_hop_is_checked(site, internal, tmp_path) -> None:
    for target, why in [(internal.url("/latest"), "loopback"),
                        ("http://169.254.169.254/latest/meta-data/iam/", "a cloud metadata address")]:
        with pytest.raises(InputError, match=f"leads to .* is {why}"):
            await fetch(site.url(f"/to?url={target}"), tmp_path, site_only(site), label="ep")
    assert internal.paths == []
    fetched = await fetch(site.url(f"/to?url={site.url('/clip.wav')}"), tmp_path, site_only(site), label="ep")
    assert fetched.path.read_bytes() == CLIP  # a redirect within the allowed host is fine


async def test_opt_ins_by_host_and_for_private_addresses(site, tmp_path, monkeypatch) -> None:
    with pytest.raises(InputError, match="is loopback"):
        await fetch(site.url("/x.wav"), tmp_path, FetchPolicy(attempts=1), label="ep")
    monkeypatch.setenv("AUDIOBATCH_ALLOW_HOSTS", f"example.org, LOCALHOST:{site.port}")
    policy = FetchPolicy(attempts=1, addresses=AddressPolicy.from_settings())
    with pytest.raises(InputError, match="serves 'text/plain', not audio"):  # reached, named by host
        await fetch(site.url("/a.wav", "localhost"), tmp_path, policy, label="ep")
    with pytest.raises(InputError, match="is loopback"):  # the same server by another name is not
        await fetch(site.url("/b.wav"), tmp_path, policy, label="ep")
    monkeypatch.delenv("AUDIOBATCH_ALLOW_HOSTS")
    monkeypatch.setenv("AUDIOBATCH_ALLOW_PRIVATE_URLS", "1")
    policy = FetchPolicy(attempts=1, addresses=AddressPolicy.from_settings())
    with pytest.raises(InputError, match="serves 'text/plain', not audio"):
        await fetch(site.url("/c.wav"), tmp_path, policy, label="ep")
    with pytest.raises(InputError, match="a cloud metadata address"):  # never exempt by the switch
        await fetch("http://169.254.169.254/latest/", tmp_path, policy, label="ep")


# --- slow servers ------------------------------------------------------------------------------

async def test_a_dripping_server_fails_the_minimum_rate(site, tmp_path) -> None:
    policy = site_only(site, rate_window_s=0.6, min_rate_bytes_s=1024)
    with pytest.raises(InputError, match=r"ep: .*/drip is sending too slowly: \d+ bytes in the last "
                                         r"\d+ s, below the minimum of 1 KB/s.*--min-download-kb-s"):
        await fetch(site.url("/drip"), tmp_path, policy, label="ep")


async def test_a_download_past_its_deadline_stops(site, tmp_path) -> None:
    policy = site_only(site, deadline_s=0.8, min_rate_bytes_s=0)  # the trickle itself is fast enough
    started = time.monotonic()
    with pytest.raises(InputError, match=r"ep: downloading .*/trickle took longer than the download "
                                         r"deadline of 0.8 s.*--download-deadline-s"):
        await fetch(site.url("/trickle"), tmp_path, policy, label="ep")
    assert time.monotonic() - started < 15  # the trickle alone would take 20 s


# --- feeds and manifests, end to end -------------------------------------------------------------

def _feed(site: Server, internal: Server, local_audio: Path) -> str:
    """Episodes whose shipped transcript (or audio) points at what a feed must never reach."""
    transcripts = {
        "file-url": "file:///etc/passwd",
        "bare-path": "/etc/passwd",
        "to-internal": site.url(f"/to?url={internal.url('/admin')}"),
        "to-metadata": site.url("/to?url=http://169.254.169.254/latest/meta-data/"),
    }
    items = [f"""<item><title>{guid}</title><guid>{guid}</guid>
      <enclosure url={quoteattr(site.url('/clip.wav'))} type="audio/wav"/>
      <podcast:transcript url={quoteattr(url)} type="text/plain"/></item>"""
             for guid, url in transcripts.items()]
    items.append(f"""<item><title>local-audio</title><guid>local-audio</guid>
      <enclosure url={quoteattr(local_audio.as_uri())} type="audio/wav"/></item>""")
    return f"""<?xml version="1.0"?><rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">
    <channel><title>Hostile Show</title>{''.join(items)}</channel></rss>"""


async def test_a_hostile_feed_reads_no_local_file_and_no_internal_service(prefect_api, site, internal, tmp_path):
    local_audio = tmp_path / "private-recording.wav"
    local_audio.write_bytes(CLIP)
    site.feed = _feed(site, internal, local_audio)
    out = tmp_path / "out"
    summary = await summary_of(transcribe_podcast(
        feed=site.url("/feed.xml"), out=str(out), return_state=True,
        options=TranscribeOptions.from_flat(allow_hosts=[f"127.0.0.1:{site.port}"], progress=False)))
    assert (summary["items"], summary["failed"]) == (5, 5)
    items = pd.read_parquet(out / "items").set_index("episode_guid")["error_message"]
    assert "a feed's items never do" in items["file-url"]
    assert "a feed's items never do" in items["bare-path"]
    assert "is loopback" in items["to-internal"] and "--allow-host" in items["to-internal"]
    assert "a cloud metadata address" in items["to-metadata"]
    assert "a feed's items never do" in items["local-audio"]
    assert internal.paths == []
    written = all_files_text(out)
    assert SECRET not in written and "root:x:0:0" not in written
    assert not (out / "transcripts").exists()


async def test_manifest_urls_reach_only_public_or_allowed_hosts(prefect_api, internal, tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "internal", "audio": internal.url("/clip.wav")}])
    result = await run_transcribe(manifest, tmp_path / "out")
    row = result.item("internal")
    assert row["status"] == "failed" and "is loopback" in row["error_message"]
    assert f"--allow-host 127.0.0.1" in row["error_message"] and internal.paths == []


# --- private feeds: credentials in the feed URL leak nowhere ----------------------------------------

def test_a_private_feeds_password_and_path_token_leak_nowhere(prefect_api, tmp_path, capfd, allow_loopback_fetch):
    """Private feeds put credentials in the URL's user:password@ or in its path: the feed is
    fetched with them, and no output, file name, message or deployment name holds them."""
    from audiobatch.flows.cli import main
    from tests.helpers.feeds import SHORT_CLIPS, FeedServer, TestEpisode, rss

    password, token = "hunter2pass", "Sub5cr1berT0ken8f3a9c2e1b7d"
    out = tmp_path / "out"
    with FeedServer(tmp_path / "site") as site:
        folder = site.folder / "private" / token
        folder.mkdir(parents=True)
        clip = SHORT_CLIPS[0]
        (folder / clip).write_bytes((SPEECH / clip).read_bytes())
        private = f"private/{token}"
        (folder / "feed.xml").write_text(rss("Members Show", [TestEpisode("m-1", "Members only", clip)],
                                             lambda name: site.url(f"{private}/{name}")))
        url = site.url(f"{private}/feed.xml").replace("http://", f"http://subscriber:{password}@")
        assert main(["podcast", url, "--out", str(out), "--no-progress"]) == 0
        assert f"/{private}/{clip}" in site.requests  # fetched with the token
    assert main(["deploy", "podcast", url, "--out", str(out), "--work-pool", "audiobatch-test-leaks"]) == 0
    printed = capfd.readouterr()
    names = "\n".join(str(p) for p in out.rglob("*"))
    for secret in (password, token):
        assert secret not in all_files_text(out) + names + printed.out + printed.err, secret
    assert "deployment transcribe-podcast/podcast-127.0.0.1" in printed.out
