"""The shared limiter: concurrency, requests/tokens per minute, pauses. Real asyncio timing.

Budgets use short windows (`window_s`) so that per-minute rates space requests within a
second; the spacing asserted is what a user would see as requests going out over time.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.model.limits import Limiter, parse_reset


async def _start_times(limiter: Limiter, n: int, tokens: int = 0, hold_s: float = 0.0) -> list[float]:
    """Run n requests through the limiter at once; when each got its slot, from the start."""
    started = time.monotonic()
    times: list[float] = []

    async def request() -> None:
        async with limiter.slot(tokens):
            times.append(time.monotonic() - started)
            await asyncio.sleep(hold_s)

    await asyncio.wait_for(asyncio.gather(*(request() for _ in range(n))), timeout=10)
    return sorted(times)


async def test_concurrency_bound_is_respected() -> None:
    limiter = Limiter(concurrency=2)
    in_flight = peak = 0

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot(10):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1

    started = time.monotonic()
    await asyncio.gather(*(request() for _ in range(6)))
    assert peak == 2
    assert time.monotonic() - started >= 0.15  # 6 requests, 2 at a time, 50 ms each


async def test_requests_per_minute_spaces_requests() -> None:
    # 240/min = one every 0.25 s; a 0.25 s window allows no burst beyond one request
    limiter = Limiter(concurrency=8, requests_per_minute=240, window_s=0.25)
    times = await _start_times(limiter, 4)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert times[0] < 0.05
    assert all(0.22 <= gap <= 0.4 for gap in gaps), gaps


async def test_tokens_per_minute_spaces_requests_by_size() -> None:
    # 1200 tokens/min = 20/s; 10-token requests go out every 0.5 s after the first
    limiter = Limiter(concurrency=8, tokens_per_minute=1200, window_s=0.5)
    times = await _start_times(limiter, 3, tokens=10)
    assert times[0] < 0.05
    assert 0.45 <= times[1] <= 0.7 and 0.95 <= times[2] <= 1.3, times


async def test_request_larger_than_the_whole_budget_runs_and_later_ones_wait() -> None:
    limiter = Limiter(concurrency=8, tokens_per_minute=1200, window_s=0.5)  # holds 10 tokens
    started = time.monotonic()
    async with limiter.slot(30):  # three times the bucket: must not deadlock
        oversized_at = time.monotonic() - started
    async with limiter.slot(10):  # waits off the debt: (10 + 20) / 20 per s = 1.5 s
        next_at = time.monotonic() - started
    assert oversized_at < 0.05
    assert 1.4 <= next_at <= 1.8


async def test_pause_holds_back_everyone() -> None:
    limiter = Limiter(concurrency=4)
    limiter.pause(0.3)
    times = await _start_times(limiter, 3)
    assert all(0.28 <= t <= 0.5 for t in times), times


async def test_pause_reaches_requests_already_waiting() -> None:
    limiter = Limiter(concurrency=4, requests_per_minute=600, window_s=0.1)  # one per 0.1 s
    task = asyncio.create_task(_start_times(limiter, 3))
    await asyncio.sleep(0.05)  # the first went out, the others wait for the budget
    limiter.pause(0.4)
    times = await task
    assert times[0] < 0.05
    assert times[1] >= 0.42 and times[2] >= 0.42, times


async def test_server_saying_requests_are_spent_pauses_until_reset() -> None:
    limiter = Limiter(concurrency=4)
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"})
    times = await _start_times(limiter, 2)
    assert all(0.28 <= t <= 0.5 for t in times), times


async def test_server_headers_with_budget_left_do_not_pause() -> None:
    limiter = Limiter(concurrency=4)
    limiter.observe({"x-ratelimit-remaining-requests": "499", "x-ratelimit-reset-requests": "6m0s",
                     "x-ratelimit-remaining-tokens": "150000", "x-ratelimit-reset-tokens": "2s"})
    times = await _start_times(limiter, 2, tokens=500)
    assert times[-1] < 0.05


async def test_too_few_tokens_left_for_the_largest_request_pauses() -> None:
    limiter = Limiter(concurrency=4)
    async with limiter.slot(800):
        pass
    limiter.observe({"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "250ms"})
    times = await _start_times(limiter, 1, tokens=800)
    assert 0.23 <= times[0] <= 0.45


@pytest.mark.parametrize("value, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("17ms", 0.017),
])
def test_parse_reset_reads_openai_durations(value: str, seconds: float) -> None:
    assert parse_reset(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "5 minutes", "1x"])
def test_parse_reset_ignores_what_it_cannot_read(value: str | None) -> None:
    assert parse_reset(value) is None


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Limiter(concurrency=0)
    with pytest.raises(ConfigError, match="requests per minute"):
        Limiter(concurrency=1, requests_per_minute=0)
