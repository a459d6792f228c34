"""A podcast feed of the narrations: RSS 2.0 with iTunes and Podcasting 2.0 tags, beside the media.

`--feed-url URL` is the public URL where the output root's `media/` folder is served; the feed
is `<out>/media/feed.xml` (public at `URL/feed.xml`). Each narration is one entry: its title,
a GUID stable per item id (a UUID made from the feed URL and the item id), an `enclosure`
with the file's byte length and MIME type, `itunes:duration`, `podcast:transcript` links to
the narration's captions and text, and `podcast:chapters` to its Podcasting 2.0 chapters file
(audiobooks of more than one chapter). The feed is updated run by run: an item narrated again
replaces its entry (same GUID, first publication date kept, new file), never adds a second one.
Channel fields a publisher edited in the file (title, description, author, image) are kept.

Trust: the feed belongs to the operator (the deployment's `feed_url`; a run started by others
may not set another, flows/guard.py). Items from others' manifests (the inbox, `submit`) only add
entries: one whose GUID is in the feed already is left as it is (`replace=False`), so nobody
replaces another's episode by reusing its item id. Titles and texts come from manifests and books:
characters XML 1.0 does not allow (control characters, lone surrogates) are dropped before
ElementTree escapes the rest, so the file stays a feed every reader (and the next run) can parse.
The feed file is re-read with defusedxml; the URL must be a plain http(s) URL.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree as ET

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.outputs.datasets import OutputRoot

FEED_FILE = "media/feed.xml"
ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
for _prefix, _uri in (("itunes", ITUNES_NS), ("podcast", PODCAST_NS), ("atom", ATOM_NS)):
    ET.register_namespace(_prefix, _uri)
MIME_TYPES = {"mp3": "audio/mpeg", "m4b": "audio/mp4", "wav": "audio/wav", "flac": "audio/flac",
              "opus": "audio/ogg", "vtt": "text/vtt", "srt": "application/x-subrip",
              "txt": "text/plain"}
# Characters XML 1.0 allows (https://www.w3.org/TR/xml/#charsets); anything else breaks the file.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
CHAPTERS_TYPE = "application/json+chapters"  # the Podcasting 2.0 chapters file's MIME type
_DEFAULT_CHANNEL = {"title": "Narrations", "description": "Narrated by audiobatch.",
                    "language": "en"}


@dataclass(frozen=True)
class FeedEntry:
    item_id: str
    title: str
    audio: str  # path under the output root ("media/narrations/...")
    audio_bytes: int
    audio_format: str
    duration_s: float
    transcripts: tuple[str, ...] = ()  # paths under the output root, best first
    summary: str = ""
    chapters: str | None = None  # path under the output root of the JSON chapters file


@dataclass
class FeedUpdate:
    path: str  # where the feed was written
    kept: list[str] = field(default_factory=list)  # item ids whose existing entry was not replaced


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 does not allow (ElementTree escapes the rest)."""
    return _NOT_XML.sub("", text)


def check_feed_url(url: str) -> str:
    """The base URL without a trailing slash; refused unless plain http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment \
            or "@" in parts.netloc:
        raise ConfigError(f"--feed-url {url!r}: give the public http(s) URL where <out>/media/ is "
                          "served, without credentials, query or fragment (e.g. https://cdn.example.org/show).")
    return url.rstrip("/")


def entry_guid(feed_url: str, item_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{feed_url}#{item_id}"))


def public_url(feed_url: str, relative: str) -> str:
    """The URL a listener fetches for a file under <out>/media/."""
    return f"{feed_url}/{quote(relative.removeprefix('media/'))}"


def update_feed(out: OutputRoot, feed_url: str, entries: list[FeedEntry],
                now: datetime | None = None, *, replace: bool = True) -> FeedUpdate:
    """Add this run's entries to the feed, replacing an entry of the same item (`replace`: the
    operator's own items) or leaving it as it is (items from others)."""
    feed_url = check_feed_url(feed_url)
    now = now or datetime.now(timezone.utc)
    root, channel = _load(out, feed_url)
    items = {(item.findtext("guid") or ""): item for item in channel.findall("item")}
    kept = []
    for entry in entries:
        guid = entry_guid(feed_url, entry.item_id)
        old = items.get(guid)
        if old is not None and not replace:
            kept.append(entry.item_id)
            continue
        published = old.findtext("pubDate") if old is not None else None
        items[guid] = _item(feed_url, entry, guid, published or format_datetime(now))
    for item in channel.findall("item"):
        channel.remove(item)
    _set(channel, "lastBuildDate", format_datetime(now))
    for item in sorted(items.values(), key=_published, reverse=True):
        channel.append(item)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    out.write_bytes(FEED_FILE, data)
    return FeedUpdate(out.display(FEED_FILE), kept)


def _load(out: OutputRoot, feed_url: str) -> tuple[ET.Element, ET.Element]:
    """The existing feed (our own file, still parsed safely), or a new one."""
    if out.exists(FEED_FILE):
        try:
            root = SafeET.fromstring(out.read_bytes(FEED_FILE))
        except (DefusedXmlException, SafeET.ParseError) as error:
            raise ConfigError(f"{out.display(FEED_FILE)} is not a feed audiobatch can update "
                              f"({error}); move it away and run again to start a new one.") from None
        channel = root.find("channel")
        if root.tag == "rss" and channel is not None:
            return root, channel
    root = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(root, "channel")
    for name, value in _DEFAULT_CHANNEL.items():
        _set(channel, name, value)
    _set(channel, "link", feed_url + "/")
    ET.SubElement(channel, f"{{{ATOM_NS}}}link", {"href": f"{feed_url}/feed.xml", "rel": "self",
                                                  "type": "application/rss+xml"})
    _set(channel, f"{{{ITUNES_NS}}}author", "audiobatch")
    _set(channel, f"{{{ITUNES_NS}}}explicit", "false")
    ET.SubElement(channel, f"{{{ITUNES_NS}}}category", {"text": "News"})
    _set(channel, f"{{{PODCAST_NS}}}guid", str(uuid.uuid5(uuid.NAMESPACE_URL, feed_url)))
    return root, channel


def _set(parent: ET.Element, tag: str, text: str) -> None:
    element = parent.find(tag)
    if element is None:
        element = ET.SubElement(parent, tag)
    element.text = xml_text(text)


def _item(feed_url: str, entry: FeedEntry, guid: str, published: str) -> ET.Element:
    item = ET.Element("item")
    ET.SubElement(item, "title").text = xml_text(entry.title)
    ET.SubElement(item, "guid", {"isPermaLink": "false"}).text = guid
    ET.SubElement(item, "pubDate").text = published
    if entry.summary:
        ET.SubElement(item, "description").text = xml_text(entry.summary)
    ET.SubElement(item, "enclosure", {"url": public_url(feed_url, entry.audio),
                                      "length": str(entry.audio_bytes),
                                      "type": MIME_TYPES[entry.audio_format]})
    ET.SubElement(item, f"{{{ITUNES_NS}}}duration").text = str(max(1, round(entry.duration_s)))
    ET.SubElement(item, f"{{{ITUNES_NS}}}episodeType").text = "full"
    for path in entry.transcripts:
        extension = path.rsplit(".", 1)[-1]
        attributes = {"url": public_url(feed_url, path), "type": MIME_TYPES[extension]}
        if extension in ("vtt", "srt"):
            attributes["rel"] = "captions"
        ET.SubElement(item, f"{{{PODCAST_NS}}}transcript", attributes)
    if entry.chapters:
        ET.SubElement(item, f"{{{PODCAST_NS}}}chapters", {"url": public_url(feed_url, entry.chapters),
                                                           "type": CHAPTERS_TYPE})
    return item


def _published(item: ET.Element) -> datetime:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(item.findtext("pubDate") or "")
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)


def publish_run_to_feed(out: OutputRoot, run_rows: list[dict], feed_url: str, *,
                        replace: bool = True) -> FeedUpdate | None:
    """Update the feed with the narrations a run finished (its `narrations` rows)."""
    prefix = out.display("")
    entries = [FeedEntry(item_id=row["item_id"], title=row.get("title") or row["item_id"],
                         audio=row["audio_path"].removeprefix(prefix), audio_bytes=int(row["audio_bytes"]),
                         audio_format=row["format"], duration_s=float(row["duration_s"]),
                         transcripts=tuple(row[name].removeprefix(prefix)
                                           for name in ("vtt_path", "srt_path", "txt_path") if row.get(name)),
                         summary=row.get("summary") or "",
                         chapters=(row.get("chapters_path") or "").removeprefix(prefix) or None)
               for row in run_rows]
    return update_feed(out, feed_url, entries, replace=replace) if entries else None
