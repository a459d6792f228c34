"""The local Prefect API server that command-line runs use when no server is configured.

Prefect's own answer to "no PREFECT_API_URL" is a temporary server per process (about 10-15 s
to start here, and left running if the process is killed). audiobatch instead keeps one local
server in the background: the first run starts it, later runs reuse it at once, and it stops
when asked (`audiobatch server stop`) or after AUDIOBATCH_SERVER_IDLE_MIN minutes without a
request (default 30). It runs Prefect's API with only the services runs need (as Prefect's
own temporary server does: no scheduler, no UI); for the UI and deployments run a real server
(`prefect server start`) and set PREFECT_API_URL. `AUDIOBATCH_PREFECT_SERVER=temporary` gives each run a server of its own
that exits with the run, even when the run is killed (it watches its parent process).

    python -m audiobatch.flows.prefect_server --port P [--idle-min N | --parent PID]

One background server per install: each install (a venv, a system Python) records its own
server in `<state dir>/prefect-server-<install>.json` (pid, url, the interpreter, the audiobatch
and Prefect versions) with its own database (`<state dir>/prefect-<install>.db`, unless
PREFECT_SERVER_DATABASE_CONNECTION_URL names one), so a run never uses a server that another
install (other versions) started: a server found under this install's record whose versions
differ (an upgrade) is stopped and replaced. The state dir is AUDIOBATCH_STATE_DIR, else
~/.cache/audiobatch; the log sits beside the record. Trusted side: only the operator's own
processes start, find and stop it; it binds 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_S = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
DEFAULT_IDLE_MIN = 30.0
STOP_GRACE_S = 3.0  # uvicorn's graceful shutdown can wait on Prefect's services for longer


def state_dir() -> Path:
    return Path(os.environ.get("AUDIOBATCH_STATE_DIR", Path.home() / ".cache" / "audiobatch"))


@dataclass(frozen=True)
class Install:
    """Whose server it is: the interpreter's environment and the versions it runs."""

    python: str
    audiobatch: str
    prefect: str

    @classmethod
    def this(cls) -> Install:
        from importlib.metadata import version

        from audiobatch import __version__

        return cls(sys.executable, __version__, version("prefect"))

    @property
    def key(self) -> str:
        """Names this install's files: one per environment (sys.prefix), whatever its versions."""
        return hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:12]

    def describe(self) -> str:
        return f"{self.python} (audiobatch {self.audiobatch}, Prefect {self.prefect})"


def _record(install: Install) -> Path:
    return state_dir() / f"prefect-server-{install.key}.json"


@dataclass(frozen=True)
class Server:
    pid: int
    url: str  # the API URL, ending in /api
    install: Install | None = None  # who started it (None: an older audiobatch's record)

    def healthy(self) -> bool:
        try:
            # plain http on 127.0.0.1: no certificates to load (~30 ms a client)
            return httpx.get(f"{self.url}/health", timeout=2.0, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    def as_record(self) -> str:
        return json.dumps({"pid": self.pid, "url": self.url, "install": asdict(self.install) if self.install else None})

    @classmethod
    def from_record(cls, path: Path) -> Server | None:
        try:
            data = json.loads(path.read_text())
            install = Install(**data["install"]) if data.get("install") else None
            return cls(int(data["pid"]), str(data["url"]), install)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_env(install: Install) -> dict[str, str]:
    """This install's own database, unless the operator named one: two Prefect versions never
    migrate the same SQLite file."""
    if os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return {}
    database = state_dir() / f"prefect-{install.key}.db"
    return {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}"}


def _spawn(extra: list[str], log_path: Path, *, detach: bool) -> Server:
    port = _free_port()
    install = Install.this()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            # -P: not the working folder first on sys.path (a checkout's own `audiobatch/` there
            # would hide the installed package's subpackages)
            [sys.executable, "-P", "-m", "audiobatch.flows.prefect_server", "--port", str(port), *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=detach,
            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                 **_database_env(install)})
    return Server(process.pid, f"http://127.0.0.1:{port}/api", install)


def _wait_healthy(server: Server, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.healthy():
            return
        if not _alive(server.pid):
            break
        time.sleep(0.1)
    stop_pid(server.pid)
    raise RuntimeError(f"the local Prefect server did not start (log: {log_path}); set "
                       "PREFECT_API_URL to a running server, or raise "
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # reap it if it is our own exited child
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    return True


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One starter at a time: two runs started together share one server."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / f"prefect-server-{Install.this().key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _answering(server: Server | None) -> Server | None:
    return server if server and _alive(server.pid) and server.healthy() else None


def running() -> Server | None:
    """This install's background server, if one is recorded and answering (whatever versions
    it was started with: `ensure_background` replaces one of other versions)."""
    return _answering(Server.from_record(_record(Install.this())))


def others() -> list[Server]:
    """Background servers that other installs (or an older audiobatch) started and that answer."""
    mine = _record(Install.this())
    records = [path for path in state_dir().glob("prefect-server*.json") if path != mine]
    return [server for server in map(Server.from_record, sorted(records)) if _answering(server)]


def ensure_background() -> tuple[Server, bool]:
    """(this install's background server, whether it was started now)."""
    install = Install.this()
    with _locked():
        server = running()
        if server and server.install == install:
            return server, False
        if server:  # this environment's server, started before an upgrade: not ours to use
            stop_pid(server.pid)
        idle = os.environ.get("AUDIOBATCH_SERVER_IDLE_MIN", str(DEFAULT_IDLE_MIN))
        log_path = state_dir() / f"prefect-server-{install.key}.log"
        server = _spawn(["--idle-min", idle], log_path, detach=True)
        _wait_healthy(server, log_path)
        _record(install).write_text(server.as_record())
        return server, True


@contextlib.contextmanager
def temporary() -> Iterator[Server]:
    """A server for this process only; it exits with this process, however that ends."""
    log_path = state_dir() / f"prefect-server-{os.getpid()}.log"
    server = _spawn(["--parent", str(os.getpid())], log_path, detach=False)
    try:
        _wait_healthy(server, log_path)
        yield server
    finally:
        stop_pid(server.pid)
        log_path.unlink(missing_ok=True)


def stop_background() -> Server | None:
    """Stop this install's background server (if any); return what was stopped."""
    with _locked():
        server = running()
        _record(Install.this()).unlink(missing_ok=True)
        if server:
            stop_pid(server.pid)
        return server


def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S (SQLite keeps the database consistent)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S + 1.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- the server process itself -------------------------------------------------------------

class _LastSeen:
    """ASGI middleware: remembers when the last request came (for the idle stop)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.at = time.monotonic()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.at = time.monotonic()
        await self.app(scope, receive, send)


def _watch(holder: dict[str, Any], should_stop: Any) -> None:
    """Ask uvicorn to stop when `should_stop()` says so; exit hard if it lingers (or if the
    server is still starting: Prefect's app takes seconds to import on a busy machine)."""
    while not should_stop():
        time.sleep(0.5)
    if "server" in holder:
        holder["server"].should_exit = True
        time.sleep(STOP_GRACE_S)
    os._exit(0)


def serve(port: int, idle_min: float | None, parent: int | None) -> None:
    holder: dict[str, Any] = {}
    started = time.monotonic()
    if parent is not None:  # temporary: gone with the run (reparented = the parent died)
        def should_stop() -> bool:
            return os.getppid() != parent
    else:
        def should_stop() -> bool:
            last = holder["app"].at if "app" in holder else started
            return idle_min is not None and time.monotonic() - last > idle_min * 60
    threading.Thread(target=_watch, args=(holder, should_stop), daemon=True).start()

    import uvicorn
    from prefect.server.api.server import create_app

    # ephemeral: only the services a run needs (no scheduler, no late-run or cancellation
    # sweeps, no UI), which keep a full server busy even when nothing runs
    holder["app"] = _LastSeen(create_app(ephemeral=True))
    config = uvicorn.Config(holder["app"], host="127.0.0.1", port=port, log_level="error",
                            lifespan="on", timeout_graceful_shutdown=int(STOP_GRACE_S))
    holder["server"] = uvicorn.Server(config)
    holder["server"].run()
    os._exit(0)  # Prefect's services may keep threads alive after uvicorn returns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m audiobatch.flows.prefect_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-min", type=float, help="stop after this long without a request")
    parser.add_argument("--parent", type=int, help="stop when this process ends")
    args = parser.parse_args(argv)
    serve(args.port, args.idle_min, args.parent)


if __name__ == "__main__":
    main()
