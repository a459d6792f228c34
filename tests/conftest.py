"""Shared fixtures. The Prefect API is one real `prefect server start` for the whole session
(every service on; ~20 s to start here), never one per test; fleets get a second one on
PostgreSQL when the machine has it (tests/helpers/prefect_servers.py)."""
from __future__ import annotations

import contextlib
import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def allow_loopback_fetch(monkeypatch):
    """URLs inside manifests and feeds may reach only public addresses. Tests that serve
    enclosures, audio or transcripts on 127.0.0.1 opt in as an operator with an intranet would:
    AUDIOBATCH_ALLOW_HOSTS (same as `--allow-host 127.0.0.1`). Prefect workers get it through
    `process_worker(..., env=LOOPBACK_FETCH_ENV)` (tests/helpers/feeds.py)."""
    from tests.helpers.feeds import LOOPBACK_FETCH_ENV

    for name, value in LOOPBACK_FETCH_ENV.items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def _using(api: str):
    """This process talks to the server at `api` (workers get it from PREFECT_API_URL's value)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield api


@pytest.fixture(scope="session")
def prefect_sqlite_server(tmp_path_factory):
    """`prefect server start` on SQLite, as one machine runs it; yields (api, home)."""
    from tests.helpers.prefect_servers import prefect_server

    home = tmp_path_factory.mktemp("prefect-sqlite")
    with prefect_server(home) as api:
        yield api, home


@pytest.fixture(scope="session")
def prefect_postgres_server(tmp_path_factory):
    """`prefect server start` on PostgreSQL, as a fleet runs it (a fresh database on the server
    AUDIOBATCH_TEST_POSTGRES_URL names; `.ci/run` starts Debian's postgresql and sets it)."""
    from tests.helpers.prefect_servers import POSTGRES_ENV, fresh_postgres_database, postgres_url, prefect_server

    url = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL is not available: set {POSTGRES_ENV} (.ci/run installs and starts it)")
    home = tmp_path_factory.mktemp("prefect-postgres")
    with prefect_server(home, database_url=fresh_postgres_database(url)) as api:
        yield api, home


@pytest.fixture(scope="session")
def prefect_api(prefect_sqlite_server):
    """The session's Prefect API: a real server with its services, for every test that runs
    flows, deploys, submits or schedules."""
    with _using(prefect_sqlite_server[0]):
        yield prefect_sqlite_server[0]


@pytest.fixture
def fleet_api(prefect_api, request):
    """A fleet's Prefect API: the PostgreSQL server when the machine has one, else (with a
    warning in the report) the session's SQLite server."""
    from tests.helpers.prefect_servers import postgres_url

    if postgres_url() is None:
        request.node.warn(pytest.PytestWarning("PostgreSQL is not available: this fleet test runs on SQLite"))
        yield prefect_api
        return
    api, _ = request.getfixturevalue("prefect_postgres_server")
    with _using(api):
        yield api


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server (moto) on 127.0.0.1; AWS_* variables point at it."""
    from tests.helpers.s3 import s3_server

    with s3_server() as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C and SIGTERM stop the suite within seconds, with every process its tests started
    (tests/helpers/session_guard.py)."""
    from tests.helpers import session_guard

    session_guard.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests.helpers import session_guard

    session_guard.stop_processes()
