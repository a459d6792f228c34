"""Ctrl-C or SIGTERM stops the test suite within seconds and leaves no process behind.

Every process a test starts (servers, Prefect workers and their flow-run children, Chromium,
even one that detaches from its parent) inherits `AUDIOBATCH_TEST_SESSIONS`, which names this
session; when the session ends, however it ends, every process still carrying its name, and
every descendant of pytest (one started with a clean environment), is stopped (SIGTERM, then
SIGKILL). Pytest itself is never left running: an interrupt (SIGINT, or
SIGTERM, which becomes one) gives the session `GRACE_S` to tear its fixtures down as usual;
past that, a watchdog thread kills what is left and ends the process (exit 130 or 143).

Pytest run inside a test (tests/test_interrupts.py) appends its own name to the variable, so
an outer session also stops an inner one's processes, and an inner one never touches the
outer's. Linux only (/proc), like the project.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from types import FrameType

ENV = "AUDIOBATCH_TEST_SESSIONS"
QUIET_S = 0.25  # no process of the session seen for this long: none is being forked
GRACE_S = 2.0  # teardown's share of the 5 s an interrupted suite may take; a busy machine needs the rest
SESSION = uuid.uuid4().hex[:16]
_deadline: threading.Timer | None = None


def install() -> None:
    """Name this session in the environment children inherit, and take over SIGINT/SIGTERM."""
    os.environ[ENV] = ":".join(filter(None, [os.environ.get(ENV), SESSION]))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    _watch_signals()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    arm_deadline(128 + signum)
    raise KeyboardInterrupt  # pytest stops the session and tears its fixtures down


def _watch_signals() -> None:
    """Arm the deadline the moment a signal arrives, also while the main thread is busy in C or
    while a flow run has swapped in Prefect's own SIGTERM handler (it re-sends the signal only
    after reporting the crash to its API, which may be gone): Python writes every signal number
    to the wakeup fd from its C-level handler, whoever's Python handler runs later."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while received := os.read(read_fd, 64):
            if signal.SIGINT in received or signal.SIGTERM in received:
                arm_deadline(128 + (signal.SIGTERM if signal.SIGTERM in received else signal.SIGINT))

    threading.Thread(target=watch, name="session-guard", daemon=True).start()


def arm_deadline(code: int) -> None:
    """After GRACE_S, whatever the main thread is doing: kill the session's processes, exit."""
    global _deadline
    if _deadline is None:
        _deadline = threading.Timer(GRACE_S, _give_up, args=(code,))
        _deadline.daemon = True
        _deadline.start()


def _give_up(code: int) -> None:
    stop_processes(wait_s=0.3)
    print(f"\ninterrupted: teardown took over {GRACE_S:.0f} s; the session's processes were "
          "stopped", file=sys.__stderr__, flush=True)
    os._exit(code)


def session_processes(session: str = SESSION) -> list[int]:
    """Live processes started by the session's tests: those whose environment names `session`
    (also detached ones) and, for this session, its descendants (also ones given a clean env)."""
    needle = f"{ENV}=".encode()
    named, children = set(), defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            environ = (entry / "environ").read_bytes()
        except (OSError, IndexError, ValueError):  # gone (read as it exits, a stat can be empty)
            continue
        if state == "Z":  # already dead, waiting for its parent to reap it
            continue
        children[int(parent)].append(int(entry.name))
        for variable in environ.split(b"\0"):
            if variable.startswith(needle) and session.encode() in variable[len(needle):].split(b":"):
                named.add(int(entry.name))
    descendants, stack = set(), [os.getpid()] if session == SESSION else []
    while stack:
        for child in children[stack.pop()]:
            descendants.add(child)
            stack.append(child)
    return sorted((named | descendants) - {os.getpid()})


def stop_processes(wait_s: float = 2.0, session: str = SESSION) -> list[int]:
    """SIGTERM the session's processes, SIGKILL those still there after `wait_s`; returns them."""
    first = session_processes(session)
    for pid in first:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and session_processes(session):
        time.sleep(0.05)
    # SIGKILL what is left, and keep looking until none has been seen for QUIET_S: a child
    # forked meanwhile (a server starting a worker) may show in /proc only after a first
    # empty look (one was left behind once in CI, 2026-12-07).
    deadline, last_seen = time.monotonic() + 1.5, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_seen < QUIET_S:
        for pid in (left := session_processes(session)):
            _signal(pid, signal.SIGKILL)
        if left:
            last_seen = time.monotonic()
        time.sleep(0.05)
    return first


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # looked up before any fork: the child only calls it


def die_with_pytest() -> None:
    """A `preexec_fn` for a process started in its own session (out of reach of Ctrl-C to the
    suite's group): the kernel SIGKILLs it when the thread that started it ends, so when pytest
    dies, however it dies. Seen 2026-12-07: the Ctrl-C suite, inside a flow run, never ran its
    Python SIGINT handler and was ended by the signal while the guard's last sweep was still
    listing processes; the `prefect server start` of the session lived on for seconds.
    Start such processes from the main thread (a fixture): a worker thread's end kills them."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
