"""What a flow run may do, decided once at its start (docs/security.md; the rules are in
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
trusted (local files only inside the data roots the operator named: the deployment's, else the
worker's AUDIOBATCH_DATA_ROOTS, else none; the inbox's own folder for its manifests), whoever
started the run; a feed is never trusted (no local files, public addresses only), though the
feed URL itself is, when the operator typed it or it is the deployment's. Nor is a run's
request to change its own process (job variables): refused unless it is the deployment's.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.locations import CHAINED, inside, normal_location, scheme_of
from audiobatch.tasks.inputs.manifest import manifest_base_dir
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.inputs.trust import (DATA_ROOTS_ENV, Trust, allowed_base_urls, number_problem,
                                           operator_roots, real_roots, refuse_widening, widened)
from audiobatch.tasks.options import JobOptions
from audiobatch.tasks.run.context import RunOptions

DEFAULT_STALE_CLAIM_H = 24.0  # the inbox flow's own default (flows/inbox.py)
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
        started = await client.read_flow_run(started_for) if started_for else context.flow_run
        deployment_id = own or started.deployment_id
        if deployment_id is None:  # a worker ran a flow run that no deployment made: nothing is the operator's
            return Origin(operator_run=False)
        deployment = await client.read_deployment(deployment_id)
    check_job_variables(started.job_variables or {}, deployment.job_variables or {})
    return Origin(operator_run=False, own_deployment=own is not None, stored=dict(deployment.parameters or {}))


# What audiobatch itself sets on the runs it starts (flows/shards.py: shard heartbeats).
RUN_ENV_OF_OUR_OWN = frozenset({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY"})


def check_job_variables(run: Mapping[str, Any], deployment: Mapping[str, Any]) -> None:
    """A flow run may carry job variables of its own, which a process worker turns into the
    environment (and command) of the run's process: the operator's worker environment would
    then be the submitter's (data roots, base URLs, allowed hosts). Only the deployment's own
    values, and what audiobatch's shards set, are accepted."""
    own_env = deployment.get("env") or {}
    changed = sorted(f"env.{name}" for name, value in (run.get("env") or {}).items()
                     if name not in RUN_ENV_OF_OUR_OWN and own_env.get(name) != value)
    changed += sorted(name for name, value in run.items() if name != "env" and deployment.get(name) != value)
    if changed:
        raise ConfigError(f"this run sets job variables of its own ({', '.join(changed)}): they "
                          "would change the worker's environment or command, which are the "
                          "operator's. Submit it without job variables, or ask the operator to set "
                          "them on the deployment.")


def check_parameters(origin: Origin, options: JobOptions, out: str,
                     numbers: Mapping[str, tuple[float | None, float | None]] | None = None) -> None:
    """A deployment run may not go beyond its deployment's parameters (tasks/trust.widened):
    its options, its output root, and the flow's own `numbers` (name -> (value, the flow's
    default), e.g. a podcast's `limit`)."""
    if not origin.own_deployment:
        return
    operator = type(options).model_validate(origin.stored.get("options") or {})
    problems = widened(options, operator, operator_roots=operator_roots_of(origin))
    operator_out = origin.stored.get("out") or "outputs"
    if not inside(out, operator_out):
        problems.append(f"out {safe_url(out)} is outside the deployment's {safe_url(operator_out)}")
    for name, (value, default) in (numbers or {}).items():
        problem = number_problem(name, value, origin.stored.get(name, default))
        problems += [problem] if problem else []
    refuse_widening(problems)


def operator_roots_of(origin: Origin) -> tuple[str, ...]:
    """The data roots the operator named for runs of this deployment: its own (`deploy
    --data-root`), else the worker's AUDIOBATCH_DATA_ROOTS; none: none."""
    stored = ((origin.stored.get("options") or {}).get("throughput") or {}).get("data_roots") or ()
    return operator_roots(stored)


def _trust(origin: Origin, local_roots: tuple[str, ...] | None) -> Trust:
    return Trust(operator_run=origin.operator_run, local_roots=local_roots,
                 base_urls=allowed_base_urls(operator_run=origin.operator_run,
                                             deployment_base_url=origin.base_url))


# --- the three kinds of flow ----------------------------------------------------------------------

async def manifest_trust(run: RunOptions, options: JobOptions) -> Trust:
    """The operator's own manifest may name any local file; a manifest from the inbox or from a
    run started by others, only files inside the data roots the operator named."""
    origin = await run_origin()
    check_parameters(origin, options, run.out)
    from_inbox = _FROM_INBOX.get()
    if not from_inbox and origin.operator_run:
        return _trust(origin, None)
    # a run's own data roots count where they were checked against the operator's (its own
    # deployment's, or typed by the operator); a subflow goes by what the operator named
    checked = origin.own_deployment or origin.operator_run
    named = (real_roots(run.data_roots) if checked else ()) or operator_roots_of(origin)
    if from_inbox:  # the inbox's own folder is the operator's too
        inbox = manifest_base_dir(run.manifest)
        return _trust(origin, named or (real_roots([inbox]) if isinstance(inbox, Path) else ()))
    stored = origin.stored.get("manifest")
    if not named and stored and normal_location(stored) == normal_location(run.manifest):
        named = real_roots([manifest_base_dir(stored)])  # the manifest the deployment itself names
    check_submitted_manifest(run.manifest, named, run.allow_schemes)
    return _trust(origin, named)


def check_submitted_manifest(manifest: str, roots: tuple[str, ...], schemes: Iterable[str]) -> None:
    """The manifest of a run started by others: a local file inside the data roots, or a URL of
    a scheme the deployment enables (s3, ...); never http(s), a chained or another scheme."""
    scheme, shown = scheme_of(manifest), safe_url(manifest)
    if scheme == "file":
        if not roots:
            raise ConfigError(f"manifest {shown}: this run was started through the Prefect API and "
                              "the operator named no data roots, so it reads no local files. Ask "
                              "the operator for `audiobatch deploy ... --data-root DIR` (or "
                              f"{DATA_ROOTS_ENV} on the worker), or give an object-store URL.")
        if not any(inside(manifest, root) for root in roots):
            raise ConfigError(f"manifest {shown} is outside the folders this worker reads for runs "
                              f"started by others ({', '.join(roots)}): put it inside one of them.")
        return
    if scheme in ("http", "https") or scheme == CHAINED or scheme not in schemes:
        raise ConfigError(f"manifest {shown}: a run started through the Prefect API reads its "
                          "manifest from a data root on the worker's disk, or from an object store "
                          "the deployment enables (--allow-scheme s3); not from "
                          f"{'a chained URL' if scheme == CHAINED else f'{scheme}://'}.")


async def feed_trust(options: JobOptions, feed: str, out: str,
                     limit: int | None = None) -> tuple[Trust, bool]:
    """(the trust of the feed's items, whether the feed URL itself is the operator's)."""
    origin = await run_origin()
    check_parameters(origin, options, out, {"limit": (limit, None)})
    stored_feed = origin.stored.get("feed")
    operator_feed = origin.operator_run or (stored_feed is not None and feed == stored_feed)
    return _trust(origin, ()), operator_feed


async def check_inbox(options: JobOptions, inbox: str, out: str, stale_claim_h: float) -> None:
    """An inbox deployment run works on its deployment's inbox, within its parameters."""
    origin = await run_origin()
    check_parameters(origin, options, out, {"stale_claim_h": (stale_claim_h, DEFAULT_STALE_CLAIM_H)})
    stored = origin.stored.get("inbox")
    if origin.own_deployment and stored is not None and normal_location(inbox) != normal_location(stored):
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
