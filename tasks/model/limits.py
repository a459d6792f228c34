"""Client-side limits shared by every request of a run: concurrency, requests/min, tokens/min.

One `Limiter` lives in the run's event loop and every model request passes through
`async with limiter.slot(tokens):`. It waits for

- a concurrency slot (at most `concurrency` requests in flight),
- the request and token budgets: token buckets that refill at the per-minute rate and hold at
  most `window_s` seconds' worth (60 s by default, i.e. a whole minute's budget may burst),
- any pause: `pause(seconds)` (a 429 with retry-after) or `observe(headers)` (the server says a
  budget is spent until `x-ratelimit-reset-*`) hold back everyone sharing the limiter.

A request larger than the whole token budget is not refused and does not deadlock: it waits
for a full bucket, then runs and leaves the bucket in debt, so later requests wait it off.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from audiobatch.tasks.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """Seconds in an `x-ratelimit-reset-*` value: "1s", "6m0s", "20ms", "1h2m3.5s" or "0.5"."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


class _Bucket:
    """A token bucket refilling `per_minute` units a minute, holding `window_s` seconds' worth."""

    def __init__(self, per_minute: float, window_s: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * window_s)
        self.level = self.capacity
        self.updated = time.monotonic()

    def delay(self, amount: float, now: float) -> float:
        """Seconds until `amount` may be taken; over-capacity amounts wait for a full bucket."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(amount, self.capacity)
        return max(0.0, (needed - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self.level -= amount  # may go negative: the debt of an oversized request


class Limiter:
    """Concurrency + requests/min + tokens/min + server-requested pauses, for one event loop."""

    def __init__(self, concurrency: int, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, *, window_s: float = 60.0) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}. "
                              "Set --concurrency to 1 or more.")
        for name, value in (("requests per minute", requests_per_minute),
                            ("tokens per minute", tokens_per_minute), ("window_s", window_s)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}. "
                                  "Leave it unset for no limit.")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._turn = asyncio.Lock()  # FIFO: requests waiting for the budgets go in order
        self._requests = _Bucket(requests_per_minute, window_s) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, window_s) if tokens_per_minute else None
        self._paused_until = 0.0
        self._largest_request = 1  # tokens; "nearly spent" means less than this is left

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Hold a concurrency slot, after the budgets allow `tokens` more; release on exit."""
        async with self._slots:
            await self._wait_for_budgets(max(0, tokens))
            yield

    def pause(self, seconds: float) -> None:
        """Hold back every request not yet started for `seconds` (a longer pause wins)."""
        self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Pause until the server's reset time when its x-ratelimit headers say a budget is spent.

        Requests count as spent when none remain; tokens when fewer remain than the largest
        request seen so far (the next one might not fit).
        """
        for kind, needed in (("requests", 1), ("tokens", self._largest_request)):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and reset is not None and remaining < needed:
                self.pause(reset)

    async def _wait_for_budgets(self, tokens: int) -> None:
        self._largest_request = max(self._largest_request, tokens)
        async with self._turn:
            while (delay := self._delay(tokens)) > 0:
                await asyncio.sleep(delay)  # re-check after: a pause may have been extended
            if self._requests:
                self._requests.take(1)
            if self._tokens:
                self._tokens.take(tokens)

    def _delay(self, tokens: int) -> float:
        now = time.monotonic()
        delays = [self._paused_until - now]
        if self._requests:
            delays.append(self._requests.delay(1, now))
        if self._tokens:
            delays.append(self._tokens.delay(tokens, now))
        return max(delays)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
