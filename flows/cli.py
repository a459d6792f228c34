"""The `audiobatch` command line. Each job subcommand runs the matching Prefect flow.

Everything a user can get wrong (flags, values, the manifest, prices) is checked before Prefect
is imported or a server started: such mistakes exit 2 with one line naming the file, row or
flag and the fix. Runs then use the configured Prefect API, or a local one that audiobatch
keeps in the background (flows/prefect_server.py).

This module registers the subcommands and runs their flows; the flags they share, and how
parsed flags become a flow's parameters and options, are in flows/cli_args.py.
"""
from __future__ import annotations

import os

# No telemetry from a command-line run, whoever starts it (before anything imports Prefect).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server takes ~15 s to start here; Prefect gives up after 20 s by default,
# which a busy machine overruns ("Timed out while attempting to connect to ephemeral ...").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse  # noqa: E402
import atexit  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from audiobatch import __version__  # noqa: E402
from audiobatch.flows.cli_args import (Parser, UsageError, add_economy_args, add_model_args,  # noqa: E402
                                       add_narration_args, add_run_args, add_transcription_args,
                                       flow_kwargs, unrecognized)
from audiobatch.tasks.errors import AudiobatchError, redact, register_secret  # noqa: E402
from audiobatch.tasks.manifest import NARRATE, TRANSCRIBE  # noqa: E402
from audiobatch.tasks.options import JobOptions, NarrateOptions, TranscribeOptions  # noqa: E402


def _transcribe_parser(sub: Any) -> None:
    parser = sub.add_parser("transcribe", help="transcribe a manifest of audio files")
    add_run_args(parser)
    add_transcription_args(parser)
    parser.set_defaults(handler=run_transcribe)


def _narrate_parser(sub: Any) -> None:
    parser = sub.add_parser("narrate", help="narrate a manifest of texts to audio files")
    add_run_args(parser)
    parser.set_defaults(handler=run_narrate)
    add_narration_args(parser)


def _serve_parser(sub: Any) -> None:
    from audiobatch.localmodel.server import add_serve_args

    parser = sub.add_parser("serve", help="serve the embedded model over HTTP (OpenAI-compatible)")
    add_serve_args(parser)
    parser.set_defaults(handler=run_serve)


def _estimate_parser(sub: Any) -> None:
    parser = sub.add_parser("estimate", help="expected requests, tokens and dollars; sends nothing")
    parser.add_argument("manifest", help="CSV or Parquet manifest")
    parser.add_argument("--kind", choices=["transcribe", "narrate"],
                        help="default: from the columns (audio -> transcribe)")
    add_model_args(parser)
    parser.add_argument("--max-audio-tokens", type=int, help="per-request audio token budget")
    parser.add_argument("--language", help="transcription language")
    parser.add_argument("--prompt", help="transcription prompt")
    parser.add_argument("--instructions", help="narration instructions")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON on stdout")
    add_economy_args(parser.add_argument_group("economy (transcription)"))
    parser.set_defaults(handler=run_estimate)


def _demo_parser(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the example jobs on the embedded model")
    parser.add_argument("--out", default="outputs/demo", help="output root")
    parser.set_defaults(handler=run_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="audiobatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"audiobatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for add in (_transcribe_parser, _narrate_parser, _estimate_parser, _serve_parser, _demo_parser):
        add(sub)
    from audiobatch.flows import cli_ops, cli_runs  # podcast, deploy, submit, inbox; runs, report

    cli_ops.add_parsers(sub)
    cli_runs.add_parsers(sub)
    return parser


def use_api_key(args: argparse.Namespace) -> None:
    """The key travels by environment only: never a flow parameter (Prefect stores those)."""
    key = os.environ.get(args.api_key_env)
    if key:
        register_secret(key)
        os.environ["OPENAI_API_KEY"] = key


# --- running a flow from the command line ----------------------------------------------------

@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The configured Prefect API, else the local background server (or, with
    AUDIOBATCH_PREFECT_SERVER=temporary, one that lives and dies with this process)."""
    from prefect.settings import (PREFECT_API_TLS_INSECURE_SKIP_VERIFY, PREFECT_API_URL,
                                  get_current_settings, temporary_settings)

    from audiobatch.flows import prefect_server

    if get_current_settings().api.url:
        yield
        return
    with contextlib.ExitStack() as stack:
        if os.environ.get("AUDIOBATCH_PREFECT_SERVER", "background") == "temporary":
            server = stack.enter_context(prefect_server.temporary())
        else:
            server, started = prefect_server.ensure_background()
            if started:
                print(f"audiobatch: started a local Prefect server at {server.url.removesuffix('/api')} "
                      "(kept for later runs; `audiobatch server stop` stops it)", file=sys.stderr)
        # Our server speaks plain http on 127.0.0.1, where no certificate is ever checked, so
        # Prefect's clients need not each load the CA store (5 of a run's 7 loads, ~25 ms each).
        plain_http = server.url.startswith("http://")
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.url,
                                                        PREFECT_API_TLS_INSECURE_SKIP_VERIFY: plain_http}))
        yield


def run_flow(args: argparse.Namespace, load: Callable[[], Any], kwargs: dict[str, Any]) -> int:
    """Run a job's flow (after its checks passed), print its summary, return the exit code."""
    flow = load()  # imports Prefect: only now that the job is known to be runnable
    from audiobatch.flows.common import summary_of

    async def call() -> dict:
        return await summary_of(await flow(**kwargs, return_state=True))

    with prefect_api():
        summary = asyncio.run(call())
    print_summary(args, summary)
    return summary_exit(summary)


def print_summary(args: argparse.Namespace, summary: dict) -> None:
    from audiobatch.flows.common import as_summary

    if getattr(args, "json", False):
        print(json.dumps(summary, default=str, indent=2))
    elif summary.get("run_id"):
        print(f"\naudiobatch {summary['kind']} finished\n{as_summary(summary).text()}", flush=True)


def prepare_manifest_job(args: argparse.Namespace, kind: str,
                         options_model: type[JobOptions]) -> dict[str, Any]:
    """Check a manifest job completely before Prefect starts; the flow's keyword arguments."""
    from audiobatch.flows.runtime import preflight, warm_up
    from audiobatch.tasks.runs import RunOptions

    use_api_key(args)
    kwargs = flow_kwargs(args, options_model)
    run = RunOptions.from_job(kind, kwargs["manifest"], kwargs["out"], kwargs["options"])
    preflight(run)
    warm_up(run)
    return kwargs


def run_transcribe(args: argparse.Namespace) -> int:
    kwargs = prepare_manifest_job(args, TRANSCRIBE, TranscribeOptions)

    def load() -> Any:
        from audiobatch.flows.transcribe import transcribe_manifest
        return transcribe_manifest

    return run_flow(args, load, kwargs)


def run_narrate(args: argparse.Namespace) -> int:
    kwargs = prepare_manifest_job(args, NARRATE, NarrateOptions)

    def load() -> Any:
        from audiobatch.flows.narrate import narrate_manifest
        return narrate_manifest

    return run_flow(args, load, kwargs)


def run_serve(args: argparse.Namespace) -> int:
    from audiobatch.localmodel.server import serve_from_args

    serve_from_args(args)
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    from audiobatch.flows.estimate import run_estimate as estimate

    use_api_key(args)
    return estimate(args)


def run_demo(args: argparse.Namespace) -> int:
    from audiobatch.flows.demo import demo

    with prefect_api():
        return demo(args.out)


def summary_exit(summary: dict) -> int:
    """Exit 0 when every item is ok; 1 when some failed or were skipped (outputs are kept)."""
    return 0 if summary["ok"] == summary["items"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            unrecognized(args.cli_parser, extras)
        return args.handler(args)
    except SystemExit as exit_:  # argparse: --help, --version, usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    except UsageError as error:
        try:
            args.cli_parser.error(str(error))
        except SystemExit:
            return 2
    except AudiobatchError as error:
        print(f"audiobatch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audiobatch: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # a last line of defence: never print a key
        print(f"audiobatch: unexpected error: {redact(str(error))}", file=sys.stderr)
        return 3
    return 2


def run() -> NoReturn:
    """The `audiobatch` command: `main`, then `exit_quickly` with its code."""
    exit_quickly(main())


def exit_quickly(code: int) -> NoReturn:
    """Exit as Python does, minus tearing the interpreter down.

    Once a run is done, freeing Prefect's and the engines' modules object by object takes
    0.3-0.6 s of a one-clip job (measured: an exit after loading Whisper, 1.12 s against 0.50 s
    without the teardown). What a normal exit does before that teardown still happens, in
    order: threading's exit hooks (where Prefect drains its log and event workers to the API)
    and the joins of non-daemon threads, then atexit handlers, then the output is flushed."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
