"""Ctrl-C stops the suite within 5 s and leaves no process behind; so does a SIGTERM, even one
sent to pytest alone (tests/helpers/session_guard.py).

A real subset of the suite runs in a subprocess: the Prefect test server, the embedded model,
a flow run in flight in pytest's main thread. Once the flow has started, the signal goes out;
pytest must be gone within 5 s, and so must every process it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import session_guard
from tests.helpers.data import ROOT

SUBSET = ["tests/test_runs_report.py"]  # a session Prefect server, then a flow run in process
FLOW_STARTED = "Beginning flow run"


def start_suite(tmp_path: Path, tag: str) -> subprocess.Popen[str]:
    env = {**os.environ, session_guard.ENV: f"{os.environ[session_guard.ENV]}:{tag}"}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *SUBSET, "-s", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'inner'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group, as a terminal's foreground job


def wait_for_flow(suite: subprocess.Popen[str], timeout_s: float = 300) -> None:
    assert suite.stdout is not None
    deadline = time.monotonic() + timeout_s
    for line in suite.stdout:
        if FLOW_STARTED in line:
            return
        assert time.monotonic() < deadline, "no flow run started"
    pytest.fail(f"the suite ended before a flow started (exit {suite.wait()})")


def processes_left(tag: str, settle_s: float = 1.0) -> list[int]:
    """The subset's processes still alive (given a moment for killed ones to go)."""
    deadline = time.monotonic() + settle_s
    while (left := session_guard.session_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "sigterm-to-pytest-alone"])
def test_an_interrupted_suite_stops_within_5_s_and_leaves_no_process(tmp_path, signum, to_group) -> None:
    tag = uuid.uuid4().hex[:16]
    suite = start_suite(tmp_path, tag)
    try:
        wait_for_flow(suite)
        assert session_guard.session_processes(tag), "the subset should be running a server"
        sent = time.monotonic()
        if to_group:
            os.killpg(suite.pid, signum)  # what Ctrl-C in a terminal does
        else:
            os.kill(suite.pid, signum)  # its children are not told: pytest must stop them
        suite.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if suite.poll() is None:
            os.killpg(suite.pid, signal.SIGKILL)
        left = processes_left(tag)
        session_guard.stop_processes(wait_s=0.5, session=tag)  # never leave them to the next test
    assert suite.returncode in (2, 128 + signum), suite.returncode  # 2: pytest's "interrupted"
    assert took <= 5.0, f"the suite took {took:.1f} s to stop"
    assert left == [], f"processes left behind: {left}"
