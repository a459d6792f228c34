"""Benchmark: a fleet's Prefect server on SQLite against PostgreSQL, measured in one run.

A real `prefect server start` for each database (tests/helpers/prefect_servers.py), a work pool,
four process workers, and `audiobatch submit --shards 16 --wait` of one-second clips against an
instant model stub: the work is small, so what is measured is the orchestration a fleet pays.

For each database: the job's wall time; per shard run, the queue delay (due -> running) and its
duration (running -> done), as medians; errors the server logged (SQLite's "database is locked"
among them: it serialises every write) and error lines in the workers' logs. Prints numbers
and PostgreSQL's ratios to SQLite; asserts nothing.

    .venv/bin/python benchmarks/fleet_databases.py [--clips 64] [--shards 16] [--workers 4]

PostgreSQL comes from AUDIOBATCH_TEST_POSTGRES_URL, else `.ci/postgres` is run to start
Debian's (root only); without it only SQLite is measured.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.clips import distinct_clips  # noqa: E402
from tests.helpers.prefect_servers import (POSTGRES_ENV, fresh_postgres_database, postgres_url,  # noqa: E402
                                           prefect_server)

BIN = Path(sys.executable).parent


def postgres() -> str | None:
    if postgres_url():
        return postgres_url()
    started = subprocess.run(["bash", str(ROOT / ".ci" / "postgres")], capture_output=True, text=True)
    line = started.stdout.strip()
    return line.split("=", 1)[1] if line.startswith(f"export {POSTGRES_ENV}=") else None


def shard_runs(api: str) -> list[dict]:
    body = {"flow_runs": {"tags": {"all_": ["audiobatch-shard"]}}, "limit": 200}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()


def _seconds(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def run_fleet(database: str, url: str | None, manifest: Path, folder: Path, args: argparse.Namespace) -> dict:
    home = folder / f"home-{database}"
    with prefect_server(home, database_url=url) as api:
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1",
               "OPENAI_API_KEY": "sk-bench", "AUDIOBATCH_FLEET_LIMITS": "0"}
        stub = subprocess.Popen([sys.executable, "-m", "tests.helpers.stubmodel", "--latency-s", "0"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
        base_url = stub.stdout.readline().split()[-1]
        audiobatch = str(BIN / "audiobatch")
        subprocess.run([audiobatch, "deploy", "transcribe", "--work-pool", "bench", "--out", str(folder / f"out-{database}"),
                        "--data-root", str(folder), "--shards", str(args.shards), "--base-url", base_url,
                        "--model", "gpt-audio-1.5", "--no-qa", "--no-word-times"],
                       env=env, check=True, capture_output=True)
        logs = [folder / f"worker-{database}-{i}.log" for i in range(args.workers)]
        workers = [subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "bench", "--type", "process",
                                     "--limit", "1"], env=env, cwd=tempfile.gettempdir(), stdout=open(log, "w"),
                                    stderr=subprocess.STDOUT, start_new_session=True) for log in logs]
        try:
            started = time.monotonic()
            done = subprocess.run([audiobatch, "submit", str(manifest), "--kind", "transcribe", "--shards",
                                   str(args.shards), "--wait"], env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            if done.returncode:
                print(f"{database}: submit exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            runs = shard_runs(api)
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait()
            stub.terminate()
            stub.wait()
    queue = [q for run in runs if (q := _seconds(run.get("start_time"), run.get("expected_start_time"))) is not None]
    busy = [d for run in runs if (d := _seconds(run.get("end_time"), run.get("start_time"))) is not None]
    server_log = (home / "prefect-server.log").read_text(errors="replace").splitlines()
    worker_errors = sum(1 for log in logs for line in log.read_text(errors="replace").splitlines()
                        if "Error" in line or "Traceback" in line)
    return {"exit": done.returncode, "wall_s": wall, "shard_runs": len(runs),
            "queue_s": statistics.median(queue) if queue else float("nan"),
            "run_s": statistics.median(busy) if busy else float("nan"),
            "locked": sum("database is locked" in line for line in server_log),
            "server_errors": sum(("Error" in line or "Traceback" in line) for line in server_log),
            "worker_errors": worker_errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-fleetdb-") as tmp:
        folder = Path(tmp)
        clips = distinct_clips(folder / "clips", args.clips, seconds=1.0)
        manifest = folder / "clips.csv"
        manifest.write_text("id,audio\n" + "".join(f"{p.stem},{p}\n" for p in clips))
        pg = postgres()
        for database, url in (("sqlite", None), ("postgresql", fresh_postgres_database(pg) if pg else None)):
            if database == "postgresql" and url is None:
                print("postgresql: not available here (see .ci/postgres); measured SQLite only")
                continue
            results[database] = result = run_fleet(database, url, manifest, folder, args)
            print(f"RESULT {database:10s}: exit {result['exit']}, {result['shard_runs']} shard runs on "
                  f"{args.workers} workers, job {result['wall_s']:.1f} s, median queue {result['queue_s']:.1f} s, "
                  f"median shard run {result['run_s']:.1f} s, server errors {result['server_errors']} "
                  f"({result['locked']} 'database is locked'), worker error lines {result['worker_errors']}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    if len(results) == 2:
        sqlite, pg_result = results["sqlite"], results["postgresql"]
        print(f"RATIO postgresql/sqlite: job {pg_result['wall_s'] / sqlite['wall_s']:.2f}, median shard run "
              f"{pg_result['run_s'] / sqlite['run_s']:.2f}, median queue "
              f"{pg_result['queue_s'] / max(sqlite['queue_s'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
