"""The inbox flow: manifests dropped into a folder are run once each and filed in done/ or
failed/ with their summaries, even when two runs overlap; also deployed and run by a real
Prefect process worker."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import fsspec
import pytest
from prefect import get_client
from prefect.deployments import run_deployment

from audiobatch.flows.cli import main
from audiobatch.tasks.options import InboxOptions
from audiobatch.flows.deploy import ensure_work_pool
from audiobatch.flows.inbox import Inbox, Report, process_inbox
from tests.helpers.data import SPEECH
from tests.helpers.e2e import corpus_wer, read_dataset, write_manifest
from tests.helpers.feeds import SHORT_CLIPS, process_worker
from tests.helpers.localserver import references

POOL = "audiobatch-test-inbox"


def drop_clips(inbox: Path, *clips: str) -> None:
    (inbox / "audio").mkdir(parents=True, exist_ok=True)
    for clip in clips:
        shutil.copy(SPEECH / clip, inbox / "audio" / clip)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.e2e
async def test_overlapping_runs_process_every_manifest_once(prefect_api, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    drop_clips(inbox, SHORT_CLIPS[0], SHORT_CLIPS[4])
    write_manifest(inbox / "episodes.csv", [{"id": "forward", "audio": f"audio/{SHORT_CLIPS[0]}"},
                                            {"id": "english", "audio": f"audio/{SHORT_CLIPS[4]}"}])
    write_manifest(inbox / "notes.narrate.csv", [{"id": "hello", "text": "Hello from the inbox."}])
    write_manifest(inbox / "partial.csv", [{"id": "there", "audio": f"audio/{SHORT_CLIPS[0]}"},
                                           {"id": "lost", "audio": "audio/never-uploaded.wav"}])
    write_manifest(inbox / "mystery.csv", [{"name": "x", "comment": "which kind am I?"}])

    first, second = await asyncio.gather(process_inbox(str(inbox), out=str(out),
        options=InboxOptions.from_flat(progress=False)),
                                         process_inbox(str(inbox), out=str(out),
                                             options=InboxOptions.from_flat(progress=False)))
    processed = [r["manifest"] for r in first["processed"] + second["processed"]]
    assert sorted(processed) == ["episodes.csv", "mystery.csv", "notes.narrate.csv", "partial.csv"]
    # Which run takes which manifest depends on scheduling; that each ran exactly once does not.
    assert names(inbox / "done") == {"episodes.csv", "episodes.csv.summary.json",
                                     "notes.narrate.csv", "notes.narrate.csv.summary.json"}
    assert names(inbox / "failed") == {"partial.csv", "partial.csv.summary.json",
                                       "mystery.csv", "mystery.csv.summary.json"}
    assert not list(inbox.glob("*.csv")) and not list((inbox / "processing").glob("*.claim"))

    items = read_dataset(out, "items")
    assert items["item_id"].value_counts().max() == 1  # no manifest ran twice
    texts = read_dataset(out, "transcripts").set_index("item_id")["text"]
    assert corpus_wer([references()[SHORT_CLIPS[0]], references()[SHORT_CLIPS[4]]],
                      [texts["forward"], texts["english"]]) < 0.25
    assert Path(read_dataset(out, "narrations").iloc[0]["audio_path"]).stat().st_size > 1000

    done = json.loads((inbox / "done" / "episodes.csv.summary.json").read_text())
    assert (done["kind"], done["summary"]["ok"], done["problems"]) == ("transcribe", 2, [])
    partial = json.loads((inbox / "failed" / "partial.csv.summary.json").read_text())
    assert [(p["item_id"], p["status"]) for p in partial["problems"]] == [("lost", "failed")]
    assert "never-uploaded.wav" in partial["problems"][0]["error_message"]
    mystery = json.loads((inbox / "failed" / "mystery.csv.summary.json").read_text())
    assert "cannot tell whether to transcribe or narrate" in mystery["error"]


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    inbox = tmp_path / "inbox"
    write_manifest(inbox / "a.csv", [{"audio": "x.wav"}])
    box, other = Inbox(str(inbox), stale_claim_h=1.0), Inbox(str(inbox), stale_claim_h=1.0)
    assert box.claim("a.csv") and not other.claim("a.csv")
    claim = inbox / "processing" / "a.csv.claim"
    two_hours_ago = time.time() - 7200
    os.utime(claim, (two_hours_ago, two_hours_ago))  # its run crashed long ago
    assert other.claim("a.csv") and not box.claim("a.csv")
    other.finish(Report("a.csv", "done"))
    assert not other.claim("a.csv")  # finished: nothing left to claim
    assert names(inbox / "done") == {"a.csv", "a.csv.summary.json"}


def test_claims_on_an_fsspec_store():
    prefix = f"memory://inbox-{os.getpid()}-{time.monotonic_ns()}"
    with fsspec.open(f"{prefix}/m.narrate.csv", "w") as handle:
        handle.write("text\nhello\n")
    box = Inbox(prefix)
    assert box.waiting() == ["m.narrate.csv"]
    assert box.claim("m.narrate.csv") and not Inbox(prefix).claim("m.narrate.csv")
    box.finish(Report("m.narrate.csv", "failed", error="example"))
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"{prefix}/failed/m.narrate.csv") and not fs.exists(f"{prefix}/m.narrate.csv")
    assert json.loads(fs.cat(f"{prefix}/failed/m.narrate.csv.summary.json"))["error"] == "example"


@pytest.mark.e2e
async def test_an_inbox_on_an_fsspec_prefix(prefect_api, tmp_path):
    prefix = f"memory://inbox-{os.getpid()}-{time.monotonic_ns()}"
    with fsspec.open(f"{prefix}/greetings.csv", "w") as handle:  # header decides: narrate
        handle.write("id,text\ngreeting,Good morning from the object store.\n")
    result = await process_inbox(prefix, out=str(tmp_path / "out"),
        options=InboxOptions.from_flat(audio_format="wav", progress=False))
    assert [(r["manifest"], r["kind"], r["status"]) for r in result["processed"]] == [
        ("greetings.csv", "narrate", "done")]
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"{prefix}/done/greetings.csv") and not fs.exists(f"{prefix}/greetings.csv")
    [narration] = read_dataset(tmp_path / "out", "narrations").to_dict("records")
    assert narration["item_id"] == "greeting" and narration["format"] == "wav"


@pytest.mark.e2e
def test_inbox_deployment_runs_on_a_worker(prefect_api, tmp_path, capsys):
    inbox, out = tmp_path / "shared" / "inbox", tmp_path / "shared" / "out"
    drop_clips(inbox, SHORT_CLIPS[2])
    write_manifest(inbox / "today.csv", [{"id": "amiable", "audio": f"audio/{SHORT_CLIPS[2]}"}])
    ensure_work_pool(POOL)
    assert main(["deploy", "inbox", str(inbox), "--work-pool", POOL, "--out", str(out)]) == 0
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("audiobatch-inbox/audiobatch")
    assert deployment.schedules[0].schedule.cron == "*/5 * * * *"
    assert deployment.parameters == {"inbox": str(inbox), "out": str(out)}

    with process_worker(POOL, tmp_path / "worker.log"):
        flow_run = run_deployment("audiobatch-inbox/audiobatch", timeout=300)
    assert flow_run.state.is_completed(), (tmp_path / "worker.log").read_text()[-4000:]
    assert names(inbox / "done") == {"today.csv", "today.csv.summary.json"}
    [text] = read_dataset(out, "transcripts")["text"]
    assert corpus_wer([references()[SHORT_CLIPS[2]]], [text]) < 0.25


# --- what a dropper plants -------------------------------------------------------------------------

def test_planted_links_are_moved_aside_never_written_through(tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "another-output-root"
    inbox.mkdir()
    for name in ("processing", "done", "failed"):
        (elsewhere / name).mkdir(parents=True)
        (inbox / name).symlink_to(elsewhere / name)  # seen: the worker wrote through these
    write_manifest(inbox / "a.csv", [{"audio": "x.wav"}])
    write_manifest(inbox / "b.csv", [{"audio": "y.wav"}])
    os.mkfifo(inbox / "pipe.csv")
    (inbox / "link.csv").symlink_to(inbox / "a.csv")
    box = Inbox(str(inbox))
    assert box.waiting() == ["a.csv", "b.csv"]  # regular files only
    assert box.claim("a.csv") and box.claim("b.csv")
    box.finish(Report("a.csv", "done"))
    box.finish(Report("b.csv", "failed", error="example"))
    assert [list((elsewhere / name).iterdir()) for name in ("processing", "done", "failed")] == [[], [], []]
    for name in ("processing", "done", "failed"):
        assert (inbox / name).is_dir() and not (inbox / name).is_symlink()
    assert names(inbox / "done") == {"a.csv", "a.csv.summary.json"}
    planted = sorted(p.name.split(".planted-")[0] for p in inbox.iterdir() if ".planted-" in p.name)
    assert planted == ["done", "failed", "processing"]  # moved aside, for the operator to see

    # a link planted inside the inbox's own folder is not written through either
    victim = elsewhere / "victim.json"
    victim.write_text("untouched")
    (inbox / "failed" / "c.csv.summary.json").symlink_to(victim)
    write_manifest(inbox / "c.csv", [{"audio": "z.wav"}])
    assert box.claim("c.csv")
    moved_to = box.finish(Report("c.csv", "failed", error="example"))
    assert victim.read_text() == "untouched" and moved_to != str(inbox / "failed" / "c.csv")
    assert json.loads(Path(f"{moved_to}.summary.json").read_text())["error"] == "example"


@pytest.mark.e2e
async def test_a_manifest_swapped_for_a_link_after_listing_is_not_read(prefect_api, tmp_path, monkeypatch):
    inbox, out, private = tmp_path / "inbox", tmp_path / "out", tmp_path / "private"
    private.mkdir()
    secret = private / "passwords.csv"
    secret.write_text("root password: hunter2-5ea1\nsecond line\n")
    write_manifest(inbox / "kind-by-header.csv", [{"audio": "a.wav"}])
    write_manifest(inbox / "kind-by-name.transcribe.csv", [{"audio": "a.wav"}])
    write_manifest(inbox / "pipe.narrate.csv", [{"text": "hello"}])
    claim = Inbox.claim

    def swap_then_claim(box, name):  # between listing and running, as a dropper racing the run
        (inbox / name).unlink()
        if name.startswith("pipe"):
            os.mkfifo(inbox / name)  # reading it would block the run forever
        else:
            (inbox / name).symlink_to(secret)
        return claim(box, name)

    monkeypatch.setattr(Inbox, "claim", swap_then_claim)
    result = await process_inbox(str(inbox), out=str(out), options=InboxOptions.from_flat(progress=False))
    errors = {r["manifest"]: r["error"] for r in result["processed"]}
    assert set(errors) == {"kind-by-header.csv", "kind-by-name.transcribe.csv", "pipe.narrate.csv"}
    assert "is a symbolic link" in errors["kind-by-header.csv"]  # the inbox's own read
    assert "is a symbolic link" in errors["kind-by-name.transcribe.csv"]  # the run's read
    assert "is not a regular file" in errors["pipe.narrate.csv"]
    written = "".join(p.read_text(errors="replace") for p in [*inbox.rglob("*.json"), *out.rglob("*")]
                      if p.is_file() and not p.is_symlink())
    assert "hunter2" not in written and "root password" not in written
    assert secret.read_text().startswith("root password")  # moved links point on, untouched


def test_a_manifest_or_claim_taken_away_meanwhile_does_not_stop_the_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    write_manifest(inbox / "a.csv", [{"audio": "x.wav"}])
    box = Inbox(str(inbox))
    assert box.claim("a.csv")
    (inbox / "a.csv").unlink()
    (inbox / "processing" / "a.csv.claim").unlink()
    box.finish(Report("a.csv", "failed", error="example"))
    assert names(inbox / "failed") == {"a.csv.summary.json"}
