"""Podcast feeds (RSS 2.0 and Atom, with iTunes and Podcasting 2.0 tags) -> episodes -> Items.

A feed is read with feedparser. Each entry with an audio enclosure is an episode, identified
by its GUID (Atom: its id), or by the enclosure URL when the feed gives no GUID: titles, order
and the feed's length may change between runs without changing who an episode is.
`<podcast:transcript>` tags are collected for every episode (feedparser keeps only the last
one per entry, so they are read again from the XML).
What was done per feed is kept by `tasks.podcast.state`.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.ids import slugify
from audiobatch.tasks.inputs.manifest import TRANSCRIBE, Item
from audiobatch.tasks.inputs.sources import fetch, safe_url

FEED_CONTENT_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/xml",
                                "text/xml", "text/*", "application/octet-stream",
                                "binary/octet-stream"})
MAX_FEED_BYTES = 64 * 1024 * 1024
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
# Which shipped transcript to use when an episode offers several: timed captions first.
TRANSCRIPT_PREFERENCE = ("text/vtt", "application/x-subrip", "application/srt", "text/srt",
                         "application/json", "text/plain", "text/html")


class FeedError(InputError):
    """The feed as a whole is unusable (unreachable, not RSS/Atom, no episodes)."""

    kind = "feed_error"


@dataclass(frozen=True)
class ShippedTranscript:
    url: str
    type: str  # MIME type as the feed states it (lower case), "" when missing
    language: str | None = None


@dataclass
class Episode:
    key: str  # "guid:<guid>" or "url:<enclosure url>": what the per-feed state remembers
    guid: str | None
    title: str
    enclosure_url: str
    enclosure_type: str | None
    published_at: datetime | None
    duration_s: float | None  # as the feed states it (itunes:duration)
    transcripts: list[ShippedTranscript] = field(default_factory=list)

    def preferred_transcript(self) -> ShippedTranscript | None:
        def rank(t: ShippedTranscript) -> int:
            return TRANSCRIPT_PREFERENCE.index(t.type) if t.type in TRANSCRIPT_PREFERENCE else 99
        return min(self.transcripts, key=rank) if self.transcripts else None


@dataclass
class Feed:
    url: str
    title: str
    language: str | None
    episodes: list[Episode]  # newest first

    @property
    def key(self) -> str:
        return feed_key(self.url)


def feed_key(url: str) -> str:
    """A file-name-safe, stable name for a feed: readable part + hash of the URL. The readable
    part comes from the masked URL: no password or token lands in a file or deployment name."""
    parts = urlsplit(safe_url(url))
    readable = slugify(f"{parts.netloc} {parts.path}" if parts.netloc else Path(url).stem, 40)
    return f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:10]}".lower()


# --- reading and parsing -------------------------------------------------------------------

async def load_feed(source: str, policy: FetchPolicy) -> Feed:
    """Fetch (a fresh copy, never a cached one) and parse the feed at `source` (URL or file)."""
    policy = replace(policy, allowed_content_types=FEED_CONTENT_TYPES,
                     max_bytes=min(policy.max_bytes, MAX_FEED_BYTES))
    with tempfile.TemporaryDirectory(prefix="audiobatch-feed-") as work:
        fetched = await fetch(source, Path(work), policy, label=f"feed {safe_url(source)}")
        data = fetched.path.read_bytes()
    return parse_feed(data, source)


def parse_feed(data: bytes, url: str) -> Feed:
    parsed = feedparser.parse(data)
    shown = safe_url(url)
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "no RSS or Atom elements"
        raise FeedError(f"feed {shown} is not an RSS or Atom feed ({reason}): check the URL; "
                        "it must point at the feed itself, not the podcast's web page.")
    shipped = _shipped_transcripts(data)
    if len(shipped) != len(parsed.entries):
        shipped = [[] for _ in parsed.entries]  # the XML needed feedparser's repairs
    episodes: list[Episode] = []
    seen: set[str] = set()
    for entry, transcripts in zip(parsed.entries, shipped):
        episode = _episode(entry, transcripts or _feedparser_transcript(entry))
        if episode is not None and episode.key not in seen:  # a repeated GUID: first one wins
            seen.add(episode.key)
            episodes.append(episode)
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    episodes.sort(key=lambda e: e.published_at or oldest, reverse=True)
    feed = parsed.feed
    return Feed(url=url, title=feed.get("title") or shown, language=_language(feed.get("language")),
                episodes=episodes)


def _episode(entry: Any, transcripts: list[ShippedTranscript]) -> Episode | None:
    enclosure = _audio_enclosure(entry)
    if enclosure is None:
        return None  # a text post or an image: not an episode
    url, mime = enclosure
    guid = (entry.get("id") or "").strip() or None
    return Episode(
        key=f"guid:{guid}" if guid else f"url:{url}", guid=guid,
        title=(entry.get("title") or "").strip() or "untitled episode",
        enclosure_url=url, enclosure_type=mime, published_at=_published(entry),
        duration_s=parse_duration(entry.get("itunes_duration")), transcripts=transcripts)


def _audio_enclosure(entry: Any) -> tuple[str, str | None] | None:
    for link in entry.get("links", []):
        if link.get("rel") != "enclosure" or not link.get("href"):
            continue
        mime = (link.get("type") or "").split(";")[0].strip().lower() or None
        if mime is None or mime.startswith(("audio/", "video/")) or mime == "application/ogg":
            return link["href"].strip(), mime
    return None


def _published(entry: Any) -> datetime | None:
    moment = entry.get("published_parsed") or entry.get("updated_parsed")
    return datetime(*moment[:6], tzinfo=timezone.utc) if moment else None


def parse_duration(text: str | None) -> float | None:
    """itunes:duration: "3600", "60:00", "1:00:00" or "1:00:00.5" -> seconds."""
    if not text or not re.fullmatch(r"\d+(:\d{1,2}){0,2}(\.\d+)?", text.strip()):
        return None
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def _language(code: str | None) -> str | None:
    match = re.match(r"([A-Za-z]{2})(?:[-_]|$)", (code or "").strip())
    return match.group(1).lower() if match else None


def _shipped_transcripts(data: bytes) -> list[list[ShippedTranscript]]:
    """Every entry's <podcast:transcript> tags, in document order ([] when the XML is broken)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    entries = [el for el in root.iter() if _local(el.tag) in ("item", "entry")]
    return [[ShippedTranscript(t.get("url", "").strip(), (t.get("type") or "").lower().strip(),
                               t.get("language"))
             for t in entry.iter(f"{{{PODCAST_NS}}}transcript") if t.get("url")]
            for entry in entries]


def _feedparser_transcript(entry: Any) -> list[ShippedTranscript]:
    tag = entry.get("podcast_transcript")
    if isinstance(tag, dict) and tag.get("url"):
        return [ShippedTranscript(tag["url"], (tag.get("type") or "").lower(), tag.get("language"))]
    return []


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


# --- which episodes, as which items ----------------------------------------------------------

def select_episodes(feed: Feed, done: set[str], *, since: date | None = None,
                    limit: int | None = None) -> list[Episode]:
    """Episodes not done yet, newest first; with `since`, undated episodes are left out."""
    chosen = [e for e in feed.episodes if e.key not in done
              and (since is None or (e.published_at is not None and e.published_at.date() >= since))]
    return chosen[:limit] if limit is not None else chosen


def episode_item_id(feed: Feed, episode: Episode) -> str:
    """Unique across feeds (they share the output root) and stable for the same GUID."""
    digest = hashlib.sha256(f"{feed.url}\n{episode.key}".encode()).hexdigest()[:8]
    return f"{slugify(feed.title, 24)}-{slugify(episode.title, 48)}-{digest}".lower()


def episode_item(feed: Feed, episode: Episode, item_id: str, row: int,
                 language: str | None = None) -> Item:
    """The episode as a transcription Item; metadata feed the items/transcripts columns.

    Private feeds carry tokens in their URLs: metadata (written to Parquet) get the URLs
    with credentials masked; the real ones stay in `source` and `options` for fetching."""
    metadata = {
        "feed_title": feed.title, "feed_url": safe_url(feed.url), "episode_title": episode.title,
        "episode_guid": episode.guid or "", "enclosure_url": safe_url(episode.enclosure_url),
        "published_at": episode.published_at.isoformat() if episode.published_at else "",
        "duration_s": "" if episode.duration_s is None else f"{episode.duration_s:g}",
    }
    options = {"language": language} if language else {}
    if shipped := episode.preferred_transcript():
        metadata.update(transcript_url=safe_url(shipped.url), transcript_type=shipped.type)
        options["transcript_url"] = shipped.url
    metadata = {k: v for k, v in metadata.items() if v != ""}
    return Item(row=row, item_id=item_id, kind=TRANSCRIBE, source=episode.enclosure_url,
                options=options, metadata=metadata)
