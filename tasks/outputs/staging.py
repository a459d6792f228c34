"""Staged rows of one run: crash-tolerant, resumable, on a local disk or in object storage.

Invariant: a row is staged before anything depends on it having been recorded, and reading
the stage back gives, per item, either all of its rows (its `items` row last) or none but
the costs of requests it paid for. A resumed run (same run id, any machine that reaches the
same output root) redoes exactly the items without an `items` row.

Where: `<out>/_runs/<run_id>/` (a folder or an fsspec URL such as s3://bucket/out/_runs/ID).
- Local folders: JSON lines appended to `<dataset>.jsonl` (another process writing the same
  run, e.g. a Dask worker, appends to its own `<dataset>.<writer>.jsonl`). Each stage is one
  write(), so it survives the process being killed. Rows of paid requests are fsync'd at
  once unless the last fsync is under `SYNC_GROUP_S` old (then with the next one: a burst of
  short requests shares one), the rest whenever the run flushes (after each batch).
- Object stores cannot append: rows are buffered and put as whole segment objects
  `<dataset>.<writer>.<seq>.jsonl`: a paid request's rows at once (with whatever else is
  buffered), others at most `FLUSH_S` after they were staged, and whenever the run flushes (a
  crash loses at most that much bookkeeping, which the resumed run redoes from the result
  cache, paying nothing). Paid rows are never grouped here: a buffered one dies with the
  process while the answer's cache entry, written next, survives, and the resumed run would
  then record that answer as a free cache hit (caught by tests/test_fleet.py: 39 paid rows
  for 40 paid requests).
Segments sort by writer start time, so a resumed run's rows come after the crashed run's.
When the run ends, `publish_run` writes each dataset's rows as one Parquet file.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from audiobatch.tasks.outputs.datasets import ROW_KEYS, SCHEMAS, OutputRoot, to_table

FLUSH_S = 2.0  # object stores: longest time a staged row waits to be put
SYNC_GROUP_S = 0.2  # local: paid rows staged this soon after an fsync wait for the next one


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=_json_default, ensure_ascii=False) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot stage {type(value).__name__}")


def _parse(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash: its item has no `items` row and is redone
    return rows


@dataclass(frozen=True)
class StagedRows:
    """Everything staged for a run, read at one moment."""

    rows: dict[str, list[dict[str, Any]]]

    def read(self, dataset: str) -> list[dict[str, Any]]:
        return self.rows.get(dataset, [])

    def finished_items(self) -> dict[str, dict[str, Any]]:
        """item_id -> its last staged `items` row."""
        return {row["item_id"]: row for row in self.read("items")}

    def final_rows(self, dataset: str) -> list[dict[str, Any]]:
        """One row per key, the latest staged winning; rows of unfinished items are dropped,
        except costs: a request paid before a crash stays on the bill."""
        finished = set(self.finished_items())
        latest: dict[tuple, dict[str, Any]] = {}
        for row in self.read(dataset):
            if dataset == "costs" or row.get("item_id") in finished:
                latest[tuple(row.get(k) for k in ROW_KEYS[dataset])] = row
        return list(latest.values())


class RunStaging:
    """One run's stage folder (a path or fsspec URL); this process's writer for it."""

    def __init__(self, folder: str | Path, *, writer: str | None = None) -> None:
        self.folder = str(folder)
        self.fs, self._path = fsspec.core.url_to_fs(self.folder)
        self._path = self._path.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        # None: the run's own writer (local: `<dataset>.jsonl`); Dask workers pass their own name
        self._writer = writer or (None if self.is_local else new_writer_name())
        self._buffer: list[tuple[str, str]] = []  # (dataset, line) waiting for the next put
        self._oldest = 0.0
        self._synced = 0.0  # time.monotonic() of the last fsync or put
        self._segments = 0
        self._unsynced: set[str] = set()
        self._appending: dict[str, int] = {}  # local: dataset -> a file descriptor open to append
        self._lock = threading.Lock()  # stages may come from threads (e.g. a Dask worker's)
        self.fs.makedirs(self._path, exist_ok=True)

    # --- writing ---------------------------------------------------------------------------

    def stage_rows(self, dataset: str, rows: list[dict[str, Any]], *, durable: bool = False) -> None:
        """Record rows now; `durable`: on disk or in the store before returning (money spent)."""
        if dataset not in SCHEMAS:
            raise ValueError(f"unknown dataset {dataset!r}")
        if rows:
            self._stage([(dataset, "".join(_line(r) for r in rows))], durable)

    def stage_item(self, rows_by_dataset: dict[str, list[dict[str, Any]]]) -> None:
        """Record an item's rows; its `items` row goes last and marks the item as finished."""
        ordered = sorted(rows_by_dataset.items(), key=lambda pair: pair[0] == "items")
        for dataset, _ in ordered:
            if dataset not in SCHEMAS:
                raise ValueError(f"unknown dataset {dataset!r}")
        self._stage([(d, "".join(_line(r) for r in rows)) for d, rows in ordered if rows], False)

    def flush(self) -> None:
        """Make everything staged so far durable (and close the local files until the next row)."""
        with self._lock:
            self._flush_locked()
            for fd in self._appending.values():
                os.close(fd)
            self._appending.clear()

    def _stage(self, lines: list[tuple[str, str]], durable: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if self.is_local:  # appended at once: only the fsync of paid rows is grouped
                for dataset, text in lines:
                    self._append_local(dataset, text)
                if durable and now - self._synced >= SYNC_GROUP_S:
                    self._flush_locked()
                return
            if not self._buffer:
                self._oldest = now
            self._buffer += lines
            if durable or now - self._oldest >= FLUSH_S:
                self._flush_locked()

    def _file(self, dataset: str) -> str:
        middle = f".{self._writer}" if self._writer else ""
        return f"{self._path}/{dataset}{middle}.jsonl"

    def _append_local(self, dataset: str, text: str) -> None:
        # Kept open between rows (until flush): an open and close per row was a tenth of the
        # event loop's time with many short items. One write (O_APPEND) per row set: a killed
        # process leaves whole lines or a torn last one.
        fd = self._appending.get(dataset)
        if fd is None:
            fd = os.open(self._file(dataset), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._appending[dataset] = fd
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
        self._unsynced.add(dataset)

    def _flush_locked(self) -> None:
        self._synced = time.monotonic()
        if self.is_local:
            for dataset in self._unsynced:
                os.fsync(self._appending[dataset])
            self._unsynced.clear()
            return
        if not self._buffer:
            return
        by_dataset: dict[str, list[str]] = {}
        for dataset, text in self._buffer:
            by_dataset.setdefault(dataset, []).append(text)
        self._segments += 1
        # the items segment last: an item's `items` row is never visible without its other rows
        for dataset in sorted(by_dataset, key=lambda name: name == "items"):
            target = f"{self._path}/{dataset}.{self._writer}.{self._segments:06d}.jsonl"
            self.fs.pipe_file(target, "".join(by_dataset[dataset]).encode("utf-8"))
        self._buffer.clear()

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self) -> StagedRows:
        """Every row staged for this run, by every writer, as of now (after a flush of ours)."""
        self.flush()
        found = sorted(self.fs.glob(f"{self._path}/*.jsonl"), key=_stage_order)
        texts = self.fs.cat(found) if found else {}
        rows: dict[str, list[dict[str, Any]]] = {}
        for path in found:
            text = texts[path]
            data = text.decode("utf-8") if isinstance(text, bytes) else text
            rows.setdefault(_dataset_of(path), []).extend(_parse(data))
        return StagedRows(rows)

    def read(self, dataset: str) -> list[dict[str, Any]]:
        return self.snapshot().read(dataset)

    def finished_items(self) -> dict[str, dict[str, Any]]:
        return self.snapshot().finished_items()

    def final_rows(self, dataset: str) -> list[dict[str, Any]]:
        return self.snapshot().final_rows(dataset)


def new_writer_name() -> str:
    """Unique per writer, sorting by start time: `<ns since epoch, hex>-<pid>-<random>`."""
    return f"{time.time_ns():016x}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def _dataset_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".", 1)[0]


def _stage_order(path: str) -> tuple[str, int, str]:
    """The run's own local file first (written first on resume too), then writers by start."""
    name = path.rsplit("/", 1)[-1]
    return (_dataset_of(path), 0 if name.count(".") == 1 else 1, name)


# --- publishing: one Parquet file per dataset when the run ends ------------------------------

def in_manifest_order(rows: list[dict[str, Any]], dataset: str,
                      manifest_order: dict[str, int]) -> list[dict[str, Any]]:
    """Rows sorted as the manifest lists their items (they are staged as items finish)."""
    keys = ROW_KEYS[dataset][1:]
    return sorted(rows, key=lambda r: (manifest_order.get(r["item_id"], 0), r["item_id"],
                                       *(r.get(k) or 0 for k in keys)))


def publish_run(out: OutputRoot, staging: RunStaging | StagedRows, run_id: str,
                run_date: date | None = None) -> dict[str, str]:
    """Write each dataset's rows of the run as one Parquet file; return dataset -> path."""
    run_date = run_date or datetime.now(timezone.utc).date()
    written = {}
    staged = staging.snapshot() if hasattr(staging, "snapshot") else staging
    manifest_order = {row["item_id"]: row.get("row") or 0 for row in staged.final_rows("items")}
    for dataset in SCHEMAS:
        rows = in_manifest_order(staged.final_rows(dataset), dataset, manifest_order)
        if not rows:
            continue
        relative = f"{dataset}/run_date={run_date.isoformat()}/{run_id}.parquet"
        out.write_table(relative, to_table(dataset, rows))
        written[dataset] = out.display(relative)
    return written
