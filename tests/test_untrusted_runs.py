"""Runs started by others (the inbox, `submit`, any Prefect API client) cannot reach beyond what
the operator configured: local files only inside the data roots, the key only to allowed base
URLs, run ids that are plain names, parameters no wider than the deployment's.

Submitted runs go through a real Prefect process worker whose environment holds the operator's
settings (a fake key here); the inbox runs a real folder in-process.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect import get_client
from prefect.deployments import run_deployment

from audiobatch.flows.cli import main
from audiobatch.flows.deploy import ensure_work_pool
from audiobatch.flows.inbox import process_inbox
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.trust import normal_base_url
from audiobatch.tasks.options import InboxOptions
from audiobatch.tasks.run.context import RunOptions
from tests.helpers.data import SPEECH
from tests.helpers.e2e import all_files_text, read_dataset, write_manifest
from tests.helpers.faultserver import FaultServer
from tests.helpers.feeds import SHORT_CLIPS, process_worker

pytestmark = pytest.mark.usefixtures("prefect_api")
POOL = "audiobatch-test-untrusted"
FAKE_KEY = "sk-test-WORKERKEY-0123456789abcdef0123"
SECRET = "the-operators-private-notes-41d7"


def secret_files(tmp_path: Path) -> Path:
    """Files outside any data root, as a colleague's manifest might try to name them."""
    private = tmp_path / "private"
    private.mkdir()
    (private / "notes.txt").write_text(f"{SECRET} in a text file.\n")
    (private / "notes").write_text(f"{SECRET} without an extension.\n")
    return private


def test_run_ids_are_plain_names(tmp_path, capsys) -> None:
    victim = tmp_path / "victim"
    (victim / "work").mkdir(parents=True)
    manifest = write_manifest(tmp_path / "m.csv", [{"audio": str(SPEECH / SHORT_CLIPS[0])}])
    out = tmp_path / "out"
    for flag, value in [("--run-id", "../../victim"), ("--run-id", "a/b"), ("--rerun-failed", "../x"),
                        ("--run-id", ".hidden")]:
        assert main(["transcribe", str(manifest), "--out", str(out), flag, value]) == 2
        assert flag in capsys.readouterr().err
    assert (victim / "work").is_dir() and not out.exists()
    with pytest.raises(ConfigError, match="is not a run id"):
        RunOptions(kind="transcribe", manifest="m.csv", run_id="../../victim")
    assert RunOptions(kind="transcribe", manifest="m.csv", run_id="2026-01-01T00.night_run-2").run_id


def test_allowed_base_urls_refuse_before_any_request(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("AUDIOBATCH_ALLOWED_BASE_URLS", "https://api.openai.com/v1, https://gw.example/v1")
    manifest = write_manifest(tmp_path / "m.csv", [{"audio": str(SPEECH / SHORT_CLIPS[0])}])
    with FaultServer() as elsewhere:
        code = main(["transcribe", str(manifest), "--out", str(tmp_path / "out"), "--base-url", elsewhere.base_url])
        assert code == 2 and elsewhere.requests == []
    error = capsys.readouterr().err
    assert "is not allowed" in error and "AUDIOBATCH_ALLOWED_BASE_URLS" in error and FAKE_KEY not in error
    assert normal_base_url("HTTPS://API.OpenAI.com:443/v1/") == normal_base_url("https://api.openai.com/v1")
    assert normal_base_url("https://user:pw@gw.example:8443/v1") == "https://gw.example:8443/v1"


async def test_inbox_manifests_read_files_only_inside_the_inbox(tmp_path) -> None:
    inbox, private = tmp_path / "inbox", secret_files(tmp_path)
    (inbox / "texts").mkdir(parents=True)
    (inbox / "texts" / "hello.txt").write_text("Hello from inside the inbox.\n")
    (inbox / "texts" / "readme").write_text("An extensionless file inside the inbox.\n")
    links = {"link.txt": private / "notes", "inside-link.txt": inbox / "texts" / "readme",
             "environ.txt": Path("/proc/self/environ")}
    for name, target in links.items():
        (inbox / "texts" / name).symlink_to(target)
    write_manifest(inbox / "jobs.narrate.csv", [
        {"id": "inside", "text_file": "texts/hello.txt"},
        {"id": "absolute", "text_file": str(private / "notes.txt")},
        {"id": "dotdot", "text_file": "../private/notes.txt"},
        {"id": "symlink-out", "text_file": "texts/link.txt"},
        {"id": "symlink-no-ext", "text_file": "texts/inside-link.txt"},
        {"id": "proc", "text_file": "texts/environ.txt"}])
    out = tmp_path / "out"
    await process_inbox(str(inbox), out=str(out), options=InboxOptions.from_flat(audio_format="wav", progress=False))
    items = read_dataset(out, "items").set_index("item_id")
    assert items["status"].to_dict() == {"inside": "ok", "absolute": "failed", "dotdot": "failed",
                                         "symlink-out": "failed", "symlink-no-ext": "failed", "proc": "failed"}
    for item_id in ("absolute", "dotdot", "symlink-out", "proc"):
        assert "outside the folders this run may read" in items.loc[item_id, "error_message"], item_id
    assert "is not a .txt or .md or .epub file" in items.loc["symlink-no-ext", "error_message"]
    written = all_files_text(out) + all_files_text(inbox / "failed")  # outputs and the summary
    assert SECRET not in written and "without an extension" not in written
    assert "PATH=" not in all_files_text(out / "_cache")


# --- runs started through the Prefect API, executed by a real worker -----------------------------

@pytest.fixture(scope="module")
def worker(prefect_api, tmp_path_factory):
    """The operator's worker: a key in its environment, no base URL (the embedded model), no
    data roots in its environment (each deployment names its own, or none: no local files)."""
    ensure_work_pool(POOL)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with process_worker(POOL, log, env={"OPENAI_API_KEY": FAKE_KEY, "AUDIOBATCH_DATA_ROOTS": "",
                                        "OPENAI_BASE_URL": "", "AUDIOBATCH_ALLOW_HOSTS": ""}):
        yield log


def final_state(flow_run_id, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state.is_final():
                return flow_run.state
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish")


def test_submitted_runs_stay_within_the_operators_settings(worker, tmp_path, capsys) -> None:
    out = tmp_path / "shared-out"
    jobs, private = tmp_path / "jobs", secret_files(tmp_path)
    jobs.mkdir()
    assert main(["deploy", "transcribe", "--name", "guarded", "--work-pool", POOL, "--out", str(out),
                 "--max-cost-usd", "1", "--price-as", "gpt-audio-1.5", "--data-root", str(jobs)]) == 0
    shutil.copy(SPEECH / SHORT_CLIPS[0], jobs / "clip.wav")  # beside the manifest: readable
    (jobs / "elsewhere.wav").symlink_to(SPEECH / SHORT_CLIPS[1])
    (private / "clip.wav").write_bytes((SPEECH / SHORT_CLIPS[2]).read_bytes())
    manifest = write_manifest(jobs / "m.csv", [
        {"id": "beside", "audio": "clip.wav"}, {"id": "absolute", "audio": str(private / "clip.wav")},
        {"id": "dotdot", "audio": "../private/clip.wav"}, {"id": "symlink", "audio": "elsewhere.wav"}])
    victim = tmp_path / "victim"
    (victim / "work").mkdir(parents=True)
    capsys.readouterr()
    with FaultServer() as attacker:
        started = {}
        assert main(["submit", str(manifest), "--kind", "transcribe", "--deployment", "guarded",
                     "--base-url", attacker.base_url]) == 0
        started["base_url"] = capsys.readouterr().out.split("flow run: ")[1].split()[0]
        widen = {"manifest": str(manifest), "out": str(tmp_path / "elsewhere"),
                 "options": {"throughput": {"max_cost_usd": 1000, "allow_schemes": ["s3"]},
                             "model": {"price_as": None}}}
        started["widen"] = run_deployment("transcribe-manifest/guarded", parameters=widen, timeout=0).id
        started["files"] = run_deployment("transcribe-manifest/guarded",
                                          parameters={"manifest": str(manifest)}, timeout=0).id
        with pytest.raises(Exception, match="run_id"):  # the API refuses it against the flow's schema
            run_deployment("transcribe-manifest/guarded", timeout=0, parameters={
                "manifest": str(manifest), "options": {"reruns": {"run_id": "../../victim"}}})
        states = {name: final_state(run_id) for name, run_id in started.items()}
        assert attacker.requests == []  # the key never left for the attacker's server
    assert states["base_url"].is_failed() and "is not allowed" in states["base_url"].message
    assert states["widen"].is_failed()
    for problem in ("max_cost_usd 1000 is above the deployment's 1", "allow_schemes adds s3",
                    "price_as None is not the deployment's 'gpt-audio-1.5'", "is outside the deployment's"):
        assert problem in states["widen"].message, states["widen"].message
    assert not (tmp_path / "elsewhere").exists() and (victim / "work").is_dir()
    items = read_dataset(out, "items").set_index("item_id")
    assert items["status"].to_dict() == {"beside": "ok", "absolute": "failed", "dotdot": "failed",
                                         "symlink": "failed"}, worker.read_text()[-3000:]
    assert all("outside the folders this run may read" in items.loc[i, "error_message"]
               for i in ("absolute", "dotdot", "symlink"))
    assert FAKE_KEY not in worker.read_text() + all_files_text(out)


PASSWORD = "root-password: hunter2-5ea1"


def test_a_submitted_run_reads_nothing_the_operator_did_not_name(worker, tmp_path) -> None:
    """No data roots named: no local files at all (the manifest included); named: nothing outside
    them, nothing through a link, no chained or unenabled URL; no message quotes what it refused."""
    out, jobs, private = tmp_path / "out", tmp_path / "jobs", tmp_path / "private"
    jobs.mkdir()
    private.mkdir()
    secret = private / "notes.csv"
    secret.write_text(f"{PASSWORD}\nsecond line\n")  # no `audio` column: its error would quote this
    (jobs / "link.csv").symlink_to(secret)
    for name, roots in (("no-roots", []), ("rooted", ["--data-root", str(jobs)])):
        assert main(["deploy", "transcribe", "--name", name, "--work-pool", POOL, "--out", str(out), *roots]) == 0
    assert main(["deploy", "narrate", "--name", "narrating", "--work-pool", POOL, "--out", str(out),
                 "--data-root", str(jobs)]) == 0
    write_manifest(jobs / "m.csv", [{"text": "Hello."}])
    escape = tmp_path / "escape"
    with FaultServer() as other:
        runs = {  # (deployment, parameters) -> what the refusal says
            "no roots": ("transcribe-manifest/no-roots", {"manifest": str(secret)}, "named no data roots"),
            "outside": ("transcribe-manifest/rooted", {"manifest": str(secret)}, "is outside the folders"),
            "link": ("transcribe-manifest/rooted", {"manifest": str(jobs / "link.csv")}, "is outside the folders"),
            "chained": ("transcribe-manifest/rooted", {"manifest": f"simplecache::{other.origin}/m.csv"},
                        "not from a chained URL"),
            "ftp": ("transcribe-manifest/rooted", {"manifest": f"ftp://127.0.0.1:{other.port}/m.csv"},
                    "not from ftp://"),
            "out": ("transcribe-manifest/rooted", {"manifest": str(jobs / "m.csv"),
                                                   "out": f"file://{out}/../escape"}, "is outside the deployment's"),
            "caps": ("transcribe-manifest/rooted", {"manifest": str(jobs / "m.csv"), "options": {
                "throughput": {"timeout_s": 1e7, "max_backoff_s": 1e6},
                "scale": {"dask_workers": 256, "shards": 1000}}}, "shards 1000 is above the deployment's 1"),
            "feed": ("narrate-manifest/narrating", {"manifest": str(jobs / "m.csv"), "options": {"narration": {
                "feed_url": "https://elsewhere.example/show", "verify_attempts": 500}}},
                "feed_url 'https://elsewhere.example/show' is not the deployment's None"),
        }
        started = {what: run_deployment(name, parameters=params, timeout=0).id
                   for what, (name, params, _) in runs.items()}
        with pytest.raises(Exception, match="env"):  # the pool refuses job variables of a run's own
            run_deployment("transcribe-manifest/rooted", parameters={"manifest": str(jobs / "m.csv")},
                           timeout=0, job_variables={"env": {"AUDIOBATCH_DATA_ROOTS": "/"}})
        states = {what: final_state(run_id) for what, run_id in started.items()}
        assert other.requests == [] and other.connections_opened == 0
    for what, (_, _, said) in runs.items():
        assert states[what].is_failed() and said in states[what].message, (what, states[what].message)
    for said in ("timeout_s 1e+07 is above", "max_backoff_s 1e+06 is above", "dask_workers 256:"):
        assert said in states["caps"].message
    assert "verify_attempts 500 is above the deployment's 3" in states["feed"].message
    readable = " ".join(state.message for state in states.values()) + worker.read_text()
    assert "hunter2" not in readable and "root-password" not in readable
    assert not escape.exists() and not (out / "media").exists()
    assert not (out / "items").exists()  # nothing ran
