"""EPUB files for tests, written with zipfile as the EPUB 2/3 specifications lay them out
(container.xml -> OPF with manifest and spine; EPUB 3 nav document and/or EPUB 2 NCX), so
tests can also write the hostile ones a real publisher's tool never would."""
from __future__ import annotations

import struct
import zipfile
import zlib
from html import escape
from pathlib import Path

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def png(width: int, height: int) -> bytes:
    """A real PNG of one colour (the header states the size; the pixels are zlib data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(min(height, 64)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def chapter_xhtml(heading: str | None, paragraphs: list[str]) -> str:
    body = (f"<h1>{escape(heading)}</h1>" if heading else "") + "".join(
        f"<p>{escape(p)}</p>" for p in paragraphs)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title>'
            f"<style>p {{ margin: 0 }}</style></head><body>{body}</body></html>")


def write_epub(path: Path, chapters: list[tuple[str, list[str]]], *, title: str = "A Small Book",
               author: str = "A. Writer", cover: bytes | None = None, version: int = 3,
               headings_in_text: bool = True, extra: dict[str, bytes] | None = None,
               opf_prefix: str = "") -> Path:
    """An EPUB whose spine is a title page (pictures only) then one file per chapter.

    version 3: a nav document (and no NCX); version 2: an NCX only. Titles in the table of
    contents are the chapter titles; `headings_in_text` also puts them in each file as <h1>."""
    files = {f"chapter{n}.xhtml": chapter_xhtml(t if headings_in_text else None, ps)
             for n, (t, ps) in enumerate(chapters, 1)}
    files["titlepage.xhtml"] = chapter_xhtml(None, []).replace("<body>", '<body><img src="cover.png" alt="cover"/>')
    manifest = [f'<item id="c{n}" href="chapter{n}.xhtml" media-type="application/xhtml+xml"/>'
                for n in range(1, len(chapters) + 1)]
    manifest.append('<item id="title" href="titlepage.xhtml" media-type="application/xhtml+xml"/>')
    spine = ['<itemref idref="title"/>'] + [f'<itemref idref="c{n}"/>' for n in range(1, len(chapters) + 1)]
    meta = ""
    if cover is not None:
        props = ' properties="cover-image"' if version == 3 else ""
        manifest.append(f'<item id="cover" href="cover.png" media-type="image/png"{props}/>')
        meta = '<meta name="cover" content="cover"/>' if version == 2 else ""
    links = [(f"chapter{n}.xhtml", t) for n, (t, _) in enumerate(chapters, 1)]
    if version == 3:
        manifest.append('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>')
        spine.insert(0, '<itemref idref="nav"/>')  # some tools put the nav in the spine: skipped
        items = "".join(f'<li><a href="{h}">{escape(t)}</a></li>' for h, t in links)
        files["nav.xhtml"] = ('<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
                              'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Contents</title></head><body>'
                              f'<nav epub:type="toc"><h1>Contents</h1><ol>{items}</ol></nav></body></html>')
        toc = ""
    else:
        manifest.append('<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')
        points = "".join(f'<navPoint id="p{n}" playOrder="{n}"><navLabel><text>{escape(t)}</text></navLabel>'
                         f'<content src="{h}#start"/></navPoint>' for n, (h, t) in enumerate(links, 1))
        files["toc.ncx"] = ('<?xml version="1.0" encoding="utf-8"?><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" '
                            f'version="2005-1"><head/><docTitle><text>{escape(title)}</text></docTitle>'
                            f"<navMap>{points}</navMap></ncx>")
        toc = ' toc="ncx"'
    files["content.opf"] = (
        f'<?xml version="1.0" encoding="utf-8"?>{opf_prefix}<package xmlns="http://www.idpf.org/2007/opf" '
        f'version="{version}.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:identifier id="id">urn:uuid:1234</dc:identifier><dc:title>{escape(title)}</dc:title>'
        f"<dc:creator>{escape(author)}</dc:creator><dc:language>en</dc:language>{meta}</metadata>"
        f"<manifest>{''.join(manifest)}</manifest><spine{toc}>{''.join(spine)}</spine></package>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # stored, first
        book.writestr("META-INF/container.xml", CONTAINER)
        for name, text in files.items():
            book.writestr(f"OEBPS/{name}", text)
        if cover is not None:
            book.writestr("OEBPS/cover.png", cover)
        for name, data in (extra or {}).items():
            book.writestr(name, data)
    return path
