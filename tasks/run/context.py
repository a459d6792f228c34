"""A run: its options, its shared context, resuming after a crash, and every item's status.

The flow builds one `RunContext` per run (the model client, limiter, cache and staging live
there) and hands items to `tasks.run.batches.run_items`, which runs them in batch task runs with a
bounded number in flight. Every manifest row ends in exactly one `items` row: ok | failed |
skipped, with the reason. A run-fatal error (bad key, no quota, budget) stops new work; what
finished is kept; the rest is skipped.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audiobatch.tasks.errors import (AudiobatchError, ConfigError, InputError, ItemDeadlineExceeded,
                                     RunFatalError, redact)
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.manifest import Item
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.inputs.trust import check_run_id
from audiobatch.tasks.model.profiles import ModelProfile, Prices
from audiobatch.tasks.options import JobOptions
from audiobatch.tasks.outputs.datasets import OutputRoot, new_run_id, safe_name
from audiobatch.tasks.outputs.staging import RunStaging
from audiobatch.tasks.run.cache import ResultCache


@dataclass(frozen=True)
class RunOptions:
    """Everything a user chose for a run. Plain data: flows take these as parameters."""

    kind: str
    manifest: str
    out: str = "outputs"
    model: str | None = None
    base_url: str | None = None
    provider: str | None = None
    concurrency: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_attempts: int = 6
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    item_deadline_s: float | None = None
    max_cost_usd: float | None = None
    price_as: str | None = None
    profiles: str | None = None
    run_id: str | None = None
    use_cache: bool = True
    resume: bool = True
    rerun_failed: str | None = None
    allow_schemes: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    data_roots: tuple[str, ...] = ()  # only for runs started by others (flows/guard.py)
    max_download_mb: float = 4096.0
    download_deadline_s: float = 3600.0
    min_download_kb_s: float = 16.0
    progress: bool | None = None
    # scale-out (tasks/options.ScaleOut)
    shards: int = 1
    shard: int | None = None
    task_runner: str = "default"
    dask_workers: int | None = None
    # transcription
    language: str | None = None
    prompt: str | None = None
    vocabulary: tuple[str, ...] = ()
    max_audio_tokens: int | None = None
    overlap_s: float = 0.0
    economy: bool = False
    economy_speed: float | None = None
    word_times: bool = True
    output_format: str = "all"
    context_words: int = 60
    qa: bool = True
    qa_reference: bool = True
    chapters: str = "off"  # off | auto | offline (tasks/extract)
    speakers: str | None = None  # "auto" or a number of speakers; None: no speaker labels
    # narration
    voice: str = "alloy"
    audio_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None
    target_lufs: float = -16.0
    feed_url: str | None = None
    verify: bool = True
    verify_attempts: int = 3
    captions: bool = True
    # captions of both jobs (tasks/options.CaptionStyle)
    caption_preset: str = "broadcast"
    caption_line_chars: int | None = None
    caption_lines: int | None = None
    caption_min_s: float | None = None
    caption_max_s: float | None = None
    caption_cps: float | None = None

    def __post_init__(self) -> None:
        # run ids name folders under the output root: checked here too, for every caller
        for value, what in ((self.run_id, "--run-id"), (self.rerun_failed, "--rerun-failed")):
            if value is not None:
                check_run_id(value, what)

    @classmethod
    def from_job(cls, kind: str, manifest: str, out: str, options: JobOptions) -> RunOptions:
        """The flat options the pipeline works with, from a flow's `options` parameter."""
        flat = options.flat()
        flat["allow_schemes"] = tuple(flat["allow_schemes"])
        flat["allow_hosts"] = tuple(flat["allow_hosts"])
        flat["data_roots"] = tuple(flat["data_roots"])
        flat["vocabulary"] = tuple(flat.get("vocabulary", ()))
        return cls(kind=kind, manifest=manifest, out=out, **flat)

    def job_key(self, manifest_bytes: bytes) -> str:
        """Same manifest content + same result-shaping options = same job (resumable)."""
        shaping = {k: v for k, v in asdict(self).items()
                   if k not in {"concurrency", "requests_per_minute", "tokens_per_minute", "progress",
                                "max_attempts", "max_backoff_s", "timeout_s", "item_deadline_s", "max_cost_usd",
                                "resume", "use_cache", "manifest", "run_id", "allow_hosts", "data_roots",
                                "download_deadline_s", "min_download_kb_s", "shards", "shard",
                                "task_runner", "dask_workers"}}
        digest = hashlib.sha256(manifest_bytes)
        digest.update(json.dumps(shaping, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:24]


def items_at_once(concurrency: int) -> int:
    """Items worked on at once: the requests `concurrency` allows, and a quarter more being
    prepared meanwhile, so that a freed request slot finds its next item ready to send
    instead of waiting for it to be fetched and decoded (when a wave of answers came in
    together, the last item of each wave started ~0.15 s late, and later waves later still)."""
    concurrency = max(1, concurrency)
    return concurrency + concurrency // 4


@dataclass
class RunContext:
    options: RunOptions
    run_id: str
    out: OutputRoot
    staging: RunStaging
    work_dir: Path
    client: Any  # tasks.model.client.ModelClient
    model: str
    provider: str
    profile: ModelProfile
    prices: Prices | None
    priced_as: str
    cache: ResultCache
    budget: Any  # tasks.run.calls.Budget
    fetch_policy: FetchPolicy
    started: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None
    # (item_id, chunk_index) pairs already paid in this run before a crash (see tasks/run/calls.py)
    paid_chunks: set[tuple[str, int]] = field(default_factory=set)
    # narration: the embedded model's client that hears each chunk back (None: no verification)
    verifier: Any = None
    # places known words in their audio (tasks.captions.words.Aligner; the embedded Whisper's, wired by
    # flows/runtime.py); None: caption times are estimated from levels
    aligner: Any = None
    # hears each chunk with the embedded Whisper, for QA to compare a remote model's reply
    # with (`hear(samples, language) -> str`); None when the embedded model itself transcribes
    ears: Any = None
    # finds who spoke when in an item's audio (tasks.speakers.labels.SpeakerFinder; the embedded
    # diarization engine, wired by flows/runtime.py when speakers are asked for)
    speaker_finder: Any = None
    endpoint: str = "embedded"  # the normalised base URL: part of every cache key
    # QA re-asks per model: how many came back with the first answer's very text, how many
    # changed it (tasks/transcription/agreement.py stops re-asking a model deaf to them)
    reask_echoes: dict[str, list[int]] = field(default_factory=dict)
    # model -> (prices, label): each request is priced at its own model's rates
    price_book: Callable[[str], tuple[Prices | None, str]] | None = None
    # the flow's progress and log line for an item, called as the item ends when its batch runs
    # in this process (tasks.run.batches.run_items sets it; batches elsewhere report on return)
    on_item_done: Callable[[ItemOutcome], None] | None = None
    item_slots: asyncio.Semaphore = field(init=False)  # items worked on at once in this process

    def __post_init__(self) -> None:
        self.item_slots = asyncio.Semaphore(items_at_once(self.options.concurrency))

    def pricing(self, model: str) -> tuple[Prices | None, str]:
        if self.price_book is None or model == self.model:
            return self.prices, self.priced_as
        return self.price_book(model)


@dataclass
class ItemOutcome:
    """What one item produced: its status and its rows for each dataset."""

    status: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    duration_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None


class ItemRecorder:
    """An item's cost rows, kept as requests happen (tasks.run.calls stages them at once)."""

    def __init__(self, item: Item) -> None:
        self.item = item
        self.costs: list[dict[str, Any]] = []


# --- run folders and resume ----------------------------------------------------------------

def run_folder(out: OutputRoot, run_id: str) -> str:
    """Where a run keeps what resuming needs (job file, staged rows): `<out>/_runs/<run_id>`,
    a folder or a URL, so a run crashed on one machine resumes on any that reaches `out`.
    A run id from a submitted run is data: it must not name a folder outside `_runs`."""
    return out.display(f"_runs/{safe_name(run_id)}")


def work_dir(out: OutputRoot, run_id: str) -> Path:
    """Local folder for a run's downloads and chunks (object-store roots: on this machine)."""
    if out.is_local:
        return Path(out.path) / "_runs" / safe_name(run_id) / "work"
    tag = hashlib.sha256(out.url.encode()).hexdigest()[:16]
    base = Path(os.environ.get("AUDIOBATCH_STATE_DIR", Path.home() / ".cache" / "audiobatch"))
    return base / tag / safe_name(run_id) / "work"


def read_job(out: OutputRoot, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(out.read_bytes(f"_runs/{safe_name(run_id)}/job.json"))
    except (FileNotFoundError, ValueError):
        return None


def choose_run_id(options: RunOptions, out: OutputRoot, job_key: str) -> tuple[str, bool]:
    """(run_id, resumed): an unfinished run of the same job is resumed unless told otherwise."""
    if options.run_id:
        job = read_job(out, options.run_id)
        if job is not None and job.get("job_key") != job_key:
            raise ConfigError(f"--run-id {options.run_id} is already the id of another job under "
                              f"{safe_url(out.url)}: choose a new id, or leave --run-id out.")
        return options.run_id, job is not None
    if options.resume:
        found = out.fs.glob(out.full("_runs/*/job.json"))
        for path, data in sorted(out.fs.cat(found).items(), reverse=True) if found else []:
            job = json.loads(data)
            if job.get("job_key") == job_key and not job.get("finished"):
                return path.rstrip("/").split("/")[-2], True
    return new_run_id(), False


def write_job_file(out: OutputRoot, run_id: str, job: dict[str, Any]) -> None:
    job = {**job, "updated": datetime.now(timezone.utc).isoformat()}
    out.write_bytes(f"_runs/{safe_name(run_id)}/job.json", json.dumps(job, indent=2, default=str).encode())


def new_job(job_key: str, options: RunOptions) -> dict[str, Any]:
    return {"job_key": job_key, "finished": False, "kind": options.kind,
            "manifest": safe_url(options.manifest)}


# --- statuses ------------------------------------------------------------------------------

EPISODE_FIELDS = ("feed_title", "episode_title", "episode_guid", "published_at", "enclosure_url")


def episode_fields(item: Item) -> dict[str, str | None]:
    """Podcast episode metadata carried by feed items (None for manifest rows)."""
    return {name: item.metadata.get(name) for name in EPISODE_FIELDS}


def item_row(ctx: RunContext, item: Item, status: str, *, started_at: datetime | None = None,
             duration_s: float | None = None, n_chunks: int | None = None,
             error_type: str | None = None, error_message: str | None = None,
             costs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    costs = costs or []
    known = [c["cost_usd"] for c in costs if c.get("cost_usd") is not None]
    return {
        "run_id": ctx.run_id, "item_id": item.item_id, "kind": item.kind,
        "source": safe_url(item.source),  # presigned and private-feed URLs carry tokens
        "status": status, "error_type": error_type,
        "error_message": redact(error_message) if error_message else None,
        "row": item.row, "model": item.options.get("model") or ctx.model,
        # 0, not null, for items that made no chunks: a nullable int column reads back as float
        "duration_s": duration_s, "n_chunks": n_chunks or 0,
        "requests": sum(1 for c in costs if not c.get("cached")),
        "cost_usd": sum(known) if known else (None if costs else 0.0),
        "started_at": started_at, "finished_at": datetime.now(timezone.utc),
        "metadata": json.dumps(item.metadata, ensure_ascii=False) if item.metadata else None,
        **episode_fields(item),
    }


def failed_outcome(ctx: RunContext, item: Item, error: BaseException, recorder: ItemRecorder,
                   started_at: datetime, status: str = "failed") -> ItemOutcome:
    kind = getattr(error, "kind", "internal_error")
    message = str(error) if isinstance(error, AudiobatchError) else (
        f"{item.item_id}: unexpected {type(error).__name__}: {error}. This is a bug in "
        "audiobatch; please report it with this message.")
    row = item_row(ctx, item, status, started_at=started_at, error_type=kind,
                   error_message=message, costs=recorder.costs)
    return ItemOutcome(status=status, rows={"items": [row]},
                       error_type=kind, error_message=row["error_message"])


ItemFunction = Callable[..., Awaitable[Any]]


def item_task(name: str) -> Callable[[ItemFunction], ItemFunction]:
    """Name an item function (`transcribe-item`, ...). Items run inside batch task runs
    (tasks/run/batches.py); an AudiobatchError it raises fails that item alone, with its message."""
    def decorate(function: ItemFunction) -> ItemFunction:
        function.item_kind = name  # type: ignore[attr-defined]
        return function

    return decorate


async def run_one(ctx: RunContext, item: Item, process: ItemFunction) -> ItemOutcome:
    """One item start to end; never raises (except cancellation): failures become outcomes."""
    started_at = datetime.now(timezone.utc)
    recorder = ItemRecorder(item)
    try:
        async with asyncio.timeout(ctx.options.item_deadline_s):
            return await process(ctx, item, recorder)
    except TimeoutError:
        error = ItemDeadlineExceeded(
            f"{item.item_id}: gave up after the per-item deadline of "
            f"{ctx.options.item_deadline_s:g} s; raise --item-deadline-s or check the endpoint")
        return failed_outcome(ctx, item, error, recorder, started_at)
    except RunFatalError as error:
        # Not this item's fault (bad key, no quota, budget, dead endpoint): it is skipped like
        # the rest, and the run reports the reason once.
        ctx.stop_reason = ctx.stop_reason or str(error)
        return failed_outcome(ctx, item, error, recorder, started_at, status="skipped")
    except Exception as error:  # noqa: BLE001 - any item's failure must not stop the run
        return failed_outcome(ctx, item, error, recorder, started_at)


def not_started(ctx: RunContext, item: Item) -> ItemOutcome:
    """An item the run never got to: invalid row (failed) or the run stopped (skipped)."""
    recorder, now = ItemRecorder(item), datetime.now(timezone.utc)
    if item.error:
        return failed_outcome(ctx, item, InputError(item.error), recorder, now)
    return failed_outcome(ctx, item, RunFatalError(f"not started: {ctx.stop_reason}"),
                          recorder, now, status="skipped")
