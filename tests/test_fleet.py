"""One job across a fleet: a real Prefect server (`prefect server start` on PostgreSQL when the
machine has it, as fleets run it; else the session's, on SQLite), two real process workers on
one pool, a real S3-compatible server (moto on 127.0.0.1) holding the manifest, the audio and
the outputs, and a model stub on 127.0.0.1 that allows 30 requests a minute (token bucket,
429 beyond it, as OpenAI does).

`audiobatch submit --shards 2 --wait` makes one parent run (in the submitting process, which
waits) and two shard runs; each worker takes one flow run at a time, so both must run one. The test checks what an operator would: every item ok exactly
once in the output root, both workers did shard work, the fleet-wide rate limit (a Prefect
global concurrency limit) kept the 429s few, a shard whose worker was taken down (SIGTERM to
all of its processes, SIGKILL after a grace period, as when a machine shuts down) was run again
by the other worker, or finished within the grace period, without paying twice, and the same submission again pays nothing.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL

from audiobatch.flows.cli import main
from audiobatch.flows.deploy import ensure_work_pool
from audiobatch.tasks.model.fleet_limits import limit_name
from audiobatch.tasks.outputs.datasets import OutputRoot, read_dataset
from tests.helpers.clips import distinct_clips
from tests.helpers.data import ROOT
from tests.helpers.e2e import write_manifest
from tests.helpers.stubmodel import RateLimitedModel

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
POOL = "audiobatch-test-fleet"
CLIPS = 40
SHARDS = 2
RPM = 30


@contextmanager
def fleet_worker(name: str, log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`prefect worker start` in its own process group (so the test can take a whole
    machine's worth of processes down at once)."""
    full_env = {**os.environ, **env, "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1"}
    prefect = Path(sys.executable).with_name("prefect")
    with open(log, "w") as handle:
        worker = subprocess.Popen([str(prefect), "worker", "start", "--pool", POOL, "--type", "process",
                                   "--name", name, "--limit", "1"], cwd=ROOT, env=full_env,
                                  stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield worker
        finally:
            if worker.poll() is None:
                _shut_down(worker, grace_s=20)


def _shut_down(worker: subprocess.Popen, grace_s: float = 60) -> None:
    """What a machine shutting down does: SIGTERM to every process, SIGKILL after a grace
    period (the worker waits for its flow run's process to wind up, slow on a loaded machine)."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _submit(manifest: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "audiobatch.flows.cli", "submit", manifest,
                             "--kind", "transcribe", "--shards", str(SHARDS), "--wait"],
                            cwd=ROOT, env={**os.environ, **env, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _runs_by_worker(logs: dict[str, Path]) -> dict[str, set[str]]:
    """Flow run ids each worker started, from its own log."""
    started = {}
    for name, log in logs.items():
        started[name] = set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", log.read_text()))
    return started


def _workers_inside_a_shard(logs: dict[str, Path]) -> list[str]:
    """The workers whose shard run is Running now."""
    with get_client(sync_client=True) as client:
        return [name for name, run_ids in _runs_by_worker(logs).items()
                if any(client.read_flow_run(run_id).state.is_running() for run_id in run_ids)]


async def _shard_names() -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["audiobatch-shard"])))
    return {str(run.id): run.name for run in runs}


def test_a_sharded_job_on_two_workers_with_s3(fleet_api, s3, tmp_path) -> None:
    bucket = s3.bucket("fleet")
    rows = []
    for clip in distinct_clips(tmp_path / "clips", CLIPS, seconds=2.0):
        s3.upload(clip, f"{bucket}/job/audio/{clip.name}")
        rows.append({"id": clip.stem, "audio": f"audio/{clip.name}"})
    manifest = s3.upload(write_manifest(tmp_path / "m.csv", rows), f"{bucket}/job/m.csv")
    out = f"{bucket}/out"
    ensure_work_pool(POOL)
    _drop_fleet_limits()
    # 1 s per answer, 2 fleet slots: a shard of 20 takes 10 s or more, so the worker taken
    # down is still inside its shard
    with RateLimitedModel(requests_per_minute=RPM, latency_s=1.0) as model:
        assert main(["deploy", "transcribe", "--work-pool", POOL, "--out", out, "--base-url",
                     model.base_url, "--model", "gpt-audio-1.5", "--allow-scheme", "s3",
                     "--concurrency", "2", "--requests-per-minute", str(RPM),
                     "--shards", str(SHARDS), "--no-qa", "--no-word-times"]) == 0  # a stub's words: nothing to check or align
        env = {**s3.env, "OPENAI_API_KEY": "sk-fleet-test"}
        logs = {name: tmp_path / f"{name}.log" for name in ("worker-a", "worker-b")}
        with fleet_worker("worker-a", logs["worker-a"], env) as worker_a, \
                fleet_worker("worker-b", logs["worker-b"], env) as worker_b:
            workers = {"worker-a": worker_a, "worker-b": worker_b}
            first = _submit(manifest, env)
            # once requests flow and a worker's shard is running (its flow started, not just
            # handed to the worker: a process killed while starting never reports), take that
            # worker's machine down
            deadline, running = time.monotonic() + 240, []
            while time.monotonic() < deadline and not (len(model.arrivals) >= 4 and running):
                time.sleep(0.2)
                running = _workers_inside_a_shard(logs)
            assert len(model.arrivals) >= 4 and running, logs["worker-a"].read_text()[-3000:]
            victim = running[0]
            survivor = next(name for name in workers if name != victim)
            _shut_down(workers[victim])  # its fleet slots come back when their leases end (the server's sweep)
            output, _ = first.communicate(timeout=300)
            assert first.returncode == 0, output + logs[survivor].read_text()[-4000:]
            paid_first = len([s for _, s in model.arrivals if s == 200])
            refused = model.refused

            second = _submit(manifest, env)  # the same submission again
            output2, _ = second.communicate(timeout=300)
            assert second.returncode == 0, output2 + logs[survivor].read_text()[-4000:]
            paid_second = len([s for _, s in model.arrivals if s == 200]) - paid_first

    root = OutputRoot(out)
    items = read_dataset(root, "items").to_pandas()
    costs = read_dataset(root, "costs").to_pandas()
    submissions = sorted({run_id.rsplit("-s", 1)[0] for run_id in items["run_id"]})
    assert len(submissions) == 2
    first_runs = [run_id for run_id in items["run_id"].unique() if run_id.startswith(submissions[0])]
    first_items = items[items["run_id"].isin(first_runs)]
    # every item of the submission ok, exactly once, in one of its shards
    assert len(first_runs) == SHARDS and len(first_items) == CLIPS and first_items["item_id"].is_unique
    assert (first_items["status"] == "ok").all()
    # both workers ran shard work; the victim's shard either ran again (cut short by the
    # shutdown: Crashed, put back by the parent) or finished inside the shutdown's grace period
    shard_ids = set(await_names())
    by_worker = _runs_by_worker(logs)
    assert by_worker["worker-a"] & shard_ids and by_worker["worker-b"] & shard_ids
    victims_shards = _runs(by_worker[victim] & shard_ids)
    assert all(run.run_count >= 2 or run.state.is_completed() for run in victims_shards)
    # one rate limit for the fleet: few requests refused although two workers called at once
    assert refused <= 3, f"{refused} requests refused with 429"
    assert _fleet_limit() == RPM
    # nothing was paid twice: one paid request per clip across crash and resubmission
    paid = costs[~costs["cached"] & (costs["http_status"] == 200)]
    # (requests answered while their process was being taken down are asked again: at most
    # one per request slot of the victim)
    assert CLIPS <= paid_first <= CLIPS + 2 and paid["item_id"].is_unique and len(paid) == CLIPS
    assert paid_second == 0
    second_items = items[items["run_id"].str.startswith(submissions[1])]
    assert len(second_items) == CLIPS and (second_items["status"] == "ok").all()


def test_a_shard_whose_worker_died_while_starting_it_is_marked_crashed(fleet_api, monkeypatch) -> None:
    """A worker that dies while starting a shard's process leaves the run Pending, never
    heartbeating: the watchdog automation (run by the Prefect server's trigger service) marks
    it Crashed once the silence is long enough, and the parent then runs it again. The silence
    is 10 s here (Prefect's least; 90 s by default); the watchdog is put back to the default afterwards."""
    import asyncio

    from prefect import flow
    from prefect.states import Pending

    from audiobatch.flows import shards

    @flow(name="audiobatch-test-shard")
    def a_shard() -> None:
        pass

    async def started_and_abandoned() -> str:
        async with get_client() as client:
            run = await client.create_flow_run(a_shard, tags=[shards.SHARD_TAG])
            await client.set_flow_run_state(run.id, Pending())  # what a worker does when it takes it
            return str(run.id)

    monkeypatch.setattr(shards, "SILENCE_S", 10.0)
    asyncio.run(shards.ensure_watchdog())
    try:
        run_id = asyncio.run(started_and_abandoned())
        deadline, state = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            [run] = _runs({run_id})
            state = run.state
            if state.is_crashed():
                break
            time.sleep(1)
        assert state is not None and state.is_crashed(), state
        assert "no heartbeat for 10 s" in (state.message or "")
    finally:
        monkeypatch.undo()
        asyncio.run(shards.ensure_watchdog())  # the default silence again, for other shards


def await_names() -> dict[str, str]:
    import asyncio

    return asyncio.run(_shard_names())


def _runs(flow_run_ids: set[str]) -> list:
    with get_client(sync_client=True) as client:
        return [client.read_flow_run(run_id) for run_id in flow_run_ids]


def _drop_fleet_limits() -> None:
    """This test's limits are its own: earlier tests of the session may have made limits of
    the same name (127.0.0.1, gpt-audio-1.5) with other values, or died holding their slots."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for what in ("concurrency", "rpm", "tpm"):
            try:
                client.delete_global_concurrency_limit_by_name(limit_name("127.0.0.1", "gpt-audio-1.5", what))
            except ObjectNotFound:
                pass


def _fleet_limit() -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(
            limit_name("127.0.0.1", "gpt-audio-1.5", "rpm")).limit
