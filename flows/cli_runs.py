"""`audiobatch` subcommands about runs and the tool itself: runs, report, server, completion.

    audiobatch runs OUT [--json]                     past runs under OUT, newest first
    audiobatch runs OUT RUN_ID|last [--json]         one run: its summary and every failure
    audiobatch report OUT [RUN_ID|last] --html FILE  one self-contained HTML page for a run
    audiobatch server start|stop|status              the local background Prefect server
    audiobatch completion bash|zsh|tcsh              a shell completion script (eval it)

`runs` and `report` read only the Parquet datasets under OUT (nothing is sent anywhere);
`report` also publishes its tables as a Prefect artifact when run inside a flow run.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list past runs under an output root, or one run's failures")
    runs.add_argument("out", help="output root (folder or fsspec URL)")
    runs.add_argument("run_id", nargs="?", help="a run id, or 'last': show that run's failures")
    runs.add_argument("--json", action="store_true", help="print JSON on stdout")
    runs.set_defaults(handler=run_runs)

    report = sub.add_parser("report", help="write one run's report as a self-contained HTML page")
    report.add_argument("out", help="output root (folder or fsspec URL)")
    report.add_argument("run_id", nargs="?", default="last", help="a run id, or 'last'")
    report.add_argument("--html", required=True, metavar="FILE", help="where to write the page")
    report.set_defaults(handler=run_report)

    server = sub.add_parser("server", help="the local Prefect server that runs use when none is "
                            "configured (started on first use)")
    server.add_argument("action", choices=["start", "stop", "status"])
    server.set_defaults(handler=run_server)

    completion = sub.add_parser("completion", help="print a shell completion script, e.g. "
                                'eval "$(audiobatch completion bash)"')
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(handler=run_completion)


def run_runs(args: argparse.Namespace) -> int:
    from audiobatch.tasks.reports.history import load_history, render_run, render_runs

    history = load_history(args.out)
    if args.run_id:
        run = history.run(args.run_id)
        print(json.dumps(run.as_dict(), default=str, indent=2) if args.json else render_run(run))
    else:
        runs = history.runs()
        print(json.dumps([r.as_dict(with_failures=False) for r in runs], default=str, indent=2)
              if args.json else render_runs(runs, args.out))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from audiobatch.tasks.reports.history import load_history
    from audiobatch.tasks.reports.report import write_report

    run = load_history(args.out).run(args.run_id)
    path = write_report(run, args.html, args.out)
    print(f"report of run {run.run_id} written to {path}")
    return 0


def run_server(args: argparse.Namespace) -> int:
    from audiobatch.flows import prefect_server

    if args.action == "start":
        server, started = prefect_server.ensure_background()
        print(f"{'started' if started else 'already running'}: {server.url.removesuffix('/api')} "
              f"(pid {server.pid})")
    elif args.action == "stop":
        stopped = prefect_server.stop_background()
        print(f"stopped (pid {stopped.pid})" if stopped else "no local server was running")
    else:
        server = prefect_server.running()
        install = prefect_server.Install.this()
        if server is None:
            print(f"not running (the next run of this install starts it): {install.describe()}")
        else:
            whose = server.install.describe() if server.install else "an unknown install"
            stale = "" if server.install == install else "; the next run replaces it (other versions)"
            print(f"running: {server.url.removesuffix('/api')} (pid {server.pid}), started by {whose}{stale}")
        for other in prefect_server.others():
            whose = other.install.describe() if other.install else "an older audiobatch"
            print(f"also running, not used by this install: {other.url.removesuffix('/api')} "
                  f"(pid {other.pid}), started by {whose}")
        return 0 if server else 1
    return 0


def run_completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(args.root_parser, shell=args.shell))
    return 0
