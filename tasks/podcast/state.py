"""What was done per podcast feed, kept under the output root: `<out>/_feeds/<feed-key>.json`.

    {"feed_url": ..., "feed_title": ..., "updated_at": ...,
     "episodes": {"guid:abc": {"status": "ok", "item_id": ..., "run_id": ..., "title": ...,
                               "enclosure_url": ..., "at": ..., "attempts": 1}, ...}}

An episode is done once its status row is `ok` (transcribed, or its shipped transcript was
recorded); a `failed` or `skipped` one is tried again next run under the same item id.
Entries are never dropped, so an episode that leaves the feed and comes back is not redone.
The file is replaced atomically; before writing, the current file is merged in so that a
run overlapping another (which deployments prevent with a concurrency limit of 1) loses
nothing but, at worst, a failure record.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.podcast.feeds import Episode, Feed, feed_key

DONE = "ok"


@dataclass
class FeedState:
    feed_url: str
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed_title: str | None = None

    @property
    def done(self) -> set[str]:
        return {key for key, entry in self.episodes.items() if entry.get("status") == DONE}

    def item_id(self, key: str) -> str | None:
        """The id an episode had in an earlier (failed) run: its files keep one name."""
        entry = self.episodes.get(key)
        return entry.get("item_id") if entry else None

    def record(self, episode: Episode, item_id: str, status: str, run_id: str | None,
               reason: str | None = None) -> None:
        previous = self.episodes.get(episode.key, {})
        self.episodes[episode.key] = {
            "status": status, "item_id": item_id, "run_id": run_id, "title": episode.title,
            "enclosure_url": safe_url(episode.enclosure_url), "reason": reason,
            "attempts": int(previous.get("attempts", 0)) + 1,
            "at": datetime.now(timezone.utc).isoformat(),
        }

    def to_json(self) -> bytes:
        data = {"feed_url": safe_url(self.feed_url), "feed_title": self.feed_title,
                "updated_at": datetime.now(timezone.utc).isoformat(), "episodes": self.episodes}
        return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")


def state_path(feed: Feed | str) -> str:
    return f"_feeds/{feed.key if isinstance(feed, Feed) else feed_key(feed)}.json"


def load_state(out: OutputRoot, feed_url: str) -> FeedState:
    relative = state_path(feed_url)
    if not out.exists(relative):
        return FeedState(feed_url)
    try:
        data = json.loads(out.read_bytes(relative))
    except ValueError as exc:
        raise InputError(f"feed state {out.display(relative)} is not valid JSON ({exc}): move it "
                         "away to start the feed afresh (episodes would be transcribed again; "
                         "the result cache makes repeated requests free)") from None
    return FeedState(feed_url, dict(data.get("episodes", {})), data.get("feed_title"))


def save_state(out: OutputRoot, state: FeedState) -> str:
    """Merge with what is on disk now (done wins over not done), then replace atomically."""
    current = load_state(out, state.feed_url)
    for key, entry in current.episodes.items():
        mine = state.episodes.get(key)
        if mine is None or (entry.get("status") == DONE and mine.get("status") != DONE):
            state.episodes[key] = entry
    return out.write_bytes(state_path(state.feed_url), state.to_json())
