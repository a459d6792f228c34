"""Benchmark: the narration pipeline against the engine it drives, on the same text.

Prints, for one text measured in one run:

  - the engine alone: Piper (as the embedded model runs it) synthesising the whole speakable
    text in one call - inference alone, the floor any pipeline around this engine can reach;
  - the `narrate-manifest` flow end to end: manifest -> speakable text -> chunks within the
    per-request budget -> requests to the embedded model over the wire contract -> decode,
    stitch, loudness, speed -> encode -> Parquet;

with x real time for each and their ratio. Default text: the first 800 words of the LJ Speech
chapter in ../shared/data/texts (about four minutes of speech). Prints numbers; asserts
nothing. Warm-up (Prefect's temporary server, loading the engines) is not timed.

    .venv/bin/python benchmarks/narrate.py [--words 800] [--format mp3] [--speed 1.0]
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")

from audiobatch.tasks.text.speakable import speakable_text  # noqa: E402
from audiobatch.tasks.options import NarrateOptions

TEXT = ROOT.parent / "shared" / "data" / "texts" / "ljspeech_LJ001.txt"


def first_words(path: Path, words: int) -> str:
    return " ".join(path.read_text(encoding="utf-8").split()[:words])


def write_manifest(folder: Path, text: str, audio_format: str, speed: float) -> Path:
    (folder / "text.txt").write_text(text, encoding="utf-8")
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text_file", "format", "speed"])
        writer.writerow(["bench", "text.txt", audio_format, speed])
    return manifest


def time_flow(text: str, audio_format: str, speed: float) -> tuple[float, dict]:
    """One real flow run (embedded model, no result cache: every chunk is synthesised)."""
    from audiobatch.flows.narrate import narrate_manifest

    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-narrate-") as folder:
        manifest = write_manifest(Path(folder), text, audio_format, speed)
        started = time.perf_counter()
        summary = asyncio.run(narrate_manifest(manifest=str(manifest), out=f"{folder}/out", 
            options=NarrateOptions.from_flat(use_cache=False, progress=False)))
        return time.perf_counter() - started, summary


def time_engine(text: str) -> tuple[float, float]:
    """(seconds, audio seconds): Piper on the whole text in one call, as the model runs it."""
    from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, shared_engines

    started = time.perf_counter()
    samples = shared_engines().synthesize_blocking(speakable_text(text, markdown=False))
    return time.perf_counter() - started, samples.size / OUTPUT_SAMPLE_RATE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=TEXT)
    parser.add_argument("--words", type=int, default=800)
    parser.add_argument("--format", default="mp3", choices=["wav", "mp3", "flac", "opus"])
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args(argv)
    text = first_words(args.text, args.words)
    time_flow("A short warm-up sentence.", "wav", 1.0)  # temporary server, engines loaded
    engine_s, engine_audio_s = time_engine(text)
    flow_s, summary = time_flow(text, args.format, args.speed)
    flow_audio_s = summary["audio_s"] * args.speed  # narrated length before the speed change
    print(f"text: {args.words} words of {args.text.name}; the flow made {summary['requests']} "
          f"request(s), wrote {args.format} at speed {args.speed:g}")
    print(f"engine alone (Piper, one call)        {engine_s:7.2f} s for {engine_audio_s:6.1f} s of "
          f"speech  {engine_audio_s / engine_s:5.1f}x real time")
    print(f"narrate-manifest flow, end to end     {flow_s:7.2f} s for {flow_audio_s:6.1f} s of "
          f"speech  {flow_audio_s / flow_s:5.1f}x real time")
    print(f"ratio flow / engine (per second of speech) "
          f"{(flow_s / flow_audio_s) / (engine_s / engine_audio_s):.3f}; "
          f"pipeline overhead {flow_s - engine_s * flow_audio_s / engine_audio_s:+.2f} s")


if __name__ == "__main__":
    main()
