"""Faults from the model endpoint, injected at the HTTP level by a real proxy on 127.0.0.1.

The proxy (tests/helpers/faultserver.py) sits in front of the embedded model served by
`audiobatch serve` in a subprocess: every fault crosses a real socket, as it would in production.
"""
from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path

import pandas as pd
import pytest

from audiobatch.flows.common import summary_of
from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest
from audiobatch.tasks.options import NarrateOptions, TranscribeOptions
from tests.helpers.data import SPEECH, TEXTS
from tests.helpers.faultserver import (Behaviour, FaultServer, Received, drop, error, forward,
                                       hang, insufficient_quota, ok, rate_limited, raw,
                                       server_error, truncated)
from tests.helpers.localserver import running_server

pytestmark = pytest.mark.usefixtures("prefect_api")

CLIPS = ["pocketsphinx__goforward.wav", "openai-whisper__jfk.flac",
         "derived__LJ001-0009_to_0032_concat.wav"]
TIMEOUT_S = 30.0  # a narration request on a busy 2-core machine took over 15 s
FAULTS = [rate_limited(retry_after_s=0.3), server_error(500), drop(), truncated(),
          server_error(503), rate_limited(), raw(200, b'{"id": "x", "choices": []}'),
          server_error(502), truncated(cut_connection=True), hang(TIMEOUT_S + 3)]


def write_manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def transcription_manifest(folder: Path, clips: list[str] = CLIPS) -> Path:
    return write_manifest(folder / "episodes.csv", ["audio"], [[str(SPEECH / c)] for c in clips])


def narration_manifest(folder: Path) -> Path:
    return write_manifest(folder / "texts.csv", ["id", "text_file", "format"],
                          [["notes", str(TEXTS / "show_notes.md"), "wav"]])


def every_third_request_faulty() -> callable:
    """30% of chat requests fail, each fault kind in turn; the rest reach the real model."""
    faults = iter(FAULTS * 10)

    def script(request: Received) -> Behaviour:
        return next(faults) if request.index % 10 in (1, 4, 7) else forward()

    return script


def run(flow, manifest: Path, out: Path, **options) -> dict:
    model = TranscribeOptions if flow is transcribe_manifest else NarrateOptions
    return asyncio.run(summary_of(flow(str(manifest), out=str(out), return_state=True,
                                       options=model.from_flat(progress=False, **options))))


def chat_requests(server: FaultServer) -> list[Received]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


@pytest.mark.slow  # a clean run and one through the faulty proxy: 1-2 min
def test_thirty_percent_faults_give_the_same_outputs_as_a_clean_run(tmp_path) -> None:
    # Narration without verification: its retakes are requests too (attempt > 1 without a
    # fault), and what this test counts is retries after faults.
    transcribe_csv, narrate_csv = transcription_manifest(tmp_path), narration_manifest(tmp_path)
    common = {"max_backoff_s": 1.0, "max_attempts": 8, "timeout_s": TIMEOUT_S, "concurrency": 2,
              "model": "audiobatch-local"}
    with running_server() as upstream:
        origin = upstream.removesuffix("/v1")
        with FaultServer(upstream=origin) as clean:
            run(transcribe_manifest, transcribe_csv, tmp_path / "clean", base_url=clean.base_url,
                max_audio_tokens=300, **common)
            run(narrate_manifest, narrate_csv, tmp_path / "clean", base_url=clean.base_url,
                max_audio_tokens=400, verify=False, **common)
        with FaultServer(every_third_request_faulty(), upstream=origin) as faulty:
            t = run(transcribe_manifest, transcribe_csv, tmp_path / "faulty",
                    base_url=faulty.base_url, max_audio_tokens=300, **common)
            n = run(narrate_manifest, narrate_csv, tmp_path / "faulty",
                    base_url=faulty.base_url, max_audio_tokens=400, verify=False, **common)
    assert t["ok"] == t["items"] == len(CLIPS) and n["ok"] == n["items"] == 1

    def outputs(root: Path) -> tuple:
        transcripts = pd.read_parquet(root / "transcripts").set_index("item_id")["text"].to_dict()
        segments = pd.read_parquet(root / "segments").sort_values(["item_id", "segment_index"])
        [audio_path] = pd.read_parquet(root / "narrations")["audio_path"]  # media are per run
        narration = Path(audio_path).read_bytes()
        return transcripts, segments[["item_id", "start_s", "text"]].values.tolist(), narration

    assert outputs(tmp_path / "faulty") == outputs(tmp_path / "clean")
    # Every attempt, failed ones included, is a row in `costs`.
    costs = pd.read_parquet(tmp_path / "faulty" / "costs")
    sent = chat_requests(faulty)
    assert len(costs) == len(sent) > len(pd.read_parquet(tmp_path / "clean" / "costs"))
    failed = costs[costs["error_type"].notna()]
    injected = sum(1 for r in sent if r.index % 10 in (1, 4, 7))
    assert len(failed) == injected >= 6 and injected / len(sent) >= 0.25
    assert set(failed["http_status"].dropna()) >= {429, 500, 503}
    assert (costs["attempt"] > 1).sum() == len(failed)


def test_bad_key_stops_the_run_once_and_skips_the_rest(tmp_path) -> None:
    manifest = transcription_manifest(tmp_path, [c for c in sorted(p.name for p in SPEECH.glob(
        "pocketsphinx__cards_*.wav"))])
    always_401 = lambda request: error(401, "Incorrect API key provided: sk-tes*****7890.",  # noqa: E731
                                       code="invalid_api_key")
    with FaultServer(always_401) as server:
        summary = run(transcribe_manifest, manifest, tmp_path / "out", base_url=server.base_url,
                      concurrency=2)
    items = pd.read_parquet(tmp_path / "out" / "items")
    assert len(items) == 5 and set(items["status"]) == {"skipped"}
    assert "401" in summary["stop_reason"] and "OPENAI_API_KEY" in summary["stop_reason"]
    assert len(chat_requests(server)) <= 2  # one per item in flight, not one per item and retry


def test_quota_exhausted_keeps_finished_items(tmp_path) -> None:
    manifest = transcription_manifest(tmp_path, [c for c in sorted(p.name for p in SPEECH.glob(
        "pocketsphinx__cards_*.wav"))])
    with FaultServer([ok("one"), ok("two"), insufficient_quota()]) as server:
        summary = run(transcribe_manifest, manifest, tmp_path / "out", base_url=server.base_url,
                      concurrency=1, qa=False)  # "one", "two" are scripted, not transcripts
    statuses = pd.read_parquet(tmp_path / "out" / "items").sort_values("row")["status"].tolist()
    assert statuses == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert "quota" in summary["stop_reason"]
    texts = pd.read_parquet(tmp_path / "out" / "transcripts")["text"].tolist()
    assert sorted(texts) == ["one", "two"]


def test_dead_endpoint_spends_the_retry_budget_and_stops(tmp_path) -> None:
    manifest = transcription_manifest(tmp_path, [c for c in sorted(p.name for p in SPEECH.glob(
        "pocketsphinx__cards_*.wav"))])
    started = time.monotonic()
    with FaultServer(lambda request: drop()) as server:
        summary = run(transcribe_manifest, manifest, tmp_path / "out", base_url=server.base_url,
                      concurrency=1, max_backoff_s=0.05, max_attempts=6)
    assert time.monotonic() - started < 120  # bounded: it did not retry forever
    items = pd.read_parquet(tmp_path / "out" / "items").sort_values("row")
    assert items["status"].iloc[-1] == "skipped" and "retry budget" in summary["stop_reason"]
    assert 20 <= len(chat_requests(server)) <= 26  # the budget (20 retries) plus first attempts


def test_item_deadline_fails_a_hanging_item_and_the_run_goes_on(tmp_path) -> None:
    manifest = transcription_manifest(tmp_path, ["pocketsphinx__goforward.wav",
                                                 "pocketsphinx__cards_001.wav"])
    script = lambda request: hang(30) if request.index == 0 else ok("fine")  # noqa: E731
    with FaultServer(script) as server:
        summary = run(transcribe_manifest, manifest, tmp_path / "out", base_url=server.base_url,
                      concurrency=1, timeout_s=60, item_deadline_s=2,
                      qa=False, word_times=False)  # "fine" is scripted; 2 s leave no room for the local engine
    items = pd.read_parquet(tmp_path / "out" / "items").sort_values("row")
    assert items["status"].tolist() == ["failed", "ok"]
    assert items["error_type"].iloc[0] == "deadline_exceeded"
    assert "--item-deadline-s" in items["error_message"].iloc[0]
    assert summary["failed"] == 1
