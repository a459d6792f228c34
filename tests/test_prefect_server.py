"""The local Prefect server of command-line runs: started once in the background and reused,
stopped when asked; a temporary one dies with its run, even when the run is SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each starts a real Prefect server (10-20 s here)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AUDIOBATCH_STATE_DIR": str(tmp_path / "state"),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(ROOT), **extra}
    env.pop("PREFECT_API_URL", None)
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiobatch.flows.cli", *args], env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=300)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _logged(api: str, text: str) -> bool:
    """Whether the server holds a log line containing `text` (it stores lines as they come)."""
    for _ in range(20):
        logs = httpx.post(f"{api}/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_DESC"}).json()
        if any(text in log["message"] for log in logs):
            return True
        time.sleep(0.25)
    return False


def test_background_server_is_started_once_reused_and_stopped_when_asked(tmp_path) -> None:
    started = _cli(tmp_path, "server", "start")
    assert started.returncode == 0 and started.stdout.startswith("started: http://127.0.0.1:")
    pid = int(started.stdout.split("pid ")[1].rstrip(")\n"))
    again = _cli(tmp_path, "server", "start")
    assert again.stdout.startswith("already running") and f"pid {pid}" in again.stdout
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"audio\n{ROOT / 'manifests' / 'audio' / 'dashwood.mp3'}\n")
    run = _cli(tmp_path, "transcribe", str(manifest), "--out", str(tmp_path / "out"), "--no-progress",
               "--concurrency", "3", PYTHONPROFILEIMPORTTIME="1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "started a local Prefect server" not in run.stderr  # it used the running one
    assert "View at" not in run.stderr  # it serves no UI: no link that answers 404
    # Start-up: neither FastAPI (Prefect's parameter encoder) nor pandas (pyarrow's probe) is
    # imported by a run, yet the parameters reach the server as JSON, options grouped.
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "numpy" in imported and "fastapi" not in imported
    assert not [name for name in imported if name.startswith("pandas.")]  # its probe alone is answered
    assert psutil.pid_exists(pid)
    # The command exits without tearing the interpreter down (flows/cli.py exit_quickly), yet
    # its log lines were handed to the server before it went.
    api = started.stdout.split()[1] + "/api"
    run_id = next(line.split()[1] for line in run.stdout.splitlines() if line.strip().startswith("run "))
    assert _logged(api, f"transcribe run {run_id} completed: 1 items: 1 ok")
    flow_run = httpx.post(f"{api}/flow_runs/filter", json={"limit": 1}).json()[0]
    assert flow_run["parameters"]["manifest"] == str(manifest)
    assert flow_run["parameters"]["options"]["throughput"]["concurrency"] == 3
    stopped = _cli(tmp_path, "server", "stop")
    assert stopped.stdout.strip() == f"stopped (pid {pid})"
    assert _gone(pid, within_s=10)
    assert _cli(tmp_path, "server", "status").returncode == 1


def test_a_killed_run_leaves_no_temporary_server_behind(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"audio\n{ROOT / 'manifests' / 'audio' / 'printing-history.mp3'}\n")
    run = subprocess.Popen([sys.executable, "-m", "audiobatch.flows.cli", "transcribe", str(manifest),
                            "--out", str(tmp_path / "out"), "--no-progress"],
                           env=_env(tmp_path, AUDIOBATCH_PREFECT_SERVER="temporary"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    servers: list[psutil.Process] = []
    deadline = time.monotonic() + 180
    while not servers and time.monotonic() < deadline and run.poll() is None:
        servers = [child for child in psutil.Process(run.pid).children()
                   if "audiobatch.flows.prefect_server" in " ".join(child.cmdline())]
        time.sleep(0.2)
    assert servers, "the run started no server of its own"
    time.sleep(1.0)  # let it get going
    os.kill(run.pid, signal.SIGKILL)  # only the run: its server must notice by itself
    run.wait()
    assert _gone(servers[0].pid, within_s=10)


def _another_install(tmp_path: Path) -> Path:
    """A second environment with its own sys.prefix that runs the same packages (a .pth adds
    this venv's site-packages): to audiobatch it is another install, as a second venv would be."""
    import site
    import venv

    other = tmp_path / "other-venv"
    venv.create(other, with_pip=False)
    [packages] = [p for p in site.getsitepackages() if p.endswith("site-packages")]
    [target] = list(other.glob("lib/python*/site-packages"))
    (target / "shared.pth").write_text(f"import site; site.addsitedir({packages!r})\n")
    return other / "bin" / "python"


def _status(python: Path | str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "audiobatch.flows.cli", "server", "status"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)


def test_each_install_uses_only_the_server_it_started(tmp_path) -> None:
    mine = _cli(tmp_path, "server", "start")
    assert mine.returncode == 0, mine.stderr
    my_pid = int(mine.stdout.split("pid ")[1].rstrip(")\n"))
    other_python = _another_install(tmp_path)
    theirs = subprocess.run([str(other_python), "-m", "audiobatch.flows.cli", "server", "start"],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    try:
        # The other install found a running server in the same state dir, yet started its own.
        assert theirs.stdout.startswith("started: "), theirs.stdout + theirs.stderr
        their_pid = int(theirs.stdout.split("pid ")[1].rstrip(")\n"))
        assert their_pid != my_pid
        status = _status(other_python, tmp_path).stdout
        assert f"(pid {their_pid}), started by {other_python}" in status
        assert "also running, not used by this install: " in status and f"(pid {my_pid})" in status
        assert f"started by {sys.executable}" in _status(sys.executable, tmp_path).stdout
    finally:
        subprocess.run([str(other_python), "-m", "audiobatch.flows.cli", "server", "stop"],
                       env=_env(tmp_path), capture_output=True, timeout=60)

    # Same environment, other versions (an upgrade in place): its old server is replaced.
    [record] = [p for p in (tmp_path / "state").glob("prefect-server-*.json")]
    data = json.loads(record.read_text())
    data["install"]["prefect"] = "0.0.1"
    record.write_text(json.dumps(data))
    assert "the next run replaces it" in _status(sys.executable, tmp_path).stdout
    again = _cli(tmp_path, "server", "start")
    assert again.stdout.startswith("started: ") and f"pid {my_pid}" not in again.stdout
    assert _gone(my_pid, within_s=10)
    _cli(tmp_path, "server", "stop")


def test_ctrl_c_on_a_local_run_says_one_line_and_exits_at_once(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio\n" + "".join(f"clip{i},{ROOT / 'manifests' / 'audio' / 'printing-history.mp3'}\n"
                                                for i in range(4)))
    run = subprocess.Popen([sys.executable, "-m", "audiobatch.flows.cli", "transcribe", str(manifest),
                            "--out", str(tmp_path / "out"), "--no-progress", "--concurrency", "1"],
                           env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staged = tmp_path / "out" / "_runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None and not any(staged.glob("*/costs*.jsonl")):
        time.sleep(0.2)  # until requests are being made
    assert run.poll() is None, run.communicate()
    run.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = run.communicate(timeout=60)
    waited = time.monotonic() - interrupted
    assert run.returncode == 130
    # Generous for a loaded machine; the process exits by itself within 2 s (flows/cli_jobs.py).
    assert waited < 10, f"took {waited:.1f} s to exit"
    after = stderr[stderr.rfind("audiobatch: interrupted"):]
    assert after.startswith("audiobatch: interrupted; finished items are kept")
    assert after.count("\n") <= 2 and "Crash detected" not in stderr and "Traceback" not in stderr
    # The same command again resumes: every clip ends ok once.
    again = _cli(tmp_path, "transcribe", str(manifest), "--out", str(tmp_path / "out"), "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming run" in again.stderr
