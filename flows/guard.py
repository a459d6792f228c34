"""What a flow run may do, decided once at its start (README "Security model"; the rules are in
tasks/inputs/trust.py).

Who started the run: a run is the operator's when it was started on the operator's machine, in
this process: the `audiobatch` command or a Python call. A run started from a deployment
(`audiobatch submit`, the inbox and podcast schedules, `prefect deployment run`, the UI, any
Prefect API client) is executed by a worker, which starts a process for it with
PREFECT__FLOW_RUN_ID set, and the flow run carries its deployment's id. Such a run's
parameters are not trusted; the worker's environment and the deployment's stored parameters
are the operator's, so the run may lower what they set but not widen it. Subflows (the inbox's
manifests) run in the same process and are judged by the run that started them.

What the run's items are: a manifest from the inbox or from a run started by others is not
trusted (local files only inside the data roots), whoever started the run; a feed is never
trusted (no local files, public addresses only), though the feed URL itself is, when the
operator typed it or it is the deployment's.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.manifest import manifest_base_dir
from audiobatch.tasks.inputs.manifest_io import local_path
from audiobatch.tasks.inputs.sources import safe_url, scheme_of
from audiobatch.tasks.inputs.trust import (DATA_ROOTS_ENV, Trust, allowed_base_urls, data_roots, env_list,
                                           inside, refuse_widening, widened)
from audiobatch.tasks.options import JobOptions
from audiobatch.tasks.run.context import RunOptions

_FROM_INBOX: ContextVar[bool] = ContextVar("audiobatch_manifest_from_inbox", default=False)


@dataclass(frozen=True)
class Origin:
    operator_run: bool
    own_deployment: bool = False  # this flow run itself was created from a deployment
    stored: dict[str, Any] = field(default_factory=dict)  # that deployment's own parameters

    @property
    def base_url(self) -> str | None:
        return ((self.stored.get("options") or {}).get("model") or {}).get("base_url")


async def run_origin() -> Origin:
    """Whether the operator started this flow run here, or a deployment (through a worker)."""
    from prefect import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    own = context.flow_run.deployment_id if context is not None else None
    started_for = os.environ.get("PREFECT__FLOW_RUN_ID")  # set by workers for the run they start
    if own is None and not started_for:
        return Origin(operator_run=True)
    async with get_client() as client:
        deployment_id = own or (await client.read_flow_run(started_for)).deployment_id
        if deployment_id is None:  # a worker ran a flow run that no deployment made: nothing is the operator's
            return Origin(operator_run=False)
        stored = (await client.read_deployment(deployment_id)).parameters or {}
    return Origin(operator_run=False, own_deployment=own is not None, stored=dict(stored))


def check_parameters(origin: Origin, options: JobOptions, out: str) -> None:
    """A deployment run may not go beyond its deployment's parameters (tasks/trust.widened)."""
    if not origin.own_deployment:
        return
    operator = type(options).model_validate(origin.stored.get("options") or {})
    problems = widened(options.flat(), operator.flat())
    operator_out = origin.stored.get("out") or "outputs"
    if not inside(out, operator_out):
        problems.append(f"out {safe_url(out)} is outside the deployment's {safe_url(operator_out)}")
    refuse_widening(problems)


def _trust(origin: Origin, local_roots: tuple[str, ...] | None) -> Trust:
    return Trust(operator_run=origin.operator_run, local_roots=local_roots,
                 base_urls=allowed_base_urls(operator_run=origin.operator_run,
                                             deployment_base_url=origin.base_url))


# --- the three kinds of flow ----------------------------------------------------------------------

async def manifest_trust(run: RunOptions, options: JobOptions) -> Trust:
    origin = await run_origin()
    check_parameters(origin, options, run.out)
    from_inbox = _FROM_INBOX.get()
    if from_inbox or not origin.operator_run:
        if not from_inbox:
            _check_submitted_manifest(run.manifest)
        folder = manifest_base_dir(run.manifest)
        return _trust(origin, data_roots(str(folder) if scheme_of(str(folder)) == "file" else None))
    return _trust(origin, None)


def _check_submitted_manifest(manifest: str) -> None:
    """The manifest of a run started by others: read from the shared disk or object store only."""
    if scheme_of(manifest) in ("http", "https"):
        raise ConfigError(f"manifest {safe_url(manifest)}: a run started through the Prefect API "
                          "reads its manifest from a shared disk or an object store (s3://...), "
                          "not over http(s).")
    roots = data_roots(None)
    if scheme_of(manifest) == "file" and env_list(DATA_ROOTS_ENV) and not any(
            inside(str(local_path(manifest)), root) for root in roots):
        raise ConfigError(f"manifest {manifest} is outside the folders this worker reads "
                          f"({DATA_ROOTS_ENV}: {', '.join(roots)}): put it inside one of them.")


async def feed_trust(options: JobOptions, feed: str, out: str) -> tuple[Trust, bool]:
    """(the trust of the feed's items, whether the feed URL itself is the operator's)."""
    origin = await run_origin()
    check_parameters(origin, options, out)
    stored_feed = origin.stored.get("feed")
    operator_feed = origin.operator_run or (stored_feed is not None and feed == stored_feed)
    return _trust(origin, ()), operator_feed


async def check_inbox(options: JobOptions, inbox: str, out: str) -> None:
    """An inbox deployment run works on its deployment's inbox, within its parameters."""
    origin = await run_origin()
    check_parameters(origin, options, out)
    stored = origin.stored.get("inbox")
    if origin.own_deployment and stored is not None and inbox.rstrip("/") != stored.rstrip("/"):
        raise ConfigError(f"inbox {safe_url(inbox)} is not the deployment's inbox "
                          f"({safe_url(stored)}): a deployment run works on its own inbox.")


@contextmanager
def manifests_from_inbox() -> Iterator[None]:
    """Manifest flows run inside this treat their manifest as someone else's (data roots)."""
    token = _FROM_INBOX.set(True)
    try:
        yield
    finally:
        _FROM_INBOX.reset(token)
