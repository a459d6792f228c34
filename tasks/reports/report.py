"""One run's report: a self-contained HTML page (`audiobatch report`) and a Markdown artifact.

The page has no scripts and loads nothing: styles are inline and the charts are inline SVG,
so it opens offline, attaches to a mail and renders the same anywhere. Everything shown comes
from the run's `items` and `costs` rows (and `chapters`, for a run with --chapters). Item ids,
sources, error messages and chapter titles come from manifests, servers and models
(untrusted): every text is HTML-escaped.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from audiobatch.tasks.reports.history import RunRecord

WIDTH, HEIGHT, PAD = 560, 220, 44
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;padding:6px}
.failed{color:#a00}.skipped{color:#a60}svg text{font:11px sans-serif;fill:#333}"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _frame(title: str, body: str, x_label: str, y_label: str, y_max: float) -> str:
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{_e(x_label)}</text>'
            f'<text x="4" y="14">{_e(y_label)} (max {y_max:.4g})</text>')
    return (f'<div class="chart"><b>{_e(title)}</b><br><svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(title)}">{axis}{body}</svg></div>')


def _scale(value: float, top: float, size: float) -> float:
    return 0.0 if top <= 0 else value / top * size


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], y_label: str) -> str:
    top = max(values, default=0.0)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 20
    step = plot_w / max(1, len(values))
    bars = []
    for i, (label, value) in enumerate(zip(labels, values)):
        h = _scale(value, top, plot_h)
        x = PAD + i * step
        bars.append(f'<rect x="{x + 1:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(1.0, step - 2):.1f}" '
                    f'height="{h:.1f}" fill="#4a7ab8"><title>{_e(label)}: {value:.4g}</title></rect>')
        if len(values) <= 12:
            bars.append(f'<text x="{x + step / 2:.1f}" y="{HEIGHT - PAD + 12}" text-anchor="middle">'
                        f'{_e(str(label)[:10])}</text>')
    return _frame(title, "".join(bars), "", y_label, top)


def scatter(title: str, points: Sequence[tuple[float, float]], x_label: str, y_label: str) -> str:
    x_top = max((x for x, _ in points), default=0.0)
    y_top = max((y for _, y in points), default=0.0)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 20
    dots = "".join(f'<circle cx="{PAD + _scale(x, x_top, plot_w):.1f}" '
                   f'cy="{HEIGHT - PAD - _scale(y, y_top, plot_h):.1f}" r="3" fill="#b8574a"/>'
                   for x, y in points)
    return _frame(title, dots, f"{x_label} (max {x_top:.4g})", y_label, y_top)


def line_chart(title: str, points: Sequence[tuple[float, float]], x_label: str, y_label: str) -> str:
    x_top = max((x for x, _ in points), default=0.0)
    y_top = max((y for _, y in points), default=0.0)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 20
    path = " ".join(f"{PAD + _scale(x, x_top, plot_w):.1f},{HEIGHT - PAD - _scale(y, y_top, plot_h):.1f}"
                    for x, y in points)
    body = f'<polyline points="{path}" fill="none" stroke="#3a8a4a" stroke-width="2"/>' if points else ""
    return _frame(title, body, f"{x_label} (max {x_top:.4g})", y_label, y_top)


def histogram(title: str, values: Sequence[float], x_label: str, bins: int = 12) -> str:
    if not values:
        return bar_chart(title, [], [], "requests")
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    labels = [f"{low + i * width:.2g}" for i in range(bins)]
    return bar_chart(f"{title} ({x_label}, {len(values)} requests)", labels, counts, "requests")


def charts(run: RunRecord) -> list[str]:
    items = run.item_rows
    start = run.started_at
    walls = [((r["finished_at"] - r["started_at"]).total_seconds() if r.get("started_at") else 0.0)
             for r in items]
    finished = sorted((r["finished_at"] - start).total_seconds() for r in items
                      if start and r.get("finished_at"))
    errors = run.errors_by_kind()
    return [
        bar_chart("Cost per item (USD)", [r["item_id"] for r in items],
                  [r.get("cost_usd") or 0.0 for r in items], "USD"),
        scatter("Item audio duration vs wall time",
                [(r.get("duration_s") or 0.0, wall) for r, wall in zip(items, walls)],
                "audio s", "wall s"),
        histogram("Request latency", [r["latency_s"] for r in run.cost_rows
                                      if r.get("latency_s") is not None and not r.get("cached")], "s"),
        line_chart("Throughput: items finished over the run",
                   [(0.0, 0.0), *((t, i + 1) for i, t in enumerate(finished))], "s since start", "items"),
        bar_chart("Retries and errors by kind", ["retries", *errors], [run.retries, *errors.values()],
                  "count"),
    ]


def render_html(run: RunRecord) -> str:
    cost = "unknown (no price)" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    summary = [("run", run.run_id), ("kind", run.kind), ("started (UTC)", run.started_at),
               ("duration", f"{run.duration_s:.1f} s"),
               ("items", f"{run.items} ({run.ok} ok, {run.failed} failed, {run.skipped} skipped)"),
               ("audio hours", f"{run.audio_s / 3600:.3f}"), ("requests", f"{run.requests} ({run.retries} retries)"),
               ("cost", cost)]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary)
    failures = run.failures
    failure_rows = "".join(
        f'<tr class="{_e(r["status"])}"><td>{_e(r["item_id"])}</td><td>{_e(r.get("row"))}</td>'
        f'<td>{_e(r["status"])}</td><td>{_e(r.get("error_type"))}</td><td>{_e(r.get("error_message"))}</td></tr>'
        for r in failures)
    failure_table = (f"<table><tr><th>item</th><th>row</th><th>status</th><th>error</th><th>reason</th></tr>"
                     f"{failure_rows}</table>" if failures else "<p>No failed or skipped items.</p>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>audiobatch run '
            f'{_e(run.run_id)}</title><style>{STYLE}</style></head><body>'
            f"<h1>audiobatch {_e(run.kind)} run {_e(run.run_id)}</h1><table>{rows}</table>"
            f"<h2>Failed and skipped items ({len(failures)})</h2>{failure_table}"
            f"{chapters_section(run)}"
            f'<h2>Charts</h2><div class="charts">{"".join(charts(run))}</div></body></html>\n')


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def chapters_section(run: RunRecord) -> str:
    """Each item's chapters (runs with --chapters): start, title, summary, and how they were made."""
    if not run.chapter_rows:
        return ""
    rows = sorted(run.chapter_rows, key=lambda r: (r["item_id"], r["chapter_index"]))
    body = "".join(f"<tr><td>{_e(r['item_id'])}</td><td>{_clock(r['start_s'])}</td>"
                   f"<td>{_e(r['title'])}</td><td>{_e(r.get('summary'))}</td><td>{_e(r['method'])}</td></tr>"
                   for r in rows)
    return (f"<h2>Chapters ({len({r['item_id'] for r in rows})} items)</h2><table><tr><th>item</th>"
            f"<th>start</th><th>title</th><th>summary</th><th>made by</th></tr>{body}</table>")


def write_report(run: RunRecord, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(run), encoding="utf-8")
    return target.resolve()


def render_markdown(run: RunRecord) -> str:
    """The report's tables for a Prefect artifact (the UI renders Markdown, not SVG)."""
    cost = "unknown" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    lines = [f"## audiobatch {run.kind} run {run.run_id}", "",
             f"{run.items} items: {run.ok} ok, {run.failed} failed, {run.skipped} skipped; "
             f"{run.audio_s / 3600:.3f} audio h; {run.requests} requests ({run.retries} retries); {cost}"]
    if run.failures:
        lines += ["", "| item | row | status | reason |", "|---|---|---|---|"]
        lines += [f"| {_md(r['item_id'])} | {r.get('row')} | {r['status']} | {_md(r.get('error_message'))} |"
                  for r in run.failures[:200]]
    errors = run.errors_by_kind()
    if errors:
        lines += ["", "| error kind | count |", "|---|---|"] + [f"| {_md(k)} | {v} |" for k, v in errors.items()]
    return "\n".join(lines)


def _md(value: object) -> str:
    return html.escape(str(value or "")).replace("|", "\\|").replace("\n", " ")

