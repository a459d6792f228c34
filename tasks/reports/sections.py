"""What a run's report shows, section by section, per kind of run.

A section is a title, the kinds of run it belongs to, the datasets it reads besides `items` and
`costs`, and a function from the run's rows to HTML ("" when it has nothing to say). `SECTIONS`
lists them in page order. A feature that adds a dataset adds its section here, e.g.

    Section("Speakers", {"transcribe"}, ("speakers",), speakers)

and the report reads that dataset for the run and shows it; nothing else changes.

Every value shown comes from the run's Parquet rows, as a user reading them with pandas finds
them. Item ids, sources, flags and messages come from manifests, feeds and model replies
(untrusted): every text goes through `esc`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from audiobatch.tasks.reports.charts import (bar_rows, dot_rows, esc, histogram, line_chart, number,
                                             scatter)
from audiobatch.tasks.reports.history import RunRecord

Rows = list[dict[str, Any]]


@dataclass
class RunData:
    """One run as its report reads it: the record (items, costs) and its rows of other datasets."""
    run: RunRecord
    rows: dict[str, Rows] = field(default_factory=dict)

    def of(self, dataset: str) -> Rows:
        return self.rows.get(dataset, [])


@dataclass(frozen=True)
class Section:
    title: str
    kinds: frozenset[str]
    datasets: tuple[str, ...]
    render: Callable[[RunData], str]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[str] = ()) -> str:
    """A table; on a narrow screen each row becomes a card of "header: value" lines (STYLE)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{esc(classes[i]) if i < len(classes) else ""}">'
        + "".join(cell_html(header, cell) for header, cell in zip(headers, row)) + "</tr>"
        for i, row in enumerate(rows))
    return f'<div class="table"><table><tr>{head}</tr>{body}</table></div>'


def cell_html(header: str, value: object) -> str:
    text = "" if value is None else str(value)
    wrap = ' class="long"' if len(text) > 24 else ""  # ids, reasons: break anywhere, not short words
    return f'<td data-label="{esc(header)}"{wrap}>{esc(text)}</td>'


def charts(*figures: str) -> str:
    return f'<div class="charts">{"".join(figures)}</div>'


def flags_text(flags: Sequence[str] | None) -> str:
    return "; ".join(flags or [])


# --- every run --------------------------------------------------------------------------------

def failures(data: RunData) -> str:
    failed = data.run.failures
    if not failed:
        return "<p>No failed or skipped items.</p>"
    return table(["item", "row", "status", "error", "reason"],
                 [(r["item_id"], r.get("row"), r["status"], r.get("error_type"), r.get("error_message"))
                  for r in failed], [r["status"] for r in failed])


def run_charts(data: RunData) -> str:
    run, items = data.run, data.run.item_rows
    ok = [r for r in items if r["status"] == "ok"]
    walls = [(r["item_id"], r.get("duration_s") or 0.0, (r["finished_at"] - r["started_at"]).total_seconds())
             for r in ok if r.get("started_at") and r.get("finished_at")]
    finished = sorted((r["finished_at"] - run.started_at).total_seconds() for r in items
                      if run.started_at and r.get("finished_at"))
    latencies = [r["latency_s"] for r in run.cost_rows if r.get("latency_s") is not None and not r.get("cached")]
    errors = run.errors_by_kind()
    return charts(
        bar_rows("Cost per item", [(r["item_id"], r.get("cost_usd") or 0.0) for r in items], "USD"),
        bar_rows("Audio per item", [(r["item_id"], r.get("duration_s") or 0.0) for r in ok], "s"),
        scatter("Item audio against wall time", walls, "audio (s)", "wall time (s)"),
        histogram(f"Request latency ({len(latencies)} requests)", latencies, "latency (s)", "requests"),
        line_chart("Items finished over the run", [(0.0, 0.0), *((t, i + 1) for i, t in enumerate(finished))],
                   "time since the start (s)", "items finished", whole_y=True),
        bar_rows("Retries and errors by kind", [("retries", run.retries), *errors.items()], "count"),
    )


# --- transcription ----------------------------------------------------------------------------

def transcript_qa(data: RunData) -> str:
    transcripts = data.of("transcripts")
    flagged = [r for r in transcripts if r.get("qa_flags")]
    if not transcripts:
        return "<p>No transcripts in this run.</p>"
    if not flagged:
        return f"<p>All {len(transcripts)} transcripts passed QA: no flags.</p>"
    return (f"<p>{len(flagged)} of {len(transcripts)} transcripts keep what QA could not fix "
            f"(<code>transcripts.qa_flags</code>):</p>"
            + table(["item", "QA flags"], [(r["item_id"], flags_text(r["qa_flags"])) for r in flagged]))


def speakers(data: RunData) -> str:
    """With --speakers: per item how many speakers, and each one's seconds of speech."""
    rows = data.of("speakers")
    if not rows:
        return ""  # --speakers was off: the page leaves the section out
    found: dict[str, Rows] = defaultdict(list)
    for row in rows:
        found[row["item_id"]].append(row)
    summary = [(item, len(own), ", ".join(f"{r['speaker']} {number(r['seconds'])} s" for r in own))
               for item, own in found.items()]
    return (f"<p>{len(found)} items labelled by speaker (<code>speakers</code> dataset, "
            "an <code>.rttm</code> file per item).</p>"
            + table(["item", "speakers", "speech per speaker"], summary)
            + charts(bar_rows("Speech per speaker", [(f"{r['item_id']} {r['speaker']}", r["seconds"])
                                                     for r in rows], "s")))


# --- narration --------------------------------------------------------------------------------

def kept_wer(takes: Rows) -> float:
    """A chunk's kept take: the one that passed, else the best heard (as narration keeps it)."""
    passed = [t["wer"] for t in takes if t.get("passed")]
    return passed[-1] if passed else min(t["wer"] for t in takes)


def verification(data: RunData) -> tuple[dict[str, list[tuple[float, bool]]], dict[str, float], dict[str, int]]:
    """Per item: every take's WER (%) and whether it passed; its worst kept chunk; retakes."""
    chunks: dict[str, dict[int, Rows]] = defaultdict(lambda: defaultdict(list))
    for check in data.of("narration_checks"):
        if check.get("wer") is not None:
            chunks[check["item_id"]][check["chunk_index"]].append(check)
    dots = {item: [(t["wer"] * 100, bool(t.get("passed"))) for takes in by_chunk.values() for t in takes]
            for item, by_chunk in chunks.items()}
    worst = {item: max(kept_wer(takes) for takes in by_chunk.values()) * 100 for item, by_chunk in chunks.items()}
    retakes = {item: sum(len(takes) - 1 for takes in by_chunk.values()) for item, by_chunk in chunks.items()}
    return dots, worst, retakes


def narration(data: RunData) -> str:
    narrations = data.of("narrations")
    if not narrations:
        return "<p>No narrations in this run.</p>"
    dots, worst, retakes = verification(data)
    rows = [(n["item_id"], n.get("format"), number(n.get("duration_s") or 0.0), n.get("words"),
             "" if n.get("loudness_lufs") is None else f"{n['loudness_lufs']:.1f}", n.get("chapters"),
             "not verified" if n["item_id"] not in worst else f"{worst[n['item_id']]:.1f}%",
             retakes.get(n["item_id"], 0), flags_text(n.get("qa_flags"))) for n in narrations]
    flagged = sum(1 for n in narrations if n.get("qa_flags"))
    intro = (f"<p>{len(narrations)} narrations, {flagged} with QA flags "
             f"(what verification could not fix: <code>narrations.qa_flags</code>).</p>")
    return intro + table(["item", "format", "audio (s)", "words", "loudness (LUFS)", "chapters",
                          "worst chunk WER", "retakes", "QA flags"], rows) + charts(
        dot_rows("Verification: word error rate of each take", [
            (item, takes, worst[item]) for item, takes in dots.items()], "%",
            legend="each dot is one take of one chunk, heard back by the embedded Whisper: filled "
                   "passed, hollow failed; the value is the item's worst kept chunk"),
        dot_rows("Loudness", [(n["item_id"], [(n["loudness_lufs"], True)], n["loudness_lufs"])
                              for n in narrations if n.get("loudness_lufs") is not None], "LUFS", span=4.0),
        bar_rows("Narrated audio per item", [(n["item_id"], n.get("duration_s") or 0.0) for n in narrations], "s"),
    )


def clock(seconds: float) -> str:
    """`12:05`, or `1:02:05` past the hour: how players show a chapter's start."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def chapters(data: RunData) -> str:
    """Each item's chapters (runs with --chapters): start, title, summary, how they were made.
    Titles and summaries come from a model's tool call or the transcript: escaped as all text."""
    rows = sorted(data.of("chapters"), key=lambda r: (r["item_id"], r["chapter_index"]))
    if not rows:
        return ""
    return (f"<p>{len({r['item_id'] for r in rows})} items, {len(rows)} chapters.</p>"
            + table(["item", "start", "title", "summary", "made by"],
                    [(r["item_id"], clock(r["start_s"]), r["title"], r.get("summary"), r["method"])
                     for r in rows]))


SECTIONS: list[Section] = [
    Section("Failed and skipped items", frozenset({"transcribe", "narrate"}), (), failures),
    Section("Transcript QA", frozenset({"transcribe"}), ("transcripts",), transcript_qa),
    Section("Chapters", frozenset({"transcribe"}), ("chapters",), chapters),
    Section("Speakers", frozenset({"transcribe"}), ("speakers",), speakers),
    Section("Narration: verification, loudness, durations", frozenset({"narrate"}),
            ("narrations", "narration_checks"), narration),
    Section("Charts", frozenset({"transcribe", "narrate"}), (), run_charts),
]


def sections_for(kind: str) -> list[Section]:
    return [section for section in SECTIONS if kind in section.kinds]


def datasets_for(kind: str) -> list[str]:
    return sorted({dataset for section in sections_for(kind) for dataset in section.datasets})
