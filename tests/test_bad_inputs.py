"""The bad-input corpus: every nasty input ends in a clear per-item status (or works where it
should) while the rest of the run completes. The corpus is generated here from real speech."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from audiobatch.flows.common import summary_of
from audiobatch.flows.cli import main as cli_main
from audiobatch.tasks.options import NarrateOptions, TranscribeOptions
from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest
from tests.helpers import nasty
from tests.helpers.data import SPEECH

pytestmark = pytest.mark.usefixtures("prefect_api")
GOFORWARD = (SPEECH / "pocketsphinx__goforward.wav").read_bytes()


class _Site(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        pages = {"/ok.wav": (200, "audio/wav", GOFORWARD),
                 "/big.wav": (200, "audio/wav", GOFORWARD * 12),
                 "/page.wav": (200, "text/html", b"<html><body>Sign in</body></html>"),
                 "/gone.wav": (404, "text/plain", b"not found")}
        status, kind, body = pages.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _transcription_corpus(folder: Path, site: str) -> dict[str, tuple[str, str]]:
    """id -> (audio column, expected status). Written to files the way users make them."""
    (folder / "a folder").mkdir()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is a text file with a .wav name\n")
    return {
        "zero-byte": (str(folder / "empty.wav"), "failed"),
        "truncated-mp3": (str(nasty.truncated_mp3(folder / "cut.mp3")), "ok"),
        "text-as-wav": (str(folder / "notes.wav"), "failed"),
        "image": (str(nasty.png(folder / "cover.png")), "failed"),
        "silence": (str(nasty.silence(folder / "quiet.wav")), "failed"),
        "one-second": (str(nasty.one_second(folder / "short.wav")), "ok"),
        "three-hours": (str(nasty.long_recording(folder / "long.flac")), "ok"),
        "8ch-96k": (str(nasty.multichannel(folder / "surround.wav")), "ok"),
        "telephone": (str(nasty.telephone(folder / "phone.wav")), "ok"),
        "video": (str(nasty.video(folder / "clip.mp4", with_audio=True)), "ok"),
        "video-no-sound": (str(nasty.video(folder / "mute.mp4", with_audio=False)), "failed"),
        "unicode": (str(nasty.telephone(folder / "épisode 1 – ünïcode ☕.wav")), "ok"),
        "missing": (str(folder / "not-there.wav"), "failed"),
        "directory": (str(folder / "a folder"), "failed"),
        "unreachable": ("http://127.0.0.1:9/x.wav", "failed"),
        "url-404": (f"{site}/gone.wav", "failed"),
        "url-html": (f"{site}/page.wav", "failed"),
        "url-too-big": (f"{site}/big.wav", "failed"),
        "url-ok": (f"{site}/ok.wav", "ok"),
    }


def _write_nasty_csv(path: Path, rows: list[list[str]]) -> None:
    """A UTF-8 BOM, ';' separators and CRLF line ends, as a spreadsheet would write them."""
    text = "\r\n".join(";".join(f'"{cell}"' for cell in row) for row in rows)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8") + b"\r\n\r\n")


def test_transcription_corpus_every_row_gets_a_clear_status(tmp_path, site, allow_loopback_fetch) -> None:
    corpus = _transcription_corpus(tmp_path, site)
    rows = [["id", "audio"], *[[item_id, audio] for item_id, (audio, _) in corpus.items()],
            ["unicode", str(SPEECH / "pocketsphinx__goforward.wav")],  # duplicate id
            ["../../etc/passwd", str(SPEECH / "pocketsphinx__goforward.wav")]]
    manifest = tmp_path / "nasty.csv"
    _write_nasty_csv(manifest, rows)
    summary = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
        options=TranscribeOptions.from_flat(max_download_mb=0.5, progress=False), return_state=True)))
    items = pd.read_parquet(tmp_path / "out" / "items").set_index("row")
    assert len(items) == len(rows) - 1 == summary["items"]  # every row, exactly one status
    by_id = items.set_index("item_id")
    for item_id, (_, expected) in corpus.items():
        row = by_id.loc[item_id]
        assert row["status"] == expected, (item_id, row["error_message"])
        if expected == "failed":
            assert item_id in row["error_message"] and len(row["error_message"]) > 40, item_id
    duplicate, traversal = items.loc[len(rows) - 1], items.loc[len(rows)]
    assert duplicate["status"] == "failed" and "already used" in duplicate["error_message"]
    assert traversal["status"] == "failed" and "/" in traversal["error_message"]
    assert not (tmp_path / "etc").exists()
    messages = by_id["error_message"].fillna("")
    assert "no audio track" in messages["video-no-sound"] and "HTML" in messages["url-html"]
    assert "--max-download-mb" in messages["url-too-big"] and "404" in messages["url-404"]
    transcripts = pd.read_parquet(tmp_path / "out" / "transcripts").set_index("item_id")
    assert "dashwood" in transcripts.loc["three-hours", "text"].lower()
    assert transcripts.loc["three-hours", "duration_s"] == pytest.approx(3 * 3600 + 7.1, abs=1)


def test_narration_corpus(tmp_path) -> None:
    (tmp_path / "huge.txt").write_text("All work and no play. " * 48_000)  # ~1 MB
    (tmp_path / "emoji.md").write_text("🎉🎉🎉 ✨ \x07\x1b")
    (tmp_path / "controls.txt").write_text("Tea\x00 time\x08 for 🫖 two\x1b[0m, please.")
    rows = [["id", "text", "text_file"],
            ["empty", "", ""], ["blank", "   \t ", ""],
            ["megabyte", "", str(tmp_path / "huge.txt")],
            ["only-emoji", "", str(tmp_path / "emoji.md")],
            ["emoji-and-controls", "Good \x0cmorning 👋🏽 everyone\x1b! Coffee ☕ is ready.", ""],
            ["control-file", "", str(tmp_path / "controls.txt")]]
    manifest = tmp_path / "texts.csv"
    _write_nasty_csv(manifest, rows)
    asyncio.run(summary_of(narrate_manifest(str(manifest), out=str(tmp_path / "out"),
        options=NarrateOptions.from_flat(audio_format="wav", progress=False), return_state=True)))
    items = pd.read_parquet(tmp_path / "out" / "items").set_index("item_id")
    assert items["status"].to_dict() == {"empty": "failed", "blank": "failed", "megabyte": "failed",
                                         "only-emoji": "failed", "emoji-and-controls": "ok",
                                         "control-file": "ok"}
    assert "Split it into chapters" in items.loc["megabyte", "error_message"]
    assert "nothing to read aloud" in items.loc["only-emoji", "error_message"]
    narrations = pd.read_parquet(tmp_path / "out" / "narrations").set_index("item_id")
    assert Path(narrations.loc["emoji-and-controls", "audio_path"]).stat().st_size > 10_000


def test_manifest_level_problems_stop_before_anything_runs(tmp_path, capsys) -> None:
    no_audio = tmp_path / "no-audio.csv"
    no_audio.write_text("id,file\na,x.wav\n")
    assert cli_main(["transcribe", str(no_audio), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "audio" in message and "file" in message and not (tmp_path / "out").exists()

    empty = tmp_path / "empty.csv"
    empty.write_text("audio\n")
    summary = asyncio.run(summary_of(transcribe_manifest(str(empty), out=str(tmp_path / "out2"),
        options=TranscribeOptions.from_flat(progress=False), return_state=True)))
    assert summary["items"] == 0


def test_hundred_thousand_rows_each_get_a_status(tmp_path) -> None:
    manifest = tmp_path / "huge.csv"
    lines = ["id,audio"] + [f"dup,{tmp_path / 'missing.wav'}"] * 100_000
    manifest.write_text("\n".join(lines) + "\n")
    summary = asyncio.run(summary_of(transcribe_manifest(str(manifest), out=str(tmp_path / "out"),
        options=TranscribeOptions.from_flat(progress=False), return_state=True)))
    items = pd.read_parquet(tmp_path / "out" / "items")
    assert len(items) == summary["items"] == summary["failed"] == 100_000
    assert items["item_id"].is_unique
