"""The `audiobatch-inbox` flow: every manifest dropped into a folder (or fsspec prefix) is run.

    <inbox>/episodes.csv                 waiting (top level: .csv, .tsv, .parquet)
    <inbox>/processing/episodes.csv.claim  taken by a run (who, when)
    <inbox>/done/episodes.csv            every row ok; episodes.csv.summary.json beside it
    <inbox>/failed/episodes.csv          some rows failed, or the manifest was unusable

Kind: a name like `x.narrate.csv` / `x.transcribe.csv` decides; otherwise the header does
(an `audio` column: transcribe; `text` or `text_file`: narrate). Relative paths in a manifest
start from the inbox folder, as for any manifest. Each manifest runs as a subflow
(`transcribe-manifest` / `narrate-manifest`) with this flow's options.

No manifest is processed twice, even by overlapping runs: a run first creates the claim file
exclusively (O_EXCL; `xb` on fsspec stores), and a claim older than `stale_claim_h` (a run
that crashed) is taken over by renaming it, which only one run can do. A run that finishes
moves the manifest out before releasing its claim. A manifest whose run crashed is resumed
(same content, same job) when its claim goes stale, or at once if you delete the claim.

Droppers are not trusted: their manifests read local files only inside the data roots (the
inbox folder by default), and nothing the inbox opens or writes goes through a link they planted
(flows/inbox_folders.py; the manifest itself is read without following a link, flows/common.py).
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from audiobatch.flows.common import summary_of
from audiobatch.flows.flow_class import audiobatch_flow
from audiobatch.flows.guard import check_inbox, manifests_from_inbox
from audiobatch.flows.inbox_folders import TOP, inbox_folders
from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest
from audiobatch.tasks.errors import AudiobatchError, redact
from audiobatch.tasks.inputs.manifest import NARRATE, TRANSCRIBE
from audiobatch.tasks.inputs.manifest_io import ManifestError, read_rows
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.options import InboxOptions
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.outputs.staging import RunStaging
from audiobatch.tasks.run.context import run_folder

log = logging.getLogger("audiobatch")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
PROCESSING, DONE, FAILED = "processing", "done", "failed"


@dataclass
class Report:
    manifest: str
    status: str  # "done" | "failed"
    kind: str | None = None
    moved_to: str | None = None
    error: str | None = None
    problems: list[dict[str, Any]] | None = None  # the rows that did not end ok
    summary: dict[str, Any] | None = None


class Inbox:
    """A folder or fsspec prefix of waiting manifests, with claims and done/failed folders
    (flows/inbox_folders.py: on a local disk, without following a link anywhere)."""

    def __init__(self, location: str, stale_claim_h: float = 24.0) -> None:
        self.root = OutputRoot(location)
        self.folders = inbox_folders(self.root)
        self.stale_claim_s = stale_claim_h * 3600

    def location(self, name: str) -> str:
        return self.root.display(name)

    def waiting(self) -> list[str]:
        return sorted(n for n in self.folders.files()
                      if n.lower().endswith(MANIFEST_SUFFIXES) and not n.startswith("."))

    def read(self, name: str) -> bytes:
        """A waiting manifest's bytes: a regular file, not read through a link."""
        return self.folders.read(TOP, name)

    def claim(self, name: str) -> bool:
        """Take `name` for this run; False when another run has it or has finished it."""
        claim = f"{name}.claim"
        if not self._create_claim(claim) and not (self._take_over_stale(claim) and self._create_claim(claim)):
            return False
        if not self.folders.exists(TOP, name):  # finished by another run between listing and claiming
            self.release(name)
            return False
        return True

    def release(self, name: str) -> None:
        try:
            self.folders.remove(PROCESSING, f"{name}.claim")
        except FileNotFoundError:  # removed by hand (or by a dropper): nothing left to release
            pass

    def finish(self, report: Report) -> str:
        """Summary beside the manifest in done/ or failed/, the manifest moved, then release."""
        folder = DONE if report.status == "done" else FAILED
        target = self._free_name(folder, report.manifest)
        report.moved_to = self.root.display(f"{folder}/{target}")
        summary = json.dumps(asdict(report), indent=2, default=str).encode()
        while not self.folders.create(folder, f"{target}.summary.json", summary):  # taken meanwhile
            target = self._free_name(folder, report.manifest, fresh=True)
            report.moved_to = self.root.display(f"{folder}/{target}")
            summary = json.dumps(asdict(report), indent=2, default=str).encode()
        try:
            self.folders.rename(TOP, report.manifest, folder, target)
        except FileNotFoundError:  # taken away meanwhile (by whoever dropped it): the summary stays
            log.warning("%s was gone before it could be moved to %s", report.manifest, folder)
        self.release(report.manifest)
        return report.moved_to

    def _create_claim(self, claim: str) -> bool:
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "claimed_at": datetime.now(timezone.utc).isoformat()}).encode()
        return self.folders.create(PROCESSING, claim, record)

    def _take_over_stale(self, claim: str) -> bool:
        """Rename a claim older than the limit out of the way; only one run's rename succeeds."""
        try:
            age = time.time() - self.folders.modified(PROCESSING, claim)
        except FileNotFoundError:
            return True  # released meanwhile: try to claim again
        if age < self.stale_claim_s:
            return False
        try:
            self.folders.rename(PROCESSING, claim, PROCESSING, f"{claim}.stale-{uuid.uuid4().hex[:8]}")
        except FileNotFoundError:
            return False  # another run took it over first
        log.warning("took over the claim on %s: its run stopped %.1f h ago",
                    self.root.display(f"{PROCESSING}/{claim}"), age / 3600)
        return True

    def _free_name(self, folder: str, name: str, fresh: bool = False) -> str:
        if not fresh and not self.folders.exists(folder, name) \
                and not self.folders.exists(folder, f"{name}.summary.json"):
            return name
        stem, dot, suffix = name.rpartition(".")
        return f"{stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}{dot}{suffix}"


def kind_by_name(name: str) -> str | None:
    """`x.narrate.csv` -> narrate, `x.transcribe.csv` -> transcribe; None when the name says neither."""
    tags = set(name.lower().split(".")[1:-1])
    return next((kind for kind in (TRANSCRIBE, NARRATE) if kind in tags), None)


def kind_by_header(name: str, location: str, data: bytes) -> str:
    """By the header of the manifest's `data`: `audio` -> transcribe, `text`/`text_file` -> narrate."""
    header = next((cells for _, cells in read_rows(location, data) if any(c.strip() for c in cells)), [])
    columns = {re.sub(r"[\s\-]+", "_", cell.strip().lower()) for cell in header}
    is_transcribe, is_narrate = "audio" in columns, bool(columns & {"text", "text_file"})
    if is_transcribe != is_narrate:
        return TRANSCRIBE if is_transcribe else NARRATE
    found = ", ".join(sorted(c for c in columns if c)) or "none"
    raise ManifestError(
        f"manifest {name}: cannot tell whether to transcribe or narrate it (columns: {found}). "
        "Give it an 'audio' column (transcribe) or a 'text'/'text_file' column (narrate), or "
        "name it like NAME.transcribe.csv / NAME.narrate.csv, and drop it in again.")


def _not_ok_rows(out: str, run_id: str) -> list[dict[str, Any]]:
    rows = RunStaging(run_folder(OutputRoot(out), run_id)).final_rows("items")
    return [{key: row.get(key) for key in ("item_id", "row", "status", "error_type", "error_message")}
            for row in rows if row["status"] != "ok"]


async def _run_manifest(box: Inbox, name: str, out: str, options: InboxOptions) -> Report:
    try:
        kind = kind_by_name(name) or kind_by_header(name, box.location(name), box.read(name))
        job = transcribe_manifest if kind == TRANSCRIBE else narrate_manifest
        summary = await summary_of(await job(manifest=box.location(name), out=out,
                                             options=options.for_kind(kind), return_state=True))
    except AudiobatchError as error:
        return Report(name, "failed", error=str(error))
    except Exception as error:  # noqa: BLE001 - one bad manifest must not stop the inbox
        return Report(name, "failed", error=redact(f"unexpected {type(error).__name__}: {error}"))
    problems = _not_ok_rows(out, summary["run_id"])
    return Report(name, "failed" if problems else "done", kind, problems=problems, summary=summary)


@audiobatch_flow(name="audiobatch-inbox", log_prints=True)
async def process_inbox(inbox: str, out: str = "outputs", stale_claim_h: float = 24.0,
                        options: InboxOptions = InboxOptions()) -> dict:
    """Run every manifest waiting in `inbox`, then move each to done/ or failed/ with its summary.

    Options apply to every manifest (per-row columns still override them); `max_cost_usd` is
    per manifest. The API key comes from OPENAI_API_KEY, never from a parameter. A dropped
    manifest is someone else's: its rows read local files only inside the data roots
    (AUDIOBATCH_DATA_ROOTS, else the inbox folder)."""
    await check_inbox(options, inbox, out, stale_claim_h)
    box = Inbox(inbox, stale_claim_h)
    waiting = box.waiting()
    print(f"inbox {safe_url(box.root.url)}: {len(waiting)} manifest(s) waiting")
    reports = []
    for name in waiting:
        if not box.claim(name):
            print(f"{name}: taken by another run")
            continue
        with manifests_from_inbox():
            report = await _run_manifest(box, name, out, options)
        moved_to = box.finish(report)
        print(f"{name}: {report.status} -> {moved_to}" + (f" ({report.error})" if report.error else ""))
        reports.append(asdict(report))
    return {"inbox": safe_url(box.root.url), "waiting": len(waiting), "processed": reports}
