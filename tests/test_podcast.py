"""The `transcribe-podcast` flow for real: a real RSS feed over real HTTP on 127.0.0.1, whose
enclosures are real speech clips, transcribed by the embedded model in Prefect runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from audiobatch.flows.cli import main
from audiobatch.flows.common import summary_of
from audiobatch.flows.podcast import transcribe_podcast
from audiobatch.tasks.options import TranscribeOptions
from audiobatch.tasks.podcast.state import state_path
from tests.helpers.data import SPEECH
from tests.helpers.e2e import all_files_text, corpus_wer, read_dataset
from tests.helpers.feeds import SHORT_CLIPS, FeedServer, TestEpisode, rss
from tests.helpers.localserver import references

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("allow_loopback_fetch")]  # enclosures on 127.0.0.1
VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n<v Host>Shipped words,</v>\n\n00:00:01.500 --> 00:00:03.000\nnot paid for.\n"


@pytest.fixture
def site(tmp_path: Path):
    with FeedServer(tmp_path / "site") as server:
        yield server


async def podcast(url: str, out: Path, *, limit: int | None = None, since: str | None = None,
                  force: bool = False, **options) -> dict:
    options.setdefault("progress", False)
    return await summary_of(transcribe_podcast(feed=url, out=str(out), limit=limit, since=since,
                                               force=force, options=TranscribeOptions.from_flat(**options),
                                               return_state=True))


def by_guid(frame, guid: str) -> dict:
    rows = frame[frame["episode_guid"] == guid]
    assert len(rows) == 1, f"{guid}: {len(rows)} rows"
    return rows.iloc[0].to_dict()


async def test_only_new_episodes_with_metadata_and_shipped_transcripts(prefect_api, site, tmp_path):
    out = tmp_path / "out"
    (site.folder / "ep2.vtt").write_text(VTT)
    episodes = [TestEpisode("g-1", "Go forward", SHORT_CLIPS[0], day=0),
                TestEpisode("g-2", "Ill disposed", SHORT_CLIPS[1], day=1, transcript=("ep2.vtt", "text/vtt")),
                TestEpisode(None, "Amiable", SHORT_CLIPS[2], day=2)]
    url = site.write_feed("show.xml", "Test Show", episodes)

    first = await podcast(url, out)
    assert (first["items"], first["ok"]) == (3, 3)
    transcripts = read_dataset(out, "transcripts")
    model_rows = [by_guid(transcripts, "g-1"), transcripts[transcripts["episode_guid"].isna()].iloc[0]]
    assert [r["origin"] for r in model_rows] == ["model", "model"]
    expected = [references()[SHORT_CLIPS[0]], references()[SHORT_CLIPS[2]]]
    assert corpus_wer(expected, [r["text"] for r in model_rows]) < 0.25
    shipped = by_guid(transcripts, "g-2")
    assert (shipped["origin"], shipped["text"]) == ("feed", "Shipped words, not paid for.")
    assert pd.isna(shipped["model"])  # no model was asked
    assert "00:00:01,500 --> 00:00:03,000" in Path(shipped["srt_path"]).read_text()
    assert f"/{SHORT_CLIPS[1]}" not in site.audio_requests()  # its audio was never downloaded
    first_row = by_guid(transcripts, "g-1")
    assert (first_row["feed_title"], first_row["episode_title"], first_row["published_at"],
            first_row["enclosure_url"]) == ("Test Show", "Go forward", "2026-02-01T09:00:00+00:00",
                                            site.url(SHORT_CLIPS[0]))
    items = read_dataset(out, "items")
    assert json.loads(by_guid(items, "g-1")["metadata"])["duration_s"] == "3"
    assert by_guid(items, "g-2")["cost_usd"] == 0 and by_guid(items, "g-2")["requests"] == 0

    downloads = len(site.audio_requests())
    second = await podcast(url, out)
    assert (second["items"], second["run_id"]) == (0, None)
    assert len(site.audio_requests()) == downloads and len(read_dataset(out, "items")) == 3

    # the feed changes: re-ordered, a title edited, the oldest dropped, one episode added
    changed = [TestEpisode("g-4", "Brand new", SHORT_CLIPS[3], day=9), episodes[2],
               TestEpisode("g-2", "Ill disposed (edited title)", SHORT_CLIPS[1], day=1,
                           transcript=("ep2.vtt", "text/vtt"))]
    site.write_feed("show.xml", "Test Show", changed)
    third = await podcast(url, out)
    assert (third["items"], third["ok"]) == (1, 1)
    new_rows = read_dataset(out, "transcripts").query(f"run_id == '{third['run_id']}'")
    assert list(new_rows["episode_guid"]) == ["g-4"]
    assert corpus_wer([references()[SHORT_CLIPS[3]]], list(new_rows["text"])) < 0.25


async def test_failed_episodes_are_retried_and_force_transcribes_shipped_ones(prefect_api, site, tmp_path):
    out = tmp_path / "out"
    episodes = [TestEpisode("ok-1", "Fine", SHORT_CLIPS[0], day=0),
                TestEpisode("gone-2", "Audio missing today", SHORT_CLIPS[4], day=1),
                TestEpisode("vtt-3", "Transcript missing", SHORT_CLIPS[1], day=2,
                            transcript=("missing.vtt", "text/vtt"))]
    url = site.write_feed("show.xml", "Flaky Show", episodes)
    (site.folder / SHORT_CLIPS[4]).unlink()  # the host has not uploaded it yet: 404

    first = await podcast(url, out)
    statuses = {r["episode_guid"]: r for r in read_dataset(out, "items").to_dict("records")}
    assert {g: r["status"] for g, r in statuses.items()} == {"ok-1": "ok", "gone-2": "failed",
                                                             "vtt-3": "failed"}
    assert "HTTP 404" in statuses["gone-2"]["error_message"]
    assert "--force" in statuses["vtt-3"]["error_message"]
    assert first["failed"] == 2

    site.write_feed("show.xml", "Flaky Show", episodes)  # uploaded now
    second = await podcast(url, out, force=True)
    rows = read_dataset(out, "items").query(f"run_id == '{second['run_id']}'")
    assert sorted(rows["episode_guid"]) == ["gone-2", "vtt-3"]  # ok-1 is not redone
    assert set(rows["status"]) == {"ok"}
    assert set(rows["item_id"]) == {statuses["gone-2"]["item_id"], statuses["vtt-3"]["item_id"]}
    forced = by_guid(read_dataset(out, "transcripts"), "vtt-3")
    assert forced["origin"] == "model"  # --force: paid for, not taken from the feed
    state = json.loads((out / state_path(url)).read_text())["episodes"]
    assert state["guid:gone-2"]["attempts"] == 2 and state["guid:gone-2"]["status"] == "ok"


def test_cli_limit_takes_the_newest_and_bad_since_is_refused(prefect_api, site, tmp_path, capsys):
    out = tmp_path / "out"
    url = site.write_feed("show.xml", "CLI Show", [
        TestEpisode("old", "Old", SHORT_CLIPS[0], day=0), TestEpisode("new", "New", SHORT_CLIPS[2], day=3)])
    assert main(["podcast", url, "--out", str(out), "--limit", "1", "--no-progress"]) == 0
    assert list(read_dataset(out, "items")["episode_guid"]) == ["new"]
    assert main(["podcast", url, "--out", str(out), "--since", "last week"]) == 2
    assert "--since 'last week' is not a date: write it as YYYY-MM-DD" in capsys.readouterr().err


async def test_a_private_feeds_token_is_used_but_never_written(prefect_api, site, tmp_path, capfd):
    """Private feeds (Supercast, Patreon...) put a subscriber token in the feed and enclosure
    URLs: the episodes are fetched with it, and no output file or message holds it."""
    token = "SUBSCRIBERTOKEN0123456789abcdef"
    out = tmp_path / "out"
    shutil.copy(SPEECH / SHORT_CLIPS[0], site.folder / SHORT_CLIPS[0])
    episodes = [TestEpisode("p-1", "Members only", SHORT_CLIPS[0])]
    (site.folder / "private.xml").write_text(
        rss("Private Show", episodes, lambda name: f"{site.url(name)}?token={token}"))

    summary = await podcast(f"{site.url('private.xml')}?token={token}", out)
    assert summary["ok"] == 1
    assert f"/{SHORT_CLIPS[0]}?token={token}" in site.requests  # fetched with the token
    items, transcripts = read_dataset(out, "items"), read_dataset(out, "transcripts")
    assert items["source"].tolist() == [f"{site.url(SHORT_CLIPS[0])}?token=***"]
    assert transcripts["enclosure_url"].tolist() == [f"{site.url(SHORT_CLIPS[0])}?token=***"]
    assert summary["feed"]["url"] == f"{site.url('private.xml')}?token=***"
    printed = capfd.readouterr()
    assert token not in all_files_text(out) + printed.out + printed.err


SPONSORED_VTT = ("WEBVTT\n\n00:00:00.000 --> 00:00:06.000\n"
                 "Welcome back. Today the hive, and how bees keep it warm.\n\n"
                 "00:00:06.500 --> 00:00:12.000\nThis episode is brought to you by Northwind Coffee.\n\n"
                 "00:00:12.500 --> 00:00:18.000\nGo to northwind coffee dot com and use code LISTEN.\n\n"
                 "00:00:18.500 --> 00:00:30.000\nIn winter the workers cluster around the queen and "
                 "shiver to keep the hive warm.\n")


async def test_a_shipped_transcript_gets_chapters_and_its_sponsor_read(prefect_api, site, tmp_path):
    """--chapters on a feed: an episode's own transcript (hostile: the feed's) gets its notes
    offline too, without its audio being fetched or a request sent."""
    (site.folder / "ep.vtt").write_text(SPONSORED_VTT)
    url = site.write_feed("show.xml", "Test Show", [TestEpisode("s-1", "Sponsored", SHORT_CLIPS[0],
                                                                transcript=("ep.vtt", "text/vtt"))])
    summary = await podcast(url, tmp_path / "out", chapters="offline")
    assert summary["ok"] == 1 and not site.audio_requests()
    notes = read_dataset(tmp_path / "out", "show_notes").iloc[0]
    assert (notes["method"], notes["n_chapters"], notes["n_sponsor_spots"]) == ("offline", 1, 1)
    spot = read_dataset(tmp_path / "out", "sponsor_spots").iloc[0]
    assert (spot["start_s"], spot["end_s"], spot["sponsor"]) == (6.5, 18.0, "Northwind Coffee")
    chapters = json.loads(Path(notes["chapters_path"]).read_text())["chapters"]
    assert len(chapters) == 1 and chapters[0]["startTime"] == 0
    assert {"hive", "bees", "workers", "queen"} & set(chapters[0]["title"].lower().split())
