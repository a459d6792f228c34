"""A manifest item's text and book: inline text, a text file, or a book file
(.epub: tasks/text/epub.py; .md and .txt: tasks/text/chapters.py).

An audiobook (`format` m4b) gets one chapter per book chapter, titled from the book; other
formats narrate the chapters one after the other.

Trust: a text file may come from an untrusted manifest (inbox, submit): it is read only where
the fetch policy allows (inside the data roots for manifests from others), at most
MAX_TEXT_CHARS per item, as UTF-8; EPUBs are read by tasks/text/epub.py, within its bounds.
"""
from __future__ import annotations

from pathlib import Path

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.manifest import TEXT_FILE_SUFFIXES, Item
from audiobatch.tasks.inputs.sources import local_file
from audiobatch.tasks.text.chapters import MAX_TEXT_CHARS, Book, Chapter, markdown_chapters, text_chapters
from audiobatch.tasks.text.epub import read_epub
from audiobatch.tasks.text.speakable import speakable_text


def read_book(path: Path, label: str) -> Book:
    """The chapters of an .epub, .md or .txt file (InputError naming `label` when unusable)."""
    suffix = path.suffix.lower()
    if suffix == ".epub":
        return read_epub(path, label)
    raw = path.read_text(encoding="utf-8-sig")
    if suffix == ".md":
        return Book(chapters=markdown_chapters(raw))
    return Book(chapters=text_chapters(raw))


# --- a manifest item's text -------------------------------------------------------------------

def _read_text_file(item: Item, path: Path) -> str:
    if path.stat().st_size > MAX_TEXT_CHARS * 4:
        raise InputError(f"{item.item_id}: {path.name} is {path.stat().st_size:,} bytes; the limit "
                         f"is {MAX_TEXT_CHARS:,} characters per item. Split it into chapters.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{item.item_id}: {path} is not UTF-8 text ({error}). Save it as "
                         "UTF-8 and run again.") from error


def _check_length(item: Item, text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"{item.item_id}: the text has {len(text):,} characters; the limit is "
                         f"{MAX_TEXT_CHARS:,} per item. Split it into chapters (one row each).")


def item_text(item: Item, policy: FetchPolicy = FetchPolicy()) -> str:
    """The item's text as it will be spoken (inline or from its file), or a clear InputError."""
    return "\n\n".join(chapter.text for chapter in item_book(item, policy, audiobook=False).chapters)


def item_book(item: Item, policy: FetchPolicy, *, audiobook: bool) -> Book:
    """The item's chapters: a book's own when making an audiobook (or reading an EPUB),
    else the whole text as one chapter, titled like the item. A text file is read only where
    `policy` allows (inside the data roots for manifests from others)."""
    title = item.options.get("title") or item.item_id
    source = (local_file(item.source, policy, item.item_id, suffixes=TEXT_FILE_SUFFIXES).path
              if item.source != "inline" else None)
    if source is not None and (audiobook or source.suffix.lower() == ".epub"):
        if source.suffix.lower() != ".epub":
            _check_length(item, _read_text_file(item, source))
        book = read_book(source, item.item_id)
        if not audiobook:  # one piece of audio: the chapters read one after the other
            book.chapters = [Chapter(title, "\n\n".join(c.text for c in book.chapters))]
    else:
        raw = item.options.get("text", "") if source is None else _read_text_file(item, source)
        _check_length(item, raw)
        book = Book(chapters=[Chapter(title, speakable_text(raw, markdown=bool(item.options.get("markdown"))))])
    book.chapters = [chapter for chapter in book.chapters if chapter.text]
    _check_length(item, "".join(chapter.text for chapter in book.chapters))
    if not book.chapters:
        raise InputError(f"{item.item_id}: nothing to read aloud: the text is empty or only "
                         "emoji, symbols or control characters.")
    return book
