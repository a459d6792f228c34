"""Object storage end to end: manifest, audio, outputs, result cache and resumable run state
all under s3:// on a real S3-compatible server (moto on 127.0.0.1, reached by s3fs over HTTP).

What a user notices: a job whose every file lives in a bucket runs and writes its datasets and
media there; nothing the job needs to resume stays on the machine that ran it; the same job
again is answered from the cache in the bucket; a run id (data, in a submitted run) cannot
name a folder outside the run folders. The model is the embedded one. A shard killed on one
worker and finished by another from the run state in the bucket: tests/test_fleet.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiobatch.tasks.outputs.datasets import OutputRoot, read_dataset
from tests.helpers.data import SPEECH
from tests.helpers.e2e import run_transcribe, write_manifest

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


def test_a_run_id_cannot_reach_outside_the_run_folders(s3) -> None:
    from audiobatch.tasks.errors import InputError
    from audiobatch.tasks.run.context import run_folder

    root = OutputRoot(f"{s3.bucket('job-hostile')}/out")
    assert run_folder(root, "20260101T000000Z-abc123") == "s3://job-hostile/out/_runs/20260101T000000Z-abc123"
    for hostile in ("../../other-bucket", "a/../../x", "/etc", ".."):
        with pytest.raises(InputError):
            run_folder(root, hostile)


def test_a_paid_request_is_in_the_bucket_when_staging_returns(s3) -> None:
    """Rows of paid requests are put at once, however close together: a buffered one would
    die with a killed process while the answer's cache entry survived, and the resumed run
    would record that paid answer as a free cache hit."""
    from audiobatch.tasks.outputs.staging import RunStaging

    folder = f"{s3.bucket('job-paid')}/out/_runs/20260101T000000Z-abc123"
    writer = RunStaging(folder)
    for chunk in range(3):  # a burst: all within a few milliseconds
        writer.stage_rows("costs", [{"item_id": "ep1", "chunk_index": chunk, "cached": False}],
                          durable=True)
    writer.stage_rows("costs", [{"item_id": "ep1", "chunk_index": 3, "cached": True}])
    # another process (the resumed run) reads the bucket; this writer never flushed
    seen = RunStaging(folder).read("costs")
    assert sorted(row["chunk_index"] for row in seen if not row["cached"]) == [0, 1, 2]
    assert all(row["chunk_index"] != 3 for row in seen)  # free rows still wait for a group
