"""Many short items: they run in batch task runs (few Prefect task runs, not one per item),
and still every manifest row ends in exactly one status row; a run killed in the middle of
a batch resumes exactly (finished items are not redone, answered requests not paid again).
Real decoding of distinct real-speech clips; a model stub on 127.0.0.1 (the test stops the
first run at a chosen request).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from audiobatch.tasks.run.batches import batch_size
from audiobatch.tasks.run.context import items_at_once
from tests.helpers.clips import distinct_clips
from tests.helpers.e2e import run_transcribe, write_manifest
from tests.helpers.faultserver import FaultServer, hang, ok

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]
CLIPS, MISSING = 40, 8


def _command(manifest: Path, out: Path, base_url: str) -> list[str]:
    return [sys.executable, "-m", "audiobatch.flows.cli", "transcribe", str(manifest), "--out", str(out),
            "--base-url", base_url, "--model", "gpt-audio-1.5", "--concurrency", "2", "--no-progress",
            "--no-qa", "--no-word-times"]  # a stub's words: nothing to check or align


def _env() -> dict[str, str]:
    # In-process limits only: the run killed here dies holding fleet concurrency slots, which the
    # server frees only when their leases end (60-90 s): later tests of the session would wait
    # for them. Fleet limits, and their leases ending: tests/test_fleet.py.
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "AUDIOBATCH_FLEET_LIMITS": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _task_runs() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="transcribe ")), limit=200)


def test_a_killed_batch_run_resumes_with_one_row_per_item(tmp_path) -> None:
    clips = distinct_clips(tmp_path / "clips", CLIPS)
    rows = [{"id": p.stem, "audio": str(p)} for p in clips]
    rows += [{"id": f"gone{i}", "audio": str(tmp_path / f"gone{i}.wav")} for i in range(MISSING)]
    manifest = write_manifest(tmp_path / "many.csv", rows)
    assert batch_size(len(rows), 2) == 3  # several items per task run
    out = tmp_path / "out"
    answered = {"n": 0}

    def script(request):  # 15 answers, then the first run hangs until it is killed
        answered["n"] += 1
        return ok(f"clip {request.index}") if answered["n"] <= 15 else hang(60)

    before = {run.id for run in _task_runs()}
    with FaultServer(script) as model:
        first = subprocess.Popen(_command(manifest, out, model.base_url), env=_env(),
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while answered["n"] < 17 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # two requests in flight, mid-batch
        first.wait()
        assert answered["n"] >= 16, first.stderr.read().decode()[-3000:]
        model.script = lambda request: ok(f"clip {request.index}")
        second = subprocess.run(_command(manifest, out, model.base_url), env=_env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr[-3000:]  # the missing files failed
        asked = sum(1 for r in model.requests if r.path.endswith("/chat/completions"))

    items = pd.read_parquet(out / "items")
    costs = pd.read_parquet(out / "costs")
    assert items["run_id"].nunique() == 1 and len(items) == len(rows) and items["item_id"].is_unique
    statuses = dict(zip(items["item_id"], items["status"]))
    assert all(statuses[p.stem] == "ok" for p in clips)
    assert all(statuses[f"gone{i}"] == "failed" for i in range(MISSING))
    assert items.set_index("item_id").loc["gone0", "error_message"].count("not found") == 1
    paid = costs[~costs["cached"] & (costs["http_status"] == 200)]
    assert len(paid) == CLIPS and paid["item_id"].is_unique  # every clip paid once, none twice
    assert asked - 15 <= CLIPS - 15 + 2  # only the requests in flight at the kill were asked again
    # few task runs: one per batch (about 48 / 3), not one per item
    new_runs = [run for run in _task_runs() if run.id not in before]
    assert 0 < len(new_runs) <= 2 * (len(rows) // 3 + 2) < 2 * len(rows)


def test_items_share_task_runs_only_beyond_one_wave() -> None:
    """A job whose items all start at once keeps one task run per item (each visible in the
    UI); beyond one wave, items share task runs, more of them for bigger jobs."""
    assert [batch_size(n, 16) for n in (1, 16)] == [1, 1]
    assert [batch_size(n, 16) for n in (17, 96, 1000, 100_000)] == [8, 8, 8, 64]  # half a wave, at least
    assert [batch_size(n, 4) for n in (5, 1000)] == [3, 31]


def test_an_item_is_reported_when_it_ends_not_when_its_batch_does(tmp_path) -> None:
    """Items share a task run beyond one wave; the progress and the failure line of each
    still come as it ends: a missing file is reported before its batch mates are answered."""
    clips = distinct_clips(tmp_path / "clips", 5)
    rows = [{"id": "gone0", "audio": str(tmp_path / "gone0.wav")}]
    rows += [{"id": p.stem, "audio": str(p)} for p in clips]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    assert batch_size(len(rows), 2) == 3  # gone0 shares its task run with two slow clips
    with FaultServer(lambda request: ok(f"clip {request.index}", delay_s=4.0)) as model:
        done = subprocess.run(_command(manifest, tmp_path / "out", model.base_url), env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    failed = next(i for i, line in enumerate(lines) if "failed gone0" in line)
    batch_end = next(i for i, line in enumerate(lines)
                     if "3 items: gone0" in line and "Finished in state" in line)
    assert failed < batch_end


async def test_requests_in_flight_never_exceed_concurrency_though_items_are_prepared_ahead(
        prefect_api, tmp_path) -> None:
    """A quarter more items than requests are worked on (prepared while they wait for a slot),
    yet the endpoint never sees more than `--concurrency` requests at once."""
    assert [items_at_once(n) for n in (1, 4, 16)] == [1, 5, 20]
    clips = distinct_clips(tmp_path / "clips", 12)
    arrivals: list[float] = []

    def script(request):
        arrivals.append(time.monotonic())
        return ok(f"clip {request.index}", delay_s=0.5)

    manifest = write_manifest(tmp_path / "m.csv", [{"id": p.stem, "audio": str(p)} for p in clips])
    with FaultServer(script) as model:
        run = await run_transcribe(manifest, tmp_path / "out", base_url=model.base_url,
                                   model="gpt-audio-1.5", concurrency=4, qa=False, word_times=False)
    assert run.summary["ok"] == 12 and len(arrivals) == 12
    # requests that arrived within 0.45 s of each other were all in flight together
    busiest = max(sum(1 for other in arrivals if t - 0.45 < other <= t) for t in arrivals)
    assert busiest == 4
