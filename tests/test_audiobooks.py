"""Audiobooks end to end on the embedded voice: an EPUB or a Markdown file with chapters
becomes an m4b (AAC in MP4) whose chapters, tags and cover are read back with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import pytest

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.podcast.transcripts import parse_cues
from tests.helpers.books import png, write_epub
from tests.helpers.e2e import run_narrate, write_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]

CHAPTERS = [("The Harbour", ["Ships came in at dawn, and the fishermen sang."]),
            ("A Storm", ["Rain fell for three days and three nights."]),
            ("Home Again", ["The sun returned, and everyone went home."])]


def chapters_of(path: Path) -> list[tuple[str, float, float]]:
    with av.open(str(path)) as container:
        return [(c["metadata"]["title"], float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]))
                for c in container.chapters()]


async def test_an_epub_becomes_an_m4b_with_one_titled_chapter_per_book_chapter(tmp_path: Path) -> None:
    cover = png(300, 300)
    epub = write_epub(tmp_path / "book.epub", CHAPTERS, title="Sea Stories", author="Ann Teller",
                      cover=cover)
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\n## First\n\nOne short line.\n\n## Second\n\nAnother short line.\n")
    manifest = write_manifest(tmp_path / "books.csv", [
        {"id": "sea", "text_file": str(epub), "format": "m4b"},
        {"id": "notes", "text_file": str(notes), "format": "m4b", "author": "N. Writer"},
        {"id": "flat", "text_file": str(epub), "format": "wav"}])
    run = await run_narrate(manifest, tmp_path / "out")
    assert run.statuses() == {"sea": "ok", "notes": "ok", "flat": "ok"}

    book = run.item("sea", "narrations")
    path = Path(book["audio_path"])
    assert path.suffix == ".m4b" and book["chapters"] == 3 and book["title"] == "Sea Stories"
    marks = chapters_of(path)
    assert [title for title, _, _ in marks] == ["The Harbour", "A Storm", "Home Again"]
    assert marks[0][1] == 0 and all(a[2] == pytest.approx(b[1], abs=0.002) for a, b in zip(marks, marks[1:]))
    assert marks[-1][2] == pytest.approx(book["duration_s"], abs=0.05)
    assert all(end - start > 1.0 for _, start, end in marks)  # each holds its spoken sentence
    with av.open(str(path)) as container:
        assert container.metadata["title"] == "Sea Stories" and container.metadata["artist"] == "Ann Teller"
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.rate == 24000
        pictures = [s for s in container.streams if s.disposition & av.stream.Disposition.attached_pic]
        assert len(pictures) == 1 and bytes(next(container.demux(pictures[0]))) == cover
    assert len(decode(path, 24000)) / 24000 == pytest.approx(book["duration_s"], abs=0.1)
    # captions run through the whole book: each chapter's words inside that chapter's mark
    cues = parse_cues(Path(book["vtt_path"]).read_text())
    assert " ".join(c.text for c in cues).split() == Path(book["txt_path"]).read_text().split()
    for title, start, end in marks:
        inside = [c for c in cues if c.text.startswith(title)]
        assert len(inside) == 1 and start <= inside[0].start_s < end, (title, inside)

    assert [t for t, _, _ in chapters_of(Path(run.item("notes", "narrations")["audio_path"]))] == ["First", "Second"]
    flat = run.item("flat", "narrations")  # other formats: the whole book in one file
    assert flat["chapters"] == 1 and flat["duration_s"] == pytest.approx(book["duration_s"], rel=0.1)


async def test_a_hostile_epub_fails_its_row_only(tmp_path: Path) -> None:
    bomb = write_epub(tmp_path / "escape.epub", CHAPTERS, extra={"../../../tmp/evil.xhtml": b"<p>x</p>"})
    manifest = write_manifest(tmp_path / "books.csv", [
        {"id": "bad", "text_file": str(bomb), "format": "m4b"},
        {"id": "good", "text": "A line to read.", "format": "m4b"}])
    run = await run_narrate(manifest, tmp_path / "out")
    assert run.statuses() == {"bad": "failed", "good": "ok"}
    assert "points outside the book" in run.item("bad")["error_message"]
    assert not Path("/tmp/evil.xhtml").exists()
