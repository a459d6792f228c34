"""What one client may ask of `audiobatch serve` (docs/security.md: every client of the
server is untrusted).

- `ServeLimits` (localmodel/serving.py): audio and text per request, requests waiting, the
  time a client has to send a body.
- `Admission`: one request is worked on and at most `max_queue` wait; more are answered 429
  with `retry-after` at once, before their body is read. A request holds its place from its
  arrival, so its body must arrive within `body_timeout_s` (localmodel/app.py answers 408
  and frees the place): five clients that send a head and never a body held every place.
- `request_origin_error`: DNS rebinding and cross-site pages. A web page on another site can make
  a browser send requests to 127.0.0.1 (its host name re-pointed at 127.0.0.1, or a simple
  cross-origin POST); the Host header still names the page's site and the Origin header the
  page. Without an API key, Host must be a name of this server; an Origin must match the Host.
- `answer_unless_gone`: a client that hangs up does not keep the engine busy.

In-process (the pipeline's own embedded model) none of this applies: `create_app` gets no limits.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

from starlette.requests import Request

from audiobatch.localmodel.serving import ServeLimits, is_loopback
from audiobatch.localmodel.wire import APIError

T = TypeVar("T")


class Admission:
    """Counts requests being worked on or waiting; refuses (429) beyond 1 + max_queue."""

    def __init__(self, max_queue: int) -> None:
        self.limit = max_queue + 1
        self.active = 0
        self.typical_s = 5.0  # running mean of how long a request takes, for retry-after

    def enter(self) -> float:
        if self.active >= self.limit:
            wait = max(1, min(60, math.ceil(self.typical_s * self.active / self.limit)))
            raise APIError(429, f"this server is busy: {self.active} requests are being worked on "
                           f"or waiting (--max-queue {self.limit - 1}). Retry after {wait} s.",
                           code="rate_limit_exceeded", type="requests",
                           headers={"retry-after": str(wait)})
        self.active += 1
        return time.monotonic()

    def leave(self, entered: float) -> None:
        self.active -= 1
        self.typical_s = 0.8 * self.typical_s + 0.2 * (time.monotonic() - entered)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        entered = self.enter()
        try:
            yield
        finally:
            self.leave(entered)


def check_text(texts: list[str], limits: ServeLimits) -> None:
    size = sum(len(text) for text in texts)
    if size > limits.max_text_chars:
        raise APIError(400, f"the request's text is {size:,} characters; this server takes at most "
                       f"{limits.max_text_chars:,} per request (--max-text-chars). Send it in "
                       "shorter pieces.", code="text_too_long", param="messages")


# --- Host and Origin -------------------------------------------------------------------------

def _hostname(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").rstrip(".")


def request_origin_error(headers: dict[bytes, bytes], allowed: frozenset[str] | None) -> APIError | None:
    host = _hostname(headers.get(b"host", b"").decode("latin-1"))
    if allowed is not None and host not in allowed and not is_loopback(host):
        return APIError(403, f"this server answers requests addressed to {', '.join(sorted(allowed))}, "
                        f"not to '{host}' (a web page pointing its own name at this machine?). "
                        "Use http://127.0.0.1:PORT/v1.", code="forbidden_host")
    origin = headers.get(b"origin")
    if origin is not None:
        seen = _hostname(urlsplit(origin.decode("latin-1")).netloc)
        if seen != host and not (allowed is not None and seen in allowed):
            return APIError(403, f"requests from web pages of other sites ({origin.decode('latin-1')}) "
                            "are refused.", code="forbidden_origin")
    return None


# --- clients that hang up ----------------------------------------------------------------------

class ClientGone(Exception):
    """The client hung up before its answer was ready; its work was stopped."""


async def answer_unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; cancelled (engines stop at their next segment) when the client hangs up."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler itself is cancelled (server shutting down)
        for pending in (task, gone):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if task.cancelled():
        raise ClientGone()
    return task.result()


async def _disconnected(request: Request) -> None:
    # After the body, the server's next message for this request is its disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
