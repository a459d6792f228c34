"""Kill the process mid-run (SIGKILL), run the same command again: the work finishes, each item
and chunk has exactly one row, and nothing that had succeeded is sent or paid for again."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from tests.helpers.data import SPEECH
from tests.helpers.faultserver import FaultServer
from tests.helpers.localserver import running_server

pytestmark = pytest.mark.usefixtures("prefect_api")
CLIPS = ["derived__LJ001-0009_to_0032_concat.wav", "openai-whisper__jfk.flac",
         "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav"]


def _command(manifest: Path, out: Path, base_url: str) -> list[str]:
    return [sys.executable, "-m", "audiobatch.flows.cli", "transcribe", str(manifest), "--out", str(out),
            "--base-url", base_url, "--model", "audiobatch-local", "--max-audio-tokens", "300",
            "--concurrency", "1", "--no-progress"]


def _env() -> dict[str, str]:
    # The runs use this session's Prefect API rather than starting their own. In-process limits:
    # the killed run dies holding fleet slots, which the server frees only when their leases end
    # (60-90 s): later tests would wait for them.
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "AUDIOBATCH_FLEET_LIMITS": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _chat(server: FaultServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


def test_sigkill_then_rerun_finishes_without_paying_twice(tmp_path) -> None:
    manifest = tmp_path / "episodes.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["audio"], *[[str(SPEECH / c)] for c in CLIPS]])
    out = tmp_path / "out"
    with running_server() as upstream, FaultServer(upstream=upstream.removesuffix("/v1")) as proxy:
        first = subprocess.Popen(_command(manifest, out, proxy.base_url), env=_env(),
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while _chat(proxy) < 4 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # mid-run: 4 of 9 chunks asked for
        first.wait()
        assert first.returncode == -signal.SIGKILL
        cached_before = len(list(out.glob("_cache/*/*.json")))
        sent_before = _chat(proxy)
        assert cached_before >= 1 and not (out / "items").exists()

        second = subprocess.run(_command(manifest, out, proxy.base_url), env=_env(),
                                capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        sent_after = _chat(proxy) - sent_before

    items = pd.read_parquet(out / "items")
    costs = pd.read_parquet(out / "costs")
    chunks = int(items["n_chunks"].sum())
    assert items["run_id"].nunique() == 1  # the second run resumed the first
    assert sorted(items["status"]) == ["ok"] * 3 and items["item_id"].is_unique
    assert pd.read_parquet(out / "transcripts")["item_id"].is_unique
    assert not pd.read_parquet(out / "segments").duplicated(["item_id", "segment_index"]).any()
    # One paid row per chunk, none repeated, none missing.
    assert cached_before < chunks >= 8
    assert len(costs) == chunks and not costs.duplicated(["item_id", "chunk_index"]).any()
    assert not costs["cached"].any()
    # What was answered before the kill was not asked for again.
    assert sent_after == chunks - cached_before


def test_two_runs_of_the_same_job_at_once_never_share_a_run(tmp_path) -> None:
    """The same command twice at once on one output root (a fleet makes this normal): the
    second waits for the first run (its lease) instead of resuming it alongside, so no item is
    done twice inside a run, no paid request is repeated, and neither removes the other's work
    files (the FileNotFoundError on a chunk file that a fleet once showed)."""
    manifest = tmp_path / "episodes.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["audio"], *[[str(SPEECH / c)] for c in CLIPS]])
    out = tmp_path / "out"
    with running_server() as upstream, FaultServer(upstream=upstream.removesuffix("/v1")) as proxy:
        first = subprocess.Popen(_command(manifest, out, proxy.base_url), env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while _chat(proxy) < 1 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = subprocess.run(_command(manifest, out, proxy.base_url), env=_env(),
                                capture_output=True, text=True, timeout=900)
        _, first_err = first.communicate(timeout=900)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "of this job is in progress" in second.stderr
    items = pd.read_parquet(out / "items")
    costs = pd.read_parquet(out / "costs")
    runs = items.groupby("run_id")
    assert runs.ngroups == 2 and all(sorted(group["status"]) == ["ok"] * 3 for _, group in runs)
    paid = costs[~costs["cached"]]
    chunks = int(items.groupby("run_id")["n_chunks"].sum().iloc[0])
    assert len(paid) == chunks and not paid.duplicated(["item_id", "chunk_index"]).any()
    assert "FileNotFoundError" not in first_err + second.stderr
