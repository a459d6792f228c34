"""Outputs, staging, cache and budget: the parts that make a run impossible to lose or pay twice."""
from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow as pa
import pytest

from audiobatch.tasks.errors import BudgetExceeded, InputError
from audiobatch.tasks.model.cost import Usage, cost_usd
from audiobatch.tasks.model.profiles import get_prices
from audiobatch.tasks.outputs.datasets import OutputRoot, media_relpath, read_dataset, safe_name, to_table
from audiobatch.tasks.outputs.staging import RunStaging, publish_run
from audiobatch.tasks.run.cache import ReplyRecord, ResultCache, cache_key
from audiobatch.tasks.run.calls import Budget


def _item_row(item_id: str, status: str = "ok") -> dict:
    return {"run_id": "r1", "item_id": item_id, "kind": "transcribe", "source": "a.wav",
            "status": status, "row": 2}


def _cost_row(item_id: str, chunk: int, attempt: int = 1, **extra) -> dict:
    return {"run_id": "r1", "item_id": item_id, "chunk_index": chunk, "attempt": attempt,
            "prompt_text_tokens": 1, "prompt_audio_tokens": 10, "completion_text_tokens": 2,
            "completion_audio_tokens": 0, "cached_tokens": 0, "cost_usd": 0.001, **extra}


def test_failed_write_leaves_no_file_a_reader_would_pick_up(tmp_path, monkeypatch) -> None:
    out = OutputRoot(tmp_path)
    out.write_table("items/run_date=2026-01-01/a.parquet", to_table("items", [_item_row("a")]))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        out.write_table("items/run_date=2026-01-01/b.parquet", to_table("items", [_item_row("b")]))
    monkeypatch.undo()
    # Only the finished file is visible; the temp file is a dot-file that readers skip.
    assert not (tmp_path / "items/run_date=2026-01-01/b.parquet").exists()
    assert list(pd.read_parquet(tmp_path / "items")["item_id"]) == ["a"]


def test_staging_ignores_a_torn_line_and_unfinished_items(tmp_path) -> None:
    staging = RunStaging(tmp_path / "run")
    staging.stage_item({"transcripts": [{"item_id": "a", "text": "hello"}], "items": [_item_row("a")]})
    staging.stage_rows("costs", [_cost_row("b", 0)])  # b paid a request, then the process died
    staging.stage_rows("transcripts", [{"item_id": "b", "text": "half"}])
    with open(tmp_path / "run" / "items.jsonl", "a") as handle:
        handle.write('{"item_id": "b", "stat')  # torn by SIGKILL mid-write
    assert set(staging.finished_items()) == {"a"}
    assert [r["item_id"] for r in staging.final_rows("transcripts")] == ["a"]
    # Money spent stays on the bill even for the unfinished item.
    assert [r["item_id"] for r in staging.final_rows("costs")] == ["b"]


def test_restaged_item_keeps_one_row_per_key(tmp_path) -> None:
    staging = RunStaging(tmp_path / "run")
    staging.stage_item({"segments": [{"item_id": "a", "segment_index": 0, "text": "x"}],
                        "items": [_item_row("a", "failed")]})
    staging.stage_item({"segments": [{"item_id": "a", "segment_index": 0, "text": "y"}],
                        "items": [_item_row("a", "ok")]})
    assert [r["status"] for r in staging.final_rows("items")] == ["ok"]
    assert [r["text"] for r in staging.final_rows("segments")] == ["y"]


def test_published_run_is_readable_as_a_dataset_with_fixed_schema(tmp_path) -> None:
    out = OutputRoot(tmp_path / "out")
    staging = RunStaging(tmp_path / "run")
    staging.stage_item({"items": [_item_row("a")]})
    staging.stage_rows("costs", [_cost_row("a", 0, cached=False), _cost_row("a", 0, 2, cached=True)])
    written = publish_run(out, staging, "r1")
    assert set(written) == {"items", "costs"}
    costs = pd.read_parquet(tmp_path / "out" / "costs")
    assert len(costs) == 2 and costs["cost_usd"].sum() == pytest.approx(0.002)
    table = read_dataset(out, "items")
    assert isinstance(table, pa.Table) and table.column("status").to_pylist() == ["ok"]
    # Columns nobody filled are still there, typed (schemas are fixed, not inferred).
    assert "error_message" in table.column_names and "enclosure_url" in table.column_names


def test_published_items_come_in_manifest_order_with_integer_chunk_counts(tmp_path) -> None:
    from types import SimpleNamespace

    from audiobatch.tasks.inputs.manifest import Item
    from audiobatch.tasks.run.context import item_row

    ctx = SimpleNamespace(run_id="r1", model="m")  # item_row reads only these two
    staging = RunStaging(tmp_path / "run")
    for row, status, n_chunks in ((4, "ok", 2), (2, "failed", None), (3, "ok", 1)):  # finish order
        item = Item(row=row, item_id=f"item{row}", kind="transcribe", source=f"{row}.wav")
        staging.stage_item({"costs": [_cost_row(item.item_id, 1), _cost_row(item.item_id, 0)],
                            "items": [item_row(ctx, item, status, n_chunks=n_chunks)]})
    publish_run(OutputRoot(tmp_path / "out"), staging, "r1")
    items = pd.read_parquet(tmp_path / "out" / "items")
    assert list(items["item_id"]) == ["item2", "item3", "item4"]
    assert pd.api.types.is_integer_dtype(items["n_chunks"]) and list(items["n_chunks"]) == [0, 1, 2]
    costs = pd.read_parquet(tmp_path / "out" / "costs")
    assert list(zip(costs["item_id"], costs["chunk_index"])) == [
        ("item2", 0), ("item2", 1), ("item3", 0), ("item3", 1), ("item4", 0), ("item4", 1)]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/abs", "a/b", ".hidden", "..", "x\x00y"])
def test_ids_cannot_escape_the_output_root(bad: str) -> None:
    with pytest.raises(InputError):
        media_relpath("transcripts", "run-1", bad, "txt")
    assert safe_name("episode 1 – Café") == "episode 1 – Café"


def test_cache_round_trip_and_key_sensitivity(tmp_path) -> None:
    cache = ResultCache(OutputRoot(tmp_path))
    key = cache_key(b"chunk", model="m", endpoint="p", params={"prompt": "x"})
    assert cache.get(key) is None
    record = ReplyRecord("hello", b"RIFF", "wav", "m", Usage(1, 2, 3, 4, 0), "req_1")
    cache.put(key, record)
    assert cache.get(key) == record
    for changed in (cache_key(b"chunk2", model="m", endpoint="p", params={"prompt": "x"}),
                    cache_key(b"chunk", model="m2", endpoint="p", params={"prompt": "x"}),
                    cache_key(b"chunk", model="m", endpoint="p", params={"prompt": "y"})):
        assert changed != key and cache.get(changed) is None
    assert ResultCache(OutputRoot(tmp_path), enabled=False).get(key) is None


def test_damaged_cache_entry_is_a_miss(tmp_path) -> None:
    out = OutputRoot(tmp_path)
    cache = ResultCache(out)
    key = cache_key(b"c", model="m", endpoint="p", params={})
    cache.put(key, ReplyRecord("t", None, None, "m", Usage(), None))
    json_path = next(tmp_path.glob("_cache/*/*.json"))
    json_path.write_text(json.dumps({"text": "t"}))  # fields missing
    assert cache.get(key) is None


def test_budget_refuses_the_request_that_would_cross_the_limit() -> None:
    budget = Budget(0.010, spent_usd=0.004)
    budget.reserve(0.003, "a chunk 0")
    budget.settle(0.003, 0.0035)
    with pytest.raises(BudgetExceeded, match="--max-cost-usd"):
        budget.reserve(0.003, "b chunk 0")
    Budget(None).reserve(1e9, "anything")  # no limit set


def test_cost_uses_cached_rate_and_audio_prices() -> None:
    prices = get_prices("openai", "gpt-audio-1.5")
    usage = Usage(prompt_text_tokens=1000, prompt_audio_tokens=10_000, completion_text_tokens=500,
                  completion_audio_tokens=0, cached_tokens=400)
    expected = (600 * 2.5 + 400 * prices.cached_in + 10_000 * 32 + 500 * 10) / 1e6
    assert cost_usd(usage, prices) == pytest.approx(expected)
    assert cost_usd(usage, None) is None
