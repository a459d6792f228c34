"""Prefect deployments of the audiobatch flows, for workers to run on a schedule or on demand.

`audiobatch deploy podcast|transcribe|narrate|inbox` registers a deployment on the Prefect
server named by PREFECT_API_URL: the flow (by module path, so any worker with audiobatch
installed can run it; no code upload), its cron schedule and time zone, its parameters (only
the options typed on the command line; the flow's defaults fill in the rest) and its work
pool, which is created as a `process` pool when missing. Podcast and inbox deployments run one
at a time (concurrency limit 1): a slow run and the next scheduled one never overlap.
`prefect.yaml` at the repository root describes the same deployments for `prefect deploy`.
"""
from __future__ import annotations

import importlib
import inspect
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.options import (InboxOptions, JobOptions, NarrateOptions, TranscribeOptions, deep_merge,
                                      flat_names, nested)

DEFAULT_POOL = "audiobatch"
DEFAULT_NAME = "audiobatch"  # the deployment `audiobatch submit` uses unless told otherwise
PATH_PARAMETERS = ("feed", "manifest", "inbox", "out")  # read or written by the worker (and profiles)
SCHEDULED_WITHIN_S = 15.0  # Prefect's scheduler takes up new deployments every 5 s
UPCOMING_SHOWN = 3
WORKER_SEEN_WITHIN_S = 120.0  # workers heartbeat every 30 s by default


@dataclass(frozen=True)
class FlowRef:
    module: str
    attribute: str
    name: str  # the Prefect flow name: deployments are "<flow name>/<deployment name>"
    options: type[JobOptions]  # the model of the flow's `options` parameter
    one_at_a_time: bool = False


FLOWS = {
    "podcast": FlowRef("audiobatch.flows.podcast", "transcribe_podcast", "transcribe-podcast",
                       TranscribeOptions, True),
    "transcribe": FlowRef("audiobatch.flows.transcribe", "transcribe_manifest",
                          "transcribe-manifest", TranscribeOptions),
    "narrate": FlowRef("audiobatch.flows.narrate", "narrate_manifest", "narrate-manifest",
                       NarrateOptions),
    "inbox": FlowRef("audiobatch.flows.inbox", "process_inbox", "audiobatch-inbox", InboxOptions, True),
}


@dataclass
class DeploymentSpec:
    kind: str  # a key of FLOWS
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    work_pool: str = DEFAULT_POOL

    @property
    def full_name(self) -> str:
        return f"{FLOWS[self.kind].name}/{self.name}"


def load_flow(kind: str) -> Any:
    ref = FLOWS[kind]
    return getattr(importlib.import_module(ref.module), ref.attribute)


# --- where the worker runs: API address and paths -------------------------------------------

def require_api_url() -> str:
    """The Prefect server's API; without one, a deployment would land on a throwaway server."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: start a server (`prefect server start`) and "
                          "run `export PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect "
                          "config set PREFECT_API_URL=...`), then try again.")
    return url


def is_remote(api_url: str) -> bool:
    """True unless the API is on this machine (then a worker here sees the same files)."""
    return (urlsplit(api_url).hostname or "") not in ("127.0.0.1", "localhost", "::1")


def worker_path(value: str, what: str, remote: bool) -> str:
    """`value` as a worker will read it: URLs as given, local paths made absolute.

    A worker resolves paths on its own machine, in its own working folder: a relative path
    cannot mean the same file there when the server is remote."""
    if "://" in value:
        return value
    if os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value)
    if remote:
        raise ConfigError(
            f"{what} '{value}' is a relative path, but the Prefect server is remote: the worker "
            "would look for it in its own working folder. Give an absolute path on a folder the "
            f"worker shares (e.g. /mnt/shared/{os.path.basename(value) or what}) or an fsspec URL "
            "(s3://bucket/..., gs://...).")
    return os.path.abspath(value)


def worker_parameters(parameters: dict[str, Any], remote: bool) -> dict[str, Any]:
    result = {name: worker_path(value, f"--{name}", remote)
              if name in PATH_PARAMETERS and isinstance(value, str) else value
              for name, value in parameters.items()}
    profiles = result.get("options", {}).get("model", {}).get("profiles")
    if profiles:
        result = deep_merge(result, {"options": {"model": {
            "profiles": worker_path(profiles, "--profiles", remote)}}})
    roots = result.get("options", {}).get("throughput", {}).get("data_roots")
    if roots:
        result = deep_merge(result, {"options": {"throughput": {
            "data_roots": [worker_path(root, "--data-root", remote) for root in roots]}}})
    return result


def flow_parameters(kind: str, top: dict[str, Any], flat: dict[str, Any],
                    flags: dict[str, str]) -> dict[str, Any]:
    """The parameters of a run or deployment: the flow's own, and only the typed options,
    nested as the flow's `options` model stores them. Refuses options the flow does not take
    (e.g. --voice for a transcription)."""
    model = FLOWS[kind].options
    accepted = set(inspect.signature(load_flow(kind).fn).parameters) | flat_names(model)
    unknown = [flags.get(name, name) for name in [*top, *flat] if name not in accepted]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not an option of the {FLOWS[kind].name} flow; "
                          f"see `audiobatch {kind} --help`.")
    model.from_flat(**flat)  # values the flow would refuse are refused here, before any run
    options = nested(model, flat)
    return {**top, "options": options} if options else dict(top)


# --- deployments ------------------------------------------------------------------------------

# What a flow run may set of its own process (job variables): only what audiobatch's shards set.
RUN_SETTABLE_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY",)


def closed_job_template() -> dict[str, Any]:
    """Prefect's `process` job template without what a flow run could set to change its own
    process: the command, the working folder and the environment (data roots, base URLs,
    LD_PRELOAD...) are the operator's, i.e. the worker's. The server refuses other job variables
    when a run is created; flows/guard.check_job_variables refuses them too, in pools made
    elsewhere (where the command, though, runs before any audiobatch code)."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    variables, configuration = template["variables"], template["job_configuration"]
    for name in ("command", "working_dir"):
        variables["properties"].pop(name, None)
        configuration.pop(name, None)
    variables["properties"]["env"] = {
        "title": "Environment Variables", "type": "object", "additionalProperties": False,
        "description": "Only what audiobatch sets on the runs it starts (shard heartbeats).",
        "properties": {name: {"type": ["string", "null"]} for name in RUN_SETTABLE_ENV}}
    variables["additionalProperties"] = False
    return template


def open_job_variables(template: dict[str, Any]) -> list[str]:
    """What a flow run of a pool with this job template may set of its own process."""
    properties = template.get("variables", {}).get("properties", {})
    names = [name for name in ("command", "working_dir") if name in properties]
    env = properties.get("env", {})
    if "env" in properties and (env.get("additionalProperties", True) is not False
                                or set(env.get("properties", {})) - set(RUN_SETTABLE_ENV)):
        names.append("env")
    if template.get("variables", {}).get("additionalProperties", True) is not False:
        names.append("any other variable")
    return names


def ensure_work_pool(name: str) -> bool:
    """Create a `process` work pool called `name` when there is none (with `closed_job_template`);
    True if created. An existing pool whose runs may set their own command or environment is
    kept, with a warning."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                   base_job_template=closed_job_template()))
            return True
    if open_variables := open_job_variables(pool.base_job_template or {}):
        print(f"warning: work pool '{name}' lets a flow run set its own {', '.join(open_variables)} "
              "(job variables): whoever may create flow runs could change what its process runs "
              "with. audiobatch refuses such runs once they start; to refuse them before, delete "
              f"the pool (`prefect work-pool delete {name}`) and deploy again.")
    return False


def _schedule(spec: DeploymentSpec) -> Any:
    from prefect.schedules import Cron

    try:
        return Cron(spec.cron, timezone=spec.timezone)
    except ValueError as exc:
        raise ConfigError(f"--cron {spec.cron!r} --timezone {spec.timezone!r}: {exc}. Write five "
                          "cron fields (e.g. '0 * * * *' for hourly) and an IANA time zone "
                          "(e.g. Europe/Berlin).") from None


def deploy(spec: DeploymentSpec) -> str:
    """Create or update the deployment; returns its id."""
    from prefect.flows import EntrypointType

    flow = load_flow(spec.kind)
    schedules = [_schedule(spec)] if spec.cron else []
    deployment = flow.to_deployment(
        spec.name, schedules=schedules, parameters=spec.parameters, work_pool_name=spec.work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,  # workers import it from the installed package
        concurrency_limit=1 if FLOWS[spec.kind].one_at_a_time else None,
        tags=["audiobatch", spec.kind])
    created = ensure_work_pool(spec.work_pool)
    if created:
        print(f"created work pool '{spec.work_pool}' (type process)")
    return str(deployment.apply())


def upcoming_runs(deployment_id: str, wait_s: float = SCHEDULED_WITHIN_S) -> list[datetime]:
    """The deployment's next scheduled runs, as the server's scheduler made them (it schedules a
    new or changed deployment within seconds); none after `wait_s`: no scheduler is running."""
    from prefect import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=UPCOMING_SHOWN)
            if runs or time.monotonic() > deadline:
                return [run.expected_start_time for run in runs if run.expected_start_time]
            time.sleep(0.5)


def workers_polling(pool: str, within_s: float = WORKER_SEEN_WITHIN_S) -> list[str]:
    """Names of the pool's workers that polled the server within the last `within_s`."""
    from prefect import get_client

    now = datetime.now(timezone.utc)
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(pool)
    return [worker.name for worker in workers if worker.last_heartbeat_time
            and (now - worker.last_heartbeat_time).total_seconds() <= within_s]


def after_deploy(spec: DeploymentSpec, deployment_id: str) -> str:
    """What the operator should know next: when it runs (read back from the server), and
    whether any worker is there to run it."""
    lines = []
    if spec.cron:
        runs = upcoming_runs(deployment_id)
        if runs:
            shown = ", ".join(f"{run.astimezone(ZoneInfo(spec.timezone)):%Y-%m-%d %H:%M %Z}" for run in runs)
            lines.append(f"next runs, scheduled by the server: {shown}")
        else:
            lines.append(f"warning: the server scheduled no run within {SCHEDULED_WITHIN_S:.0f} s: is its "
                         "scheduler service running? (`prefect server start` runs it; a server with "
                         "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=false, or audiobatch's own local "
                         "server, does not)")
    if not workers_polling(spec.work_pool):
        lines.append(f"warning: no worker has polled work pool '{spec.work_pool}' in the last "
                     f"{WORKER_SEEN_WITHIN_S / 60:.0f} minutes: nothing runs until one does "
                     f"(prefect worker start --pool {spec.work_pool})")
    return "\n".join(lines)


def _shown(value: Any) -> Any:
    """A parameter as printed: URLs with their credentials masked (private feeds)."""
    return safe_url(value) if isinstance(value, str) and "://" in value else value


def describe(spec: DeploymentSpec, deployment_id: str) -> str:
    when = (f"on cron '{spec.cron}' ({spec.timezone})" if spec.cron
            else "on demand (audiobatch submit, or `prefect deployment run`)")
    params = "\n".join(f"    {k} = {_shown(v)!r}" for k, v in sorted(spec.parameters.items())) or "    (none)"
    return (f"deployment {spec.full_name} ({deployment_id}) runs {when} in work pool "
            f"'{spec.work_pool}'\n  parameters:\n{params}\n"
            f"Start a worker where the paths above are readable (and OPENAI_API_KEY is set, for "
            f"a remote model):\n    prefect worker start --pool {spec.work_pool}")
