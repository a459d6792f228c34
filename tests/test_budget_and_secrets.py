"""Budgets (estimate, --max-cost-usd), re-running failed items, and the API key staying secret."""
from __future__ import annotations

import asyncio
import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from prefect import get_client

from audiobatch.flows.common import summary_of
from audiobatch.flows.estimate import forecast
from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest
from audiobatch.localmodel.server import parse_args
from audiobatch.tasks.model.cost import Usage
from audiobatch.tasks.options import NarrateOptions, TranscribeOptions
from audiobatch.tasks.run.context import RunOptions
from tests.helpers.data import ROOT, SPEECH, TEXTS
from tests.helpers.e2e import all_files_text
from tests.helpers.faultserver import FaultServer, error
from tests.helpers.feeds import SHORT_CLIPS, FeedServer
from tests.helpers.localserver import running_server

pytestmark = pytest.mark.usefixtures("prefect_api")
FAKE_KEY = "sk-test-AUDIOBATCHFAKEKEY-0123456789abcdef"
CLIPS = ["derived__LJ001-0009_to_0032_concat.wav", "openai-whisper__jfk.flac",
         "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav",
         "speech_recognition__english.wav", "sphinx4__10001-90210-01803.wav"]


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def _usage_totals(costs: pd.DataFrame) -> tuple[int, float]:
    tokens = costs[["prompt_text_tokens", "prompt_audio_tokens", "completion_text_tokens",
                    "completion_audio_tokens"]].to_numpy().sum()
    return int(tokens), float(costs["cost_usd"].sum())


def _forecast_totals(options: RunOptions) -> tuple[int, float]:
    forecasts, _ = forecast(options)
    usage = sum((f.usage for f in forecasts), Usage())
    return usage.total_tokens, sum(f.cost_usd for f in forecasts)


@pytest.mark.parametrize("kind", ["transcribe", "narrate"])
def test_estimate_is_within_five_percent_of_what_the_run_reports(tmp_path, kind) -> None:
    if kind == "transcribe":
        manifest = _csv(tmp_path / "m.csv", ["audio"], [[str(SPEECH / c)] for c in CLIPS])
        flow, model, extra = transcribe_manifest, TranscribeOptions, {"max_audio_tokens": 600}
    else:
        manifest = _csv(tmp_path / "m.csv", ["text_file"],
                        [[str(TEXTS / "show_notes.md")], [str(TEXTS / "long_sentence.txt")]])
        flow, model, extra = narrate_manifest, NarrateOptions, {"audio_format": "wav"}
    options = RunOptions(kind=kind, manifest=str(manifest), price_as="gpt-audio-1.5", **extra)
    expected_tokens, expected_usd = _forecast_totals(options)
    asyncio.run(flow(str(manifest), out=str(tmp_path / "out"),
                     options=model.from_flat(price_as="gpt-audio-1.5", progress=False, **extra)))
    tokens, usd = _usage_totals(pd.read_parquet(tmp_path / "out" / "costs"))
    assert usd > 0.005  # priced as gpt-audio-1.5, although the embedded model is free
    assert expected_tokens == pytest.approx(tokens, rel=0.05)
    assert expected_usd == pytest.approx(usd, rel=0.05)


def test_max_cost_stops_before_crossing_the_limit(tmp_path) -> None:
    words = "The printer set each line of type by hand and checked it twice before the press ran."
    manifest = _csv(tmp_path / "m.csv", ["id", "text"],
                    [[f"t{i}", f"Page {i + 1}. {words}"] for i in range(6)])  # distinct: no cache hits
    options = RunOptions(kind="narrate", manifest=str(manifest), price_as="gpt-audio-1.5")
    per_item = _forecast_totals(options)[1] / 6
    limit = per_item * 3.5
    summary = asyncio.run(summary_of(narrate_manifest(str(manifest), out=str(tmp_path / "out"),
        options=NarrateOptions.from_flat(price_as="gpt-audio-1.5", max_cost_usd=limit, concurrency=1, progress=False), return_state=True)))
    items = pd.read_parquet(tmp_path / "out" / "items").sort_values("row")
    assert items["status"].tolist()[:2] == ["ok", "ok"] and items["status"].iloc[-1] == "skipped"
    assert summary["cost_usd"] <= limit and "--max-cost-usd" in summary["stop_reason"]
    assert set(items.loc[items["status"] == "skipped", "error_type"]) <= {"budget_exceeded",
                                                                          "run_fatal"}


def test_rerun_failed_redoes_only_the_failed_items(tmp_path) -> None:
    late = tmp_path / "late.wav"
    manifest = _csv(tmp_path / "m.csv", ["id", "audio"],
                    [["early", str(SPEECH / "pocketsphinx__goforward.wav")], ["late", str(late)]])
    first = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
        options=TranscribeOptions.from_flat(progress=False), return_state=True)))
    assert (first["ok"], first["failed"]) == (1, 1)
    late.write_bytes((SPEECH / "pocketsphinx__cards_001.wav").read_bytes())  # the user fixes it
    second = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
        options=TranscribeOptions.from_flat(rerun_failed="last", progress=False), return_state=True)))
    assert (second["items"], second["ok"]) == (1, 1)
    items = pd.read_parquet(tmp_path / "out" / "items")
    assert items.loc[items["run_id"] == second["run_id"], "item_id"].tolist() == ["late"]


def test_api_key_never_reaches_outputs_logs_or_prefect(tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    manifest = _csv(tmp_path / "m.csv", ["audio"], [[str(SPEECH / "pocketsphinx__goforward.wav")]])
    with running_server(api_key=FAKE_KEY) as base_url:  # the server requires the key: it was sent
        good = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
            options=TranscribeOptions.from_flat(base_url=base_url, model="audiobatch-local", progress=False), return_state=True)))
    echo = error(401, f"Incorrect API key provided: {FAKE_KEY}. Find yours at ...", code="invalid_api_key")
    with FaultServer(lambda request: echo) as server:  # a server that echoes the key back
        bad = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out2"),
            options=TranscribeOptions.from_flat(base_url=server.base_url, progress=False), return_state=True)))
        assert server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert good["ok"] == 1 and bad["skipped"] == 1 and "401" in bad["stop_reason"]
    assert FAKE_KEY not in bad["stop_reason"]
    printed = capfd.readouterr()
    assert FAKE_KEY not in printed.out + printed.err
    assert FAKE_KEY not in all_files_text(tmp_path / "out") + all_files_text(tmp_path / "out2")

    records = asyncio.run(prefect_records())
    assert "Incorrect API key" in records and FAKE_KEY not in records


async def prefect_records() -> str:
    """Everything the Prefect API holds about runs: parameters, logs, artifacts."""
    async with get_client() as client:
        runs = await client.read_flow_runs()
        logs = await client.read_logs()
        artifacts = await client.read_artifacts()
    return repr([r.parameters for r in runs]) + repr([l.message for l in logs]) + repr(
        [a.data for a in artifacts])


def test_tokens_in_audio_urls_never_reach_outputs_logs_or_prefect(tmp_path, capfd,
                                                                  allow_loopback_fetch) -> None:
    """Presigned and private-feed URLs carry credentials in their query: the audio is fetched
    with them, but outputs, messages and Prefect see them masked."""
    token, signature = "PRIVATEFEEDTOKEN0123456789abcdef", "SIGNATUREdeadbeef0123456789abcdef"
    with FeedServer(tmp_path / "site") as site:  # real HTTP on 127.0.0.1
        shutil.copy(SPEECH / SHORT_CLIPS[0], site.folder / SHORT_CLIPS[0])
        clip_url = site.url(SHORT_CLIPS[0])
        manifest = _csv(tmp_path / "m.csv", ["id", "audio"],
                        [["private", f"{clip_url}?auth={token}"],
                         ["expired", f"{site.url('gone.wav')}?X-Amz-Signature={signature}"]])
        summary = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
            options=TranscribeOptions.from_flat(progress=False), return_state=True)))
        assert f"/{SHORT_CLIPS[0]}?auth={token}" in site.requests  # fetched with its token
    assert (summary["ok"], summary["failed"]) == (1, 1)
    items = pd.read_parquet(tmp_path / "out" / "items").set_index("item_id")
    assert items.loc["private", "source"] == f"{clip_url}?auth=***"
    assert "X-Amz-Signature=***" in items.loc["expired", "source"]
    assert "gone.wav" in items.loc["expired", "error_message"]  # still names what failed
    transcripts = pd.read_parquet(tmp_path / "out" / "transcripts")
    assert transcripts["source"].tolist() == [f"{clip_url}?auth=***"]
    assert "forward" in transcripts["text"].iloc[0].lower()
    printed = capfd.readouterr()
    written = all_files_text(tmp_path / "out") + printed.out + printed.err
    records = asyncio.run(prefect_records())
    for secret in (token, signature):
        assert secret not in written and secret not in records


def test_readme_and_docs_examples_hold_no_key() -> None:
    pages = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *(ROOT / "docs").rglob("*.md")]
    assert len(pages) > 10  # the docs site's pages are read too
    for page in pages:
        assert not re.search(r"sk-[A-Za-z0-9_\-]{16,}", page.read_text()), page


def test_serve_binds_loopback_unless_told_otherwise() -> None:
    assert parse_args([]).host == "127.0.0.1"
    assert parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"
