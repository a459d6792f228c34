"""EPUB 2 and 3 -> a Book (tasks/text/chapters.py) of titled chapters.

What is read: the package document (OPF) named by `META-INF/container.xml`; its spine gives
the reading order (non-linear items and the EPUB 3 nav document are skipped); chapter titles
come from the nav document (EPUB 3) or the NCX (EPUB 2), else the file's first heading; a
spine file with neither title nor entry continues the chapter before it (books split long
chapters into several files). Title and author from the OPF's Dublin Core; cover art from
the EPUB 3 `cover-image` property or the EPUB 2 `<meta name="cover">`.

Trust: an EPUB may come from an untrusted manifest (inbox, submit). It is a zip of XML
written by anyone, so before anything is parsed the zip is checked (entry count, total
stated unpacked size, no absolute or `..` names); each entry is then inflated by our own
bounded decompressor (tasks/bounded.py), which stops as soon as it passes the size the entry
states, whatever the compression (deflate, bzip2, lzma): zipfile's own reader decompresses
a whole 4 KB read of bzip2 or lzma at once (hundreds of MB) before it cuts the result to the
stated size. A document read as text may state at most 4 MB, and reading stops once the
book's text passes the per-item limit. XML is parsed with defusedxml (no entity expansion,
no DTD fetches), XHTML with the standard library's HTML parser (no entities beyond HTML's own), and cover art is kept
only when small (bytes and pixels, read from the image header).
"""
from __future__ import annotations

import copy
import posixpath
import re
import struct
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from audiobatch.tasks.bounded import STEP, Budget, Inflater
from audiobatch.tasks.errors import InputError
from audiobatch.tasks.text.chapters import MAX_TEXT_CHARS, Book, Chapter, plain_title
from audiobatch.tasks.text.speakable import speakable_text

MAX_EPUB_ENTRIES = 5_000
MAX_EPUB_UNPACKED_BYTES = 200 * 1024 * 1024  # a 1,000-page illustrated book is ~50 MB
MAX_EPUB_DOCUMENT_BYTES = 4 * 1024 * 1024  # one XHTML/XML file: 4x the markup of a whole item's text
MAX_COVER_BYTES = 10 * 1024 * 1024
MAX_COVER_PIXELS = 4096 * 4096

_NS = {"opf": "http://www.idpf.org/2007/opf", "dc": "http://purl.org/dc/elements/1.1/",
       "ncx": "http://www.daisy.org/z3986/2005/ncx/", "xhtml": "http://www.w3.org/1999/xhtml",
       "container": "urn:oasis:names:tc:opendocument:xmlns:container",
       "epub": "http://www.idpf.org/2007/ops"}
_XHTML_TYPES = ("application/xhtml+xml", "text/html")
_ZIP_KINDS = {zipfile.ZIP_DEFLATED: "raw-deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma-zip"}


class _Epub:
    """The zip, checked, with safe XML reading."""

    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as error:
            raise InputError(f"{label}: {path.name} is not a readable EPUB (a zip file): {error}. "
                             "Export the book again as EPUB.") from None
        self._check()
        self.names = set(self.zip.namelist())

    def _check(self) -> None:
        entries = self.zip.infolist()
        if len(entries) > MAX_EPUB_ENTRIES:
            raise InputError(f"{self.label}: the EPUB holds {len(entries):,} files; at most "
                             f"{MAX_EPUB_ENTRIES:,} are read. Is it really one book?")
        unpacked = sum(entry.file_size for entry in entries)
        if unpacked > MAX_EPUB_UNPACKED_BYTES:
            raise InputError(f"{self.label}: the EPUB unpacks to {unpacked:,} bytes, over the "
                             f"{MAX_EPUB_UNPACKED_BYTES:,}-byte limit (a zip bomb, or a book with "
                             "huge media): not read.")
        for entry in entries:
            name = entry.filename
            if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or ":" in name:
                raise InputError(f"{self.label}: the EPUB has an entry named {name!r}, which "
                                 "points outside the book: not read.")

    def read(self, name: str, limit: int = MAX_EPUB_DOCUMENT_BYTES) -> bytes:
        """An entry's bytes, inflated no further than the size it states, which may be at
        most `limit` (a chapter or a table of contents is far smaller than a book's media)."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise InputError(f"{self.label}: the EPUB names {name!r}, which it does not contain.") from None
        what = f"{self.label}: {name!r} in the EPUB"
        if info.file_size > limit:
            raise InputError(f"{what} unpacks to {info.file_size:,} bytes, over the {limit:,}-byte "
                             "limit for one of its files: not read. Split the book.")
        budget = Budget(info.file_size, f"{what} unpacks to more than the {info.file_size:,} bytes "
                        "it states (a zip bomb?): not read.")
        try:
            data = self._inflated(info, budget, what)
        except (zipfile.BadZipFile, ValueError, NotImplementedError, OSError, EOFError,
                RuntimeError) as error:  # RuntimeError: encrypted; EOFError: cut short
            raise InputError(f"{what} cannot be unpacked ({error}).") from None
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise InputError(f"{what} is damaged (its size or checksum is not what the zip "
                             "states): export the book again.")
        return data

    def _inflated(self, info: zipfile.ZipInfo, budget: Budget, what: str) -> bytes:
        kind = _ZIP_KINDS.get(info.compress_type)
        if kind is None and info.compress_type != zipfile.ZIP_STORED:
            raise InputError(f"{what} uses a compression EPUB readers do not support "
                             f"(zip method {info.compress_type}): export the book again.")
        raw = copy.copy(info)  # zipfile reads the entry as stored: its bytes as they are in the zip
        raw.compress_type, raw.file_size, raw.CRC = zipfile.ZIP_STORED, info.compress_size, None
        inflater = Inflater(kind, budget, what) if kind else None
        pieces = []
        with self.zip.open(raw) as handle:
            while block := handle.read(STEP):
                if inflater is None:
                    budget.charge(len(block))
                    pieces.append(block)
                else:
                    pieces.extend(inflater.feed(block))
        if inflater is not None:
            inflater.finish()
        return b"".join(pieces)

    def xml(self, name: str) -> SafeET.Element:
        try:
            return SafeET.fromstring(self.read(name), forbid_dtd=False, forbid_entities=True,
                                     forbid_external=True)
        except DefusedXmlException as error:
            raise InputError(f"{self.label}: {name!r} in the EPUB declares XML entities or external "
                             f"references ({type(error).__name__}): refused, as such tricks expand "
                             "or fetch content.") from None
        except SafeET.ParseError as error:
            raise InputError(f"{self.label}: {name!r} in the EPUB is not well-formed XML ({error}).") from None


def read_epub(path: Path, label: str) -> Book:
    epub = _Epub(path, label)
    container = epub.xml("META-INF/container.xml")
    rootfile = container.find(".//container:rootfile", _NS)
    if rootfile is None or not rootfile.get("full-path"):
        raise InputError(f"{label}: META-INF/container.xml names no package document: not an EPUB.")
    opf_name = rootfile.get("full-path", "")
    opf = epub.xml(opf_name)
    base = posixpath.dirname(opf_name)
    manifest = {item.get("id"): item for item in opf.iterfind("opf:manifest/opf:item", _NS)}

    def href_of(item: SafeET.Element) -> str:
        return posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))

    titles = _toc_titles(epub, opf, manifest, href_of)
    book = Book(title=_dc(opf, "title"), author=_dc(opf, "creator"))
    _add_cover(book, epub, opf, manifest, href_of)
    spoken = 0
    for itemref in opf.iterfind("opf:spine/opf:itemref", _NS):
        item = manifest.get(itemref.get("idref"))
        if (item is None or itemref.get("linear") == "no" or item.get("media-type") not in _XHTML_TYPES
                or "nav" in (item.get("properties") or "").split()):
            continue
        name = href_of(item)
        heading, text = _xhtml_text(epub.read(name))
        speakable = speakable_text(text, markdown=False)
        if not speakable:
            continue  # a cover or title page: pictures only
        spoken += len(speakable)
        if spoken > MAX_TEXT_CHARS:  # stop reading: the rest would only be refused
            raise InputError(f"{label}: the book's text is longer than {MAX_TEXT_CHARS:,} characters, "
                             "the limit per item. Split it into parts (one row each).")
        title = titles.get(name) or heading
        if title or not book.chapters:
            book.chapters.append(Chapter(plain_title(title or book.title or "Opening"), speakable))
        else:  # the rest of the chapter before, split into another file
            book.chapters[-1].text += "\n\n" + speakable
    if not book.chapters:
        raise InputError(f"{label}: the EPUB has no text to read aloud in its spine.")
    return book


def _dc(opf: SafeET.Element, name: str) -> str | None:
    element = opf.find(f"opf:metadata/dc:{name}", _NS)
    text = " ".join((element.text or "").split()) if element is not None else ""
    return text or None


def _toc_titles(epub: _Epub, opf: SafeET.Element, manifest: dict, href_of) -> dict[str, str]:
    """File name -> the first title the table of contents gives it (nav first, then NCX)."""
    titles: dict[str, str] = {}
    nav = next((i for i in manifest.values() if "nav" in (i.get("properties") or "").split()), None)
    if nav is not None:
        name = href_of(nav)
        for link in epub.xml(name).iterfind(".//xhtml:nav//xhtml:a", _NS):
            target = _target(name, link.get("href", ""))
            titles.setdefault(target, " ".join("".join(link.itertext()).split()))
    spine = opf.find("opf:spine", _NS)
    ncx = manifest.get(spine.get("toc")) if spine is not None else None
    if ncx is not None and not titles:
        name = href_of(ncx)
        for point in epub.xml(name).iterfind(".//ncx:navPoint", _NS):
            label = point.find("ncx:navLabel/ncx:text", _NS)
            content = point.find("ncx:content", _NS)
            if label is not None and content is not None:
                titles.setdefault(_target(name, content.get("src", "")), " ".join((label.text or "").split()))
    return {target: title for target, title in titles.items() if title}


def _target(document: str, href: str) -> str:
    """A TOC link's file, as a zip entry name (fragments dropped: chapters are files)."""
    path = unquote(urldefrag(href)[0])
    return posixpath.normpath(posixpath.join(posixpath.dirname(document), path))


def _add_cover(book: Book, epub: _Epub, opf: SafeET.Element, manifest: dict, href_of) -> None:
    cover = next((i for i in manifest.values() if "cover-image" in (i.get("properties") or "").split()), None)
    if cover is None:
        meta = next((m for m in opf.iterfind("opf:metadata/opf:meta", _NS) if m.get("name") == "cover"), None)
        cover = manifest.get(meta.get("content")) if meta is not None else None
    if cover is None:
        return
    name = href_of(cover)
    size = epub.zip.getinfo(name).file_size if name in epub.names else 0
    if not size or size > MAX_COVER_BYTES:
        book.notes.append(f"cover art left out: {size:,} bytes (at most {MAX_COVER_BYTES:,})")
        return
    data = epub.read(name, MAX_COVER_BYTES)
    kind, pixels = image_kind_and_pixels(data)
    if kind is None:
        book.notes.append("cover art left out: not a JPEG or PNG image")
    elif pixels > MAX_COVER_PIXELS:
        book.notes.append(f"cover art left out: {pixels:,} pixels (at most {MAX_COVER_PIXELS:,})")
    else:
        book.cover, book.cover_type = data, kind


def image_kind_and_pixels(data: bytes) -> tuple[str | None, int]:
    """("image/png" | "image/jpeg" | None, width x height) from the image header alone."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width * height
    if data.startswith(b"\xff\xd8"):
        position = 2
        while position + 9 < len(data) and data[position] == 0xFF:
            marker, length = data[position + 1], struct.unpack(">H", data[position + 2:position + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                height, width = struct.unpack(">HH", data[position + 5:position + 9])
                return "image/jpeg", width * height
            position += 2 + length
    return None, 0


class _XhtmlText(HTMLParser):
    """Text of an XHTML document: blocks become paragraphs, headings sentences."""

    _BLOCKS = {"p", "div", "section", "article", "blockquote", "li", "tr", "br", "h1", "h2", "h3",
               "h4", "h5", "h6", "dt", "dd", "figcaption", "pre", "hr", "aside", "header", "footer"}
    _SKIP = {"head", "script", "style", "svg", "math", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.heading: str | None = None
        self._skipping = 0
        self._in_heading = False
        self._heading_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
            self._in_heading = tag in ("h1", "h2", "h3") and self.heading is None

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            if self._in_heading and tag.startswith("h"):
                self.heading = " ".join("".join(self._heading_parts).split()) or None
                self._in_heading = False
                if self.heading and self.heading[-1] not in ".!?:;。！？":
                    self.parts.append(".")  # the voice pauses after a heading
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)
            if self._in_heading:
                self._heading_parts.append(data)


def _xhtml_text(data: bytes) -> tuple[str | None, str]:
    """(the first h1-h3 heading, the text) of an XHTML file."""
    parser = _XhtmlText()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return parser.heading, "\n\n".join(p for p in paragraphs if p)
