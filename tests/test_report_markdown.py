"""The run report's Markdown artifact shows text from manifests, feeds and model replies as text:
no link, image, autolink or HTML of theirs renders in the Prefect UI (which renders artifacts
as CommonMark + GFM tables). Rendered here with markdown-it (CommonMark, tables on)."""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from audiobatch.tasks.reports.history import record_from_rows
from audiobatch.tasks.reports.report import markdown_text, render_markdown

RENDER = MarkdownIt("commonmark").enable("table")
HOSTILE = ["![pixel](https://tracker.example/p.png?run=1)", "[click me](https://phish.example/login)",
           "<img src=https://tracker.example/x.png>", "<https://phish.example/>",
           "visit https://phish.example/now or www.phish.example", "| broken | table |",
           "**bold** _it_ `code` # heading\n- list\n1. one", "&lt;script&gt; &#x3C;b&#x3E;"]


def _row(item_id: str, message: str, row: int) -> dict:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return {"item_id": item_id, "row": row, "status": "failed", "kind": "transcribe",
            "error_type": "InputError", "error_message": message, "started_at": now,
            "finished_at": now, "duration_s": None, "cost_usd": 0.0}


def _cells(rendered: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td>(.*?)</td>", rendered, re.S)]


def test_a_reports_table_shows_hostile_text_as_text() -> None:
    rows = [_row(f"item-{i}", text, i + 2) for i, text in enumerate(HOSTILE)]
    rendered = RENDER.render(render_markdown(record_from_rows("run-1", rows, [])))
    assert "<img" not in rendered and "<a " not in rendered and "<strong" not in rendered
    assert "<code" not in rendered and "<li" not in rendered and "<h1" not in rendered
    cells = _cells(rendered)
    for text in HOSTILE:  # each message whole, in its own cell, as it was written
        assert " ".join(text.splitlines()) in cells, text
    assert len(cells) == 4 * len(HOSTILE) + 2  # the failures table and the error-kind table


def test_no_autolink_can_start_from_escaped_text() -> None:
    # GFM's extended autolinks (Prefect's renderer has them on) start at "://" and "www.";
    # escaped, neither is left in the source
    escaped = markdown_text("https://phish.example/ www.phish.example")
    assert "://" not in escaped and "www." not in escaped


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_renders_as_itself_in_a_table_cell(text: str) -> None:
    rendered = RENDER.render(f"| a |\n|---|\n| {markdown_text(text)} |\n")
    assert "<img" not in rendered and "<a " not in rendered
    [cell] = _cells(rendered) or [""]
    # a cell is trimmed (of Unicode whitespace too) and NUL becomes U+FFFD; otherwise the same
    expected = " ".join(text.splitlines()).replace("\x00", "\ufffd")
    assert cell.strip() == expected.strip()
