"""`audiobatch demo`: both example jobs on the embedded model, then where to find everything.

No key, no network: narration of `manifests/articles.csv` and transcription of
`manifests/episodes.csv` run as subflows of one Prefect flow (one temporary API server).
"""
from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path

import pyarrow.dataset as ds

from audiobatch.flows.common import as_summary, summary_of
from audiobatch.flows.flow_class import audiobatch_flow
from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest

# The repository's manifests/ folder, installed as the package data `audiobatch.examples`.
EXAMPLES = Path(str(files("audiobatch.examples")))


@audiobatch_flow(name="audiobatch-demo")
async def demo_flow(out: str) -> dict:
    narration = await summary_of(await narrate_manifest(str(EXAMPLES / "articles.csv"), out=out,
                                                        return_state=True))
    transcription = await summary_of(await transcribe_manifest(str(EXAMPLES / "episodes.csv"),
                                                               out=out, return_state=True))
    return {"narrate": narration, "transcribe": transcription}


def _preview(out: Path) -> str:
    rows = ds.dataset(out / "transcripts", partitioning="hive").to_table(
        columns=["run_id", "item_id", "duration_s", "text"]).to_pylist()
    latest = {row["item_id"]: row for row in sorted(rows, key=lambda row: row["run_id"])}
    return "\n".join(f"  {row['item_id']:<18} {row['duration_s']:6.1f} s  {row['text'][:70]}..."
                     for row in latest.values())


def demo(out: str) -> int:
    summaries = asyncio.run(demo_flow(out))
    for kind, summary in summaries.items():
        print(f"\naudiobatch {kind} finished\n{as_summary(summary).text()}")
    root = Path(out).resolve()
    print(f"""
Demo finished. Everything is under {root}:
  narrated audio      {root / 'media' / 'narrations'}/<run id>/
  transcripts         {root / 'media' / 'transcripts'}/<run id>/  (.txt, .srt, .vtt)
  Parquet datasets    {root}/{{items,transcripts,segments,narrations,costs}}
Read them with pandas (pip install pandas):  pandas.read_parquet("{root / 'costs'}")
Past runs:  audiobatch runs {root}      a page per run:  audiobatch report {root} --html report.html

Transcripts:
{_preview(root)}""")
    ok = all(s["ok"] == s["items"] for s in summaries.values())
    return 0 if ok else 1
