"""A book as titled chapters, and the chapters of Markdown or plain text.

- Markdown: chapters start at the shallowest heading level used at least twice (a lone `#`
  above `##` chapters is the book's title); plain text: at lines such as "Chapter 3" or
  "PROLOGUE" after a blank line. Text before the first chapter heading joins the first chapter.

Every chapter's text is speakable (tasks.text.speakable). EPUBs: tasks/text/epub.py; a
manifest item's book: tasks/text/books.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from audiobatch.tasks.text.speakable import speakable_text

MAX_TEXT_CHARS = 500_000  # about 80,000 words or 8 hours of speech per item
_MARKDOWN = MarkdownIt("commonmark")
_TEXT_HEADING = re.compile(r"(?i)(chapter|part|book|prologue|epilogue|preface|introduction|"
                           r"afterword|foreword)\b[^\n]{0,70}")


@dataclass
class Chapter:
    title: str
    text: str  # speakable (tasks.text.speakable.speakable_text)


@dataclass
class Book:
    title: str | None = None
    author: str | None = None
    cover: bytes | None = None
    cover_type: str | None = None  # "image/jpeg" | "image/png"
    chapters: list[Chapter] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left out, and why

def markdown_chapters(raw: str) -> list[Chapter]:
    lines = raw.replace("\r\n", "\n").split("\n")
    headings = [(token.map[0], int(token.tag[1:]), tokens[i + 1].content.strip())
                for tokens in [_MARKDOWN.parse(raw)] for i, token in enumerate(tokens)
                if token.type == "heading_open" and token.map]
    levels = [level for _, level, _ in headings]
    repeated = [level for level in sorted(set(levels)) if levels.count(level) >= 2]
    if not repeated:
        title = headings[0][2] if headings else ""
        return _chapters([(title, raw)], markdown=True)
    starts = [(line, title) for line, level, title in headings if level == repeated[0]]
    return _chapters(_cut(lines, starts), markdown=True)


def text_chapters(raw: str) -> list[Chapter]:
    lines = raw.replace("\r\n", "\n").split("\n")
    starts = [(i, line.strip()) for i, line in enumerate(lines)
              if _TEXT_HEADING.fullmatch(line.strip()) and (i == 0 or not lines[i - 1].strip())]
    return _chapters(_cut(lines, starts) if starts else [("", raw)], markdown=False)


def _cut(lines: list[str], starts: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """(title, raw text) per chapter; lines before the first heading join the first chapter."""
    bounds = [0] + [line for line, _ in starts[1:]] + [len(lines)]
    return [(title, "\n".join(lines[a:b])) for (_, title), a, b in zip(starts, bounds, bounds[1:])]


def _chapters(pieces: list[tuple[str, str]], *, markdown: bool) -> list[Chapter]:
    chapters = []
    for title, raw in pieces:
        text = speakable_text(raw, markdown=markdown)
        if text:
            chapters.append(Chapter(title=plain_title(title) or f"Chapter {len(chapters) + 1}", text=text))
    return chapters


def plain_title(title: str) -> str:
    return " ".join(re.sub(r"[*_`#]+", "", title).split())
