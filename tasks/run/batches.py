"""Items in batches: one Prefect task run for several items, every item's status still its own.

A Prefect task run costs ~15-50 ms of orchestration here (engine start, state events, a log
line, parameter visits), so a manifest of 100,000 short rows spent most of its time on
bookkeeping. `run_items` groups items into batches (one item per task run for a job that
fits in one wave of `concurrency` items, half a wave (at least `MIN_BATCH`) to `MAX_BATCH`
beyond) and keeps a few batch task runs in flight. Invariants:
- every item ends in exactly one `items` row, staged the moment the item finishes (a crash
  mid-batch loses nothing finished: the resumed run redoes only items without a row), and is
  reported to the flow (progress, failure line) as it ends, not when its batch does;
- at most `items_at_once(concurrency)` items of the run are worked on at once (a quarter more
  than the requests the limiter lets go), whatever the batches;
- after a run-fatal error no item starts: the rest are staged `skipped`;
- requests keep their own retries (tasks/model/client.py); a batch never retries items wholesale.

Where a batch runs: in the flow's own event loop (the default: the run's context, client and
limiter are shared), or on a Dask worker (`--task-runner dask`), which opens its own context
for the run from plain data (`RunJob`) with the `connect` function the flow passes; its
engines load once per worker process, and nothing unpicklable crosses the task boundary.
"""
from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.run.context import (ItemFunction, ItemOutcome, RunContext, RunOptions, not_started,
                                          run_one)

MAX_BATCH = 64
# When answers come back in waves (a model with steady latency), a wave of one-item task runs
# pays each run's orchestration before the next wave starts: 96 items at concurrency 16
# against a 2 s model reached 0.82 of the ideal time with one item per task run, 0.89 with 3
# and 0.90 with 6 (benchmarks/scale.py, load 3.4). On a quiet machine later: 0.87-0.88 with 3,
# 0.91 with 8. So a wave spans at most WAVE_BATCHES task runs (~50 ms to end one and begin
# the next, on the event loop, each time), and a batch is never under MIN_BATCH items.
MIN_BATCH = 3
WAVE_BATCHES = 2
SLICES_PER_LANE = 8  # a big job is cut into this many batches per parallel slot, at least

_OPEN: dict[str, RunContext] = {}  # run_id -> the context of a run open in this process


@dataclass(frozen=True)
class RunJob:
    """What a batch needs to find its run's context, or to open one in another process."""

    options: RunOptions
    run_id: str
    trust: Any  # tasks.inputs.trust.Trust
    # flows.runtime.worker_context: opens a context for this run in a process that has none
    connect: Callable[[RunJob], AbstractAsyncContextManager[RunContext]]


@asynccontextmanager
async def opened(ctx: RunContext) -> AsyncIterator[None]:
    """Make `ctx` the context batches of its run use in this process."""
    _OPEN[ctx.run_id] = ctx
    try:
        yield
    finally:
        _OPEN.pop(ctx.run_id, None)


@asynccontextmanager
async def context_for(job: RunJob) -> AsyncIterator[RunContext]:
    open_here = _OPEN.get(job.run_id)
    if open_here is not None:
        yield open_here
        return
    async with job.connect(job) as ctx:
        yield ctx


def batch_size(items: int, parallel: int) -> int:
    """Items per task run: one while the job fits in one wave of `parallel` items (each item
    its own run in the UI); beyond that a wave's share (at least MIN_BATCH), more for big jobs,
    so that task runs cost little next to the items' own work."""
    parallel = max(1, parallel)
    if items <= parallel:
        return 1
    wave_share = max(MIN_BATCH, math.ceil(parallel / WAVE_BATCHES))
    return max(wave_share, min(MAX_BATCH, items // (parallel * SLICES_PER_LANE)))


def batch_label(kind: str, items: list[Item]) -> str:
    if len(items) == 1:
        return f"{kind} {items[0].item_id}"
    return f"{kind} {len(items)} items: {items[0].item_id} .. {items[-1].item_id}"


def _light(outcome: ItemOutcome) -> ItemOutcome:
    """What the flow needs back (status, its `items` row): the rest is staged already."""
    return ItemOutcome(status=outcome.status, rows={"items": outcome.rows["items"]},
                       duration_s=outcome.duration_s, error_type=outcome.error_type,
                       error_message=outcome.error_message)


async def run_batch(ctx: RunContext, items: list[Item], process: ItemFunction) -> list[ItemOutcome]:
    """The batch's items, each within the run's item slots, each staged as it finishes."""
    async def one(item: Item) -> ItemOutcome:
        async with ctx.item_slots:
            outcome = not_started(ctx, item) if ctx.stop_reason else await run_one(ctx, item, process)
        ctx.staging.stage_item(outcome.rows)
        done = _light(outcome)
        if ctx.on_item_done is not None:
            ctx.on_item_done(done)  # progress moves per item, not per batch
        return done

    outcomes = await asyncio.gather(*(one(item) for item in items))
    ctx.staging.flush()
    return list(outcomes)


def _item_batch_task() -> Any:
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    @task(name="items", cache_policy=NO_CACHE, task_run_name="{label}")
    async def item_batch(job: RunJob, items: list[Item], process: ItemFunction,
                         label: str) -> tuple[list[ItemOutcome], str | None]:
        """A batch of items as one task run: (their outcomes, the run-fatal reason if any)."""
        async with context_for(job) as ctx:
            outcomes = await run_batch(ctx, items, process)
            return outcomes, ctx.stop_reason

    return item_batch


_TASK: Any = None


def item_batch_task() -> Any:
    global _TASK
    if _TASK is None:
        _TASK = _item_batch_task()
    return _TASK


async def in_this_loop(job: RunJob, items: list[Item], process: ItemFunction,
                       label: str) -> tuple[list[ItemOutcome], str | None]:
    """The default: the batch task runs here, sharing the run's client and limiter."""
    return await item_batch_task()(job, items, process, label)


async def run_items(ctx: RunContext, job: RunJob, items: list[Item], process: ItemFunction,
                    on_done: Callable[[ItemOutcome], None], *,
                    run_batch_task: Callable[..., Any] = in_this_loop, lanes: int = 1) -> None:
    """Run every item, in batch task runs; report each outcome to `on_done`, once: as the
    item ends when its batch runs in this process, else when its batch returns.

    Invalid rows fail without a task run. `lanes`: batches that may run at once elsewhere
    (Dask workers); in this loop the run's item slots bound the work, not the lanes."""
    reported: set[str] = set()

    def report(outcome: ItemOutcome) -> None:  # once per item, whichever way it comes back
        item_id = outcome.rows["items"][0]["item_id"]
        if item_id not in reported:
            reported.add(item_id)
            on_done(outcome)

    ctx.on_item_done = report
    try:
        await _run_all(ctx, job, items, process, report, run_batch_task, lanes)
    finally:
        ctx.on_item_done = None


async def _run_all(ctx: RunContext, job: RunJob, items: list[Item], process: ItemFunction,
                   report: Callable[[ItemOutcome], None], run_batch_task: Callable[..., Any],
                   lanes: int) -> None:
    early = [not_started(ctx, item) for item in items if item.error]
    ctx.staging.stage_rows("items", [row for outcome in early for row in outcome.rows["items"]])
    for outcome in early:
        report(outcome)
    queue = deque(item for item in items if not item.error)
    parallel = ctx.options.concurrency * lanes
    size = batch_size(len(queue), parallel)
    kind = ctx.options.kind

    async def lane() -> None:
        while queue and not ctx.stop_reason:
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            outcomes, stop_reason = await run_batch_task(job, batch, process, batch_label(kind, batch))
            ctx.stop_reason = ctx.stop_reason or stop_reason
            for outcome in outcomes:
                report(outcome)

    # Batches for two waves in flight: when a wave's answers come in together, the next wave's
    # items are already in started task runs, waiting for slots; with one spare batch, half a
    # wave waited ~0.2 s for task runs to end and begin (96 items at 16: 0.89 -> 0.9x of ideal).
    in_flight = max(1, min(math.ceil(2 * parallel / size) + lanes, math.ceil(len(queue) / size)))
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    rest = [not_started(ctx, item) for item in queue]
    ctx.staging.stage_rows("items", [row for outcome in rest for row in outcome.rows["items"]])
    for outcome in rest:
        report(outcome)
    ctx.staging.flush()
