"""Feeds -> episodes -> items; the per-feed state; transcripts that feeds ship. No Prefect here."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from audiobatch.tasks.inputs.ids import id_problem
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.podcast.feeds import (FeedError, episode_item, episode_item_id, parse_duration,
                                            parse_feed, select_episodes)
from audiobatch.tasks.podcast.state import FeedState, load_state, save_state, state_path
from audiobatch.tasks.podcast.transcripts import parse_cues, transcript_from
from audiobatch.tasks.run.context import episode_fields

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
     xmlns:podcast="https://podcastindex.org/namespace/1.0">
<channel>
  <title>Tales &amp; Tunes</title><language>en-GB</language>
  <itunes:author>Someone</itunes:author>
  <item>
    <title>Old one</title><guid isPermaLink="false">tt-1</guid>
    <pubDate>Mon, 05 Jan 2026 08:00:00 +0100</pubDate>
    <enclosure url="https://cdn.example.org/tt-1.mp3" length="100" type="audio/mpeg"/>
    <itunes:duration>1:02:03</itunes:duration>
  </item>
  <item>
    <title>Newest, with transcripts</title><guid>https://example.org/tt-3</guid>
    <pubDate>Tue, 03 Mar 2026 10:00:00 GMT</pubDate>
    <enclosure url="https://cdn.example.org/tt-3.m4a" length="100" type="audio/x-m4a"/>
    <itunes:duration>754</itunes:duration>
    <podcast:transcript url="https://example.org/tt-3.html" type="text/html"/>
    <podcast:transcript url="https://example.org/tt-3.vtt" type="text/vtt" language="en"/>
    <podcast:transcript url="https://example.org/tt-3.json" type="application/json"/>
  </item>
  <item>
    <title>No GUID</title>
    <pubDate>Sun, 01 Feb 2026 10:00:00 GMT</pubDate>
    <enclosure url="https://cdn.example.org/tt-2.mp3" type="audio/mpeg"/>
  </item>
  <item><title>Show notes only</title><guid>post-9</guid></item>
  <item><title>Cover art</title><guid>img-1</guid>
    <enclosure url="https://cdn.example.org/cover.jpg" type="image/jpeg"/></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom Cast</title><id>urn:uuid:feed</id><updated>2026-02-02T00:00:00Z</updated>
  <entry>
    <title>Entry A</title><id>urn:uuid:a</id><updated>2026-02-02T00:00:00Z</updated>
    <link rel="enclosure" href="https://example.org/a.ogg" type="audio/ogg" length="10"/>
    <link rel="alternate" href="https://example.org/a.html"/>
  </entry>
</feed>"""


def test_rss_episodes_with_itunes_and_podcast_tags() -> None:
    feed = parse_feed(RSS, "https://example.org/feed.xml")
    assert feed.title == "Tales & Tunes" and feed.language == "en"
    # text posts and image enclosures are not episodes; newest first
    assert [e.title for e in feed.episodes] == ["Newest, with transcripts", "No GUID", "Old one"]
    newest, no_guid, old = feed.episodes
    assert newest.key == "guid:https://example.org/tt-3"
    assert no_guid.key == "url:https://cdn.example.org/tt-2.mp3" and no_guid.guid is None
    assert old.published_at.isoformat() == "2026-01-05T07:00:00+00:00"  # +0100 -> UTC
    assert (old.duration_s, newest.duration_s, no_guid.duration_s) == (3723.0, 754.0, None)
    assert [t.type for t in newest.transcripts] == ["text/html", "text/vtt", "application/json"]
    assert newest.preferred_transcript().url == "https://example.org/tt-3.vtt"  # timed first


def test_atom_feed() -> None:
    feed = parse_feed(ATOM, "https://example.org/atom.xml")
    [entry] = feed.episodes
    assert (feed.title, entry.key, entry.enclosure_url) == (
        "Atom Cast", "guid:urn:uuid:a", "https://example.org/a.ogg")


def test_a_web_page_is_not_a_feed() -> None:
    with pytest.raises(FeedError, match="not an RSS or Atom feed.*not the podcast's web page"):
        parse_feed(b"<html><body><h1>My podcast</h1></body></html>", "https://example.org/")


@pytest.mark.parametrize("text, seconds", [("45", 45.0), ("02:05", 125.0), ("1:00:00", 3600.0),
                                           ("0:03.5", 3.5), ("about an hour", None), ("", None)])
def test_itunes_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_selection_skips_done_and_honours_since_and_limit() -> None:
    feed = parse_feed(RSS, "https://example.org/feed.xml")
    newest, no_guid, old = feed.episodes
    assert select_episodes(feed, {newest.key}) == [no_guid, old]
    assert select_episodes(feed, set(), since=date(2026, 2, 1)) == [newest, no_guid]
    assert select_episodes(feed, set(), limit=1) == [newest]


def test_episode_items_carry_metadata_and_safe_unique_ids() -> None:
    feed = parse_feed(RSS, "https://example.org/feed.xml")
    other = parse_feed(RSS, "https://mirror.example.net/feed.xml")  # same titles, another feed
    ids = {episode_item_id(f, e) for f in (feed, other) for e in f.episodes}
    assert len(ids) == 6 and not any(id_problem(i) for i in ids)
    newest = feed.episodes[0]
    item = episode_item(feed, newest, episode_item_id(feed, newest), 1, language="en")
    assert item.source == "https://cdn.example.org/tt-3.m4a"
    assert item.options == {"language": "en", "transcript_url": "https://example.org/tt-3.vtt"}
    assert episode_fields(item) == {
        "feed_title": "Tales & Tunes", "episode_title": "Newest, with transcripts",
        "episode_guid": "https://example.org/tt-3", "published_at": "2026-03-03T10:00:00+00:00",
        "enclosure_url": "https://cdn.example.org/tt-3.m4a"}
    assert item.metadata["duration_s"] == "754"
    assert item.metadata["transcript_url"] == "https://example.org/tt-3.vtt"
    # an edited title gives a new id, but the state hands the old one back (see FeedState.item_id)
    assert episode_item_id(feed, newest) == episode_item_id(feed, newest)


def test_state_remembers_done_retries_failed_and_merges(tmp_path: Path) -> None:
    out = OutputRoot(tmp_path)
    feed = parse_feed(RSS, "https://example.org/feed.xml")
    newest, no_guid, old = feed.episodes
    state = load_state(out, feed.url)
    state.record(newest, "id-new", "ok", "run-1")
    state.record(no_guid, "id-noguid", "failed", "run-1", "HTTP 404")
    save_state(out, state)
    again = load_state(out, feed.url)
    assert again.done == {newest.key}
    assert again.item_id(no_guid.key) == "id-noguid"  # retried under the same id
    # an overlapping run that saw neither outcome must not erase the done one
    stale = FeedState(feed.url)
    stale.record(old, "id-old", "ok", "run-2")
    save_state(out, stale)
    assert load_state(out, feed.url).done == {newest.key, old.key}
    on_disk = json.loads((tmp_path / state_path(feed.url)).read_text())
    assert on_disk["episodes"][no_guid.key]["reason"] == "HTTP 404"


def test_private_feed_tokens_stay_out_of_metadata_and_state(tmp_path: Path) -> None:
    url = "https://feeds.example.org/private.xml?token=feed-secret-1234"
    signed = b"https://cdn.example.org/tt-1.mp3?auth=0123456789abcdef0123456789abcdef"
    feed = parse_feed(RSS.replace(b"https://cdn.example.org/tt-1.mp3", signed), url)
    old = feed.episodes[-1]
    item = episode_item(feed, old, "old", 1)
    assert item.source == signed.decode()  # the real URL is still what gets fetched
    state = FeedState(url)
    state.record(old, item.item_id, "ok", "run-1")
    save_state(OutputRoot(tmp_path), state)
    written = json.dumps(item.metadata) + (tmp_path / state_path(url)).read_text()
    assert "feed-secret-1234" not in written and "0123456789abcdef" not in written
    assert item.metadata["feed_url"] == "https://feeds.example.org/private.xml?token=***"


def test_corrupt_state_is_reported_with_what_to_do(tmp_path: Path) -> None:
    out = OutputRoot(tmp_path)
    out.write_bytes(state_path("https://example.org/feed.xml"), b"{not json")
    with pytest.raises(Exception, match="not valid JSON.*move it away"):
        load_state(out, "https://example.org/feed.xml")


# --- shipped transcripts --------------------------------------------------------------------

VTT = """WEBVTT

NOTE recorded live

1
00:00:01.000 --> 00:00:04.250 align:start
<v Ann>Welcome back &amp; hello.</v>

00:00:04.250 --> 00:01:02.000
Second cue,
on two lines.
"""
SRT = """1\r\n00:00:00,500 --> 00:00:02,000\r\nFirst.\r\n\r\n2\r\n01:00:02,000 --> 01:00:03,000\r\nLast.\r\n"""


def test_vtt_and_srt_cues() -> None:
    vtt = parse_cues(VTT)
    assert [(s.start_s, s.end_s, s.text) for s in vtt] == [
        (1.0, 4.25, "Welcome back & hello."), (4.25, 62.0, "Second cue, on two lines.")]
    srt = parse_cues(SRT)
    assert [(s.start_s, s.end_s, s.text) for s in srt] == [(0.5, 2.0, "First."),
                                                           (3602.0, 3603.0, "Last.")]


def test_transcript_formats_become_text() -> None:
    body = json.dumps({"version": "1.0.0", "segments": [
        {"speaker": "A", "startTime": 0.0, "endTime": 1.5, "body": "Hi there."},
        {"speaker": "B", "startTime": 1.5, "endTime": 3.0, "body": "Hello."}]}).encode()
    text, segments = transcript_from(body, "application/json", "https://x/t.json")
    assert text == "Hi there. Hello." and segments[1].start_s == 1.5
    page = b"<html><script>var x=1;</script><p>Para one.</p><p>Para&nbsp;two.</p></html>"
    assert transcript_from(page, "text/html", "https://x/t.html") == ("Para one. Para two.", [])
    # no stated type: the extension decides
    assert transcript_from(SRT.encode(), "", "https://x/t.srt?sig=1")[0] == "First. Last."
    assert transcript_from(b"\xef\xbb\xbfPlain  words\n", "text/plain", "https://x/t")[0] == "Plain words"
