"""Sharded jobs: one submission = one parent flow run + K shard flow runs on a work pool.

`audiobatch submit MANIFEST --shards K` (or `options.scale.shards = K` on a deployment run)
makes the parent: it creates K runs of its own deployment (`run_deployment`, as its subflows),
one per shard, which any worker polling the pool picks up; then it waits for them and sums
their outcomes up. Shard k works on manifest rows k, k+K, k+2K, ... (long and short files
spread evenly), as a normal run with its own run id `<submission>-s<k>of<K>`.

Invariants:
- every item of the submission is in exactly one shard, so it appears exactly once as `ok` in
  the output root (each shard publishes its own Parquet files under its run id);
- a shard re-run for any reason resumes its own run state under `<out>/_runs/` (any worker
  reaches it through the output root), so finished items are not redone and answered
  requests are not paid again; a re-run parent finds its existing shards again (one
  idempotency key per shard), it never starts a second set;
- a shard whose worker died is run again by Prefect: a Crashed shard (its process was
  stopped, or the heartbeat watchdog below found it silent) is put back to AwaitingRetry,
  Prefect's own retry state, up to `SHARD_RERUNS` times, and any worker takes it.

Hard deaths (a machine lost without a signal) leave a flow run Running with nobody behind
it, and a worker that dies while starting a shard's process leaves it Pending. Shards send
Prefect flow-run heartbeats every `HEARTBEAT_S`; an automation created on first use
("audiobatch: shard without heartbeat") marks a shard Crashed when `SILENCE_S` pass after
it was handed to a worker, started, or last sent one (Prefect's documented zombie-run
pattern); the parent then re-runs it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import timedelta
from typing import Any

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.options import deep_merge
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.outputs.staging import RunStaging
from audiobatch.tasks.reports.progress import publish_artifact, summarize
from audiobatch.tasks.run.context import RunOptions, run_folder

log = logging.getLogger("audiobatch")
SHARD_TAG = "audiobatch-shard"
SHARD_RERUNS = 3
POLL_S = 2.0
HEARTBEAT_S = 30  # Prefect's minimum
SILENCE_S = float(os.environ.get("AUDIOBATCH_SHARD_SILENCE_S", 90))
WATCHDOG = "audiobatch: shard without heartbeat"


def shard_items(items: list[Item], shard: int, shards: int) -> list[Item]:
    """The manifest rows of shard `shard` of `shards` (every shards-th row)."""
    return items[shard::shards]


def shard_run_id(submission: str, shard: int, shards: int) -> str:
    return f"{submission}-s{shard + 1}of{shards}"


async def run_shards(options: RunOptions, items: list[Item]) -> dict:
    """The parent of a sharded submission run by a worker (a deployment run whose options ask
    for shards): start the shards on its own deployment, wait, sum up."""
    from prefect import get_client
    from prefect.runtime import deployment, flow_run

    if deployment.id is None:
        raise ConfigError(f"--shards {options.shards}: shards are flow runs of a deployment, run by "
                          "the workers of its pool. Submit the manifest instead: `audiobatch submit "
                          f"MANIFEST --kind {options.kind} --shards {options.shards}`.")
    async with get_client() as client:
        parent = await client.read_flow_run(flow_run.id)
    # the parameters as stored (JSON), not the flow's live objects: each shard gets them all
    return await shard_and_wait(options, items, deployment.id, dict(parent.parameters))


async def shard_and_wait(options: RunOptions, items: list[Item], deployment_id: Any,
                         parameters: dict) -> dict:
    """Start the shards as runs of `deployment_id` with `parameters` (plus each one's shard and
    run id), wait for them, re-run crashed ones, and return the submission's summary."""
    from prefect import get_client
    from prefect.runtime import flow_run

    started = time.monotonic()
    parent_id = str(flow_run.id)
    async with get_client() as client:
        parent = await client.read_flow_run(flow_run.id)
        job_env = dict((await client.read_deployment(deployment_id)).job_variables.get("env") or {})
    await ensure_watchdog()
    submission = options.run_id or f"{parent.created:%Y%m%dT%H%M%SZ}-{parent_id.replace('-', '')[:6]}"
    run_ids = [shard_run_id(submission, k, options.shards) for k in range(options.shards)]
    children = [await _start_shard(deployment_id, parameters, k, options.shards, run_ids[k],
                                   f"{parent_id}-shard-{k}", job_env)
                for k in range(options.shards)]
    log.info("submission %s: %d shards of %d items started", submission, options.shards, len(items))
    states = await wait_for_shards(children)
    return await _summary(options, submission, run_ids, states, len(items), time.monotonic() - started)


async def _start_shard(deployment_id: Any, parameters: dict, shard: int, shards: int, run_id: str,
                       key: str, job_env: dict) -> Any:
    from prefect.deployments import run_deployment

    parameters = deep_merge(parameters, {"options": {"scale": {"shards": shards, "shard": shard},
                                                     "reruns": {"run_id": run_id}}})
    env = {**job_env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    return await run_deployment(deployment_id, parameters=parameters, timeout=0, as_subflow=True,
                                idempotency_key=key, tags=[SHARD_TAG],
                                flow_run_name=f"{run_id}", job_variables={"env": env})


async def wait_for_shards(children: list[Any]) -> dict[str, Any]:
    """Wait until every shard is final; re-run crashed ones (Prefect's AwaitingRetry state)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import AwaitingRetry

    ids = [child.id for child in children]
    reruns: dict[str, int] = {}
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            pending = False
            for run in runs:
                if run.state is None or not run.state.is_final():
                    pending = True
                elif run.state.is_crashed() and reruns.get(str(run.id), 0) < SHARD_RERUNS:
                    reruns[str(run.id)] = reruns.get(str(run.id), 0) + 1
                    log.warning("shard %s crashed (%s): running it again, attempt %d",
                                run.name, run.state.message, reruns[str(run.id)] + 1)
                    await client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
                    pending = True
            if not pending and len(runs) == len(ids):
                return {run.name: run.state for run in runs}
            await asyncio.sleep(POLL_S)


async def _summary(options: RunOptions, submission: str, run_ids: list[str], states: dict[str, Any],
                   total: int, wall_s: float) -> dict:
    """The submission's summary from every shard's own status and cost rows."""
    from dataclasses import asdict

    out = OutputRoot(options.out)
    items: list[dict] = []
    costs: list[dict] = []
    for run_id in run_ids:
        staged = RunStaging(run_folder(out, run_id)).snapshot()
        items += staged.final_rows("items")
        costs += staged.final_rows("costs")
    unfinished = [name for name, state in states.items() if not state.is_completed() and
                  not state.is_failed()]
    stop_reason = (f"shards not finished: {', '.join(sorted(unfinished))} ({total - len(items)} "
                   "items without a status; submit again to finish them)") if unfinished else None
    summary = summarize(submission, options.kind, items, costs, wall_s=wall_s, model=options.model or "",
                        priced_as="", outputs={}, stop_reason=stop_reason, out=out.url)
    result = asdict(summary)
    result.update(items=total, skipped=result["skipped"] + total - len(items), shards=run_ids)
    print(f"\naudiobatch {options.kind} submission finished\n{summary.text()}", flush=True)
    await publish_artifact(summary)
    return result


async def ensure_watchdog() -> None:
    """The automation that marks a shard Crashed when it falls silent: no heartbeat (nor the
    start of its flow) within SILENCE_S of being handed to a worker (Pending), of starting
    (Running) or of its last heartbeat. A worker that dies while starting a shard's process
    leaves it Pending, with no heartbeat ever. Created once; updated when its rules changed."""
    from prefect import get_client
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    finals = {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
              "prefect.flow-run.Crashed"}
    trigger = EventTrigger(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{SHARD_TAG}"},
        after={"prefect.flow-run.Pending", "prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.Running", "prefect.flow-run.heartbeat", *finals},
        for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
        within=timedelta(seconds=SILENCE_S))
    watchdog = AutomationCore(
        name=WATCHDOG, description="audiobatch shards: a shard that falls silent has lost its "
        "worker; marked Crashed, its parent runs it again",
        trigger=trigger, actions=[ChangeFlowRunState(
            state=StateType.CRASHED, message=f"no heartbeat for {SILENCE_S:g} s: its worker is gone")])
    async with get_client() as client:
        existing = await client.read_automations_by_name(WATCHDOG)
        if not existing:
            await client.create_automation(watchdog)
        elif _watchdog_rules(existing[0]) != _watchdog_rules(watchdog):
            await client.update_automation(existing[0].id, watchdog)


def _watchdog_rules(automation: Any) -> tuple:
    trigger = automation.trigger
    return (trigger.after, trigger.expect, trigger.within, automation.actions[0].state)
