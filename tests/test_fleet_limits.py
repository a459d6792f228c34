"""Fleet-wide limits live on the Prefect server: created on first use with the run's values,
named after provider and model, and never raised by a later run (a run submitted by someone
else is data, not the operator's configuration). Real Prefect API (the session's server).
The limit doing its job across two workers: tests/test_fleet.py."""
from __future__ import annotations

import asyncio
import uuid

from prefect import get_client

from audiobatch.tasks.model.fleet_limits import ensure_fleet_limits, limit_name


async def _limit(name: str) -> tuple[int, float | None]:
    async with get_client() as client:
        found = await client.read_global_concurrency_limit_by_name(name)
    return found.limit, found.slot_decay_per_second


async def test_limits_are_created_once_and_a_later_run_cannot_raise_them(prefect_api) -> None:
    limits = await ensure_fleet_limits("gateway.example", "gpt-audio/1.5", concurrency=3,
                                       requests_per_minute=30, tokens_per_minute=None)
    assert limits.requests == limit_name("gateway.example", "gpt-audio/1.5", "rpm") == \
        "audiobatch-gateway.example-gpt-audio-1.5-rpm"
    assert limits.tokens is None  # no token cap asked: no limit made
    assert await _limit(limits.requests) == (30, 0.5)  # a bucket of 30 refilled at 30 a minute
    assert (await _limit(limits.concurrency))[0] == 3

    again = await ensure_fleet_limits("gateway.example", "gpt-audio/1.5", concurrency=50,
                                      requests_per_minute=10_000, tokens_per_minute=None)
    assert again.requests == limits.requests
    assert await _limit(limits.requests) == (30, 0.5) and (await _limit(limits.concurrency))[0] == 3


async def test_shards_starting_together_share_the_limits_one_of_them_created(fleet_api) -> None:
    # a sharded submission's runs start on several workers at once: each finds no limit, each
    # creates it, and all but one are told it exists (a 409) - which must not fail their shard
    model = f"race-{uuid.uuid4().hex[:8]}"
    found = await asyncio.gather(*[
        ensure_fleet_limits("gateway.example", model, concurrency=2, requests_per_minute=60,
                            tokens_per_minute=6000) for _ in range(6)])
    assert len(set(found)) == 1 and found[0].tokens == limit_name("gateway.example", model, "tpm")
    assert (await _limit(found[0].concurrency))[0] == 2
