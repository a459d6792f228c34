"""`audiobatch demo`: both example jobs on the embedded model, then where to find everything.

No key, no network: narration of `manifests/articles.csv` and transcription of
`manifests/episodes.csv` run as subflows of one Prefect flow (one temporary API server).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
from prefect import flow

from audiobatch.flows.narrate import narrate_manifest
from audiobatch.flows.transcribe import transcribe_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests"


@flow(name="audiobatch-demo")
async def demo_flow(out: str) -> dict:
    narration = await narrate_manifest(str(EXAMPLES / "articles.csv"), out=out)
    transcription = await transcribe_manifest(str(EXAMPLES / "episodes.csv"), out=out)
    return {"narrate": narration, "transcribe": transcription}


def _preview(out: Path) -> str:
    transcripts = pd.read_parquet(out / "transcripts").sort_values("run_id")
    latest = transcripts.drop_duplicates("item_id", keep="last")
    lines = [f"  {row.item_id:<18} {row.duration_s:6.1f} s  {row.text[:70]}..."
             for row in latest.itertuples()]
    return "\n".join(lines)


def demo(out: str) -> int:
    summaries = asyncio.run(demo_flow(out))
    root = Path(out).resolve()
    print(f"""
Demo finished. Everything is under {root}:
  narrated audio      {root / 'media' / 'narrations'}
  transcripts         {root / 'media' / 'transcripts'}  (.txt, .srt, .vtt)
  Parquet datasets    {root}/{{items,transcripts,segments,narrations,costs}}
Read them with pandas:  pandas.read_parquet("{root / 'costs'}")

Transcripts:
{_preview(root)}""")
    ok = all(s["ok"] == s["items"] for s in summaries.values())
    return 0 if ok else 1
