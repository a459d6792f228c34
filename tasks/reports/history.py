"""Past runs under an output root, read back from its Parquet datasets (`audiobatch runs`).

Everything comes from the `items` and `costs` datasets a run publishes, so what the listing
says is what a user finds with pandas; nothing is kept on the side. A run's start and end are
its first item's start and its last item's finish.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.outputs.datasets import OutputRoot, read_dataset


@dataclass
class RunRecord:
    run_id: str
    kind: str
    started_at: datetime | None
    finished_at: datetime | None
    items: int
    ok: int
    failed: int
    skipped: int
    audio_s: float
    cost_usd: float | None  # None: some request had no price
    requests: int
    retries: int
    item_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    cost_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    chapter_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # --chapters

    @property
    def duration_s(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Failed and skipped items in manifest order."""
        return sorted((r for r in self.item_rows if r["status"] != "ok"), key=lambda r: r.get("row") or 0)

    def errors_by_kind(self) -> Counter:
        """Failed request attempts and failed items, by error type."""
        kinds = Counter(f"request: {r['error_type']}" for r in self.cost_rows if r.get("error_type"))
        kinds.update(f"item: {r['error_type'] or r['status']}" for r in self.failures)
        return kinds

    def as_dict(self, with_failures: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items()
                if k not in ("item_rows", "cost_rows", "chapter_rows")}
        data["duration_s"] = self.duration_s
        if with_failures:
            data["failures"] = [{k: r.get(k) for k in ("item_id", "row", "status", "error_type",
                                                        "error_message")} for r in self.failures]
        return data


class History:
    def __init__(self, out: str, records: list[RunRecord]) -> None:
        self.out = out
        self.records = records

    def runs(self) -> list[RunRecord]:
        """Newest first."""
        return sorted(self.records, key=lambda r: (r.started_at or datetime.min.astimezone(), r.run_id),
                      reverse=True)

    def run(self, run_id: str) -> RunRecord:
        """A run by id, or the newest for 'last'."""
        runs = self.runs()
        if run_id == "last" and runs:
            return runs[0]
        for record in runs:
            if record.run_id == run_id:
                return record
        known = ", ".join(r.run_id for r in runs[:5]) or "none"
        raise InputError(f"no run {run_id!r} under {self.out} (newest: {known}); list them with "
                         f"`audiobatch runs {self.out}`")


def load_history(out: str) -> History:
    root = OutputRoot(out)
    items = read_dataset(root, "items")
    if items is None:
        raise InputError(f"no runs under {out}: there is no items dataset there (is it the --out "
                         "of a run?)")
    costs = read_dataset(root, "costs")
    cost_rows: dict[str, list[dict[str, Any]]] = {}
    for row in costs.to_pylist() if costs is not None else []:
        cost_rows.setdefault(row["run_id"], []).append(row)
    item_rows: dict[str, list[dict[str, Any]]] = {}
    for row in items.to_pylist():
        item_rows.setdefault(row["run_id"], []).append(row)
    chapters = read_dataset(root, "chapters")
    chapter_rows: dict[str, list[dict[str, Any]]] = {}
    for row in chapters.to_pylist() if chapters is not None else []:
        chapter_rows.setdefault(row["run_id"], []).append(row)
    records = [record_from_rows(run_id, rows, cost_rows.get(run_id, []))
               for run_id, rows in item_rows.items()]
    for record in records:
        record.chapter_rows = chapter_rows.get(record.run_id, [])
    return History(out, records)


def record_from_rows(run_id: str, items: list[dict[str, Any]], costs: list[dict[str, Any]]) -> RunRecord:
    statuses = Counter(row["status"] for row in items)
    starts = [r["started_at"] for r in items if r.get("started_at")]
    ends = [r["finished_at"] for r in items if r.get("finished_at")]
    paid = [r for r in costs if not r.get("cached")]
    return RunRecord(
        run_id=run_id, kind=items[0]["kind"], started_at=min(starts, default=None),
        finished_at=max(ends, default=None), items=len(items), ok=statuses["ok"],
        failed=statuses["failed"], skipped=statuses["skipped"],
        audio_s=sum(r.get("duration_s") or 0.0 for r in items if r["status"] == "ok"),
        cost_usd=None if any(r.get("cost_usd") is None for r in paid) else sum(r["cost_usd"] for r in paid),
        requests=len(costs), retries=sum(1 for r in costs if (r.get("attempt") or 1) > 1),
        item_rows=sorted(items, key=lambda r: r.get("row") or 0), cost_rows=costs)


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def render_runs(runs: list[RunRecord], out: str) -> str:
    lines = [f"{'run':<24} {'kind':<10} {'start (UTC)':<19} {'duration':>9} {'ok':>5} {'failed':>6} "
             f"{'skipped':>7} {'audio h':>8} {'cost':>10}"]
    for r in runs:
        start = f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "-"
        lines.append(f"{r.run_id:<24} {r.kind:<10} {start:<19} {r.duration_s:>8.1f}s {r.ok:>5} "
                     f"{r.failed:>6} {r.skipped:>7} {r.audio_s / 3600:>8.3f} {_cost(r.cost_usd):>10}")
    if runs:
        lines.append(f"one run's failures: audiobatch runs {out} RUN_ID (or last)")
    return "\n".join(lines)


def render_run(run: RunRecord) -> str:
    lines = [f"run {run.run_id} ({run.kind}): {run.items} items, {run.ok} ok, {run.failed} failed, "
             f"{run.skipped} skipped; {run.audio_s / 3600:.3f} audio h; {_cost(run.cost_usd)}; "
             f"{run.duration_s:.1f} s"]
    failures = run.failures
    if not failures:
        return "\n".join(lines + ["no failed or skipped items"])
    lines.append(f"failed or skipped ({len(failures)}):")
    lines += [f"  {r['status']:<7} {r['item_id']} (row {r['row']}) [{r['error_type']}]: {r['error_message']}"
              for r in failures]
    return "\n".join(lines)
