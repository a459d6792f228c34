"""One process works on a run at a time: the run's lease (`<out>/_runs/<run_id>/lease.json`).

Two runs of the same job started together (the same manifest submitted twice, a re-run while
a crashed shard's process is still winding up on another machine) would otherwise both resume
the same unfinished run: its items done twice, and the one that finished first removing the
other's work files (seen as a FileNotFoundError on a chunk file in a fleet).

So a run holds its run id's lease while it is open, renewing it every LEASE_RENEW_S. A run
that finds the lease held waits until the holder finishes (then starts anew: every answer
comes from the cache, nothing is paid twice) or stops (a lease not renewed for LEASE_STALE_S,
or whose process on this host is gone: then it resumes what is left). Dask workers of a run
work under their parent's lease.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from audiobatch.tasks.outputs.claims import Claim
from audiobatch.tasks.outputs.datasets import OutputRoot, safe_name
from audiobatch.tasks.run.context import RunOptions, choose_run_id

log = logging.getLogger("audiobatch")
LEASE_RENEW_S = 15.0
LEASE_STALE_S = 60.0  # four renewals missed: its process stopped (killed, or its machine gone)
LEASE_POLL_S = 2.0


def run_lease(out: OutputRoot, run_id: str) -> Claim:
    return Claim(out, f"_runs/{safe_name(run_id)}/lease.json", LEASE_STALE_S)


async def claim_run(options: RunOptions, out: OutputRoot, job_key: str) -> tuple[str, bool, Claim]:
    """(run_id, resumed, lease): the run this process works on, its lease held."""
    waiting_for = None
    while True:
        run_id, resumed = choose_run_id(options, out, job_key)
        lease = run_lease(out, run_id)
        if lease.take():
            return run_id, resumed, lease
        if waiting_for != run_id:
            holder = lease.holder()
            log.warning("run %s of this job is in progress (host %s, pid %s): waiting until it "
                        "finishes or stops", run_id, holder.get("host", "?"), holder.get("pid", "?"))
            waiting_for = run_id
        await asyncio.sleep(LEASE_POLL_S)


@contextlib.asynccontextmanager
async def held(lease: Claim) -> AsyncIterator[None]:
    """Renew `lease` while the block runs; release it after."""
    async def renew() -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            await asyncio.to_thread(lease.renew)

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        lease.release()
