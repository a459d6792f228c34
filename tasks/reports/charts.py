"""The report's charts, as HTML and inline SVG: no scripts, nothing loaded, readable at any width.

Two shapes, each with labelled ticks and units on its axes:

- rows (`bar_rows`, `dot_rows`): one row per item or kind, its full label in HTML, where it
  wraps instead of being cut (an id of 128 characters without a space still fits a phone), a
  bar or dots on a track, the value with its unit, and the scale's ticks under the rows;
- plots (`scatter`, `line_chart`, `histogram`): x against y in an SVG that scales down with the
  page (`viewBox`), ticks on both axes, each mark named by an SVG `<title>` on hover.

Labels come from manifests and servers (untrusted): every text is HTML-escaped here.
"""
from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

Format = Callable[[float], str]
WIDTH, HEIGHT = 420, 240  # a plot's own units; it is drawn at most this wide, smaller on a phone
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 12, 40
MAX_ROWS = 40  # a chart of more items shows the largest, and says how many it left out


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def unit_format(unit: str) -> Format:
    """How a value is written next to its unit: `$0.012`, `12.5 s`, `-16.1 LUFS`, `7.5%`."""
    if unit == "USD":
        return lambda v: f"${v:.4f}" if abs(v) < 1 else f"${v:,.2f}"
    if unit == "%":
        return lambda v: f"{v:.1f}%"
    if unit == "count":
        return number
    return lambda v: f"{number(v)} {unit}".rstrip()


def nice_ticks(low: float, high: float, count: int = 4, whole: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) from at most `low` to at least
    `high`, about `count` steps apart; `whole`: counts of things, so whole steps only."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if whole or count <= 2 else (1, 2, 2.5, 5, 10)  # few ticks: short labels
    step = next(m * power for m in steps if m * power >= raw)
    step = max(step, 1) if whole else step
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(round((last - first) / step) + 1)]


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick's value with as many decimals as the step needs (0.25, not 0.2; -16, not -16.0)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next(d for d in range(7) if abs(round(step, d) - step) < 1e-9)
    return f"{value:,.{decimals}f}"


def figure(title: str, body: str, note: str = "") -> str:
    caption = esc(title) + (f' <span class="note">{esc(note)}</span>' if note else "")
    return f'<figure class="chart"><figcaption>{caption}</figcaption>{body}</figure>'


# --- rows: one labelled row per item ----------------------------------------------------------

def _largest(rows: Sequence[tuple[str, float]]) -> tuple[list[tuple[str, float]], str]:
    if len(rows) <= MAX_ROWS:
        return list(rows), ""
    kept = sorted(rows, key=lambda row: -row[1])[:MAX_ROWS]
    return kept, f"the {MAX_ROWS} largest of {len(rows)}"


def _position(value: float, ticks: Sequence[float]) -> float:
    low, high = ticks[0], ticks[-1]
    return 0.0 if high == low else max(0.0, min(100.0, (value - low) / (high - low) * 100))


def _axis_row(ticks: Sequence[float], unit: str) -> str:
    marks = "".join(f'<span class="tick" style="left:{_position(t, ticks):.2f}%">{esc(tick_label(t, ticks))}</span>'
                    for t in ticks)
    return (f'<div class="axis-row"><span></span><span class="ticks"><span class="lane">{marks}</span></span>'
            f'<span class="unit">{esc(unit)}</span></div>')


def _grid(ticks: Sequence[float]) -> str:
    return "".join(f'<i class="grid" style="left:{_position(t, ticks):.2f}%"></i>' for t in ticks[1:-1])


def _row(label: str, hover: str, marks: str, ticks: Sequence[float], value: str) -> str:
    return (f'<div class="row" title="{esc(label)}: {esc(hover)}"><span class="name">{esc(label)}</span>'
            f'<span class="track"><span class="lane">{_grid(ticks)}{marks}</span></span>'
            f'<span class="value">{esc(value)}</span></div>')


def bar_rows(title: str, rows: Sequence[tuple[str, float]], unit: str) -> str:
    """A bar per label from 0, longest first when there are more rows than fit."""
    if not rows:
        return figure(title, '<p class="empty">nothing to show</p>')
    shown, note = _largest(rows)
    ticks = nice_ticks(0.0, max(value for _, value in shown), count=2, whole=unit == "count")
    fmt = unit_format(unit)
    body = "".join(_row(label, fmt(value), f'<b class="bar" style="width:{_position(value, ticks):.2f}%"></b>',
                        ticks, fmt(value)) for label, value in shown)
    return figure(title, f'<div class="rows">{body}{_axis_row(ticks, unit)}</div>', note)


def dot_rows(title: str, rows: Sequence[tuple[str, Sequence[tuple[float, bool]], float]], unit: str,
             legend: str = "", span: float = 0.0) -> str:
    """Dots per label (several values, e.g. every take of every chunk), filled when good, hollow
    when not, and one value per label in the value column (the largest rows first). The scale
    covers at least `span` around the values (loudness: a few LUFS, not a tenth)."""
    rows = [row for row in rows if row[1]]
    if not rows:
        return figure(title, '<p class="empty">nothing to show</p>')
    kept, note = _largest([(label, value) for label, _, value in rows])
    shown = [row for row in rows if (row[0], row[2]) in kept]
    values = [v for _, dots, _ in shown for v, _ in dots]
    low, high = min(0.0, min(values)), max(values)
    widen = max(0.0, span - (high - low)) / 2
    ticks = nice_ticks(low - widen, high + widen, count=2)
    fmt = unit_format(unit)

    def marks(dots: Sequence[tuple[float, bool]]) -> str:
        return "".join(f'<b class="dot{"" if good else " bad"}" style="left:{_position(v, ticks):.2f}%"></b>'
                       for v, good in dots)

    body = "".join(_row(label, ", ".join(fmt(v) for v, _ in dots), marks(dots), ticks, fmt(value))
                   for label, dots, value in shown)
    legend_html = f'<p class="legend">{esc(legend)}</p>' if legend else ""
    return figure(title, f'<div class="rows">{body}{_axis_row(ticks, unit)}</div>{legend_html}', note)


# --- plots: x against y -----------------------------------------------------------------------

def _plot(title: str, marks: str, x_ticks: Sequence[float], y_ticks: Sequence[float],
          x_label: str, y_label: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, y0 = LEFT, TOP + plot_h
    parts = [f'<line x1="{x0}" y1="{y0}" x2="{x0 + plot_w}" y2="{y0}" class="axis"/>',
             f'<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" class="axis"/>']
    for t in x_ticks:
        x = x0 + _position(t, x_ticks) / 100 * plot_w
        # the ends are anchored inside the plot: the first x label beside the y axis's own "0"
        anchor = "end" if t == x_ticks[-1] else "start" if t == x_ticks[0] else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{y0 + 18}" text-anchor="{anchor}">{esc(tick_label(t, x_ticks))}</text>')
    for t in y_ticks:
        y = y0 - _position(t, y_ticks) / 100 * plot_h
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + plot_w}" y2="{y:.1f}" class="gridline"/>'
                     f'<text x="{x0 - 7}" y="{y + 4:.1f}" text-anchor="end">{esc(tick_label(t, y_ticks))}</text>')
    parts.append(f'<text x="{x0 + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                 f'class="label">{esc(x_label)}</text>')
    parts.append(f'<text x="12" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" class="label" '
                 f'transform="rotate(-90 12 {TOP + plot_h / 2:.1f})">{esc(y_label)}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{esc(title)}">{"".join(parts)}{marks}</svg>')
    return figure(title, svg)


def _at(x: float, y: float, x_ticks: Sequence[float], y_ticks: Sequence[float]) -> tuple[float, float]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    return (LEFT + _position(x, x_ticks) / 100 * plot_w,
            TOP + plot_h - _position(y, y_ticks) / 100 * plot_h)


def scatter(title: str, points: Sequence[tuple[str, float, float]], x_label: str, y_label: str) -> str:
    """Named points: each dot's `<title>` says whose it is and its values."""
    x_ticks = nice_ticks(0.0, max((x for _, x, _ in points), default=0.0))
    y_ticks = nice_ticks(0.0, max((y for _, _, y in points), default=0.0))
    dots = []
    for name, x, y in points:
        cx, cy = _at(x, y, x_ticks, y_ticks)
        dots.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" class="mark">'
                    f'<title>{esc(name)}: {esc(number(x))}, {esc(number(y))}</title></circle>')
    return _plot(title, "".join(dots), x_ticks, y_ticks, x_label, y_label)


def line_chart(title: str, points: Sequence[tuple[float, float]], x_label: str, y_label: str,
               whole_y: bool = False) -> str:
    x_ticks = nice_ticks(0.0, max((x for x, _ in points), default=0.0))
    y_ticks = nice_ticks(0.0, max((y for _, y in points), default=0.0), whole=whole_y)
    path = " ".join("{:.1f},{:.1f}".format(*_at(x, y, x_ticks, y_ticks)) for x, y in points)
    marks = f'<polyline points="{path}" class="line"/>' if points else ""
    return _plot(title, marks, x_ticks, y_ticks, x_label, y_label)


def histogram(title: str, values: Sequence[float], x_label: str, y_label: str, bins: int = 12) -> str:
    x_ticks = nice_ticks(min(0.0, min(values, default=0.0)), max(values, default=0.0))
    low, high = x_ticks[0], x_ticks[-1]
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    y_ticks = nice_ticks(0.0, max(counts, default=0), whole=True)
    bars = []
    for i, count in enumerate(counts):
        if count:
            (left, top), (right, bottom) = (_at(low + i * width, count, x_ticks, y_ticks),
                                            _at(low + (i + 1) * width, 0, x_ticks, y_ticks))
            bars.append(f'<rect x="{left + 0.5:.1f}" y="{top:.1f}" width="{max(1.0, right - left - 1):.1f}" '
                        f'height="{bottom - top:.1f}" class="bar"><title>{esc(number(low + i * width))}-'
                        f'{esc(number(low + (i + 1) * width))}: {count}</title></rect>')
    return _plot(title, "".join(bars), x_ticks, y_ticks, x_label, y_label)


STYLE = """
.charts{margin-top:12px;display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr));gap:16px}
.chart{margin:0;border:1px solid #ddd;border-radius:4px;padding:8px;min-width:0}
.chart figcaption{font-weight:600;margin-bottom:6px}.note,.legend,.empty{font-weight:400;color:#666;font-size:12px}
.chart svg{width:100%;max-width:420px;height:auto;display:block}
svg text{font:13px system-ui,sans-serif;fill:#333}svg .label{fill:#555}
svg .axis{stroke:#333}svg .gridline{stroke:#e4e4e4}svg .mark{fill:#b8574a}
svg .bar{fill:#4a7ab8}svg .line{fill:none;stroke:#3a8a4a;stroke-width:2}
.rows{display:grid;grid-template-columns:minmax(5em,40%) minmax(4em,1fr) auto;gap:3px 8px;align-items:center}
.row,.axis-row{display:contents}.name{overflow-wrap:anywhere;font-size:13px}
.value,.unit{font-size:12px;color:#444;white-space:nowrap;text-align:right}
.track{position:relative;height:14px;background:#f2f2f2}
.lane{position:absolute;left:5px;right:5px;top:0;bottom:0}
.bar{position:absolute;left:0;top:0;bottom:0;background:#4a7ab8}
.grid{position:absolute;top:0;bottom:0;border-left:1px solid #ddd}
.dot{position:absolute;top:2px;width:10px;height:10px;margin-left:-5px;border-radius:50%;background:#3a8a4a}
.dot.bad{background:#fff;border:2px solid #c03030;box-sizing:border-box}
.ticks{position:relative;height:16px;border-top:1px solid #333}
.tick{position:absolute;top:1px;font-size:11px;color:#333;transform:translateX(-50%)}
.tick:first-child{transform:translateX(-5px)}.tick:last-child{transform:translateX(calc(5px - 100%))}
"""
