"""Prefect servers for the suite, started as users start theirs: `prefect server start`, with
every service on (scheduler, late runs, lease repossessor, automations, ...).

`prefect_test_harness` runs the API alone, which hid a scheduler that never scheduled anything
(issue 22): deployments, schedules, submissions, inboxes, fleets and watchdogs are tested here.
The database is SQLite in a temporary folder, or PostgreSQL when AUDIOBATCH_TEST_POSTGRES_URL
names one (`.ci/run` installs and starts Debian's postgresql and sets it).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.session_guard import die_with_pytest

POSTGRES_ENV = "AUDIOBATCH_TEST_POSTGRES_URL"  # postgresql+asyncpg://user:password@host:port/database
START_TIMEOUT_S = 240  # ~15-25 s here; much more while other test processes load the machine
# The real services, on tighter loops than production so that tests wait seconds, not minutes:
# the scheduler still schedules, the late-run sweeper still marks, on the same code paths.
SERVICE_LOOPS = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "5",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def fresh_postgres_database(url: str) -> str:
    """A new, empty database on the server `url` names (each test session gets its own)."""
    import asyncio

    import asyncpg

    base, _, _ = url.rpartition("/")
    name = f"prefect_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return f"{base}/{name}"


@contextmanager
def prefect_server(home: Path, *, database_url: str | None = None,
                   log_name: str = "prefect-server.log") -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 and a free port; yields its API URL. The process and
    its children are stopped at the end (SIGTERM to its process group, then SIGKILL)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false", **SERVICE_LOOPS}
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    prefect = Path(sys.executable).with_name("prefect")
    log_path = home / log_name
    with open(log_path, "wb") as log:
        server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=die_with_pytest)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(api, server, log_path)
        yield api
    finally:
        stop_group(server)


def _wait_healthy(api: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server start exited ({server.returncode}):\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"prefect server start did not answer within {START_TIMEOUT_S} s:\n"
                       f"{log_path.read_text()[-4000:]}")


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group the process leads, SIGKILL to what is left after `grace_s`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


# SQLite serialises writers: under load a service's write can find the database locked, and
# the service tries again on its next loop (why fleets run the server on PostgreSQL).
TRANSIENT = ("database is locked",)


def service_errors(home: Path, log_name: str = "prefect-server.log") -> list[str]:
    """Errors a server's services logged (the scheduler's SQLAlchemy error, for one), without
    the transient ones they retry, and without a request's conflict: two fleet runs creating
    the same limit at once get a 409 they handle (tasks/model/fleet_limits.py), and the server
    logs the losing insert's IntegrityError with its traceback."""
    errors = []
    for record in _log_records((home / log_name).read_text(errors="replace")):
        if record[0].endswith("Encountered exception in request:") and \
                any(line.startswith("sqlalchemy.exc.IntegrityError") for line in record):
            continue  # answered 409 (prefect/server/api/server.py, integrity_exception_handler)
        errors += [line for line in record if ("Error:" in line or "Exception:" in line)
                   and not any(text in line for text in TRANSIENT)]
    return errors


def _log_records(text: str) -> list[list[str]]:
    """A log's records: each a line with a time ("12:55:34.606 | ERROR | ...") and the
    traceback lines under it."""
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if re.match(r"\d\d:\d\d:\d\d\.\d+ \|", line):
            records.append([])
        records[-1].append(line)
    return [record for record in records if record]
