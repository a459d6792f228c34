"""The `audiobatch` command line. Each job subcommand runs the matching Prefect flow.

Everything a user can get wrong (flags, values, the manifest, prices) is checked before Prefect
is imported or a server started: such mistakes exit 2 with one line naming the file, row or
flag and the fix. Runs then use the configured Prefect API, or a local one that audiobatch
keeps in the background (flows/prefect_server.py).

This module assembles the subcommands and handles what any of them raises. The subcommands
live by theme: flows/cli_jobs.py (the jobs, and how a job's flow is run), flows/cli_ops.py
(unattended operation), flows/cli_runs.py (past runs, the server, completion); the flags they
share, and how parsed flags become a flow's parameters and options, are in flows/cli_args.py.
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
import contextlib  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import NoReturn  # noqa: E402

from audiobatch import __version__  # noqa: E402
from audiobatch.flows import cli_jobs, cli_ops, cli_runs  # noqa: E402
from audiobatch.flows.cli_args import Parser, UsageError, unrecognized  # noqa: E402
from audiobatch.tasks.errors import AudiobatchError, redact  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="audiobatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"audiobatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    cli_jobs.add_parsers(sub)  # transcribe, narrate, estimate, serve, demo
    cli_ops.add_parsers(sub)  # podcast, deploy, submit, inbox
    cli_runs.add_parsers(sub)  # runs, report, server, completion
    parser.set_defaults(root_parser=parser)  # `completion` describes the whole command
    return parser


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
        if not cli_jobs.INTERRUPT_REPORTED.is_set():
            print(f"audiobatch: {cli_jobs.INTERRUPTED}", file=sys.stderr)
        return cli_jobs.INTERRUPTED_EXIT
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
