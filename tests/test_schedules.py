"""Scheduled runs on the engine users run: `prefect server start` with its services, a worker,
and nobody triggering anything. Prefect's scheduler creates the runs of a one-minute cron
deployment; they complete with the feed's episodes transcribed; a run that outlasts its minute
holds the next one back (the deployment's concurrency limit 1), which then runs after it.

Both databases a user may run the server on, at the same time (one wait for both): SQLite,
and PostgreSQL when the machine has it (`.ci/run` starts it; otherwise that half is skipped
with the reason). Everything here is a separate process, as in production: `audiobatch deploy`
and `prefect worker start` as commands, the server read back through its REST API.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from audiobatch.tasks.outputs.datasets import OutputRoot, read_dataset
from tests.helpers.faultserver import Behaviour, FaultServer, Received, ok
from tests.helpers.feeds import LOOPBACK_FETCH_ENV, SHORT_CLIPS, FeedServer, TestEpisode, process_worker
from tests.helpers.localserver import references
from tests.helpers.prefect_servers import postgres_url, service_errors

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
POOL = "audiobatch-test-schedules"
DEPLOYMENT = "every-minute"
SLOW_ANSWER_S = 75.0  # longer than the cron's minute: the next scheduled run comes due meanwhile
WAIT_S = 400


class SlowFirstAnswer(FaultServer):
    """A model that answers the clip's true words, the first time after SLOW_ANSWER_S."""

    def __init__(self, text: str) -> None:
        super().__init__(self._decide)
        self.text = text
        self.answered = 0

    def _decide(self, request: Received) -> Behaviour:
        if not request.path.endswith("/chat/completions"):
            return ok(self.text)  # the model list, asked for before any request
        self.answered += 1
        return ok(self.text, delay_s=SLOW_ANSWER_S if self.answered == 1 else 0.0)


def _deploy(api: str, feed: str, out: Path, model_url: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": api}
    done = subprocess.run(
        [sys.executable, "-m", "audiobatch.flows.cli", "deploy", "podcast", feed, "--cron", "* * * * *",
         "--work-pool", POOL, "--out", str(out), "--name", DEPLOYMENT, "--base-url", model_url,
         "--model", "gpt-audio-1.5", "--no-qa", "--timeout-s", "300"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _runs(api: str) -> list[dict]:
    """This deployment's runs (the session's servers also hold every other test's runs)."""
    body = {"sort": "EXPECTED_START_TIME_ASC", "limit": 50, "deployments": {"name": {"any_": [DEPLOYMENT]}},
            "flow_runs": {"state": {"type": {"any_": ["RUNNING", "COMPLETED", "FAILED", "CRASHED", "PENDING"]}}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def _servers(request: pytest.FixtureRequest) -> dict[str, tuple[str, Path]]:
    servers = {"sqlite": request.getfixturevalue("prefect_sqlite_server")}
    if postgres_url():
        servers["postgresql"] = request.getfixturevalue("prefect_postgres_server")
    return servers


def test_a_one_minute_cron_runs_by_itself_and_a_slow_run_holds_the_next(request, tmp_path) -> None:
    servers = _servers(request)
    clip = SHORT_CLIPS[0]
    with ExitStack() as stack:
        site = stack.enter_context(FeedServer(tmp_path / "site"))
        feed = site.write_feed("feed.xml", "Every Minute", [TestEpisode("e-1", "One", clip, day=0)])
        for database, (api, _) in servers.items():
            model = stack.enter_context(SlowFirstAnswer(references()[clip]))
            _deploy(api, feed, tmp_path / f"out-{database}", model.base_url)
            worker_env = {**LOOPBACK_FETCH_ENV, "PREFECT_API_URL": api, "OPENAI_API_KEY": "sk-test",
                          "OPENAI_BASE_URL": model.base_url}
            stack.enter_context(process_worker(POOL, tmp_path / f"worker-{database}.log", env=worker_env))
        deadline = time.monotonic() + WAIT_S
        finished: dict[str, list[dict]] = {}
        while len(finished) < len(servers) and time.monotonic() < deadline:
            for database, (api, _) in servers.items():
                done = [run for run in _runs(api) if run["state_type"] == "COMPLETED"]
                if len(done) >= 2:
                    finished[database] = done[:2]
            time.sleep(2)

    for database, (api, home) in servers.items():
        log = (tmp_path / f"worker-{database}.log").read_text()[-3000:]
        assert not service_errors(home), f"{database}: Prefect's services failed: {service_errors(home)[:5]}"
        assert database in finished, f"{database}: fewer than 2 scheduled runs completed\n{log}"
        first, second = finished[database]
        # Nobody ran them: Prefect's scheduler created both from the cron.
        assert first["auto_scheduled"] and second["auto_scheduled"]
        # The first (slow) run transcribed the feed's episode ...
        items = read_dataset(OutputRoot(str(tmp_path / f"out-{database}")), "items")
        assert items is not None, f"{database}: no items written\n{log}"
        assert items.column("episode_guid").to_pylist() == ["e-1"]
        assert items.column("status").to_pylist() == ["ok"]
        # ... and the next one came due while it ran, and waited for it (the server answers its
        # worker with AwaitingConcurrencySlot, or the worker holds it back: Prefect's choice).
        assert second["expected_start_time"] < first["end_time"] <= second["start_time"], (first, second)
