"""The model client's HTTP/1.1 transport for httpx: asyncio streams and h11, with a keep-alive
pool per origin. It keeps one promise: a connection goes back to the pool only after its
answer was read to the end; anything else (an error, a timeout, a cancellation, a body left
unread) closes it.

Why not httpx's own (httpcore on anyio): it spent 1.5 ms of CPU a request in pool bookkeeping
and cancel scopes (this one: 0.4 ms), a sixth of the whole cost of a one-second clip against a
fast endpoint, all of it holding the GIL the run's other items wait for. httpx keeps everything above the wire: URLs, headers, auth, redirects, content
decoding. With a proxy configured (HTTP(S)_PROXY / ALL_PROXY) httpx's own transports are
used instead (`proxy_configured`): httpx turns its environment proxies off for a client given
a transport, and tunnelling is httpcore's job.

Timeouts are httpx's (`connect`, `read`, `write`; the pool never waits: the model client's
limiter bounds requests) and failures are httpx's exceptions, so callers see no difference.
What an endpoint sends is hostile: h11 parses it; an answer's head (informational answers
included) may be at most MAX_HEAD_BYTES however it arrives (h11's own limit covers only a head
still incomplete), and a connection is reused only when nothing unasked waits anywhere: not
in the socket's buffer, and not in h11's (a second answer sent in the same write as the first
would be taken for the next request's answer, and every later one would be off by one).

Kept after measuring it against httpx's own transport (issue 23, benchmarks/transport.py): at
a realistic endpoint's pace both take the same wall time, this one less CPU, and httpcore has
both of the faults above (h11 underneath, the same checks missing), which it does not let a
caller mend.
"""
from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextlib import contextmanager
from typing import Iterator

import h11
import httpx

READ_SIZE = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024  # h11's default for an incomplete head, for a whole one too
Origin = tuple[str, str, int]


def proxy_configured() -> bool:
    """Whether httpx would send some request through a proxy from the environment."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


class _Connection:
    """One socket and its h11 state machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.received = 0  # bytes of the current answer given to h11

    def unasked(self) -> bool:
        """Whether the server sent anything beyond the answer h11 has read: bytes in h11's
        buffer (sent with the answer), in the stream's (sent after it; StreamReader has no
        public way to ask) or the end of the stream."""
        return bool(self.h11.trailing_data[0] or self.reader._buffer  # type: ignore[attr-defined]
                    or self.reader.at_eof())

    def reusable(self) -> bool:
        """Idle and still open, and the server sent nothing since its last answer: bytes
        there (a 408 some servers send before closing an idle connection) would be taken
        for the next request's answer."""
        return self.h11.our_state is h11.IDLE and not self.writer.is_closing() and not self.unasked()

    def close(self) -> None:
        self.writer.close()

    async def send(self, event: h11.Event, timeout_s: float | None) -> None:
        self.writer.write(self.h11.send(event) or b"")
        with _mapped(httpx.WriteTimeout, httpx.WriteError):
            async with asyncio.timeout(timeout_s):
                await self.writer.drain()

    async def next_event(self, timeout_s: float | None) -> h11.Event:
        """The next event of the answer, reading from the socket as h11 needs more."""
        with _mapped(httpx.ReadTimeout, httpx.ReadError):
            while (event := self.h11.next_event()) is h11.NEED_DATA:
                async with asyncio.timeout(timeout_s):
                    data = await self.reader.read(READ_SIZE)
                if not data and self.h11.their_state is h11.SEND_RESPONSE:
                    raise httpx.RemoteProtocolError("the server disconnected without sending an answer")
                self.received += len(data)
                self.h11.receive_data(data)
        return event

    def head_bytes(self) -> int:
        """Bytes of the answer read so far, less what h11 holds unparsed (the body's start)."""
        return self.received - len(self.h11.trailing_data[0])


@contextmanager
def _mapped(timeout_error: type[httpx.TimeoutException],
            os_error: type[httpx.TransportError]) -> Iterator[None]:
    """asyncio's and h11's errors as httpx's, the kind named by the step that failed."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except OSError as exc:
        raise os_error(str(exc) or exc.__class__.__name__) from exc


class _AnswerBody(httpx.AsyncByteStream):
    """The answer's body, read as the caller iterates; at its end the connection is pooled."""

    def __init__(self, pool: Http11Transport, origin: Origin, connection: _Connection,
                 read_timeout_s: float | None) -> None:
        self._pool, self._origin, self._connection = pool, origin, connection
        self._timeout_s = read_timeout_s
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done:
            event = await self._connection.next_event(self._timeout_s)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                self._pool._release(self._origin, self._connection)
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the server closed the connection mid-answer")

    async def aclose(self) -> None:
        if not self._done:  # left unread: the rest of the answer would poison the next request
            self._done = True
            self._pool._discard(self._connection)


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 over asyncio streams, keeping up to `max_idle` connections
    per origin open between requests."""

    def __init__(self, *, max_idle: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.scheme, request.url.host, request.url.port
                  or (443 if request.url.scheme == "https" else 80))
        connection = self._idle_connection(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            head = await self._exchange(connection, request, timeouts.get("write"), timeouts.get("read"))
        except BaseException:  # cancelled or failed half-way: the connection's state is unknown
            self._discard(connection)
            raise
        return httpx.Response(head.status_code, headers=head.headers,
                              stream=_AnswerBody(self, origin, connection, timeouts.get("read")),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason})

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()

    async def _exchange(self, connection: _Connection, request: httpx.Request,
                        write_timeout_s: float | None, read_timeout_s: float | None) -> h11.Response:
        """Send the request, its body piece by piece, and read the answer's head."""
        target = request.url.raw_path
        connection.received = 0
        await connection.send(h11.Request(method=request.method, target=target,
                                          headers=request.headers.raw), write_timeout_s)
        try:
            async for piece in request.stream:  # type: ignore[union-attr]
                if piece:
                    await connection.send(h11.Data(data=piece), write_timeout_s)
            await connection.send(h11.EndOfMessage(), write_timeout_s)
        except httpx.WriteError as unsent:  # the server may have answered (413, 401) and stopped reading
            try:
                return await self._head(connection, read_timeout_s)
            except httpx.TransportError:
                raise unsent from None
        return await self._head(connection, read_timeout_s)

    @staticmethod
    async def _head(connection: _Connection, read_timeout_s: float | None) -> h11.Response:
        while True:
            event = await connection.next_event(read_timeout_s)
            if connection.head_bytes() > MAX_HEAD_BYTES:  # 1xx answers count: they could go on
                raise httpx.RemoteProtocolError(f"the answer's head is over {MAX_HEAD_BYTES:,} bytes "
                                                f"({connection.head_bytes():,})")
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 100 Continue and kin: skip
                raise httpx.RemoteProtocolError(f"unexpected {event.__class__.__name__} instead of an answer")

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            self._discard(connection)
        return None

    async def _connect(self, origin: Origin, timeout_s: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        with _mapped(httpx.ConnectTimeout, httpx.ConnectError):
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=READ_SIZE)
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # httpx's defaults: certifi, or SSL_CERT_FILE / SSL_CERT_DIR
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    def _release(self, origin: Origin, connection: _Connection) -> None:
        """An answer was read to its end: keep the connection if both sides allow it."""
        if (connection.h11.our_state is h11.DONE and connection.h11.their_state is h11.DONE
                and not connection.unasked()):
            connection.h11.start_next_cycle()
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()
