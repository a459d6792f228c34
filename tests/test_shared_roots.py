"""Output roots shared by several submitters and endpoints: runs never overwrite each other's
media (the Parquet rows point at each run's own files), the result cache never answers for
another endpoint, every request is priced at its own model's rates, and a model's odd replies
or a base URL's credentials do not leak or break the accounting. Endpoints are real HTTP
servers on 127.0.0.1 (tests/helpers/faultserver.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.errors import PermanentModelError
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from audiobatch.tasks.model.cost import Usage, cost_usd
from audiobatch.tasks.model.estimate import expected_transcribe_usage
from audiobatch.tasks.model.profiles import get_prices, get_profile
from tests.helpers.data import SPEECH
from tests.helpers.e2e import all_files_text, run_narrate, run_transcribe, write_manifest
from tests.helpers.faultserver import DEFAULT_USAGE, FaultServer, error, ok, raw

pytestmark = pytest.mark.usefixtures("prefect_api")


async def test_two_runs_with_the_same_item_id_keep_both_files(tmp_path) -> None:
    out = tmp_path / "shared-out"
    first = await run_narrate(write_manifest(tmp_path / "a" / "m.csv", [
        {"id": "intro", "text": "Welcome to the first show."}]), out, audio_format="wav")
    second = await run_narrate(write_manifest(tmp_path / "b" / "m.csv", [
        {"id": "intro", "text": "This is a different introduction, spoken at greater length."}]),
        out, audio_format="wav")
    assert first.statuses() == second.statuses() == {"intro": "ok"}
    paths = [Path(run.item("intro", "narrations")["audio_path"]) for run in (first, second)]
    assert paths[0] != paths[1]
    assert paths == [out / "media" / "narrations" / run.summary["run_id"] / "intro.wav"
                     for run in (first, second)]
    durations = [codecs.decode(path.read_bytes(), 16000).size for path in paths]
    assert durations[1] > durations[0] * 1.5  # each file is its own run's narration
    # docs/outputs.md: the latest file for an id, from the datasets
    items = pd.read_parquet(out / "items")
    latest = items[items["status"] == "ok"].sort_values("finished_at").drop_duplicates("item_id", keep="last")
    narrations = pd.read_parquet(out / "narrations").merge(latest[["run_id", "item_id"]])
    assert narrations["audio_path"].tolist() == [str(paths[1])]


# --- the result cache and prices ------------------------------------------------------------------

CLIP = SPEECH / "pocketsphinx__goforward.wav"
# The scripted endpoints answer canned text: no QA re-asks against what the clip says, no word times.
SCRIPTED = {"qa": False, "word_times": False}


async def test_the_cache_never_answers_for_another_endpoint(tmp_path) -> None:
    """Two endpoints priced under one provider label: each run gets its own endpoint's answer."""
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "clip", "audio": str(CLIP)}])
    out = tmp_path / "out"
    with FaultServer(lambda _: ok("answer from the first endpoint")) as first, \
            FaultServer(lambda _: ok("answer from the second endpoint")) as second:
        one = await run_transcribe(manifest, out, **SCRIPTED, base_url=first.base_url, provider="openai")
        two = await run_transcribe(manifest, out, **SCRIPTED, base_url=second.base_url + "/", provider="openai",
                                   resume=False)
        again = await run_transcribe(manifest, out, **SCRIPTED, base_url=second.base_url, provider="openai",
                                     resume=False)  # the same endpoint, spelled without the slash
        assert len(first.requests) == len(second.requests) == 1
    assert one.item("clip", "transcripts")["text"] == "answer from the first endpoint"
    assert two.item("clip", "transcripts")["text"] == "answer from the second endpoint"
    assert again.item("clip", "transcripts")["text"] == "answer from the second endpoint"
    assert again.dataset("costs")["cached"].tolist() == [True]


async def test_a_damaged_cache_entry_is_a_miss(tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "clip", "audio": str(CLIP)}])
    out = tmp_path / "out"
    with FaultServer(lambda _: ok("fresh answer")) as server:
        await run_transcribe(manifest, out, **SCRIPTED, base_url=server.base_url)
        [entry] = (out / "_cache").rglob("*.json")
        for damage in ('["not", "an", "object"]', '{"text": 5, "usage": "lots"}',
                       json.dumps({**json.loads(entry.read_text()), "usage": {"prompt_text_tokens": "x"}})):
            entry.write_text(damage)
            result = await run_transcribe(manifest, out, **SCRIPTED, base_url=server.base_url, resume=False)
            assert result.statuses() == {"clip": "ok"}
            assert result.item("clip", "transcripts")["text"] == "fresh answer"
        assert len(server.requests) == 4  # each damaged entry: the request made again
    assert caplog.text.count("ignoring the damaged cache entry") >= 3


def _expected_cost(model: str) -> float:
    usage = Usage.from_openai(DEFAULT_USAGE)  # what the fault server reports for every request
    return cost_usd(usage, get_prices("openai", model))


async def test_each_request_is_priced_at_its_own_models_rates(tmp_path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [
        {"id": "mini", "audio": str(CLIP)},
        {"id": "preview", "audio": str(CLIP), "model": "gpt-4o-audio-preview"}])
    with FaultServer(lambda _: ok("hello")) as server:
        result = await run_transcribe(manifest, tmp_path / "out", **SCRIPTED, base_url=server.base_url,
                                      provider="openai", model="gpt-audio-mini")
    costs = result.dataset("costs").set_index("item_id")
    assert costs.loc["mini", "cost_usd"] == pytest.approx(_expected_cost("gpt-audio-mini"))
    assert costs.loc["preview", "cost_usd"] == pytest.approx(_expected_cost("gpt-4o-audio-preview"))
    assert costs.loc["preview", "cost_usd"] > 3 * costs.loc["mini", "cost_usd"]
    assert costs.loc["preview", "priced_as"] == "openai/gpt-4o-audio-preview"


async def test_the_budget_uses_the_requests_own_model(tmp_path) -> None:
    """A cap that one request fits at mini prices but not at preview prices stops the preview row."""
    profile = get_profile("gpt-4o-audio-preview")
    expected = expected_transcribe_usage(codecs.probe(CLIP).duration_s, profile)
    cap = (cost_usd(expected, get_prices("openai", "gpt-audio-mini"))
           + cost_usd(expected, get_prices("openai", "gpt-4o-audio-preview"))) / 2
    manifest = write_manifest(tmp_path / "m.csv", [
        {"id": "preview", "audio": str(CLIP), "model": "gpt-4o-audio-preview"}])
    with FaultServer(lambda _: ok("hello")) as server:
        result = await run_transcribe(manifest, tmp_path / "out", **SCRIPTED, base_url=server.base_url,
                                      provider="openai", model="gpt-audio-mini", max_cost_usd=cap)
        assert server.requests == []
    row = result.item("preview")
    assert row["status"] == "skipped" and "--max-cost-usd" in row["error_message"]


# --- what the model's replies may not do, and what must not leak ------------------------------------

async def test_non_numeric_usage_fails_the_item_and_still_leaves_a_costs_row(tmp_path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "clip", "audio": str(CLIP)}])
    weird = {**DEFAULT_USAGE, "prompt_tokens_details": {"audio_tokens": "lots", "text_tokens": 3}}
    with FaultServer(lambda _: ok("hello", usage=weird)) as server:
        result = await run_transcribe(manifest, tmp_path / "out", **SCRIPTED, base_url=server.base_url,
                                      provider="openai", model="gpt-audio-mini", max_attempts=3)
        assert len(server.requests) == 1  # not retried: it may already be billed
    row = result.item("clip")
    assert row["status"] == "failed" and "`usage` object that is not token counts" in row["error_message"]
    [cost] = result.dataset("costs").to_dict("records")
    assert (cost["http_status"], cost["error_type"]) == (200, "unreadable_usage")
    assert pd.isna(cost["cost_usd"])  # unknown, not $0


async def test_credentials_in_the_base_url_never_reach_messages(tmp_path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "clip", "audio": str(CLIP)}])
    with FaultServer(lambda _: error(400, "unsupported audio")) as server:
        base_url = server.base_url.replace("http://", "http://gateway-user:s3cretPassw0rd@")
        result = await run_transcribe(manifest, tmp_path / "out", **SCRIPTED, base_url=base_url)
    row = result.item("clip")
    assert row["status"] == "failed" and "HTTP 400" in row["error_message"]
    assert "s3cretPassw0rd" not in all_files_text(tmp_path / "out")


async def test_a_huge_reply_is_refused_not_read(tmp_path) -> None:
    body = b'{"choices": [{"message": {"content": "' + b"x" * (3 * 1024 * 1024) + b'"}}]}'
    with FaultServer(lambda _: raw(200, body, {"content-type": "application/json"})) as server:
        settings = ClientSettings(base_url=server.base_url, max_response_mb=1, max_attempts=3)
        async with ModelClient(settings) as client:
            with pytest.raises(PermanentModelError, match=r"body over the 1 MB reply limit"):
                await client.transcribe(CLIP.read_bytes(), "wav")
        assert len(server.requests) == 1  # the same request would get the same answer
