"""Podcast feeds for tests: real RSS files whose enclosures are real speech clips, served over
real HTTP on 127.0.0.1, and a real Prefect process worker for deployment tests.

    with FeedServer(tmp_path / "site") as server:           # serves that folder
        episodes = [TestEpisode("ep-1", "First", "pocketsphinx__goforward.wav")]
        server.write_feed("show.xml", "Test Show", episodes)
        server.url("show.xml")                                 # http://127.0.0.1:PORT/show.xml
        server.requests                                        # paths asked for, in order
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.helpers.data import ROOT, SPEECH

# short clips (about 3 s each) keep podcast tests fast
SHORT_CLIPS = ("pocketsphinx__goforward.wav", "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav",
               "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
               "deepspeech__LDC93S1.wav", "speech_recognition__english.wav")
_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".xml": "application/rss+xml",
          ".vtt": "text/vtt", ".srt": "application/x-subrip", ".txt": "text/plain; charset=utf-8",
          ".json": "application/json", ".html": "text/html"}
BASE_DATE = datetime(2026, 2, 1, 9, 0, tzinfo=timezone.utc)


@dataclass
class TestEpisode:
    __test__ = False  # not a pytest test class
    guid: str | None
    title: str
    clip: str  # a file name under the shared speech folder
    day: int = 0  # published BASE_DATE + day days
    transcript: tuple[str, str] | None = None  # (file name on the server, MIME type)


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, server_record: list[str], **kwargs) -> None:
        self._record = server_record
        super().__init__(*args, **kwargs)

    def guess_type(self, path: str | os.PathLike) -> str:
        return _TYPES.get(Path(path).suffix.lower(), "application/octet-stream")

    def send_head(self):  # noqa: ANN201 - http.server's signature
        self._record.append(self.path)
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet test output


class FeedServer:
    """A static HTTP server on 127.0.0.1 for feeds, clips and transcripts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        handler = partial(_Handler, directory=str(folder), server_record=self.requests)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{name}"

    def audio_requests(self) -> list[str]:
        return [path for path in self.requests if path.endswith((".wav", ".flac", ".mp3"))]

    def write_feed(self, name: str, title: str, episodes: Sequence[TestEpisode]) -> str:
        for episode in episodes:
            if not (self.folder / episode.clip).exists():
                shutil.copy(SPEECH / episode.clip, self.folder / episode.clip)
        (self.folder / name).write_text(rss(title, episodes, self.url), encoding="utf-8")
        return self.url(name)


def rss(title: str, episodes: Sequence[TestEpisode], url_of: Callable[[str], str]) -> str:
    """An RSS 2.0 feed with iTunes and Podcasting 2.0 tags."""
    items = []
    for episode in episodes:
        guid = f"<guid isPermaLink=\"false\">{escape(episode.guid)}</guid>" if episode.guid else ""
        size = (SPEECH / episode.clip).stat().st_size
        shipped = (f"<podcast:transcript url={quoteattr(url_of(episode.transcript[0]))} "
                   f"type={quoteattr(episode.transcript[1])} language=\"en\"/>"
                   if episode.transcript else "")
        published = format_datetime(BASE_DATE + timedelta(days=episode.day))
        items.append(f"""
    <item>
      <title>{escape(episode.title)}</title>{guid}
      <pubDate>{published}</pubDate>
      <enclosure url={quoteattr(url_of(episode.clip))} length="{size}" type="audio/wav"/>
      <itunes:duration>0:03</itunes:duration>{shipped}
    </item>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
     xmlns:podcast="https://podcastindex.org/namespace/1.0">
  <channel>
    <title>{escape(title)}</title>
    <link>https://example.org/show</link>
    <language>en-us</language>
    <itunes:author>Test Author</itunes:author>{''.join(items)}
  </channel>
</rss>
"""


# --- a real Prefect worker ----------------------------------------------------------------

# The worker's environment is the operator's: this opts in feeds served on 127.0.0.1.
LOOPBACK_FETCH_ENV = {"AUDIOBATCH_ALLOW_HOSTS": "127.0.0.1,localhost"}


@contextmanager
def process_worker(pool: str, log_path: Path,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`prefect worker start --pool POOL --type process` against the session's test API.

    The worker polls every second (the default is 10 s) and runs each flow run in a child
    process, exactly as in production; flows import from the installed audiobatch package.
    `env` adds to the worker's environment (the operator's settings, e.g. LOOPBACK_FETCH_ENV)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", **(env or {})}
    prefect = Path(sys.executable).with_name("prefect")
    log = open(log_path, "w")
    worker = subprocess.Popen([str(prefect), "worker", "start", "--pool", pool, "--type", "process",
                               "--limit", "4"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited: {log_path.read_text()[-3000:]}")
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
