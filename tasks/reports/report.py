"""One run's report: a self-contained HTML page (`audiobatch report`) and a Markdown artifact.

The page has no scripts and loads nothing: styles are inline and the charts are HTML and inline
SVG (tasks/reports/charts.py), so it opens offline, attaches to a mail and renders the same
anywhere, a phone included. What it shows per kind of run is listed in
tasks/reports/sections.py; everything comes from the run's Parquet rows. Item ids, sources
and error messages come from manifests and servers (untrusted): every text is HTML-escaped.
"""
from __future__ import annotations

import re
from pathlib import Path

from audiobatch.tasks.reports.charts import STYLE as CHART_STYLE
from audiobatch.tasks.reports.charts import esc
from audiobatch.tasks.reports.history import RunRecord, run_rows
from audiobatch.tasks.reports.sections import RunData, datasets_for, sections_for

# Every ASCII punctuation character may be backslash-escaped in CommonMark and GFM, and escaped it
# is only text: no link, image, autolink (the ':' of "https://", the '.' of "www."), HTML tag,
# emphasis or table pipe can start from it.
_MARKDOWN_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")

STYLE = """*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;padding:16px;color:#222;max-width:1240px}
h1{font-size:20px;overflow-wrap:anywhere}h2{font-size:16px;margin-top:28px}code{overflow-wrap:anywhere}
.table{max-width:100%;overflow-x:auto}table{border-collapse:collapse;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}td.long{overflow-wrap:anywhere}
.failed{color:#a00}.skipped{color:#a60}
@media (max-width:700px){.table table,.table tbody,.table tr,.table td{display:block}
.table tr:first-child{display:none}.table tr{border:1px solid #ccc;margin-bottom:8px;padding:4px 0}
.table td{border:0;padding:1px 8px;overflow-wrap:anywhere}
.table td:empty{display:none}.table td::before{content:attr(data-label) ": ";font-weight:600}}""" + CHART_STYLE


def summary_table(run: RunRecord) -> str:
    cost = "unknown (no price)" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    started = f"{run.started_at:%Y-%m-%d %H:%M:%S}" if run.started_at else "-"
    rows = [("run", run.run_id), ("kind", run.kind), ("started (UTC)", started),
            ("duration", f"{run.duration_s:.1f} s"),
            ("items", f"{run.items} ({run.ok} ok, {run.failed} failed, {run.skipped} skipped)"),
            ("audio", f"{run.audio_s / 3600:.3f} h ({run.audio_s:.1f} s)"),
            ("requests", f"{run.requests} ({run.retries} retries)"), ("cost", cost)]
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def render_html(data: RunData) -> str:
    run = data.run
    shown = [(section.title, html) for section in sections_for(run.kind) if (html := section.render(data))]
    body = "".join(f"<h2>{esc(title)}</h2>{html}" for title, html in shown)  # "": nothing to say
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>audiobatch run {esc(run.run_id)}</title><style>{STYLE}</style></head><body>'
            f"<h1>audiobatch {esc(run.kind)} run {esc(run.run_id)}</h1>{summary_table(run)}{body}"
            f"</body></html>\n")


def write_report(run: RunRecord, path: str | Path, out: str) -> Path:
    """Write the page for `run` (a run under the output root `out`)."""
    data = RunData(run, run_rows(out, run.run_id, datasets_for(run.kind)))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(data), encoding="utf-8")
    return target.resolve()


def render_markdown(run: RunRecord) -> str:
    """The report's tables for a Prefect artifact (the UI renders Markdown, not SVG)."""
    cost = "unknown" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    lines = [f"## audiobatch {_md(run.kind)} run {_md(run.run_id)}", "",
             _md(f"{run.items} items: {run.ok} ok, {run.failed} failed, {run.skipped} skipped; "
                 f"{run.audio_s / 3600:.3f} audio h; {run.requests} requests ({run.retries} retries); {cost}")]
    if run.failures:
        lines += ["", "| item | row | status | reason |", "|---|---|---|---|"]
        lines += [f"| {_md(r['item_id'])} | {_md(r.get('row'))} | {_md(r['status'])} | "
                  f"{_md(r.get('error_message'))} |" for r in run.failures[:200]]
    errors = run.errors_by_kind()
    if errors:
        lines += ["", "| error kind | count |", "|---|---|"] + [f"| {_md(k)} | {v} |" for k, v in errors.items()]
    return "\n".join(lines)


def markdown_text(value: object) -> str:
    """`value` as Markdown that shows exactly its text: item ids, sources and messages come from
    manifests, feeds and model replies, and a Markdown artifact would otherwise render their
    links and images (to any host) in the Prefect UI. One line: newlines become spaces."""
    text = "" if value is None else " ".join(str(value).splitlines())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def plain_text(markdown: str) -> str:
    """The text `markdown_text` escaped, as it was (for whoever reads an artifact back)."""
    return re.sub(r"\\(.)", r"\1", markdown)


_md = markdown_text

