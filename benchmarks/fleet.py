"""Benchmark: one rate limit for the fleet. Two process workers on one pool share a model that
allows 40 requests a minute (tests/helpers/stubmodel.py: a token bucket of 40, 429 beyond).

A real `prefect server start` (its own home folder), a work pool, two workers, and
`audiobatch submit --shards 2 --wait` of N one-second clips, three ways:

  fleet       --requests-per-minute 40: one Prefect global concurrency limit for both workers
  divided     --requests-per-minute 20 per run, no fleet limit (the old advice: divide by hand)
  undivided   --requests-per-minute 40 per run, no fleet limit (what happens if you don't)

For each: requests the model accepted per minute after its initial burst (the model's own
bucket holds 40), requests it refused (429), and the job's wall time. Prints numbers; asserts
nothing. Takes a few minutes per way.

    .venv/bin/python benchmarks/fleet.py [--clips 120] [--only fleet divided undivided]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.clips import distinct_clips  # noqa: E402
from tests.helpers.localserver import free_port  # noqa: E402

BIN = ROOT / ".venv" / "bin"
RPM = 40


def start_server(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return server, env
        except httpx.HTTPError:
            time.sleep(1)
    raise RuntimeError("prefect server did not start in 180 s")


def run_way(name: str, rpm_per_run: int, fleet: bool, manifest: Path, folder: Path,
            env: dict[str, str]) -> None:
    pool, log = f"bench-{name}", folder / f"stub-{name}.jsonl"
    stub = subprocess.Popen([sys.executable, "-m", "tests.helpers.stubmodel", "--rpm", str(RPM),
                             "--latency-s", "0.2", "--log", str(log)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    base_url = stub.stdout.readline().split()[-1]
    worker_env = {**env, "AUDIOBATCH_FLEET_LIMITS": "1" if fleet else "0", "OPENAI_API_KEY": "sk-bench"}
    audiobatch = str(BIN / "audiobatch")
    subprocess.run([audiobatch, "deploy", "transcribe", "--work-pool", pool, "--out", str(folder / f"out-{name}"),
                    "--base-url", base_url, "--model", "gpt-audio-1.5", "--concurrency", "4",
                    "--requests-per-minute", str(rpm_per_run), "--no-qa", "--no-word-times"],
                   env=env, check=True, capture_output=True)
    workers = [subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type",
                                 "process", "--limit", "1"], env=worker_env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
               for _ in range(2)]
    try:
        started = time.time()
        done = subprocess.run([audiobatch, "submit", str(manifest), "--kind", "transcribe", "--shards", "2",
                               "--wait"], env=env, capture_output=True, text=True)
        wall = time.time() - started
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait()
        stub.terminate()
        stub.wait()
    arrivals = [json.loads(line) for line in log.read_text().splitlines() if line]
    accepted = sorted(a["t"] for a in arrivals if a["status"] == 200)
    refused = sum(1 for a in arrivals if a["status"] == 429)
    after_burst = accepted[RPM:]
    rate = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0]) * 60 if len(after_burst) > 2 else 0.0
    print(f"RESULT {name:9s} ({rpm_per_run} rpm per run, fleet limit {'on' if fleet else 'off'}): "
          f"exit {done.returncode}, {len(accepted)} requests accepted, {refused} refused (429), "
          f"{rate:.1f} accepted/min after the model's burst of {RPM} (model allows {RPM}), "
          f"job {wall:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--only", nargs="+", choices=["fleet", "divided", "undivided"])
    args = parser.parse_args(argv)
    ways = {"fleet": (RPM, True), "divided": (RPM // 2, False), "undivided": (RPM, False)}
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-fleet-") as tmp:
        folder = Path(tmp)
        clips = distinct_clips(folder / "clips", args.clips)
        manifest = folder / "clips.csv"
        manifest.write_text("id,audio\n" + "".join(f"{p.stem},{p}\n" for p in clips))
        server, env = start_server(folder / "prefect-home")
        try:
            for name in args.only or list(ways):
                run_way(name, *ways[name], manifest, folder, env)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
