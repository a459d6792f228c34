"""What every manifest flow does around its per-item task: read, resume, run, publish, report."""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable
from dataclasses import asdict

from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from audiobatch.flows.logs import route_logs
from audiobatch.flows.runtime import finish_run, open_run, worker_context
from audiobatch.flows.shards import run_shards, shard_items
from audiobatch.flows.task_runners import batch_runner
from audiobatch.tasks.audio.memory import return_large_buffers
from audiobatch.tasks.inputs.manifest import Item, read_manifest
from audiobatch.tasks.inputs.manifest_io import read_manifest_bytes
from audiobatch.tasks.inputs.trust import Trust
from audiobatch.tasks.outputs.datasets import failed_item_ids
from audiobatch.tasks.outputs.staging import publish_run
from audiobatch.tasks.reports.history import record_from_rows
from audiobatch.tasks.reports.progress import (RunProgress, RunSummary, publish_artifact,
                                               publish_report_artifact, summarize)
from audiobatch.tasks.reports.report import render_markdown
from audiobatch.tasks.run.batches import RunJob, run_items
from audiobatch.tasks.run.context import ItemFunction, ItemOutcome, RunContext, RunOptions

log = logging.getLogger("audiobatch")
LOGGED_FAILURES = 100  # item failures logged one line each per run; more are counted


def items_to_run(ctx: RunContext, items: list[Item]) -> list[Item]:
    """Skip items this run already finished (after a crash); honour --rerun-failed."""
    if ctx.options.rerun_failed:
        wanted = failed_item_ids(ctx.out, ctx.options.rerun_failed, ctx.options.kind)
        items = [item for item in items if item.item_id in wanted]
    done = ctx.staging.finished_items()
    return [item for item in items if item.item_id not in done]


async def execute_run(options: RunOptions, process: ItemFunction, trust: Trust, *,
                      items: list[Item] | None = None, source_bytes: bytes = b"") -> dict:
    """Run every manifest item through `process`; return the summary as a dict.

    `trust` says what the items may reach (tasks/inputs/trust.py). Items from elsewhere (podcast
    feeds) come ready in `items`, with `source_bytes` naming the job for resuming (the same
    bytes again resume an unfinished run)."""
    wall_start = time.monotonic()
    route_logs()
    return_large_buffers()
    if items is None:
        # read once, and as the run's trust says: the job key and the items come from one reading
        source_bytes = read_manifest_bytes(options.manifest, trust.local_roots)
        items = read_manifest(options.manifest, options.kind, data=source_bytes)
        if options.shards > 1 and options.shard is None:
            return await run_shards(options, items)  # the parent of a sharded submission
        if options.shard is not None:
            items = shard_items(items, options.shard, options.shards)
    async with open_run(options, source_bytes, trust) as (ctx, resumed):
        todo = items_to_run(ctx, items)
        if resumed:
            log.info("resuming run %s: %d of %d items left", ctx.run_id, len(todo), len(items))
        with RunProgress(len(todo), options.kind, enabled=options.progress) as progress:
            unlogged = 0

            def on_done(outcome: ItemOutcome) -> None:
                nonlocal unlogged
                progress.item_done(outcome.duration_s)
                if outcome.status != "ok":
                    unlogged += 1  # a 100,000-row manifest of bad rows logs a sample, then a count
                    if unlogged <= LOGGED_FAILURES:
                        log.warning("%s", failure_line(outcome))

            job = RunJob(options=options, run_id=ctx.run_id, trust=trust, connect=worker_context)
            async with batch_runner(options) as (run_batch_task, lanes):
                await run_items(ctx, job, todo, process, on_done, run_batch_task=run_batch_task,
                                lanes=lanes)
            if unlogged > LOGGED_FAILURES:
                log.warning("... and %d more failed or skipped items (listed in the items dataset)",
                            unlogged - LOGGED_FAILURES)
        summary = await report(ctx, wall_start)
        finish_run(ctx, asdict(summary))
    return asdict(summary)


async def report(ctx: RunContext, wall_start: float) -> RunSummary:
    staged = ctx.staging.snapshot()
    outputs = publish_run(ctx.out, staged, ctx.run_id)
    items, costs = staged.final_rows("items"), staged.final_rows("costs")
    summary = summarize(ctx.run_id, ctx.options.kind, items, costs, wall_s=time.monotonic() - wall_start,
                        model=ctx.model, priced_as=ctx.priced_as, outputs=outputs,
                        stop_reason=ctx.stop_reason, out=ctx.out.url)
    log.info("%s", summary.outcome)
    await publish_artifact(summary)
    if items:
        await publish_report_artifact(ctx.options.kind, ctx.run_id,
                                      render_markdown(record_from_rows(ctx.run_id, items, costs)))
    return summary


def failure_line(outcome: ItemOutcome) -> str:
    row = outcome.rows["items"][0]
    return f"{row['status']} {row['item_id']} (row {row['row']}): {row['error_message']}"


class ItemsNotOk(Exception):
    """The data of a Failed flow state: some items failed or were skipped (exit code 1).
    Outputs were written all the same; `summary` is the run's summary."""

    def __init__(self, summary: dict) -> None:
        super().__init__(summary_outcome(summary))
        self.summary = summary


def as_summary(summary: dict) -> RunSummary:
    """A flow's summary dict (podcast runs add a `feed` entry) as a RunSummary again."""
    return RunSummary(**{name: summary[name] for name in RunSummary.__dataclass_fields__
                         if name in summary})


def summary_outcome(summary: dict) -> str:
    return as_summary(summary).outcome


def run_state(summary: dict) -> State:
    """Completed when every item is ok, else Failed; the message says which (as the exit code)."""
    if summary["ok"] == summary["items"]:
        return Completed(message=summary_outcome(summary), data=summary)
    return Failed(message=summary_outcome(summary), data=ItemsNotOk(summary))


async def summary_of(state: State | Awaitable[State]) -> dict:
    """The summary of a finished manifest flow run, whether it Completed or Failed on items
    (`await summary_of(transcribe_manifest(..., return_state=True))`); other failures raise."""
    if inspect.isawaitable(state):
        state = await state
    result = await state.aresult(raise_on_failure=False)
    if isinstance(result, ItemsNotOk):
        return result.summary
    if isinstance(result, BaseException):
        raise result
    return result
