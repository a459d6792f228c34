"""--chapters end to end: the offline method on a real episode of unrelated topics (the embedded
model, in-process), and the tool-calling path against a local OpenAI-compatible server (a
scripted proxy on 127.0.0.1) that answers the chapters request with good, malformed and
hostile tool calls, while the embedded model behind it transcribes for real and answers the
notes tool honestly (its offline method, named in the reply's model).

Each scripted item is a different short clip; the proxy tells their chapters requests apart by
the duration each states."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import pytest_asyncio
import soundfile as sf

from audiobatch.localmodel.app import create_app
from audiobatch.localmodel.chat import OFFLINE_NOTES_MODEL
from audiobatch.tasks.extract.tool import TOOL_NAME
from audiobatch.tasks.model.prompts import NOTES_REASK
from audiobatch.tasks.reports.history import load_history
from audiobatch.tasks.reports.report import write_report
from tests.helpers.data import SPEECH
from tests.helpers.e2e import RunResult, run_transcribe, write_manifest
from tests.helpers.episode import build_episode, keywords_of
from tests.helpers.faultserver import Behaviour, FaultServer, Received, error, forward, ok, raw

USAGE = {"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020,
         "prompt_tokens_details": {"audio_tokens": 0, "text_tokens": 900, "cached_tokens": 0},
         "completion_tokens_details": {"audio_tokens": 0, "text_tokens": 120}}
CLIPS = {"good": "openai-whisper__jfk.flac", "malformed-once": "coqui-tts__LJ001-0001.wav",
         "hostile-always": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav",
         "hostile-text": "coqui-tts__LJ001-0005.wav", "text-only": "coqui-tts__LJ001-0006.wav",
         "refused": "coqui-tts__LJ001-0004.wav"}
SCRIPT_TITLE = "Bees\x00\x1b <script>alert('x')</script>\ud800 & more"


def tool_reply(arguments: str | dict, name: str = TOOL_NAME) -> Behaviour:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": text}}]}
    body = {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "gpt-audio-1.5",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": USAGE}
    return raw(200, json.dumps(body).encode())


def notes(duration_s: float, title: str = "Ask not what your country can do") -> dict[str, Any]:
    return {"chapters": [{"start_s": 0, "end_s": duration_s, "title": title, "summary": "A call."}],
            "summary": "A short speech.", "keywords": ["country"], "sponsor_spots": []}


HOSTILE = {"chapters": [{"start_s": -3, "end_s": 1e9, "title": "x" * 500, "summary": ""}] * 50,
           "summary": "", "keywords": [], "sponsor_spots": []}


class Script:
    """Answers each chapters request by its item (told by the stated duration); forwards the
    rest (transcription) to the embedded model."""

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self.notes_requests: list[str] = []

    def __call__(self, request: Received) -> Behaviour:
        body = request.json or {}
        if "tools" not in body:
            return forward()
        text = json.dumps(body["messages"])
        stated = float(re.search(r"The episode lasts ([\d.]+) s", text).group(1))
        item = min(self.durations, key=lambda name: abs(self.durations[name] - stated))
        self.notes_requests.append(item)
        reask = NOTES_REASK.split("{")[0] in text
        duration = self.durations[item]
        if item == "good":
            return tool_reply(notes(duration))
        if item == "malformed-once":
            return tool_reply(notes(duration)) if reask else tool_reply('{"chapters": [{"start_s": 0,')
        if item == "hostile-always":
            return tool_reply(HOSTILE)
        if item == "hostile-text":
            return tool_reply(notes(duration, SCRIPT_TITLE))
        if item == "text-only":  # chatter instead of a call; asked again, the embedded model answers
            return forward() if reask else ok("Sure! Here are the chapters: 1. Intro", usage=USAGE)
        return error(400, "Invalid schema for function 'record_episode_notes'.")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tool_runs(prefect_api: None,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunResult, Script]:
    """The same manifest run twice through the proxy: the second run must pay for nothing."""
    folder = tmp_path_factory.mktemp("chapters-tool")
    rows = [{"id": name, "audio": str(SPEECH / clip)} for name, clip in CLIPS.items()]
    manifest = write_manifest(folder / "m.csv", rows)
    script = Script({name: sf.info(SPEECH / clip).duration for name, clip in CLIPS.items()})
    options = dict(model="audiobatch-local", price_as="gpt-audio-1.5", chapters="auto",
                   word_times=False, concurrency=3)
    with FaultServer(script, upstream=httpx.ASGITransport(app=create_app())) as proxy:
        first = await run_transcribe(manifest, folder / "out", base_url=proxy.base_url, **options)
        asked_first = len(script.notes_requests)
        second = await run_transcribe(manifest, folder / "out", base_url=proxy.base_url, **options)
    # the re-run asked again only what was refused (a failed request is not cached, as for chunks)
    assert script.notes_requests[asked_first:] == ["refused"]
    return first, second, script


def show(run: RunResult, item: str) -> dict[str, Any]:
    return run.item(item, "show_notes")


def notes_costs(run: RunResult, item: str) -> Any:
    costs = run.dataset("costs")
    return costs[(costs["item_id"] == item) & (costs["request_kind"] == "chapters")].sort_values("attempt")


def test_a_good_tool_call_is_recorded_and_billed(tool_runs) -> None:
    first, _, _ = tool_runs
    assert set(first.statuses().values()) == {"ok"}
    row = show(first, "good")
    assert (row["method"], row["model"], row["n_chapters"]) == ("model", "gpt-audio-1.5", 1)
    chapter = first.item("good", "chapters")
    assert chapter["title"] == "Ask not what your country can do" and chapter["start_s"] == 0
    document = json.loads(Path(row["chapters_path"]).read_text())
    assert document["chapters"] == [{"startTime": 0.0, "endTime": chapter["end_s"],
                                     "title": "Ask not what your country can do"}]
    [cost] = notes_costs(first, "good").to_dict("records")
    assert cost["chunk_index"] == -1 and not cost["cached"]
    assert cost["cost_usd"] == pytest.approx(900 * 2.5e-6 + 120 * 10e-6)  # priced as gpt-audio-1.5
    items = first.item("good")
    transcribe_cost = first.dataset("costs").query("item_id == 'good' and request_kind == 'transcribe'")
    assert items["cost_usd"] == pytest.approx(cost["cost_usd"] + transcribe_cost["cost_usd"].sum())


def test_malformed_arguments_are_asked_for_again_once(tool_runs) -> None:
    first, _, _ = tool_runs
    row = show(first, "malformed-once")
    assert row["method"] == "model-reask"
    assert "not valid JSON" in row["problems"][0]
    costs = notes_costs(first, "malformed-once")
    assert list(costs["attempt"]) == [1, 2]
    assert costs["reask_reason"].iloc[1].startswith("invalid tool call: the arguments are not valid JSON")


def test_hostile_arguments_twice_give_the_offline_notes_saying_why(tool_runs) -> None:
    first, _, _ = tool_runs
    row = show(first, "hostile-always")
    assert row["method"] == "offline-fallback" and pd.isna(row["model"])
    assert [p.split(":")[0] for p in row["problems"]] == ["first answer refused", "second answer refused"]
    assert "list of 1 to 1 chapters" in row["problems"][0]
    assert len(notes_costs(first, "hostile-always")) == 2  # both answers are on the bill
    chapters = first.dataset("chapters").query("item_id == 'hostile-always'")
    assert list(chapters["method"]) == ["offline-fallback"] and chapters["end_s"].max() <= 7.2


def test_hostile_text_is_kept_as_text_valid_for_xml_and_escaped_in_the_report(tool_runs) -> None:
    first, _, _ = tool_runs
    title = first.item("hostile-text", "chapters")["title"]
    assert title == "Bees <script>alert('x')</script> & more"
    path = show(first, "hostile-text")["chapters_path"]
    assert json.loads(Path(path).read_text())["chapters"][0]["title"] == title
    run = load_history(str(first.out)).run(first.summary["run_id"])
    page = write_report(run, first.out / "report.html", str(first.out)).read_text()
    assert "Chapters" in page and "Bees" in page  # the report's chapters section shows it
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page


def test_a_reply_without_a_call_is_asked_again_and_the_embedded_model_answers_honestly(tool_runs) -> None:
    first, _, _ = tool_runs
    row = show(first, "text-only")
    assert (row["method"], row["model"]) == ("model-reask", OFFLINE_NOTES_MODEL)
    assert "did not call record_episode_notes" in row["problems"][0]
    assert row["n_chapters"] == 1


def test_a_refused_request_falls_back_offline_and_the_item_stays_ok(tool_runs) -> None:
    first, _, _ = tool_runs
    row = show(first, "refused")
    assert row["method"] == "offline-fallback" and "request failed" in row["problems"][0]
    assert first.item("refused")["status"] == "ok"


def test_a_rerun_answers_every_chapters_request_from_the_cache(tool_runs) -> None:
    first, second, _ = tool_runs
    answered = "request_kind == 'chapters' and error_type.isna()"
    before = first.dataset("costs").query(answered, engine="python")
    again = second.dataset("costs").query(answered, engine="python")
    assert len(again) == len(before) == 8  # 6 items, 2 of them asked twice
    assert again["cached"].all() and (again["cost_usd"] == 0).all()
    for item in set(CLIPS) - {"refused"}:  # (refused again, with another request id)
        assert (show(second, item)["method"], show(second, item)["problems"].tolist()) == \
               (show(first, item)["method"], show(first, item)["problems"].tolist())


# --- the offline method on a real episode ----------------------------------------------------

@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_an_episode_of_unrelated_topics_gets_a_chapter_near_each_change(
        prefect_api: None, tmp_path: Path) -> None:
    """A human reading on printing, then the embedded voice on bees and on volcanoes, joined
    with ordinary pauses and no spoken cue: transcribed by the embedded model with --chapters."""
    episode = build_episode(tmp_path / "episode", ["printing", "bees", "volcanoes"])
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "episode", "audio": str(episode.path)}])
    run = await run_transcribe(manifest, tmp_path / "out", chapters="auto")
    chapters = run.dataset("chapters").sort_values("chapter_index")
    assert (chapters["method"] == "offline").all()
    starts = list(chapters["start_s"])
    for change in episode.topic_changes():
        assert min(abs(change - start) for start in starts) <= 15.0, (change, starts)
    for row in chapters.itertuples():
        topic = episode.topic_at(row.start_s + 10)
        assert {w.strip(".,'").lower() for w in row.title.split()} & keywords_of(topic), (row.title, topic)
    assert not run.dataset("costs").query("request_kind == 'chapters'").shape[0]  # no request
