"""Terminal progress bar and the end-of-run summary (printed and published as an artifact).

The summary is derived from the run's staged rows (items and costs), never tracked on the
side, so it is the same numbers a user finds in the Parquet files.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from audiobatch.tasks.reports.history import job_of
from audiobatch.tasks.reports.report import markdown_text

LISTED_PROBLEMS = 20  # failed/skipped items named in the summary; the rest are counted


class RunProgress:
    """Items done and audio minutes done, with an ETA; silent when stderr is not a terminal.

    The bar lives on stderr, where Prefect's log lines go too: while it is shown, console log
    handlers write through it (above the bar), so a log line and the bar never share a line."""

    def __init__(self, total_items: int, label: str, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.audio_minutes = 0.0
        self._bar: Progress | None = None
        if self.enabled and total_items:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("items · {task.fields[minutes]:.1f} audio min"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._bar.add_task(label, total=total_items, minutes=0.0)
        self._rerouted: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> RunProgress:
        if self._bar:
            self._bar.start()  # from here on sys.stderr prints above the bar
            self._reroute_console_logs()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            for handler, stream in self._rerouted:
                handler.setStream(stream)
            self._bar.stop()

    def _reroute_console_logs(self) -> None:
        """Console log handlers hold the real stderr/stdout; point them at the bar's proxy."""
        loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                          if isinstance(logger, logging.Logger))]
        terminals = (sys.__stderr__, sys.__stdout__)
        if sys.stderr in terminals:  # no terminal, so no proxy: nothing shares a line
            return
        handlers = {handler for logger in loggers for handler in logger.handlers
                    if isinstance(handler, logging.StreamHandler) and handler.stream in terminals}
        self._rerouted = [(handler, handler.setStream(sys.stderr)) for handler in handlers]

    def item_done(self, audio_s: float | None = None) -> None:
        self.audio_minutes += (audio_s or 0.0) / 60.0
        if self._bar:
            self._bar.update(self._task, advance=1, minutes=self.audio_minutes)


@dataclass
class RunSummary:
    run_id: str
    kind: str
    items: int
    ok: int
    failed: int
    skipped: int
    audio_s: float
    requests: int
    cached_requests: int
    retries: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    wall_s: float
    model: str
    priced_as: str
    outputs: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    out: str = ""
    # The first LISTED_PROBLEMS failed/skipped items (item_id, row, status, error_type, reason).
    problems: list[dict[str, Any]] = field(default_factory=list)
    sent_audio_s: float = 0.0  # transcription: audio the answered requests carried
    saved_usd: float | None = 0.0  # what economy left unsent would have cost (audio in)
    job: str = ""  # what the user ran: "podcast" for a feed's episodes, else the kind

    @property
    def label(self) -> str:
        return self.job or self.kind

    @property
    def outcome(self) -> str:
        """One line for logs and the Prefect state: what happened, and what the exit code says."""
        if not self.items:
            return f"{self.label} run: nothing to do"
        counts = f"{self.items} items: {self.ok} ok, {self.failed} failed, {self.skipped} skipped"
        if self.ok == self.items:
            return f"{self.label} run {self.run_id} completed: {counts}"
        return f"{self.label} run {self.run_id} finished with problems (exit code 1): {counts}"

    @property
    def x_real_time(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def rows(self) -> list[dict[str, Any]]:
        cost = "unknown (no price for this model)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        audio_label = "audio hours in" if self.kind == "transcribe" else "audio hours out"
        rows = [
            ("run", self.run_id), ("items", f"{self.items} ({self.ok} ok, {self.failed} failed, "
                                               f"{self.skipped} skipped)"),
            (audio_label, f"{self.audio_s / 3600:.3f}"),
            *self._economy_rows(),
            ("requests", f"{self.requests} ({self.cached_requests} from cache, {self.retries} retries)"),
            ("tokens", f"{self.tokens_in:,} in, {self.tokens_out:,} out"),
            (f"cost ({self.priced_as})", cost),
            ("wall time", f"{self.wall_s:.1f} s ({self.x_real_time:.1f}x real time)"),
        ]
        if self.stop_reason:
            rows.append(("stopped early", self.stop_reason))
        rows += [(f"output: {name}", path) for name, path in self.outputs.items()]
        return [{"what": what, "value": value} for what, value in rows]

    def _economy_rows(self) -> list[tuple[str, str]]:
        """Audio recorded vs sent, and what the difference saved (transcription only)."""
        if self.kind != "transcribe":
            return []
        fewer = 1 - self.sent_audio_s / self.audio_s if self.audio_s else 0.0
        saved = "unknown (no price)" if self.saved_usd is None else f"${self.saved_usd:.4f}"
        return [("audio seconds", f"{self.audio_s:,.1f} recorded, {self.sent_audio_s:,.1f} sent "
                                  f"({fewer:.0%} fewer)"),
                (f"saved by economy ({self.priced_as})", saved)]

    def text(self) -> str:
        return rows_text(self.artifact_rows())

    def artifact_rows(self) -> list[dict[str, Any]]:
        """The summary as table rows, failed items included (a line of its own: no `what`), so
        whoever reads the artifact (`submit --wait`) prints what a local run prints."""
        return self.rows() + [{"what": "", "value": line} for line in self.problem_lines()]

    def problem_lines(self) -> list[str]:
        """The failed and skipped items, the first LISTED_PROBLEMS by name, then a count."""
        not_ok = self.failed + self.skipped
        if not not_ok:
            return []
        lines = [f"failed or skipped ({not_ok}):"]
        lines += [f"  {p['status']:<7} {p['item_id']} (row {p['row']}): {p['error_message']}"
                  for p in self.problems]
        if not_ok > len(self.problems):
            lines.append(f"  ... and {not_ok - len(self.problems)} more")
        where = f"audiobatch runs {self.out} {self.run_id}" if self.out else "the items dataset"
        lines.append(f"full list: {where}" + (f" (or {self.outputs['items']})" if "items" in self.outputs else ""))
        return lines


def rows_text(rows: list[dict[str, Any]]) -> str:
    """Summary rows as the terminal shows them: aligned pairs, then the failed items' lines."""
    width = max((len(r["what"]) for r in rows if r["what"]), default=0)
    return "\n".join(f"  {r['what']:<{width}}  {r['value']}" if r["what"] else str(r["value"]) for r in rows)


def summarize(run_id: str, kind: str, items: list[dict[str, Any]], costs: list[dict[str, Any]],
              *, wall_s: float, model: str, priced_as: str, outputs: dict[str, str],
              stop_reason: str | None = None, out: str = "") -> RunSummary:
    statuses = [row["status"] for row in items]
    not_ok = sorted((row for row in items if row["status"] != "ok"), key=lambda r: r.get("row") or 0)
    paid = [row for row in costs if not row.get("cached")]  # cache hits cost nothing
    ok_items = {row["item_id"] for row in items if row["status"] == "ok"}
    answered = [row for row in costs if row["item_id"] in ok_items and not row.get("error_type")]
    savings = [row.get("saved_usd") for row in paid if row.get("recorded_audio_s") is not None]
    priced = [row["cost_usd"] for row in paid]
    unknown_price = any(c is None for c in priced)
    return RunSummary(
        run_id=run_id, kind=kind, items=len(items), ok=statuses.count("ok"),
        failed=statuses.count("failed"), skipped=statuses.count("skipped"),
        audio_s=sum(row.get("duration_s") or 0.0 for row in items if row["status"] == "ok"),
        requests=len(costs), cached_requests=sum(1 for row in costs if row.get("cached")),
        retries=sum(1 for row in costs if (row.get("attempt") or 1) > 1),
        tokens_in=sum(row["prompt_text_tokens"] + row["prompt_audio_tokens"] for row in paid),
        tokens_out=sum(row["completion_text_tokens"] + row["completion_audio_tokens"] for row in paid),
        cost_usd=None if unknown_price else sum(priced),
        wall_s=wall_s, model=model, priced_as=priced_as, outputs=outputs, stop_reason=stop_reason,
        out=out, problems=[{key: row.get(key) for key in ("item_id", "row", "status", "error_type",
                                                           "error_message")}
                           for row in not_ok[:LISTED_PROBLEMS]],
        sent_audio_s=sum(row.get("sent_audio_s") or 0.0 for row in answered),
        saved_usd=None if None in savings else sum(savings),
        job=job_of(kind, items),
    )


async def publish_artifact(summary: RunSummary) -> None:
    """The summary as a Prefect table artifact on the flow run (no-op outside a run)."""
    from prefect.artifacts import acreate_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    await acreate_table_artifact(
        key=f"{summary.kind}-summary",
        # the UI renders each text cell as Markdown: a stop reason may quote a server's reply
        table=[{key: markdown_text(value) for key, value in row.items()} for row in summary.artifact_rows()],
        description=f"audiobatch {summary.kind} run {summary.run_id}",
    )


async def publish_report_artifact(kind: str, run_id: str, markdown: str) -> None:
    """The run's report (failures, errors by kind) as a Markdown artifact (no-op outside a run)."""
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    await acreate_markdown_artifact(key=f"{kind}-report", markdown=markdown,
                                    description=f"audiobatch {kind} run {run_id}: report")
