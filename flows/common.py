"""What every manifest flow does around its per-item task: read, resume, run, publish, report."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

import fsspec

from audiobatch.flows.runtime import finish_run, open_run
from audiobatch.tasks.manifest import Item, read_manifest
from audiobatch.tasks.outputs import failed_item_ids, publish_run
from audiobatch.tasks.progress import RunProgress, RunSummary, publish_artifact, summarize
from audiobatch.tasks.runs import ItemFunction, ItemOutcome, RunContext, RunOptions, run_items

log = logging.getLogger("audiobatch")


def read_manifest_bytes(manifest: str) -> bytes:
    with fsspec.open(manifest, "rb") as handle:
        return handle.read()


def items_to_run(ctx: RunContext, items: list[Item]) -> list[Item]:
    """Skip items this run already finished (after a crash); honour --rerun-failed."""
    if ctx.options.rerun_failed:
        wanted = failed_item_ids(ctx.out, ctx.options.rerun_failed, ctx.options.kind)
        items = [item for item in items if item.item_id in wanted]
    done = ctx.staging.finished_items()
    return [item for item in items if item.item_id not in done]


async def execute_run(options: RunOptions, process: ItemFunction, *,
                      items: list[Item] | None = None, source_bytes: bytes = b"") -> dict:
    """Run every manifest item through `process`; return the summary as a dict.

    Items from elsewhere (podcast feeds) come ready in `items`, with `source_bytes` naming
    the job for resuming (the same bytes again resume an unfinished run)."""
    wall_start = time.monotonic()
    if items is None:
        source_bytes = read_manifest_bytes(options.manifest)
        items = read_manifest(options.manifest, options.kind)
    async with open_run(options, source_bytes) as (ctx, resumed):
        todo = items_to_run(ctx, items)
        if resumed:
            log.info("resuming run %s: %d of %d items left", ctx.run_id, len(todo), len(items))
        with RunProgress(len(todo), options.kind, enabled=options.progress) as progress:
            def on_done(outcome: ItemOutcome) -> None:
                progress.item_done(outcome.duration_s)

            await run_items(ctx, todo, process, on_done)
        summary = await report(ctx, wall_start)
        finish_run(ctx, asdict(summary))
    return asdict(summary)


async def report(ctx: RunContext, wall_start: float) -> RunSummary:
    outputs = publish_run(ctx.out, ctx.staging, ctx.run_id)
    summary = summarize(ctx.run_id, ctx.options.kind, ctx.staging.final_rows("items"),
                        ctx.staging.final_rows("costs"), wall_s=time.monotonic() - wall_start,
                        model=ctx.model, priced_as=ctx.priced_as, outputs=outputs,
                        stop_reason=ctx.stop_reason)
    print(f"\naudiobatch {ctx.options.kind} finished\n{summary.text()}", flush=True)
    await publish_artifact(summary)
    return summary
