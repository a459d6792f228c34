"""Shared fixtures. The Prefect API is one ephemeral server for the whole session (~17 s to
start here), never one per test."""
from __future__ import annotations

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


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API server (SQLite) for tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


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
