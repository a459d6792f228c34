"""Object storage end to end: manifest, audio, outputs, result cache and resumable run state
all under s3:// on a real S3-compatible server (moto on 127.0.0.1, reached by s3fs over HTTP).

What a user notices: a job whose every file lives in a bucket runs and writes its datasets and
media there; nothing the job needs to resume stays on the machine that ran it (a run killed on
one machine is finished on another, paying nothing twice); the same job again is answered
from the cache in the bucket. The model is real (embedded) where the answers matter, a stub on
127.0.0.1 where the test must stop the run at a chosen request.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from audiobatch.tasks.outputs import OutputRoot, read_dataset
from tests.helpers.data import SPEECH
from tests.helpers.e2e import run_transcribe, write_manifest
from tests.helpers.faultserver import FaultServer, hang, ok

CLIPS = ["pocketsphinx__goforward.wav", "deepspeech__LDC93S1.wav", "speech_recognition__english.wav"]


def upload_job(s3, bucket: str, clips: list[str], tmp_path: Path) -> str:
    """Clips under <bucket>/audio/, a manifest naming them relative to itself; its URL."""
    for clip in clips:
        s3.upload(SPEECH / clip, f"{bucket}/jobs/audio/{clip}")
    manifest = write_manifest(tmp_path / "job.csv", [{"id": Path(c).stem[:20], "audio": f"audio/{c}"}
                                                      for c in clips])
    return s3.upload(manifest, f"{bucket}/jobs/job.csv")


async def test_a_job_whose_files_all_live_in_s3(prefect_api, s3, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUDIOBATCH_STATE_DIR", str(tmp_path / "machine"))
    bucket = s3.bucket("job-all-s3")
    manifest = upload_job(s3, bucket, CLIPS[:2], tmp_path)
    out = f"{bucket}/out"
    first = await run_transcribe(manifest, out, allow_schemes=["s3"])
    assert first.summary["ok"] == 2 and first.summary["requests"] == 2
    root = OutputRoot(out)
    items = read_dataset(root, "items").to_pandas()
    assert sorted(items["status"]) == ["ok", "ok"]
    transcripts = read_dataset(root, "transcripts").to_pandas()
    assert any("forward" in text.lower() for text in transcripts["text"])
    for path in transcripts["srt_path"]:  # media in the bucket, named by URL
        assert path.startswith("s3://job-all-s3/out/media/") and s3.fs.exists(path)
    assert len(s3.fs.glob("job-all-s3/out/_cache/*/*.json")) == 2
    job = json.loads(s3.fs.cat(f"job-all-s3/out/_runs/{first.summary['run_id']}/job.json"))
    assert job["finished"] is True
    # nothing a resume needs stayed on this machine (its work files are gone too)
    assert not [p for p in (tmp_path / "machine").rglob("*") if p.is_file()]

    second = await run_transcribe(manifest, out, allow_schemes=["s3"])
    costs = read_dataset(root, "costs").to_pandas()
    again = costs[costs["run_id"] == second.summary["run_id"]]
    assert second.summary["ok"] == 2 and len(again) == 2 and again["cached"].all()
    assert again["cost_usd"].sum() == 0


def _command(manifest: str, out: str, base_url: str) -> list[str]:
    return [sys.executable, "-m", "audiobatch.flows.cli", "transcribe", manifest, "--out", out,
            "--base-url", base_url, "--model", "audiobatch-local", "--allow-scheme", "s3",
            "--concurrency", "1", "--no-progress"]


def _machine(s3, folder: Path) -> dict[str, str]:
    """Another machine: its own state folder and working folder, the same bucket and server."""
    folder.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **s3.env, "PREFECT_API_URL": PREFECT_API_URL.value(),
            "AUDIOBATCH_STATE_DIR": str(folder / "state"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_a_run_killed_on_one_machine_finishes_on_another(prefect_api, s3, tmp_path) -> None:
    bucket = s3.bucket("job-resume")
    manifest = upload_job(s3, bucket, CLIPS, tmp_path)
    out = f"{bucket}/out"
    answered = {"n": 0}

    def script(request):  # two answers, then the first machine hangs until it is killed
        answered["n"] += 1
        return ok(f"words {request.index}") if answered["n"] <= 2 else hang(60)

    with FaultServer(script) as model:
        first = subprocess.Popen(_command(manifest, out, model.base_url), cwd=tmp_path,
                                 env=_machine(s3, tmp_path / "a"), start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while answered["n"] < 3 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert answered["n"] == 3, first.stderr.read().decode()[-3000:]
        model.script = lambda request: ok(f"words {request.index}")
        second = subprocess.run(_command(manifest, out, model.base_url), cwd=tmp_path,
                                env=_machine(s3, tmp_path / "b"), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        asked_again = len(model.requests) - 3

    root = OutputRoot(out)
    items = read_dataset(root, "items").to_pandas()
    costs = read_dataset(root, "costs").to_pandas()
    assert items["run_id"].nunique() == 1 and sorted(items["status"]) == ["ok"] * 3
    # only the request in flight when the first machine died was asked again
    assert asked_again == 1
    paid = costs[~costs["cached"] & (costs["http_status"] == 200)]
    assert len(paid) == 3 and not paid.duplicated(["item_id", "chunk_index"]).any()


def test_a_run_id_cannot_reach_outside_the_run_folders(s3) -> None:
    from audiobatch.tasks.errors import InputError
    from audiobatch.tasks.runs import run_folder

    root = OutputRoot(f"{s3.bucket('job-hostile')}/out")
    assert run_folder(root, "20260101T000000Z-abc123") == "s3://job-hostile/out/_runs/20260101T000000Z-abc123"
    for hostile in ("../../other-bucket", "a/../../x", "/etc", ".."):
        with pytest.raises(InputError):
            run_folder(root, hostile)
