"""The job subcommands (transcribe, narrate, estimate, serve, demo) and how a job's flow runs
from the command line: the key from the environment, the Prefect API (configured, or the local
background server), the flow, its summary and the exit code.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from audiobatch.flows.cli_args import (add_economy_args, add_model_args, add_narration_args, add_run_args,
                                       add_transcription_args, flow_kwargs)
from audiobatch.tasks.errors import register_secret
from audiobatch.tasks.inputs.manifest import NARRATE, TRANSCRIBE
from audiobatch.tasks.options import JobOptions, NarrateOptions, TranscribeOptions

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
INTERRUPTED = "interrupted; finished items are kept: run the same command again to resume"
INTERRUPT_REPORTED = threading.Event()  # said once, by whoever saw the Ctrl-C first
EXIT_AFTER_S = 2.0  # after Ctrl-C: time for Prefect to mark the run Crashed, then exit regardless


def add_parsers(sub: Any) -> None:
    for add in (_transcribe_parser, _narrate_parser, _estimate_parser, _serve_parser, _demo_parser):
        add(sub)


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
    from prefect.settings import (PREFECT_API_TLS_INSECURE_SKIP_VERIFY, PREFECT_API_URL, PREFECT_UI_URL,
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
        # It serves no UI: no "View at http://127.0.0.1:.../runs/..." link that would answer 404
        # (the summary says `audiobatch runs OUT RUN_ID` instead).
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_UI_URL: "",
                                                        PREFECT_API_TLS_INSECURE_SKIP_VERIFY: plain_http}))
        yield


def run_flow(args: argparse.Namespace, load: Callable[[], Any], kwargs: dict[str, Any]) -> int:
    """Run a job's flow (after its checks passed), print its summary, return the exit code."""
    flow = load()  # imports Prefect: only now that the job is known to be runnable
    from audiobatch.flows.common import summary_of

    async def call() -> dict:
        return await summary_of(await flow(**kwargs, return_state=True))

    with prefect_api(), quiet_interrupt():
        summary = asyncio.run(call())
    print_summary(args, summary)
    return summary_exit(summary)


@contextlib.contextmanager
def quiet_interrupt() -> Iterator[None]:
    """Ctrl-C during a run: one line, and the process is gone within EXIT_AFTER_S.

    What is done stays done whenever the process stops (rows are staged as items finish,
    answers cached before they count: the crash tests SIGKILL runs), so there is nothing to
    wait for but Prefect marking the run Crashed, which it may do in that time. Its own report
    of the interruption (six "Crash detected!" lines with tracebacks) is silenced. A second
    Ctrl-C exits at once."""
    def on_interrupt(signum: int, frame: Any) -> None:
        if INTERRUPT_REPORTED.is_set():
            os._exit(INTERRUPTED_EXIT)
        print(f"audiobatch: {INTERRUPTED}", file=sys.stderr, flush=True)  # now: the exit may not wait for `main`
        INTERRUPT_REPORTED.set()
        silence_logs()
        deadline = threading.Timer(EXIT_AFTER_S, os._exit, args=(INTERRUPTED_EXIT,))
        deadline.daemon = True  # never what keeps the process alive
        deadline.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def silence_logs() -> None:
    """No more log lines on the terminal from Prefect or audiobatch (the API still has them)."""
    for name in [*logging.root.manager.loggerDict, "prefect", "audiobatch"]:
        if name.startswith(("prefect", "audiobatch")):
            logging.getLogger(name).disabled = True


def print_summary(args: argparse.Namespace, summary: dict) -> None:
    from audiobatch.flows.common import as_summary

    if getattr(args, "json", False):
        print(json.dumps(summary, default=str, indent=2))
    elif summary.get("run_id"):
        print(f"\naudiobatch {summary.get('job') or summary['kind']} finished\n{as_summary(summary).text()}",
              flush=True)
    elif summary.get("feed"):  # a podcast run that found nothing new
        feed = summary["feed"]
        print(f"nothing new in '{feed['title']}': {feed['episodes']} episodes, {feed['done']} done before",
              flush=True)


def prepare_manifest_job(args: argparse.Namespace, kind: str,
                         options_model: type[JobOptions]) -> dict[str, Any]:
    """Check a manifest job completely before Prefect starts; the flow's keyword arguments."""
    from audiobatch.flows.runtime import preflight, warm_up
    from audiobatch.tasks.run.context import RunOptions

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
