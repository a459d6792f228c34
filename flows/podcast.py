"""The `transcribe-podcast` flow: a feed's new episodes in, transcripts and cost reports out.

A podcast run is a transcription run whose items come from a feed instead of a manifest:
the same per-item task, outputs and accounting. What was done is remembered per feed under
the output root (`tasks.podcast.state`), so a scheduled run transcribes only new episodes and
retries the ones that failed. Episodes that ship a transcript are recorded, not paid for,
unless `force`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from datetime import date
from typing import Any

from audiobatch.flows.common import execute_run, run_state
from audiobatch.flows.flow_class import audiobatch_flow
from audiobatch.flows.guard import feed_trust
from audiobatch.flows.runtime import fetch_policy
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.manifest import TRANSCRIBE, Item
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.inputs.trust import Trust
from audiobatch.tasks.options import TranscribeOptions
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.outputs.staging import RunStaging
from audiobatch.tasks.podcast.feeds import (Episode, Feed, episode_item, episode_item_id, load_feed,
                                            select_episodes)
from audiobatch.tasks.podcast.state import FeedState, load_state, save_state
from audiobatch.tasks.podcast.transcripts import record_feed_transcript
from audiobatch.tasks.reports.progress import summarize
from audiobatch.tasks.run.context import ItemFunction, ItemRecorder, RunContext, RunOptions, run_folder
from audiobatch.tasks.transcription.transcribe import transcribe_item


@audiobatch_flow(name="transcribe-podcast", log_prints=True)
async def transcribe_podcast(feed: str, out: str = "outputs", limit: int | None = None,
                             since: str | None = None, force: bool = False,
                             options: TranscribeOptions = TranscribeOptions()) -> Any:
    """Transcribe the episodes of `feed` (RSS/Atom URL or file) not done yet under `out`.

    `limit`: at most this many episodes this run (newest first); `since`: only episodes
    published on or after this ISO date; `force`: transcribe even when the feed ships a
    transcript. The API key comes from OPENAI_API_KEY in the environment, never a parameter.
    """
    feed = local_feed_path(feed)
    run = RunOptions.from_job(TRANSCRIBE, feed, out, options)
    since_date = parse_since(since)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a number of episodes of at least 1")
    items_trust, operator_feed = await feed_trust(options, feed, out, limit)
    loaded = await load_feed(feed, feed_fetch_policy(run, items_trust, operator_feed))
    root = OutputRoot(out)
    state = load_state(root, feed)
    state.feed_title = loaded.title
    episodes = select_episodes(loaded, state.done, since=since_date, limit=limit)
    print(f"feed '{loaded.title}': {len(loaded.episodes)} episodes, "
          f"{sum(e.key in state.done for e in loaded.episodes)} done before, {len(episodes)} to do now")
    if not episodes:
        return _nothing_new(loaded, state)
    items = [_item(loaded, state, episode, row, run) for row, episode in enumerate(episodes, 1)]
    summary = await execute_run(run, episode_processor(force), items_trust, items=items,
                                source_bytes=_job_bytes(loaded, items, force))
    _remember(root, state, episodes, items, summary["run_id"])
    summary["feed"] = _feed_report(loaded, state, len(episodes))
    return run_state(summary)


def local_feed_path(feed: str) -> str:
    """A local feed file by its absolute path: the same feed keeps the same state wherever
    the run starts from."""
    if "://" in feed:
        return feed
    return os.path.abspath(os.path.expanduser(feed))


def parse_since(since: str | None) -> date | None:
    if not since:
        return None
    try:
        return date.fromisoformat(since)
    except ValueError:
        raise ConfigError(f"--since {since!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-01-01") from None


def feed_fetch_policy(options: RunOptions, items_trust: Trust, operator_feed: bool) -> FetchPolicy:
    """A feed the operator named is fetched wherever it is (a local file, an intranet host);
    one given by a run started by others, and everything a feed names, with the items' policy
    (public addresses, no local files)."""
    policy = fetch_policy(options, items_trust)
    return replace(policy, addresses=None, local_roots=None) if operator_feed else policy


def episode_processor(force: bool) -> ItemFunction:
    """The per-item work: record the feed's own transcript when it has one, else transcribe."""
    async def process(ctx: RunContext, item: Item, recorder: ItemRecorder) -> Any:
        chosen = (record_feed_transcript if "transcript_url" in item.options and not force
                  else transcribe_item)
        return await chosen(ctx, item, recorder)
    return process


def _item(feed: Feed, state: FeedState, episode: Episode, row: int, options: RunOptions) -> Item:
    item_id = state.item_id(episode.key) or episode_item_id(feed, episode)
    language = None if options.language else feed.language  # the user's choice wins
    return episode_item(feed, episode, item_id, row, language)


def _job_bytes(feed: Feed, items: list[Item], force: bool) -> bytes:
    """What identifies this run's job: the same episodes again resume an interrupted run."""
    return json.dumps({"feed": feed.url, "force": force,
                       "items": [[item.item_id, item.source] for item in items]}).encode()


def _remember(root: OutputRoot, state: FeedState, episodes: list[Episode], items: list[Item],
              run_id: str) -> None:
    """Record each episode's outcome from the run's own status rows (ok = done for good)."""
    rows = {row["item_id"]: row for row in RunStaging(run_folder(root, run_id)).final_rows("items")}
    for episode, item in zip(episodes, items):
        row = rows.get(item.item_id)
        if row is not None:
            state.record(episode, item.item_id, row["status"], run_id, row.get("error_message"))
    save_state(root, state)


def _feed_report(feed: Feed, state: FeedState, attempted: int) -> dict:
    keys = {e.key for e in feed.episodes}
    return {"url": safe_url(feed.url), "title": feed.title, "episodes": len(feed.episodes),
            "attempted": attempted, "done": len(keys & state.done)}


def _nothing_new(feed: Feed, state: FeedState) -> dict:
    """The summary of a run with nothing to do: no run folder, no model loaded."""
    summary = summarize("", TRANSCRIBE, [], [], wall_s=0.0, model="", priced_as="", outputs={})
    report = {**asdict(summary), "run_id": None, "cost_usd": 0.0, "job": "podcast",
              "feed": _feed_report(feed, state, 0)}
    print("nothing new to transcribe")
    return report
