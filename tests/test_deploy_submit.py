"""Deployments and submission against a real (ephemeral) Prefect API, executed by a real
`prefect worker start --type process` subprocess, as in production: the worker runs each flow
run in its own child process, which fetches a feed served over HTTP on 127.0.0.1."""
from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from audiobatch.flows.cli import build_parser, main
from audiobatch.flows.cli_args import CLI_ONLY
from audiobatch.flows.cli_ops import NOT_FOR_INBOX, SCHEDULE_DESTS
from audiobatch.flows.deploy import FLOWS, ensure_work_pool, load_flow
from audiobatch.tasks.options import flat_names
from tests.helpers.e2e import corpus_wer, read_dataset, write_manifest
from tests.helpers.feeds import LOOPBACK_FETCH_ENV, SHORT_CLIPS, FeedServer, TestEpisode, process_worker
from tests.helpers.localserver import references
from tests.helpers.data import ROOT, SPEECH

pytestmark = pytest.mark.e2e
POOL = "audiobatch-test-deploy"
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def worker(prefect_api, tmp_path_factory):
    ensure_work_pool(POOL)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    # The operator's settings: the feed's enclosures are on 127.0.0.1, and submitted manifests
    # (under the test's temporary folders) name audio in the shared speech folder.
    data_roots = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(SPEECH)])
    with process_worker(POOL, log, env={**LOOPBACK_FETCH_ENV, "AUDIOBATCH_DATA_ROOTS": data_roots}):
        yield log


@pytest.fixture
def site(tmp_path: Path):
    with FeedServer(tmp_path / "site") as server:
        yield server


def run_and_wait(full_name: str, log: Path) -> None:
    flow_run = run_deployment(full_name, timeout=RUN_TIMEOUT_S)
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{log.read_text()[-4000:]}"


def read_deployment(full_name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(full_name)


def test_podcast_deployment_schedule_and_worker_runs(worker, site, tmp_path, capsys):
    out = tmp_path / "shared-out"
    episodes = [TestEpisode("e-1", "One", SHORT_CLIPS[0], day=0),
                TestEpisode("e-2", "Two", SHORT_CLIPS[2], day=1)]
    url = site.write_feed("feed.xml", "Scheduled Show", episodes)
    assert main(["deploy", "podcast", url, "--cron", "0 * * * *", "--timezone", "Europe/Berlin",
                 "--work-pool", POOL, "--out", str(out), "--limit", "10", "--name", "hourly"]) == 0
    assert "transcribe-podcast/hourly" in capsys.readouterr().out

    deployment = read_deployment("transcribe-podcast/hourly")
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
        "0 * * * *", "Europe/Berlin", True)
    assert deployment.parameters == {"feed": url, "out": str(out), "limit": 10}  # typed options only
    assert deployment.work_pool_name == POOL
    assert deployment.entrypoint == "audiobatch.flows.podcast.transcribe_podcast"

    run_and_wait("transcribe-podcast/hourly", worker)
    items = read_dataset(out, "items")
    assert sorted(items["episode_guid"]) == ["e-1", "e-2"] and set(items["status"]) == {"ok"}
    texts = read_dataset(out, "transcripts").sort_values("episode_guid")["text"]
    assert corpus_wer([references()[SHORT_CLIPS[0]], references()[SHORT_CLIPS[2]]], list(texts)) < 0.25

    run_and_wait("transcribe-podcast/hourly", worker)  # nothing new
    assert len(read_dataset(out, "items")) == 2

    site.write_feed("feed.xml", "Scheduled Show", [*episodes, TestEpisode("e-3", "Three", SHORT_CLIPS[3], day=2)])
    run_and_wait("transcribe-podcast/hourly", worker)
    items = read_dataset(out, "items")
    assert sorted(items["episode_guid"]) == ["e-1", "e-2", "e-3"]  # exactly the new one added
    assert len(site.audio_requests()) == 3  # each enclosure downloaded once


def test_submit_runs_a_manifest_on_the_worker(worker, tmp_path, capsys):
    out = tmp_path / "shared-out"
    assert main(["deploy", "transcribe", "--work-pool", POOL, "--out", str(out)]) == 0
    manifest = write_manifest(tmp_path / "jobs" / "m.csv", [
        {"id": "forward", "audio": str(SPEECH / SHORT_CLIPS[0])},
        {"id": "english", "audio": str(SPEECH / SHORT_CLIPS[4])}])
    capsys.readouterr()
    assert main(["submit", str(manifest), "--kind", "transcribe", "--language", "en"]) == 0
    printed = capsys.readouterr().out
    flow_run_id = re.search(r"flow run: ([0-9a-f-]{36})", printed).group(1)
    assert f"/runs/flow-run/{flow_run_id}" in printed  # the UI link

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    # what was typed, on top of the deployment's own parameters
    assert flow_run.parameters == {"manifest": str(manifest), "out": str(out),
                                   "options": {"transcription": {"language": "en"}}}
    final = wait_for_flow_run(flow_run_id)
    assert final.state.is_completed(), f"{final.state}\n{worker.read_text()[-4000:]}"
    texts = read_dataset(out, "transcripts").sort_values("item_id")
    assert list(texts["item_id"]) == ["english", "forward"]
    assert corpus_wer([references()[SHORT_CLIPS[4]], references()[SHORT_CLIPS[0]]], list(texts["text"])) < 0.25


def wait_for_flow_run(flow_run_id: str):
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state.is_final():
                return flow_run
            time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {RUN_TIMEOUT_S} s")


def test_strict_submit_refuses_bad_rows_and_creates_no_run(prefect_api, tmp_path, capsys):
    assert main(["deploy", "transcribe", "--name", "strict-check", "--work-pool", POOL,
                 "--out", str(tmp_path / "out")]) == 0
    manifest = write_manifest(tmp_path / "m.csv", [
        {"id": "fine", "audio": str(SPEECH / SHORT_CLIPS[0])},
        {"id": "typo", "audio": str(SPEECH / "no-such-clip.wav")},
        {"id": "bad id/", "audio": str(SPEECH / SHORT_CLIPS[1])}])
    code = main(["submit", str(manifest), "--kind", "transcribe", "--deployment", "strict-check", "--strict"])
    captured = capsys.readouterr()
    assert code == 2
    assert "2 of 3 rows have problems" in captured.out
    assert "row 3: audio file not found" in captured.out and "row 4:" in captured.out
    assert "--strict: not submitted" in captured.err
    deployment = read_deployment("transcribe-manifest/strict-check")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    assert runs == []


def test_submit_lists_the_rows_the_worker_will_refuse_before_submitting(prefect_api, tmp_path, capsys):
    """The deployment declares its data roots; `submit` checks rows against them (and the
    options against the deployment's) here, instead of "N rows, all valid" and a worker's refusal."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for folder in (data, elsewhere):
        folder.mkdir()
        shutil.copy(SPEECH / SHORT_CLIPS[0], folder / "clip.wav")
    assert main(["deploy", "transcribe", "--name", "rooted-check", "--work-pool", POOL,
                 "--out", str(tmp_path / "out"), "--data-root", str(data)]) == 0
    deployment = read_deployment("transcribe-manifest/rooted-check")
    assert deployment.parameters["options"] == {"throughput": {"data_roots": [str(data)]}}
    manifest = write_manifest(data / "m.csv", [
        {"id": "inside", "audio": "clip.wav"},
        {"id": "outside", "audio": str(elsewhere / "clip.wav")},
        {"id": "ftp", "audio": "ftp://files.example/clip.wav"},
        {"id": "chained", "audio": "simplecache::https://files.example/clip.wav"}])
    capsys.readouterr()
    code = main(["submit", str(manifest), "--kind", "transcribe", "--deployment", "rooted-check", "--strict"])
    printed = capsys.readouterr()
    assert code == 2 and "3 of 4 rows have problems" in printed.out, printed
    assert f"row 3: {elsewhere / 'clip.wav'} is outside the deployment's data roots ({data})" in printed.out
    assert "row 4: the deployment does not enable ftp://" in printed.out
    assert "row 5: audio file not found" in printed.out  # a cell a::b is a (local) name, never a chain
    outside = write_manifest(elsewhere / "m.csv", [{"id": "inside", "audio": str(data / "clip.wav")}])
    assert main(["submit", str(outside), "--kind", "transcribe", "--deployment", "rooted-check"]) == 2
    assert "not submitted: manifest" in capsys.readouterr().err
    assert main(["submit", str(manifest), "--kind", "transcribe", "--deployment", "rooted-check",
                 "--shards", "4", "--timeout-s", "99999"]) == 2
    error = capsys.readouterr().err
    assert "not submitted" in error and "shards 4 is above the deployment's 1" in error
    assert "timeout_s 99999 is above the deployment's 120" in error
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    assert runs == []  # nothing was submitted


def test_relative_paths_are_refused_for_a_remote_server(prefect_api, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "m.csv", [{"audio": str(SPEECH / SHORT_CLIPS[0])}])
    with temporary_settings({PREFECT_API_URL: "https://prefect.example.com/api"}):
        code = main(["submit", "m.csv", "--kind", "transcribe"])
    assert code == 2
    error = capsys.readouterr().err
    assert "manifest 'm.csv' is a relative path, but the Prefect server is remote" in error
    assert "absolute path" in error and "fsspec URL" in error


def test_options_of_the_other_kind_are_refused(prefect_api, tmp_path, capsys):
    code = main(["submit", str(tmp_path / "m.csv"), "--kind", "transcribe", "--voice", "nova"])
    assert code == 2
    assert "--voice: not an option of the transcribe-manifest flow" in capsys.readouterr().err


def test_prefect_yaml_deploys_what_the_cli_deploys(prefect_api, tmp_path):
    """`prefect deploy` with the documented prefect.yaml has the same effect as `audiobatch deploy`."""
    ensure_work_pool("audiobatch")
    shutil.copy(ROOT / "prefect.yaml", tmp_path / "prefect.yaml")  # prefect may rewrite it
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run([prefect, "--no-prompt", "deploy", "-n", "podcast-example"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert main(["deploy", "podcast", "https://feeds.example.org/show.xml", "--name", "podcast-cli",
                 "--timezone", "Europe/Berlin", "--out", "/srv/audiobatch/outputs", "--limit", "20"]) == 0

    def essentials(full_name: str) -> tuple:
        d = read_deployment(full_name)
        return (d.entrypoint, d.parameters, d.work_pool_name, d.pull_steps or [],
                [(s.schedule.cron, s.schedule.timezone) for s in d.schedules],
                d.global_concurrency_limit.limit)

    from_yaml = essentials("transcribe-podcast/podcast-example")
    assert from_yaml == essentials("transcribe-podcast/podcast-cli")
    assert from_yaml[4] == [("0 * * * *", "Europe/Berlin")] and from_yaml[5] == 1


def test_every_command_line_option_is_a_parameter_of_its_flow():
    """A run option added to the CLI must reach the podcast and inbox flows too (and their
    deployments), or `audiobatch podcast --new-option` would crash in the flow call."""
    commands = build_parser()._subparsers._group_actions[0].choices
    deploy_kinds = commands["deploy"]._subparsers._group_actions[0].choices
    cases = [(commands["podcast"], "podcast"), (commands["inbox"], "inbox"),
             *((parser, kind) for kind, parser in deploy_kinds.items())]
    cli_only = {"help", *CLI_ONLY, *SCHEDULE_DESTS, *NOT_FOR_INBOX}
    for parser, kind in cases:
        accepted = set(inspect.signature(load_flow(kind).fn).parameters) | flat_names(FLOWS[kind].options)
        options = {action.dest for action in parser._actions} - cli_only
        assert options <= accepted, f"{FLOWS[kind].name} lacks {sorted(options - accepted)}"
