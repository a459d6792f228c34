"""`audiobatch submit`: check a manifest here, then hand it to a deployed flow on a Prefect server.

The manifest is validated locally first (the same reader the flow uses, plus a check that
local audio files exist), so a typo costs seconds rather than a worker round trip; `strict`
refuses to submit while any row is bad. What the deployment's worker will refuse is said before
anything is submitted too, by the rules the worker applies (flows/guard.py): options beyond the
deployment's (nothing is submitted then), the manifest outside the deployment's data roots
(nothing is submitted), and each row whose file is outside them or whose URL scheme the
deployment does not enable (listed; with `strict`, nothing is submitted). Then a flow run of
the deployment (`transcribe-manifest/audiobatch` or `narrate-manifest/audiobatch` by default)
is created on the server at PREFECT_API_URL; a worker of that deployment's pool picks it up.
The worker reads the manifest itself: it must be an absolute path the worker shares, or an
fsspec URL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from audiobatch.flows.deploy import DEFAULT_NAME, FLOWS, is_remote, require_api_url, worker_parameters
from audiobatch.flows.guard import check_submitted_manifest
from audiobatch.tasks.errors import ConfigError, InputError
from audiobatch.tasks.inputs.locations import CHAINED, inside, scheme_of
from audiobatch.tasks.inputs.manifest import TRANSCRIBE, Item, read_manifest
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.inputs.trust import DATA_ROOTS_ENV, real_roots, widened
from audiobatch.tasks.options import JobOptions, deep_merge
from audiobatch.tasks.reports.progress import rows_text
from audiobatch.tasks.reports.report import plain_text

SHOWN_PROBLEMS = 20


@dataclass
class Submitted:
    flow_run_id: str
    deployment: str
    ui_url: str | None
    rows: int
    bad_rows: list[str]


@dataclass(frozen=True)
class WorkerRules:
    """What the deployment's worker accepts of a submitted run, as far as the deployment says."""

    roots: tuple[str, ...] | None  # its data roots; None: it names none (the worker's environment decides)
    schemes: frozenset[str]  # URL schemes its rows may use

    @classmethod
    def of(cls, options: JobOptions) -> WorkerRules:
        roots = real_roots(options.throughput.data_roots)
        return cls(roots or None, frozenset({"file", "http", "https", *options.throughput.allow_schemes}))


def manifest_problems(manifest: str, kind: str, rules: WorkerRules | None = None) -> tuple[int, list[str]]:
    """(rows, one line per bad row): the flow's own checks, missing local files, and the rows
    the deployment's worker will refuse (`rules`)."""
    items = read_manifest(manifest, kind)
    problems = [item.error for item in items if item.error]
    if kind == TRANSCRIBE:
        problems += [f"row {item.row}: audio file not found: {item.source}" for item in items
                     if not item.error and scheme_of(item.source) == "file"
                     and not os.path.isfile(item.source)]
    if rules is not None:
        problems += [refused for item in items if not item.error and (refused := refused_row(item, rules))]
    return len(items), problems


def refused_row(item: Item, rules: WorkerRules) -> str | None:
    """Why the worker will refuse this row's file or URL (the checks of tasks/inputs/sources.fetch)."""
    if item.source == "inline":
        return None
    scheme, shown = scheme_of(item.source), safe_url(item.source)
    if scheme == CHAINED:
        return f"row {item.row}: {shown} is a chained fsspec URL: the worker refuses it"
    if scheme not in rules.schemes:
        return f"row {item.row}: the deployment does not enable {scheme}:// ({shown}): the worker will refuse it"
    if scheme == "file" and rules.roots is not None and not any(inside(item.source, r) for r in rules.roots):
        return (f"row {item.row}: {shown} is outside the deployment's data roots "
                f"({', '.join(rules.roots)}): the worker will refuse it")
    return None


def report_problems(manifest: str, rows: int, problems: list[str]) -> None:
    if not problems:
        print(f"manifest {safe_url(manifest)}: {rows} rows, all valid")
        return
    print(f"manifest {safe_url(manifest)}: {len(problems)} of {rows} rows have problems:")
    for line in problems[:SHOWN_PROBLEMS]:
        print(f"  {line}")
    if len(problems) > SHOWN_PROBLEMS:
        print(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")


def check_against_deployment(kind: str, manifest: str, merged: dict[str, Any], stored: dict[str, Any],
                             full_name: str) -> WorkerRules:
    """Refuse here what the deployment's worker would refuse of the whole run (its options, its
    manifest), so nothing is submitted; the rules for its rows."""
    model = FLOWS[kind].options
    submitted, deployment = (model.model_validate(merged.get("options") or {}),
                             model.model_validate(stored.get("options") or {}))
    rules = WorkerRules.of(deployment)
    problems = widened(submitted, deployment, operator_roots=rules.roots or ())
    if problems:
        raise ConfigError(f"not submitted: {full_name} would refuse this run, whose options go "
                          f"beyond the deployment's: {'; '.join(problems)}. Lower them, or ask the "
                          "operator to change the deployment.")
    if rules.roots is None:
        if scheme_of(manifest) == "file":
            print(f"note: {full_name} names no data roots (deploy --data-root): its worker reads "
                  f"local files of submitted runs only inside its {DATA_ROOTS_ENV}, and none if "
                  "that is unset")
        return rules
    try:
        check_submitted_manifest(manifest, rules.roots, submitted.throughput.allow_schemes)
    except ConfigError as error:
        raise ConfigError(f"not submitted: {error}") from None
    return rules


def flow_run_link(flow_run_id: str) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def submit_manifest(manifest: str, kind: str, parameters: dict[str, Any], *,
                    deployment: str = DEFAULT_NAME, strict: bool = False) -> Submitted:
    """Validate `manifest`, then create a flow run of `<kind flow>/<deployment>`."""
    api_url = require_api_url()
    full_name = f"{FLOWS[kind].name}/{deployment}"
    merged, rows, problems = checked_parameters(manifest, kind, parameters, strict, api_url, full_name)
    flow_run = _create_flow_run(full_name, merged)
    return Submitted(str(flow_run.id), full_name, flow_run_link(str(flow_run.id)), rows, problems)


def checked_parameters(manifest: str, kind: str, parameters: dict[str, Any], strict: bool,
                       api_url: str, full_name: str) -> tuple[dict[str, Any], int, list[str]]:
    """The run's parameters as the worker will read them (the deployment's, with the typed ones
    on top), after checking them and the manifest here against the deployment."""
    parameters = worker_parameters({**parameters, "manifest": manifest}, is_remote(api_url))
    stored = _stored_parameters(full_name, api_url)
    merged = deep_merge(stored, parameters)
    rules = check_against_deployment(kind, parameters["manifest"], merged, stored, full_name)
    rows, problems = manifest_problems(parameters["manifest"], kind, rules)
    report_problems(parameters["manifest"], rows, problems)
    if problems and strict:
        raise InputError(f"--strict: not submitted, {len(problems)} row(s) of "
                         f"{safe_url(manifest)} need fixing (listed above).")
    return merged, rows, problems


def submit_sharded_and_wait(manifest: str, kind: str, parameters: dict[str, Any], *,
                            deployment: str = DEFAULT_NAME, strict: bool = False) -> int:
    """`submit --shards K --wait`: this process is the parent (flows/shards.py); its shards run
    on the deployment's workers. Returns the exit code of a run."""
    import asyncio

    from audiobatch.flows.common import as_summary, summary_of

    api_url = require_api_url()
    full_name = f"{FLOWS[kind].name}/{deployment}"
    merged, _, _ = checked_parameters(manifest, kind, parameters, strict, api_url, full_name)
    state = asyncio.run(submission_flow()(deployment=full_name, parameters=merged, kind=kind,
                                          return_state=True))
    summary = asyncio.run(summary_of(state))
    print(f"\naudiobatch {kind} finished\n{as_summary(summary).text()}", flush=True)
    return 0 if summary["ok"] == summary["items"] else 1


def _deployment_parameters(full_name: str) -> dict[str, Any]:
    """The deployment's own parameters: Prefect replaces a whole `options` group given with a
    run, so the submitted options are merged into the deployment's, group by group."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_deployment_by_name(full_name).parameters or {})


def _create_flow_run(full_name: str, parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(full_name, parameters=parameters, timeout=0)


def _stored_parameters(full_name: str, api_url: str) -> dict[str, Any]:
    import httpx
    from prefect.exceptions import ObjectNotFound

    kind = next(k for k, ref in FLOWS.items() if full_name.startswith(f"{ref.name}/"))
    try:
        return _deployment_parameters(full_name)
    except ObjectNotFound:
        raise ConfigError(
            f"no deployment {full_name} on the Prefect server at {api_url}: create it with "
            f"`audiobatch deploy {kind} --out /shared/outputs` (see `prefect deployment ls`), or "
            "name yours with --deployment.") from None
    except httpx.TransportError as exc:
        raise ConfigError(f"cannot reach the Prefect server at {api_url} ({type(exc).__name__}): "
                          "is `prefect server start` running, and is PREFECT_API_URL right?") from None


def wait_for_run(flow_run_id: str, kind: str, poll_s: float = 2.0) -> int:
    """Wait until the submitted run is final, then print its summary as a local run prints it
    (read from the run's summary artifact); the exit code of a run (0 every item ok, 1 some
    failed or were skipped, or the run itself failed). Ctrl-C stops waiting, not the run."""
    import time

    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            while (run := client.read_flow_run(flow_run_id)).state is None or not run.state.is_final():
                time.sleep(poll_s)
    except KeyboardInterrupt:
        print(f"\nstopped waiting. Flow run {flow_run_id} goes on on the worker; cancel it with "
              f"`audiobatch cancel {flow_run_id}` (or `prefect flow-run cancel {flow_run_id}`).", flush=True)
        return 130
    rows = _summary_rows(flow_run_id, kind)
    print(f"\n{run.state.name}: {run.state.message or ''}".rstrip(": "), flush=True)
    if rows:
        print(rows_text(rows), flush=True)
    return 0 if run.state.is_completed() else 1


def _summary_rows(flow_run_id: str, kind: str) -> list[dict[str, Any]]:
    """The summary table the run published (none when it ended before its summary)."""
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=[f"{kind}-summary"])))
    if not artifacts:
        return []
    data = artifacts[0].data
    rows = json.loads(data) if isinstance(data, str) else list(data)
    return [{key: plain_text(value) for key, value in row.items()} for row in rows]  # cells are Markdown


def cancel_run(flow_run_id: str) -> str:
    """Ask the server to cancel a flow run (its worker stops the run's process); its state before."""
    import uuid

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelling

    require_api_url()
    try:
        run_uuid = uuid.UUID(flow_run_id)
    except ValueError:
        raise InputError(f"{flow_run_id!r} is not a flow run id: give the id `submit` printed "
                         "(see `prefect flow-run ls`).") from None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_uuid)
        except ObjectNotFound:
            raise InputError(f"no flow run {flow_run_id} on this Prefect server (see `prefect flow-run ls`).") from None
        if run.state is not None and run.state.is_final():
            return run.state.name
        client.set_flow_run_state(run_uuid, Cancelling(message="cancelled with audiobatch cancel"))
        return run.state.name if run.state else "unknown"


def submission_flow() -> Any:
    """`audiobatch submit --shards K --wait`: the parent runs in the submitting process (it is
    the one waiting) as a flow run of its own; the shards run on the deployment's workers."""
    from audiobatch.flows.flow_class import audiobatch_flow

    @audiobatch_flow(name="audiobatch-submission", log_prints=True)
    async def submission(deployment: str, parameters: dict, kind: str) -> Any:
        from prefect import get_client

        from audiobatch.flows.common import run_state
        from audiobatch.flows.shards import shard_and_wait
        from audiobatch.tasks.run.context import RunOptions

        options = RunOptions.from_job(kind, parameters["manifest"], parameters.get("out", "outputs"),
                                      FLOWS[kind].options.model_validate(parameters.get("options", {})))
        async with get_client() as client:
            deployment_id = (await client.read_deployment_by_name(deployment)).id
        items = read_manifest(options.manifest, kind)
        return run_state(await shard_and_wait(options, items, deployment_id, parameters))

    return submission
