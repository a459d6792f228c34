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
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import session_guard
from tests.helpers.data import ROOT

SUBSET = ["tests/test_runs_report.py"]  # a session Prefect server, then a flow run in process
FLOW_STARTED = "Beginning flow run"


def start_suite(folder: Path, tag: str) -> subprocess.Popen[str]:
    folder.mkdir()
    env = {**os.environ, session_guard.ENV: f"{os.environ[session_guard.ENV]}:{tag}"}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *SUBSET, "-s", "-q", "-p", "no:cacheprovider",
         f"--basetemp={folder / 'inner'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group, as a terminal's foreground job


def wait_for_flow(suite: subprocess.Popen[str]) -> None:
    """Read the suite's output until a flow run has begun (the caller bounds the wait)."""
    assert suite.stdout is not None
    for line in suite.stdout:
        if FLOW_STARTED in line:
            return


def processes_left(tag: str, settle_s: float = 3.0) -> list[int]:
    """The subset's processes still alive (given a moment for killed ones to go: a process
    SIGKILLed with a large memory map may take over a second to finish exiting)."""
    deadline = time.monotonic() + settle_s
    while (left := session_guard.session_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def interrupt(suite: subprocess.Popen[str], tag: str, signum: int, to_group: bool) -> dict:
    """Signal a suite whose flow has started; how long it took to stop, what it left."""
    assert suite.poll() is None, f"the subset ended before a flow began (exit {suite.returncode})"
    assert session_guard.session_processes(tag), "the subset should be running a server"
    sent = time.monotonic()
    if to_group:
        os.killpg(suite.pid, signum)  # what Ctrl-C in a terminal does
    else:
        os.kill(suite.pid, signum)  # its children are not told: pytest must stop them
    suite.communicate(timeout=30)
    return {"took": time.monotonic() - sent, "code": suite.returncode, "left": processes_left(tag)}


@pytest.mark.slow
def test_an_interrupted_suite_stops_within_5_s_and_leaves_no_process(tmp_path) -> None:
    # Two runs of the subset at once (the wait for their flows is most of this test's time):
    # Ctrl-C to the whole process group, and SIGTERM to pytest alone.
    cases = {"ctrl-c": (signal.SIGINT, True), "sigterm-to-pytest-alone": (signal.SIGTERM, False)}
    tags = {name: uuid.uuid4().hex[:16] for name in cases}
    suites = {name: start_suite(tmp_path / name, tags[name]) for name in cases}
    results = {}
    try:
        waiting = {name: threading.Thread(target=wait_for_flow, args=(suite,)) for name, suite in suites.items()}
        for thread in waiting.values():
            thread.start()
        for name, (signum, to_group) in cases.items():
            waiting[name].join(timeout=300)
            assert not waiting[name].is_alive(), f"{name}: no flow run began within 300 s"
            results[name] = interrupt(suites[name], tags[name], signum, to_group)
    finally:
        for name, suite in suites.items():
            if suite.poll() is None:
                os.killpg(suite.pid, signal.SIGKILL)
            session_guard.stop_processes(wait_s=0.5, session=tags[name])  # never leave them around
    for name, (signum, _) in cases.items():
        result = results[name]
        assert result["code"] in (2, 128 + signum), (name, result)  # 2: pytest's "interrupted"
        assert result["took"] <= 5.0, f"{name}: the suite took {result['took']:.1f} s to stop"
        assert result["left"] == [], f"{name}: processes left behind: {_described(result['left'])}"


def _described(pids: list[int]) -> list[str]:
    """Each process left, with its command line (what a reader of a failure needs)."""
    described = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:
            command = "(gone)"
        described.append(f"{pid}: {command}")
    return described
