"""`audiobatch` subcommands for unattended operation: podcast, deploy, submit, cancel, inbox.

    audiobatch podcast FEED --out DIR [--limit N] [--since DATE] [--force] [options]
    audiobatch deploy podcast FEED --cron "0 * * * *" [--timezone TZ] [--work-pool NAME] [options]
    audiobatch deploy transcribe|narrate [--manifest M --cron ...] [options]
    audiobatch deploy inbox FOLDER [--cron "*/5 * * * *"] [options]
    audiobatch submit MANIFEST --kind transcribe|narrate [--deployment NAME] [--strict] [--wait] [options]
    audiobatch cancel FLOW_RUN_ID                         (a submitted run: its worker stops it)
    audiobatch inbox FOLDER --out DIR [options]           (one pass now, without a schedule)

For `deploy` and `submit`, only the options typed on the command line become flow-run
parameters: the rest keeps the deployment's (or the flow's) defaults.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from audiobatch.flows.cli_args import (add_data_root_arg, add_narration_args, add_run_args, add_transcription_args,
                                       build_options, flag_of, flow_kwargs, split_args)
from audiobatch.flows.cli_jobs import prefect_api, run_flow, use_api_key
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.options import InboxOptions, TranscribeOptions

SCHEDULE_DESTS = ("cron", "timezone", "work_pool", "name")
DEFAULT_CRON = {"podcast": "0 * * * *", "inbox": "*/5 * * * *"}
NOT_FOR_INBOX = ("run_id", "rerun_failed")  # one inbox run holds many manifests, many runs


def add_parsers(sub: Any) -> None:
    """Register the operations subcommands on the `audiobatch` parser (see flows/cli.py)."""
    _podcast_parser(sub)
    _deploy_parser(sub)
    _submit_parser(sub)
    _cancel_parser(sub)
    _inbox_parser(sub)


def add_episode_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("episodes")
    group.add_argument("--limit", type=int, help="at most N episodes per run (newest first)")
    group.add_argument("--since", metavar="YYYY-MM-DD", help="only episodes published since then")
    group.add_argument("--force", action="store_true",
                       help="transcribe even episodes whose feed ships a transcript")


def _podcast_parser(sub: Any) -> None:
    parser = sub.add_parser("podcast", help="transcribe a podcast feed's new episodes")
    parser.add_argument("feed", help="feed URL or file (RSS 2.0 or Atom)")
    add_episode_args(parser)
    add_run_args(parser, manifest=False)
    add_transcription_args(parser)
    parser.set_defaults(handler=run_podcast)


def _inbox_parser(sub: Any) -> None:
    parser = sub.add_parser("inbox", conflict_handler="resolve",
                            help="run every manifest waiting in a folder once (see deploy inbox)")
    parser.add_argument("inbox", help="folder or fsspec URL where manifests are dropped")
    _inbox_args(parser)
    parser.set_defaults(handler=run_inbox)


def _inbox_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stale-claim-h", type=float, default=24.0,
                        help="take over a claim this old (a crashed run) (default 24)")
    add_run_args(parser, manifest=False)
    add_data_root_arg(parser)
    add_transcription_args(parser)
    add_narration_args(parser)


def _schedule_args(parser: argparse.ArgumentParser, kind: str) -> None:
    group = parser.add_argument_group("deployment")
    cron = DEFAULT_CRON.get(kind)
    group.add_argument("--cron", default=cron, help="cron schedule, e.g. '0 * * * *' (hourly)" +
                       (f" (default '{cron}')" if cron else " (default: none, runs on demand)"))
    group.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default UTC)")
    group.add_argument("--work-pool", default="audiobatch",
                       help="work pool whose workers run it (created as a process pool if missing)")
    group.add_argument("--name", help="deployment name (default: audiobatch; podcasts: from the feed)")


def _deploy_parser(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="create a Prefect deployment (schedule, parameters, pool)")
    kinds = deploy.add_subparsers(dest="deploy_kind", required=True)
    podcast = kinds.add_parser("podcast", help="a feed, transcribed on a schedule")
    podcast.add_argument("feed", help="feed URL (or a file the worker can read)")
    add_episode_args(podcast)
    add_run_args(podcast, manifest=False)
    add_transcription_args(podcast)
    for kind, add_kind_args in (("transcribe", add_transcription_args), ("narrate", add_narration_args)):
        parser = kinds.add_parser(kind, help=f"the {kind}-manifest flow, for `audiobatch submit`")
        parser.add_argument("--manifest", help="a manifest to run on every schedule (optional)")
        add_run_args(parser, manifest=False)
        add_data_root_arg(parser)
        add_shards_arg(parser)
        add_kind_args(parser)
    inbox = kinds.add_parser("inbox", conflict_handler="resolve",
                             help="run every manifest dropped into a folder, on a schedule")
    inbox.add_argument("inbox", help="folder or fsspec URL the worker can read and write")
    _inbox_args(inbox)
    for kind, parser in kinds.choices.items():
        _schedule_args(parser, kind)
        typed_only(parser, keep=SCHEDULE_DESTS)
        parser.set_defaults(handler=run_deploy)


def _submit_parser(sub: Any) -> None:
    parser = sub.add_parser("submit", conflict_handler="resolve",
                            help="validate a manifest, then run it on a Prefect server's workers")
    parser.add_argument("manifest", help="absolute path the worker shares, or an fsspec URL")
    parser.add_argument("--kind", required=True, choices=["transcribe", "narrate"])
    parser.add_argument("--deployment", default="audiobatch",
                        help="deployment name (default audiobatch; see `audiobatch deploy`)")
    parser.add_argument("--strict", action="store_true", help="submit nothing if any row is bad")
    parser.add_argument("--wait", action="store_true",
                        help="wait until the run (and its shards) end; exit 0 all ok, 1 some not")
    add_run_args(parser, manifest=False)
    add_shards_arg(parser)
    add_transcription_args(parser)
    add_narration_args(parser)
    typed_only(parser, keep=("kind", "deployment", "strict", "wait"))
    parser.set_defaults(handler=run_submit)


def _cancel_parser(sub: Any) -> None:
    parser = sub.add_parser("cancel", help="cancel a submitted flow run (its worker stops it)")
    parser.add_argument("flow_run_id", help="the id `submit` printed")
    parser.set_defaults(handler=run_cancel)


def add_shards_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, metavar="K",
                        help="split the manifest into K flow runs of the deployment, run by any "
                             "workers of its pool (one parent run waits for them)")


def typed_only(parser: argparse.ArgumentParser, keep: tuple[str, ...] = ()) -> None:
    """Options absent from the command line stay absent from the namespace (not defaulted)."""
    for action in parser._actions:  # argparse has no public way to list them
        if action.option_strings and action.dest not in keep and action.dest != "help":
            action.default = argparse.SUPPRESS


def option_flags(parser_args: argparse.Namespace) -> dict[str, str]:
    """Parameter name -> how the user typed it, for messages."""
    return {name: flag_of(name) for name in vars(parser_args)}


# --- handlers --------------------------------------------------------------------------------

def run_podcast(args: argparse.Namespace) -> int:
    from audiobatch.flows.podcast import parse_since

    use_api_key(args)
    kwargs = flow_kwargs(args, TranscribeOptions)
    parse_since(args.since)  # usage errors before Prefect starts
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a number of episodes of at least 1")

    def load() -> Any:
        from audiobatch.flows.podcast import transcribe_podcast
        return transcribe_podcast

    return run_flow(args, load, kwargs)


def run_inbox(args: argparse.Namespace) -> int:
    use_api_key(args)
    top, flat = split_args(args)
    options = build_options(InboxOptions, _inbox_options(flat))
    from audiobatch.flows.inbox import process_inbox

    with prefect_api():
        result = asyncio.run(process_inbox(**top, options=options))
    if args.json:
        print(json.dumps(result, default=str, indent=2))
    return 0 if all(r["status"] == "done" for r in result["processed"]) else 1


def _inbox_options(params: dict[str, Any]) -> dict[str, Any]:
    for name in NOT_FOR_INBOX:
        if params.pop(name, None) is not None:
            raise ConfigError(f"--{name.replace('_', '-')} is not available for the inbox: each "
                              "manifest gets its own run (and resumes by itself)")
    return params


def run_deploy(args: argparse.Namespace) -> int:
    from audiobatch.flows.deploy import DeploymentSpec, after_deploy, deploy, describe, flow_parameters, is_remote
    from audiobatch.flows.deploy import require_api_url, worker_parameters
    from audiobatch.tasks.podcast.feeds import feed_key

    kind = args.deploy_kind
    top, flat = split_args(args)
    flat = {k: v for k, v in flat.items() if k not in (*SCHEDULE_DESTS, "deploy_kind")}
    if kind == "inbox":
        flat = _inbox_options(flat)
    params = flow_parameters(kind, top, flat, option_flags(args))
    remote = is_remote(require_api_url())
    if "out" not in params:  # a worker runs in a temporary folder: "outputs" there would vanish
        if remote:
            raise ConfigError("give --out: an absolute folder that the worker can write to (on a "
                              "shared disk) or an fsspec URL such as s3://bucket/audiobatch")
        params["out"] = "outputs"  # made absolute below
    params = worker_parameters(params, remote)
    default_name = f"podcast-{feed_key(params['feed'])}" if kind == "podcast" else "audiobatch"
    spec = DeploymentSpec(kind=kind, name=args.name or default_name, parameters=params,
                          cron=args.cron or None, timezone=args.timezone, work_pool=args.work_pool)
    deployment_id = deploy(spec)
    print(describe(spec, deployment_id), flush=True)
    print(after_deploy(spec, deployment_id))
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from audiobatch.flows.deploy import flow_parameters
    from audiobatch.flows.submit import submit_manifest

    top, flat = split_args(args)
    flat = {k: v for k, v in flat.items() if k not in ("kind", "deployment", "strict", "wait")}
    top.pop("manifest")
    params = flow_parameters(args.kind, top, flat, option_flags(args))
    shards = getattr(args, "shards", None) or 1
    if args.wait and shards > 1:  # this process is the parent; the shards go to the workers
        from audiobatch.flows.submit import submit_sharded_and_wait

        return submit_sharded_and_wait(args.manifest, args.kind, params, deployment=args.deployment,
                                       strict=args.strict)
    submitted = submit_manifest(args.manifest, args.kind, params, deployment=args.deployment,
                                strict=args.strict)
    print(f"submitted {submitted.rows} rows to {submitted.deployment}"
          f"{f' in {shards} shards' if shards > 1 else ''}\nflow run: {submitted.flow_run_id}", flush=True)
    if submitted.ui_url:
        print(f"watch it: {submitted.ui_url}", flush=True)
    if not args.wait:
        return 0
    from audiobatch.flows.submit import wait_for_run

    return wait_for_run(submitted.flow_run_id, args.kind)


def run_cancel(args: argparse.Namespace) -> int:
    from audiobatch.flows.submit import cancel_run

    before = cancel_run(args.flow_run_id)
    if before in ("Completed", "Failed", "Crashed", "Cancelled"):
        print(f"flow run {args.flow_run_id} had already ended ({before}): nothing to cancel")
        return 1
    print(f"cancelling flow run {args.flow_run_id} (was {before}): its worker stops it; finished "
          "items are kept, and submitting the same manifest again resumes the rest")
    return 0
