"""A page as a person sees it: Debian's headless Chromium lays it out at a given width, and we
read back what fits and what does not, or take a screenshot.

Chromium's headless window is never narrower than 500 px, so a phone's width is an iframe of
that width: the page is loaded into it (`srcdoc`, the page's own bytes, no script added to
them) and a script of the wrapper measures the page inside once it has loaded; `--dump-dom`
prints the wrapper with the measurements in it.
"""
from __future__ import annotations

import html
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

MEASURE = """
const frame = document.getElementById('page');
frame.addEventListener('load', () => {
  const doc = frame.contentDocument, win = frame.contentWindow, width = win.innerWidth;
  const out = {viewport: width, page_width: doc.documentElement.scrollWidth, beyond: [], cut: [], overlapping: [], narrow: [],
               smallest_text_px: 99, smallest_svg_text_px: 99, text: doc.body.innerText};
  const name = el => `${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''} "${(el.textContent || '').slice(0, 50)}"`;
  for (const el of doc.body.querySelectorAll('*')) {
    if (el.closest('svg')) continue;
    const box = el.getBoundingClientRect();
    if (box.width && (box.right > width + 0.5 || box.left < -0.5)) out.beyond.push(name(el));
    const clips = win.getComputedStyle(el).overflowX !== 'visible' || win.getComputedStyle(el).textOverflow === 'ellipsis';
    if (clips && el.scrollWidth > el.clientWidth + 1) out.cut.push(name(el));
    if ((el.tagName === 'TD' || el.tagName === 'TH') && el.textContent.trim().length > 4 && box.width
        && box.width < 48) out.narrow.push(name(el));  // a column squeezed to a letter or two a line
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (own) out.smallest_text_px = Math.min(out.smallest_text_px, parseFloat(win.getComputedStyle(el).fontSize));
  }
  for (const text of doc.querySelectorAll('svg text')) {
    const box = text.getBoundingClientRect(), frameBox = text.ownerSVGElement.getBoundingClientRect();
    if (box.left < frameBox.left - 0.5 || box.right > frameBox.right + 0.5 ||
        box.top < frameBox.top - 0.5 || box.bottom > frameBox.bottom + 0.5) out.cut.push('svg text ' + text.textContent);
    const m = text.getScreenCTM();
    const px = parseFloat(win.getComputedStyle(text).fontSize) * Math.hypot(m.a, m.b);
    out.smallest_svg_text_px = Math.min(out.smallest_svg_text_px, px);
  }
  const overlap = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const groups = [...doc.querySelectorAll('svg')].map(svg => [...svg.querySelectorAll('text')])
    .concat([...doc.querySelectorAll('.ticks')].map(ticks => [...ticks.querySelectorAll('.tick')]));
  for (const group of groups) {
    const boxes = group.map(el => [el, el.getBoundingClientRect()]);
    boxes.forEach(([a, boxA], i) => boxes.slice(i + 1).forEach(([b, boxB]) => {
      if (overlap(boxA, boxB)) out.overlapping.push(`"${a.textContent}" and "${b.textContent}"`);
    }));
  }
  document.getElementById('measured').textContent = JSON.stringify(out);
});
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return found


def _run(args: list[str], profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={profile}"]
    done = subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _wrapper(page: Path, width: int, height: int, script: str) -> Path:
    wrapper = page.with_name(f"{page.stem}-at-{width}.html")
    wrapper.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">'
        f'<iframe id="page" style="width:{width}px;height:{height}px;border:0" '
        f'srcdoc="{html.escape(page.read_text(encoding="utf-8"), quote=True)}"></iframe>'
        f'<pre id="measured"></pre><script>{script}</script></body></html>', encoding="utf-8")
    return wrapper


def layout(page: Path, width: int) -> dict:
    """How `page` lays out in a viewport `width` px wide: the page's width, elements beyond the
    viewport, boxes that clip or scroll content wider than they are, SVG text outside its chart,
    labels drawn over each other (in one chart), table cells squeezed narrower than a word, the
    smallest text, the page's visible text."""
    wrapper = _wrapper(page, width, 900, MEASURE)
    for _ in range(3):  # a very busy machine has let Chromium print the page before it measured
        dom = _run(["--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom",
                    wrapper.as_uri()], page.parent / "profile")
        measured = dom.split('<pre id="measured">', 1)[1].split("</pre>", 1)[0]
        if measured:
            return json.loads(html.unescape(measured))
    raise AssertionError(f"Chromium did not lay out {page} at {width} px")


def screenshot(page: Path, width: int, height: int = 2400) -> bytes:
    wrapper = _wrapper(page, width, height, "")
    shot = page.with_name(f"{page.stem}-at-{width}.png")
    _run([f"--screenshot={shot}", f"--window-size={max(width, 500)},{height}", wrapper.as_uri()],
         page.parent / "profile")
    return shot.read_bytes()


def pixels_vary(png: bytes) -> bool:
    """True when the decoded image data is not one flat colour (a blank page)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, position = b"", 8
    while position < len(png):
        length = int.from_bytes(png[position:position + 4], "big")
        if png[position + 4:position + 8] == b"IDAT":
            data += png[position + 8:position + 8 + length]
        position += 12 + length
    return len(set(zlib.decompress(data))) > 16
