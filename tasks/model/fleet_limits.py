"""One rate limit for the whole fleet: a (provider, model)'s limits held by the Prefect server.

Invariant: however many workers and runs call one (provider, model) through the same Prefect
server, together they have at most `concurrency` requests in flight and start at most
`requests_per_minute` requests and `tokens_per_minute` tokens a minute; the operator divides
nothing by hand. The limits are Prefect global concurrency limits named after the provider
and model (`audiobatch-<provider>-<model>-concurrency|rpm|tpm`), created on first use with
the run's values; the rate limits decay continuously (Prefect's slot decay), i.e. token
buckets holding one minute's budget, like the in-process `Limiter`. An existing limit is never
changed by a run (a run submitted by someone else cannot raise the fleet's limits): change
it with `prefect global-concurrency-limit update NAME --limit N`.

Each request still passes the run's own `Limiter` first (its concurrency, and the pauses a
429 or x-ratelimit headers ask for), then takes the fleet's slots. A run with no Prefect
server of its own configuration (the CLI's local or temporary server, a serverless call) uses
the in-process limiter alone: see flows/runtime.py.
"""
from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from audiobatch.tasks.model.limits import Limiter

log = logging.getLogger("audiobatch")
# A request's fleet concurrency slot is a lease the holder renews; a worker killed mid-request
# stops renewing, and its slot returns when the lease ends (plus the server's 15 s sweep).
# Prefect's default is 300 s: a killed run then blocked the next one for 5 minutes. 60 s is
# the shortest lease the server accepts.
SLOT_LEASE_S = 60.0


def limit_name(provider: str, model: str, what: str) -> str:
    """`audiobatch-<provider>-<model>-<what>` with characters Prefect names allow."""
    return "audiobatch-" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{provider}-{model}-{what}")


@dataclass(frozen=True)
class FleetLimits:
    concurrency: str | None
    requests: str | None
    tokens: str | None
    largest_token_request: int = 0  # a request larger than the token limit takes all of it


async def ensure_fleet_limits(provider: str, model: str, *, concurrency: int,
                              requests_per_minute: float | None,
                              tokens_per_minute: float | None) -> FleetLimits:
    """The fleet's limits for (provider, model), created with these values when missing."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    wanted = {"concurrency": (concurrency, None),
              "rpm": (requests_per_minute, (requests_per_minute or 0) / 60.0),
              "tpm": (tokens_per_minute, (tokens_per_minute or 0) / 60.0)}
    names: dict[str, str | None] = {}
    async with get_client() as client:
        for what, (limit, decay) in wanted.items():
            if not limit:
                names[what] = None
                continue
            name = limit_name(provider, model, what)
            try:
                existing = await client.read_global_concurrency_limit_by_name(name)
                if existing.limit != int(limit):
                    log.info("fleet limit %s stays at %d (this run asked for %d)",
                             name, existing.limit, int(limit))
            except ObjectNotFound:
                try:
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                        name=name, limit=max(1, int(limit)), active=True,
                        slot_decay_per_second=decay or 0.0))
                    log.info("created fleet limit %s = %d", name, int(limit))
                except ObjectAlreadyExists:  # another shard's run created it a moment ago
                    log.info("fleet limit %s was just created by another run", name)
            names[what] = name
        tokens_limit = (await client.read_global_concurrency_limit_by_name(names["tpm"])).limit \
            if names["tpm"] else 0
    return FleetLimits(names["concurrency"], names["rpm"], names["tpm"], tokens_limit)


class FleetLimiter:
    """A `Limiter` for one run that also holds the fleet's slots for each request."""

    def __init__(self, local: Limiter, limits: FleetLimits) -> None:
        self.local = local
        self.limits = limits
        self.concurrency = local.concurrency

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        from prefect.concurrency.asyncio import concurrency, rate_limit

        async with self.local.slot(tokens):
            if self.limits.requests:
                await rate_limit(self.limits.requests, occupy=1, strict=True)
            if self.limits.tokens and tokens > 0:
                await rate_limit(self.limits.tokens, strict=True,
                                 occupy=min(tokens, self.limits.largest_token_request))
            if self.limits.concurrency:
                async with concurrency(self.limits.concurrency, occupy=1, strict=True,
                                       lease_duration=SLOT_LEASE_S):
                    yield
            else:
                yield

    def pause(self, seconds: float) -> None:
        self.local.pause(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        self.local.observe(headers)
