"""Books -> chapters: EPUB 3 (nav) and EPUB 2 (NCX), Markdown and plain-text headings, and
the hostile EPUBs an untrusted manifest may bring (zip bomb, path traversal, XML entities,
a huge cover)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.text.books import read_book
from audiobatch.tasks.text.chapters import markdown_chapters, text_chapters
from audiobatch.tasks.text.epub import MAX_EPUB_UNPACKED_BYTES
from tests.helpers.books import png, write_epub

CHAPTERS = [("The Harbour", ["Ships came in at dawn.", "The fishermen sang."]),
            ("A Storm", ["Rain fell for three days & nights."]),
            ("Home Again", ["The sun returned.", "Everyone went home."])]


@pytest.mark.parametrize("version", [3, 2])
def test_epub_chapters_follow_the_spine_with_titles_from_the_table_of_contents(tmp_path: Path,
                                                                               version: int) -> None:
    cover = png(600, 800)
    path = write_epub(tmp_path / "book.epub", CHAPTERS, cover=cover, version=version,
                      headings_in_text=version == 3)
    book = read_book(path, "row 2")
    assert [c.title for c in book.chapters] == ["The Harbour", "A Storm", "Home Again"]
    assert book.chapters[1].text.endswith("Rain fell for three days & nights.")
    assert book.chapters[0].text.split("\n\n")[-2:] == ["Ships came in at dawn.", "The fishermen sang."]
    if version == 3:  # the heading is read aloud, as a sentence of its own
        assert book.chapters[0].text.startswith("The Harbour.")
    assert (book.title, book.author) == ("A Small Book", "A. Writer")
    assert (book.cover, book.cover_type) == (cover, "image/png")
    assert all("Contents" not in c.text for c in book.chapters)  # the nav document is not read


def test_markdown_and_text_headings_are_chapters() -> None:
    markdown = ("# The Book\n\nA short preface.\n\n## One\n\nFirst *chapter* text.\n\n"
                "## Two\n\nSecond text.\n\n### A part of two\n\nMore.\n")
    chapters = markdown_chapters(markdown)
    assert [c.title for c in chapters] == ["One", "Two"]
    assert chapters[0].text.startswith("The Book.") and "A short preface." in chapters[0].text
    assert chapters[1].text.endswith("More.")
    assert [c.title for c in markdown_chapters("Just a paragraph.")] == ["Chapter 1"]
    text = "CHAPTER I\n\nIt was a dark night.\n\nCHAPTER II. The Morning\n\nLight came.\n"
    assert [(c.title, c.text.split("\n")[-1]) for c in text_chapters(text)] == [
        ("CHAPTER I", "It was a dark night."), ("CHAPTER II. The Morning", "Light came.")]


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    path = write_epub(tmp_path / "bomb.epub", CHAPTERS[:1])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as book, book.open("OEBPS/zeros.xhtml", "w",
                                                                             force_zip64=True) as entry:
        block = bytes(1 << 20)
        for _ in range(MAX_EPUB_UNPACKED_BYTES // len(block) + 1):
            entry.write(block)
    assert path.stat().st_size < 2_000_000  # ~200 MB of zeros packs into a few hundred KB
    with pytest.raises(InputError, match="unpacks to .* zip bomb"):
        read_book(path, "row 2")


@pytest.mark.parametrize("name", ["../../outside.xhtml", "/etc/passwd", "OEBPS/../../x.xhtml"])
def test_entries_pointing_outside_the_book_are_refused(tmp_path: Path, name: str) -> None:
    path = write_epub(tmp_path / "traversal.epub", CHAPTERS, extra={name: b"<html/>"})
    with pytest.raises(InputError, match="points outside the book"):
        read_book(path, "row 2")


def test_xml_entity_tricks_are_refused(tmp_path: Path) -> None:
    laughs = ('<!DOCTYPE package [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
              '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>')
    path = write_epub(tmp_path / "laughs.epub", CHAPTERS, opf_prefix=laughs)
    with pytest.raises(InputError, match="declares XML entities"):
        read_book(path, "row 2")
    external = '<!DOCTYPE package [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    path = write_epub(tmp_path / "external.epub", CHAPTERS, opf_prefix=external)
    with pytest.raises(InputError, match="declares XML entities"):
        read_book(path, "row 2")


def test_a_huge_cover_is_left_out_and_the_book_still_read(tmp_path: Path) -> None:
    path = write_epub(tmp_path / "cover.epub", CHAPTERS, cover=png(60_000, 60_000))
    book = read_book(path, "row 2")
    assert book.cover is None and "pixels" in book.notes[0]
    assert len(book.chapters) == 3


def test_not_an_epub_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.epub"
    path.write_text("just text")
    with pytest.raises(InputError, match="row 2: fake.epub is not a readable EPUB"):
        read_book(path, "row 2")
