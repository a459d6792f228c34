"""Parquet datasets and media files under the output root, written atomically.

Layout (the output root may be a local folder or an fsspec URL such as s3://bucket/prefix):

    <root>/items/run_date=YYYY-MM-DD/<run_id>.parquet          one file per run and dataset
    <root>/transcripts/... segments/... narrations/... costs/...
    <root>/media/transcripts/<run_id>/<item_id>.txt|.srt|.vtt  per run: runs never overwrite
    <root>/media/narrations/<run_id>/<item_id>.<format>          each other's files
    <root>/media/*/<run_id>/<item_id>.chapters.json             Podcasting 2.0 chapters
    <root>/_cache/...                                          result cache (tasks/run/cache.py)

Rows of a run are staged item by item under `<root>/_runs/<run_id>/` (tasks/outputs/staging.py) and
compacted into one Parquet file per dataset when the run ends. A crash leaves only staged
lines (a torn last line is ignored); re-running the same job resumes from them, so each item
and chunk ends with exactly one row. Readers never see a partial file: local files are written
to a dot-file and renamed; object stores publish whole objects.
"""
from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pyarrow as pa
import pyarrow.parquet as pq

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.ids import id_problem

_STR, _F64, _I32 = pa.string(), pa.float64(), pa.int32()
_TS = pa.timestamp("us", tz="UTC")
_EPISODE = [("feed_title", _STR), ("episode_title", _STR), ("episode_guid", _STR),
            ("published_at", _STR), ("enclosure_url", _STR)]

SCHEMAS: dict[str, pa.Schema] = {
    "items": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("kind", _STR), ("source", _STR), ("status", _STR),
        ("error_type", _STR), ("error_message", _STR), ("row", _I32), ("model", _STR),
        ("duration_s", _F64), ("n_chunks", _I32), ("requests", _I32), ("cost_usd", _F64),
        ("started_at", _TS), ("finished_at", _TS), ("metadata", _STR), *_EPISODE,
        ("skipped_audio_s", _F64), ("skipped_bytes", pa.int64()), ("repaired_samples", pa.int64())]),
    "transcripts": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("source", _STR), ("duration_s", _F64), ("text", _STR),
        ("language", _STR), ("model", _STR), ("n_chunks", _I32), ("origin", _STR),
        ("txt_path", _STR), ("srt_path", _STR), ("vtt_path", _STR), *_EPISODE,
        ("json_path", _STR), ("language_probability", _F64), ("qa_flags", pa.list_(_STR)),
        ("vocabulary_fixes", pa.list_(_STR)),  # near misses of the vocabulary corrected
        ("rttm_path", _STR)]),
    "segments": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("chunk_index", _I32), ("segment_index", _I32),
        ("start_s", _F64), ("end_s", _F64), ("text", _STR), ("qa_flags", pa.list_(_STR)),
        ("speaker", _STR)]),
    "narrations": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("audio_path", _STR), ("format", _STR),
        ("voice", _STR), ("speed", _F64), ("duration_s", _F64), ("n_chunks", _I32),
        ("title", _STR), ("words", _I32), ("model", _STR), ("loudness_lufs", _F64),
        ("chapters", _I32), ("audio_bytes", pa.int64()), ("txt_path", _STR), ("srt_path", _STR),
        ("vtt_path", _STR),
        ("qa_flags", pa.list_(_STR)), ("chapters_path", _STR)]),
    "narration_checks": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("chunk_index", _I32), ("attempt", _I32),
        ("wer", _F64), ("passed", pa.bool_()), ("heard", _STR)]),
    "words": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("chunk_index", _I32), ("word_index", _I32),
        ("word", _STR), ("start_s", _F64), ("end_s", _F64), ("probability", _F64),
        ("speaker", _STR)]),
    "speakers": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("speaker", _STR), ("seconds", _F64),
        ("turns", _I32), ("first_s", _F64)]),
    "costs": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("chunk_index", _I32), ("attempt", _I32),
        ("model", _STR), ("provider", _STR), ("priced_as", _STR),
        ("prompt_text_tokens", pa.int64()), ("prompt_audio_tokens", pa.int64()),
        ("completion_text_tokens", pa.int64()), ("completion_audio_tokens", pa.int64()),
        ("cached_tokens", pa.int64()), ("cost_usd", _F64), ("latency_s", _F64),
        ("http_status", _I32), ("request_id", _STR), ("cached", pa.bool_()),
        ("error_type", _STR), ("error_message", _STR),
        # transcription: seconds of the recording a request stands for, seconds it sent
        # (fewer with economy), and the audio-in dollars that difference saved
        ("recorded_audio_s", _F64), ("sent_audio_s", _F64), ("saved_usd", _F64),
        ("reask_reason", _STR), ("request_kind", _STR)]),
    # --chapters (tasks/extract): one row per chapter, one per item, one per sponsor spot.
    # `method`: model (its tool call, checked), model-reask (accepted when asked again),
    # offline (topic segmentation), offline-fallback (the model's answers were refused).
    "chapters": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("chapter_index", _I32), ("start_s", _F64),
        ("end_s", _F64), ("title", _STR), ("summary", _STR), ("method", _STR), ("model", _STR)]),
    "show_notes": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("summary", _STR), ("keywords", pa.list_(_STR)),
        ("n_chapters", _I32), ("n_sponsor_spots", _I32), ("method", _STR), ("model", _STR),
        ("problems", pa.list_(_STR)), ("chapters_path", _STR)]),
    "sponsor_spots": pa.schema([
        ("run_id", _STR), ("item_id", _STR), ("spot_index", _I32), ("start_s", _F64),
        ("end_s", _F64), ("sponsor", _STR), ("method", _STR)]),
}
# Which columns identify a row within a run: later staged lines with the same key win.
ROW_KEYS = {"items": ("item_id",), "transcripts": ("item_id",), "narrations": ("item_id",),
            "segments": ("item_id", "segment_index"), "words": ("item_id", "word_index"),
            "costs": ("item_id", "chunk_index", "attempt"),
            "narration_checks": ("item_id", "chunk_index", "attempt"),
            "chapters": ("item_id", "chapter_index"), "show_notes": ("item_id",),
            "sponsor_spots": ("item_id", "spot_index"), "speakers": ("item_id", "speaker")}


def safe_name(item_id: str) -> str:
    """An item id as a file name that cannot leave its folder (checked again here, at the
    last moment, whatever produced the id)."""
    problem = id_problem(item_id)
    if problem:
        raise InputError(f"{item_id!r}: {problem}")
    return item_id


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class OutputRoot:
    """The output root: a local folder or any fsspec URL, with atomic whole-file writes."""

    def __init__(self, root: str | Path) -> None:
        self.url = str(root)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._made: set[str] = set()

    def _makedirs(self, folder: str) -> None:
        if folder not in self._made:  # once per folder: many small files go to few folders
            self.fs.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def full(self, relative: str) -> str:
        return f"{self.path.rstrip('/')}/{relative}"

    def display(self, relative: str) -> str:
        """Where a user finds the file: a local path, or the URL under the root."""
        return self.full(relative) if self.is_local else f"{self.url.rstrip('/')}/{relative}"

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.full(relative))

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.full(relative))

    def write_bytes(self, relative: str, data: bytes, *, durable: bool = True) -> str:
        """Write a whole file atomically (readers see the old file or the new one). `durable`:
        also fsync it; files that can be made again (cache entries, an item's media, redone by
        a resumed run) skip that, which on a busy disk costs several ms per file."""
        target = self.full(relative)
        parent = target.rsplit("/", 1)[0]
        self._makedirs(parent)
        if not self.is_local:
            self.fs.pipe_file(target, data)  # object stores publish whole objects
            return target
        temp = f"{parent}/.{target.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        with open(temp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, target)
        return target

    def put_file(self, local: Path, relative: str) -> str:
        """Publish a finished local file (an audiobook of any size) without reading it into
        memory; atomic like `write_bytes`."""
        target = self.full(relative)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if not self.is_local:
            self.fs.put_file(str(local), target)
            return target
        temp = f"{parent}/.{target.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(local, temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        return target

    def write_table(self, relative: str, table: pa.Table) -> str:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return self.write_bytes(relative, sink.getvalue().to_pybytes())


def media_relpath(kind: str, run_id: str, item_id: str, extension: str) -> str:
    """Where a run's media file for an item goes: one folder per run, so two runs (two
    submitters sharing an output root) with the same item id never overwrite each other."""
    return f"media/{kind}/{safe_name(run_id)}/{safe_name(item_id)}.{extension}"


def to_table(dataset: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = SCHEMAS[dataset]
    timestamps = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    for row in rows:
        for name in timestamps:
            if isinstance(row.get(name), str):
                row[name] = datetime.fromisoformat(row[name])
    return pa.Table.from_pylist(rows, schema=schema)


def read_dataset(out: OutputRoot, dataset: str) -> pa.Table | None:
    """The whole dataset under the root (every run), or None when nothing was written yet."""
    import pyarrow.dataset as ds

    folder = out.full(dataset)
    if not out.fs.exists(folder):
        return None
    return ds.dataset(folder, filesystem=out.fs, format="parquet", partitioning="hive",
                      schema=SCHEMAS[dataset].append(pa.field("run_date", _STR))).to_table()


def failed_item_ids(out: OutputRoot, run_id: str, kind: str) -> set[str]:
    """Items that failed in run `run_id` ("last": the latest run of this kind)."""
    table = read_dataset(out, "items")
    if table is None:
        raise InputError(f"--rerun-failed {run_id}: no earlier runs under {out.url}")
    rows = [r for r in table.to_pylist() if r["kind"] == kind]
    if run_id == "last":
        if not rows:
            raise InputError(f"--rerun-failed last: no earlier {kind} run under {out.url}")
        run_id = max(r["run_id"] for r in rows)
    chosen = [r for r in rows if r["run_id"] == run_id]
    if not chosen:
        raise InputError(f"--rerun-failed {run_id}: no {kind} run with that id under {out.url}")
    return {r["item_id"] for r in chosen if r["status"] == "failed"}
