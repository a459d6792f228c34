"""Where item batches run: in the flow's own event loop (default) or on Dask (prefect-dask).

`--task-runner dask` starts a `LocalCluster` of `--dask-workers` processes (default: one per
CPU) for the run; `--task-runner dask://HOST:PORT` uses an existing scheduler. Each batch task
(tasks/run/batches.py) is submitted with plain data only (`RunJob`, items, the item function by
reference); a Dask worker opens its own context for the run (client, limiter, cache, its own
staging file) and its engines load once per worker process. Outcomes come back as data.

Trust: a Dask scheduler runs whatever it is sent and sends back pickles, so an address is
configuration, not data: a run started by a deployment (parameters from the Prefect API) may
only use schedulers listed in AUDIOBATCH_DASK_SCHEDULERS; the operator's own runs may use any.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.run.batches import in_this_loop, item_batch_task
from audiobatch.tasks.run.context import RunOptions

ALLOWED_ENV = "AUDIOBATCH_DASK_SCHEDULERS"


def dask_address(options: RunOptions, started_by_deployment: bool) -> str | None:
    """The scheduler address of `dask://HOST:PORT`, checked; None for a local cluster."""
    if not options.task_runner.startswith("dask://"):
        return None
    address = "tcp://" + options.task_runner.removeprefix("dask://")
    allowed = {a.strip().replace("dask://", "tcp://") for a in os.environ.get(ALLOWED_ENV, "").split(",")
               if a.strip()}
    if started_by_deployment and address not in allowed:
        raise ConfigError(f"--task-runner {options.task_runner}: this run was started through the "
                          f"Prefect API, so it may use only the Dask schedulers its worker lists in "
                          f"{ALLOWED_ENV} (now: {', '.join(sorted(allowed)) or 'none'}).")
    return address


def _started_by_deployment() -> bool:
    from prefect.runtime import deployment

    return deployment.id is not None


@asynccontextmanager
async def batch_runner(options: RunOptions) -> AsyncIterator[tuple[Callable[..., Any], int]]:
    """(how to run one batch, how many batches may run at once elsewhere)."""
    if options.task_runner == "default":
        yield in_this_loop, 1
        return
    from prefect_dask import DaskTaskRunner

    address = dask_address(options, _started_by_deployment())
    workers = options.dask_workers or os.cpu_count() or 1
    runner = (DaskTaskRunner(address=address) if address else
              DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                             "processes": True, "dashboard_address": None}))
    await asyncio.to_thread(runner.__enter__)  # starts (or connects to) the cluster
    try:
        if address:
            workers = max(1, len(runner.client.scheduler_info().get("workers", {})))

        async def submit(job: Any, items: list, process: Any, label: str) -> Any:
            future = runner.submit(item_batch_task(), {"job": job, "items": items,
                                                       "process": process, "label": label})
            return await asyncio.to_thread(future.result)

        yield submit, workers
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
