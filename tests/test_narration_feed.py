"""The podcast feed of narrations: RSS 2.0 + iTunes + Podcasting 2.0, updated run by run without
duplicates, parsed by feedparser, and read back by `audiobatch podcast` over real HTTP."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import feedparser
import pytest
from defusedxml import ElementTree as SafeET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiobatch.flows.common import summary_of
from audiobatch.flows.podcast import transcribe_podcast
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.narration.feed import FEED_FILE, FeedEntry, entry_guid, update_feed, xml_text
from audiobatch.tasks.options import TranscribeOptions
from audiobatch.tasks.outputs.datasets import OutputRoot
from tests.helpers.e2e import run_narrate, write_manifest
from tests.helpers.feeds import FeedServer

URL = "https://cdn.example.org/show"


def entry(item_id: str, size: int, title: str = "Title") -> FeedEntry:
    return FeedEntry(item_id=item_id, title=title, audio=f"media/narrations/{item_id}.mp3",
                     audio_bytes=size, audio_format="mp3", duration_s=61.4,
                     transcripts=(f"media/narrations/{item_id}.txt",))


def test_feed_entries_are_replaced_not_duplicated_and_keep_their_first_date(tmp_path: Path) -> None:
    out = OutputRoot(tmp_path)
    first = datetime(2026, 3, 1, tzinfo=timezone.utc)
    update_feed(out, URL, [entry("a", 100), entry("b", 200)], now=first)
    update_feed(out, URL + "/", [entry("b", 250, "B again"), entry("c & d", 300)],
                now=datetime(2026, 3, 2, tzinfo=timezone.utc))
    parsed = feedparser.parse((tmp_path / FEED_FILE).read_bytes())
    assert parsed.version == "rss20" and not parsed.bozo
    by_id = {e.id: e for e in parsed.entries}
    assert len(parsed.entries) == 3 and set(by_id) == {entry_guid(URL, i) for i in ("a", "b", "c & d")}
    again = by_id[entry_guid(URL, "b")]
    assert again.title == "B again" and again.published_parsed[:3] == (2026, 3, 1)
    enclosure = again.enclosures[0]
    assert (enclosure.href, enclosure.length, enclosure.type) == (f"{URL}/narrations/b.mp3", "250", "audio/mpeg")
    assert again.itunes_duration == "61"
    assert by_id[entry_guid(URL, "c & d")].enclosures[0].href == f"{URL}/narrations/c%20%26%20d.mp3"
    assert parsed.entries[0].id == entry_guid(URL, "c & d")  # newest first
    xml = (tmp_path / FEED_FILE).read_text()
    assert xml.count("<podcast:transcript") == 3 and 'type="text/plain"' in xml
    assert "<itunes:author>" in xml and "<podcast:guid>" in xml and 'rel="self"' in xml


def test_a_tampered_feed_file_and_bad_urls_are_refused(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / FEED_FILE).write_text('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaa">'
                                      '<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><rss version="2.0"><channel>'
                                      "<title>&b;</title></channel></rss>")
    with pytest.raises(ConfigError, match="not a feed audiobatch can update"):
        update_feed(OutputRoot(tmp_path), URL, [entry("a", 1)])
    for bad in ("file:///etc", "ftp://host/x", "https://user:pw@host/x", "https://host/x?token=1"):
        with pytest.raises(ConfigError, match="--feed-url"):
            update_feed(OutputRoot(tmp_path / "other"), bad, [entry("a", 1)])


def test_a_control_character_in_a_title_leaves_a_feed_the_next_run_can_read(tmp_path: Path) -> None:
    out = OutputRoot(tmp_path)
    # seen: a submitted title with \x0b made feed.xml invalid XML, and the operator's next run failed
    update_feed(out, URL, [entry("a", 1, "Vertical\x0btab \ud800 and \x00 nul")])
    update_feed(out, URL, [entry("b", 2, "The operator's next episode")])
    parsed = feedparser.parse((tmp_path / FEED_FILE).read_bytes())
    assert not parsed.bozo and {e.title for e in parsed.entries} == {
        "Verticaltab  and  nul", "The operator's next episode"}


def test_items_from_others_add_episodes_but_never_replace_one(tmp_path: Path) -> None:
    out = OutputRoot(tmp_path)
    update_feed(out, URL, [entry("news", 100, "The operator's news")])
    update = update_feed(out, URL, [entry("news", 999, "Not the news"), entry("mine", 5, "Mine")],
                         replace=False)
    assert update.kept == ["news"]
    by_id = {e.id: e for e in feedparser.parse((tmp_path / FEED_FILE).read_bytes()).entries}
    assert by_id[entry_guid(URL, "news")].title == "The operator's news"
    assert by_id[entry_guid(URL, "news")].enclosures[0].length == "100"
    assert by_id[entry_guid(URL, "mine")].title == "Mine"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(max_size=30), summary=st.text(max_size=30))
def test_any_title_and_text_make_a_well_formed_feed(tmp_path: Path, title: str, summary: str) -> None:
    out = OutputRoot(tmp_path / "any")
    update_feed(out, URL, [FeedEntry(item_id="x", title=title, audio="media/x.mp3", audio_bytes=1,
                                     audio_format="mp3", duration_s=1.0, summary=summary)])
    item = SafeET.fromstring((tmp_path / "any" / FEED_FILE).read_bytes()).find("channel/item")
    normal = lambda text: xml_text(text).replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731
    assert (item.findtext("title") or "") == normal(title)
    assert (item.findtext("description") or "") == normal(summary)


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_api", "allow_loopback_fetch")  # the test server is on loopback
async def test_narrations_become_a_feed_that_audiobatch_podcast_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    texts = {"morning": "Good morning. Here is the news.", "weather": "Rain is expected later today.",
             "sport": "The home team won again."}
    with FeedServer(out / "media") as server:
        base = server.url("").rstrip("/")
        first = write_manifest(tmp_path / "one.csv", [{"id": i, "text": texts[i], "title": i.title()}
                                                      for i in ("morning", "weather")])
        await run_narrate(first, out, feed_url=base)
        second = write_manifest(tmp_path / "two.csv", [{"id": i, "text": texts[i], "title": i.title()}
                                                       for i in ("weather", "sport")])
        run = await run_narrate(second, out, feed_url=base, audio_format="m4b")
        assert run.summary["feed"] == str(out / FEED_FILE)

        parsed = feedparser.parse(server.url("feed.xml"))
        assert sorted(e.title for e in parsed.entries) == ["Morning", "Sport", "Weather"]
        narrations = run.dataset("narrations").set_index("item_id")
        weather = next(e for e in parsed.entries if e.title == "Weather")
        enclosure = weather.enclosures[0]
        assert enclosure.type == "audio/mp4" and enclosure.href.endswith(".m4b")
        assert int(enclosure.length) == narrations.loc["weather", "audio_bytes"] == \
            len(server_bytes := (out / "media" / enclosure.href[len(base) + 1:]).read_bytes())
        assert server_bytes[4:8] == b"ftyp"

        summary = await summary_of(transcribe_podcast(
            feed=str(out / FEED_FILE), out=str(tmp_path / "heard"),
            options=TranscribeOptions.from_flat(progress=False), return_state=True))
    assert summary["ok"] == summary["items"] == 3
    from tests.helpers.e2e import read_dataset

    transcripts = read_dataset(tmp_path / "heard", "transcripts")
    assert set(transcripts["origin"]) == {"feed"}
    assert sorted(transcripts["text"]) == sorted(texts.values())
    assert sorted(transcripts["episode_title"]) == ["Morning", "Sport", "Weather"]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_api")
async def test_a_dropped_manifest_adds_to_the_operators_feed_but_replaces_nothing(tmp_path: Path) -> None:
    from audiobatch.flows.inbox import process_inbox
    from audiobatch.tasks.options import InboxOptions

    out, inbox = tmp_path / "out", tmp_path / "inbox"
    quick = {"audio_format": "wav", "verify": False, "captions": False, "feed_url": URL}
    operators = write_manifest(tmp_path / "mine.csv", [{"id": "news", "text": "The news.", "title": "News"}])
    await run_narrate(operators, out, **quick)
    write_manifest(inbox / "theirs.narrate.csv", [
        {"id": "news", "text": "Not the news.", "title": "Fake news"},  # the operator's item id
        {"id": "extra", "text": "An extra episode.", "title": "Extra\x0bepisode"}])
    result = await process_inbox(str(inbox), out=str(out), options=InboxOptions.from_flat(progress=False, **quick))
    [report] = result["processed"]
    assert report["status"] == "done" and report["summary"]["feed_not_added"] == ["news"]
    parsed = feedparser.parse((out / FEED_FILE).read_bytes())
    assert not parsed.bozo
    assert {e.id: e.title for e in parsed.entries} == {entry_guid(URL, "news"): "News",
                                                        entry_guid(URL, "extra"): "Extraepisode"}
    await run_narrate(operators, out, **quick, run_id="again")  # the operator's next run reads it


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_api")
async def test_a_narrated_book_s_chapters_are_a_chapters_file_the_feed_links(tmp_path: Path) -> None:
    """A text of two chapters as an audiobook: its Podcasting 2.0 chapters file gives each
    chapter's title and where it starts in the audio; the feed links it with <podcast:chapters>
    beside the <podcast:transcript> links."""
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\n## Bees\n\nBees make honey in the summer.\n\n"
                     "## Lava\n\nLava flows down the mountain at night.\n")
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "notes", "text_file": str(notes), "format": "m4b"},
                                                   {"id": "flat", "text": "One chapter only."}])
    run = await run_narrate(manifest, tmp_path / "out", feed_url=URL)
    narrations = run.dataset("narrations").set_index("item_id")
    assert narrations["chapters_path"].isna()["flat"]  # one piece of audio: no chapters file
    document = json.loads(Path(narrations.loc["notes", "chapters_path"]).read_text())
    bees, lava = document["chapters"]
    assert document["version"] == "1.2.0" and (bees["title"], lava["title"]) == ("Bees", "Lava")
    assert bees["startTime"] == 0 and 1.0 < lava["startTime"] < narrations.loc["notes", "duration_s"] - 1.0
    xml = (tmp_path / "out" / FEED_FILE).read_text()
    relative = narrations.loc["notes", "chapters_path"].split("/media/", 1)[1]
    assert f'<podcast:chapters url="{URL}/{relative}" type="application/json+chapters"' in xml
    assert xml.count("<podcast:chapters") == 1 and xml.count("<podcast:transcript") >= 4
