"""The model client's HTTP/1.1 transport (tasks/model/http11.py) on real sockets: connections are
kept and reused, an endpoint's broken or hostile answers become httpx's errors (which the
client retries), TLS checks certificates, and a configured proxy is still used.

Everything is real: servers on 127.0.0.1 (the fault server, and raw sockets for answers no
HTTP server would send), TLS with a certificate made here, httpx above the transport.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audiobatch.tasks.errors import TransientModelError
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from audiobatch.tasks.model.http11 import Http11Transport
from tests.helpers.faultserver import FaultServer, drop, hang, ok, truncated

AUDIO = b"RIFF" + bytes(2000)  # the fault server does not decode what it is sent


def client_settings(base_url: str, **changes: object) -> ClientSettings:
    values: dict = dict(base_url=base_url, api_key="sk-test", timeout_s=2.0, max_attempts=3,
                        backoff_initial_s=0.01, backoff_max_s=0.02)
    values.update(changes)
    return ClientSettings(**values)


async def transcribe_n(base_url: str, count: int, **changes: object) -> list[str]:
    async with ModelClient(client_settings(base_url, **changes)) as client:
        return [(await client.transcribe(AUDIO, "wav")).text for _ in range(count)]


# --- keep-alive ------------------------------------------------------------------------------

async def test_requests_in_turn_share_one_connection() -> None:
    with FaultServer() as server:
        texts = await transcribe_n(server.base_url, 20)
    assert texts == ["hello world"] * 20
    assert server.connections_opened == 1


async def test_concurrent_requests_open_one_connection_each_and_keep_them() -> None:
    with FaultServer(default=ok(delay_s=0.2)) as server:
        async with ModelClient(client_settings(server.base_url, concurrency=4)) as client:
            for _ in range(3):  # three waves of four
                await asyncio.gather(*(client.transcribe(AUDIO, "wav") for _ in range(4)))
    assert len(server.requests) == 12 and server.connections_opened == 4


async def test_a_connection_that_failed_is_not_reused() -> None:
    """A dropped connection, a body cut short and a request that timed out waiting each leave
    a connection in an unknown state: the retry goes out on a new one, and succeeds."""
    with FaultServer([drop(), truncated(cut_connection=True), hang(5), ok("fine")]) as server:
        [text] = await transcribe_n(server.base_url, 1, max_attempts=4, timeout_s=0.5)
    assert text == "fine" and len(server.requests) == 4
    assert server.connections_opened == 4


async def test_an_answer_left_unread_closes_its_connection() -> None:
    with FaultServer() as server:
        transport = Http11Transport()
        async with httpx.AsyncClient(transport=transport, base_url=server.base_url + "/") as http:
            async with http.stream("POST", "chat/completions", content=b"{}") as first:
                assert first.status_code == 200  # the body is never read
            second = await http.post("chat/completions", content=b"{}")
    assert second.json()["choices"][0]["message"]["content"] == "hello world"
    assert server.connections_opened == 2


async def test_bytes_sent_on_an_idle_connection_are_never_taken_for_the_next_answer() -> None:
    """Some servers send a 408 on a keep-alive connection before closing it: a connection
    with anything waiting on it is not reused."""
    answered = [0]

    async def answer_then_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered[0] += 1
        body = b"answer %d" % answered[0]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(2)  # and keeps the connection open a while

    with raw_server(answer_then_408) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/") as http:
            first = await http.get("models")
            await asyncio.sleep(0.3)  # the stray 408 arrives meanwhile
            second = await http.get("models")
    assert (first.status_code, first.text) == (200, "answer 1")
    assert (second.status_code, second.text) == (200, "answer 2")


async def test_an_unasked_answer_sent_with_the_asked_one_is_never_taken_for_the_next() -> None:
    """A second answer in the same TCP write as the first lands in h11's own buffer, where the
    socket's checks cannot see it (main, and httpx's own transport: it became the next
    request's answer, and every later answer was one off)."""
    answered = [0]

    async def two_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            answered[0] += 1
            asked, unasked = b"answer %d" % answered[0], b"unasked %d" % answered[0]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(asked), asked)
                         + b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(unasked), unasked))
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request, if this connection is kept

    with raw_server(two_at_once) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/") as http:
            texts = [(await http.get("models")).text for _ in range(3)]
    assert texts == ["answer 1", "answer 2", "answer 3"]


async def test_a_head_over_16_kib_is_refused_however_it_arrives() -> None:
    """h11's own limit applies only to a head still incomplete: 20 KiB arriving in one read
    was accepted."""
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-filler-%d: %s\r\n" % (n, b"a" * 200) for n in range(100))
    with raw_server(sends(head + b"content-length: 2\r\n\r\nok")) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/", timeout=5) as http:
            with pytest.raises(httpx.RemoteProtocolError, match="the answer's head is over 16,384 bytes"):
                await http.get("models")
    many_continues = b"HTTP/1.1 100 Continue\r\nx-filler: " + b"a" * 1000 + b"\r\n\r\n"
    with raw_server(sends(many_continues * 20 + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/", timeout=5) as http:
            with pytest.raises(httpx.RemoteProtocolError, match="head is over"):
                await http.get("models")
    small = b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * 15_000 + b"\r\ncontent-length: 2\r\n\r\nok"
    with raw_server(sends(small)) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/", timeout=5) as http:
            assert (await http.get("models")).text == "ok"


# --- hostile or broken answers ---------------------------------------------------------------

@contextmanager
def raw_server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> Iterator[str]:
    """A socket server on 127.0.0.1 that answers every connection with `answer`; yields its URL."""
    ready, port, loop_box = threading.Event(), [0], []

    async def serve() -> None:
        stop = asyncio.Event()
        loop_box.append((asyncio.get_running_loop(), stop))
        server = await asyncio.start_server(lambda r, w: _answer_then_close(answer, r, w), "127.0.0.1", 0)
        port[0] = server.sockets[0].getsockname()[1]
        ready.set()
        await stop.wait()
        server.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}/v1"
    finally:
        loop, stop = loop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


async def _answer_then_close(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                             reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        # the whole request is read first: unread bytes at close make the kernel send a reset,
        # which the client would see instead of the answer under test
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        await answer(reader, writer)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def sends(data: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
    return answer


async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for number in range(100_000):  # a head that never ends, 3 MB of it, unless the client hangs up
        writer.write(b"x-filler-%d: %s\r\n" % (number, b"a" * 20))
        await writer.drain()


@pytest.mark.parametrize("answer, words", [
    (sends(b"SPAM AND EGGS\r\n\r\n"), "illegal status line"),            # not HTTP at all
    (sends(b""), "disconnected without sending an answer"),              # hangs up at once
    (sends(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"),           # body cut short
     "without sending complete message body"),
    (endless_head, "receive buffer too long"),                           # a head without end
], ids=["garbage", "hang-up", "short-body", "endless-head"])
async def test_a_broken_answer_is_a_protocol_error_the_client_retries(answer, words) -> None:
    with raw_server(answer) as url:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/", timeout=5) as http:
            with pytest.raises(httpx.RemoteProtocolError, match=f"(?i){words}"):
                response = await http.post("chat/completions", content=b"{}")
                await response.aread()
        with pytest.raises(TransientModelError, match=f"connection failed \\(RemoteProtocolError: (?i:.*{words})"):
            await transcribe_n(url, 1)  # retried (3 attempts), then reported as transient


async def test_a_refused_connection_is_a_connect_error() -> None:
    with raw_server(sends(b"")) as url:
        pass  # the port is free again
    async with httpx.AsyncClient(transport=Http11Transport(), base_url=url + "/") as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("chat/completions", content=b"{}")


# --- TLS and proxies -------------------------------------------------------------------------

def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audiobatch test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_tls_trusts_ssl_cert_file_and_refuses_an_unknown_certificate(tmp_path, monkeypatch) -> None:
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    with FaultServer([ok("over tls")], tls=tls) as server:
        assert server.base_url.startswith("https://")
        with pytest.raises(TransientModelError, match="ConnectError.*certificate verify failed"):
            await transcribe_n(server.base_url, 1, max_attempts=1)  # certifi does not know it
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # as a gateway's private CA is trusted
        assert await transcribe_n(server.base_url, 1) == ["over tls"]


async def test_a_configured_proxy_carries_the_requests(monkeypatch) -> None:
    """HTTP_PROXY is httpx's business (it mounts its own transport): the endpoint's host need
    not even resolve, since only the proxy is contacted."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FaultServer([ok("via the proxy")]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        assert await transcribe_n("http://model.example.invalid/v1", 1) == ["via the proxy"]
    [request] = proxy.requests
    assert request.path == "http://model.example.invalid/v1/chat/completions"


# --- fuzzing: whatever an endpoint sends, an answer or httpx's error -----------------------------

ANSWERS: list[bytes] = []


async def _next_scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(ANSWERS[-1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.integers(100, 999), headers=st.lists(st.tuples(st.from_regex(r"[a-z-]{1,12}", fullmatch=True),
                                                                 st.binary(max_size=300)), max_size=60),
       body=st.binary(max_size=300), chunked=st.booleans(), tail=st.binary(max_size=200),
       cut=st.integers(0, 400))
def test_fuzz_answers_become_responses_or_httpx_errors(fuzz_server, status, headers, body, chunked, tail, cut) -> None:
    lines = [b"HTTP/1.1 %d X" % status]
    lines += [name.encode() + b": " + value.replace(b"\r", b"").replace(b"\n", b"") for name, value in headers]
    lines.append(b"transfer-encoding: chunked" if chunked else b"content-length: %d" % len(body))
    payload = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if chunked and body else (b"0\r\n\r\n" if chunked else body)
    answer = b"\r\n".join(lines) + b"\r\n\r\n" + payload + tail
    ANSWERS.append(answer[:len(answer) - cut] if cut < len(answer) else answer)

    async def ask() -> None:
        async with httpx.AsyncClient(transport=Http11Transport(), base_url=fuzz_server + "/", timeout=2) as http:
            for _ in range(2):  # a kept connection must answer the second request rightly too
                try:
                    response = await http.get("models")
                except httpx.TransportError:
                    continue
                assert response.status_code == status
                assert sum(len(k) + len(v) + 4 for k, v in response.headers.raw) <= 16 * 1024

    asyncio.run(ask())


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[str]:
    with raw_server(_next_scripted) as url:
        yield url
