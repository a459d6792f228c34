"""Terminal progress bar and the end-of-run summary (printed and published as an artifact).

The summary is derived from the run's staged rows (items and costs), never tracked on the
side, so it is the same numbers a user finds in the Parquet files.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class RunProgress:
    """Items done and audio minutes done, with an ETA; silent when stderr is not a terminal."""

    def __init__(self, total_items: int, label: str, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.audio_minutes = 0.0
        self._bar: Progress | None = None
        if self.enabled and total_items:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("items · {task.fields[minutes]:.1f} audio min"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total_items, minutes=0.0)

    def __enter__(self) -> RunProgress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._bar.stop()

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
            ("requests", f"{self.requests} ({self.cached_requests} from cache, {self.retries} retries)"),
            ("tokens", f"{self.tokens_in:,} in, {self.tokens_out:,} out"),
            (f"cost ({self.priced_as})", cost),
            ("wall time", f"{self.wall_s:.1f} s ({self.x_real_time:.1f}x real time)"),
        ]
        if self.stop_reason:
            rows.append(("stopped early", self.stop_reason))
        rows += [(f"output: {name}", path) for name, path in self.outputs.items()]
        return [{"what": what, "value": value} for what, value in rows]

    def text(self) -> str:
        width = max(len(r["what"]) for r in self.rows())
        return "\n".join(f"  {r['what']:<{width}}  {r['value']}" for r in self.rows())


def summarize(run_id: str, kind: str, items: list[dict[str, Any]], costs: list[dict[str, Any]],
              *, wall_s: float, model: str, priced_as: str, outputs: dict[str, str],
              stop_reason: str | None = None) -> RunSummary:
    statuses = [row["status"] for row in items]
    paid = [row for row in costs if not row.get("cached")]  # cache hits cost nothing
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
    )


async def publish_artifact(summary: RunSummary) -> None:
    """The summary as a Prefect table artifact on the flow run (no-op outside a run)."""
    from prefect.artifacts import acreate_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    await acreate_table_artifact(
        key=f"{summary.kind}-summary",
        table=summary.rows(),
        description=f"audiobatch {summary.kind} run {summary.run_id}",
    )
