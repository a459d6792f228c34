"""Benchmark: context across cuts - accuracy and time against how much context is carried.

The same recording is transcribed by the real `transcribe-manifest` flow (embedded model,
no result cache) in ~30 s requests (`max_audio_tokens=300`), once per `--context-words`
setting (0 = every chunk on its own, sent all at once), and by the engine's own single pass.
Two recordings: the 171 s LJ Speech reading, and an "episode" of every English clip of
../shared/data/speech joined with short pauses (read, spontaneous, telephone-band; ~5 min).

Prints WER (Whisper English normaliser) and wall time per setting, and the ratio of each
run's time to the no-context run measured in the same process. Asserts nothing.

    .venv/bin/python benchmarks/context.py [--words 0,30,60,120,200] [--only lj|episode]
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

from tests.helpers.data import REFERENCES, SPEECH  # noqa: E402
from tests.helpers.e2e import (concatenate_clips, corpus_wer, engine_transcript,  # noqa: E402
                               run_transcribe, write_manifest)

LONG = "derived__LJ001-0009_to_0032_concat.wav"


def recordings(folder: Path, only: str | None) -> dict[str, tuple[Path, str]]:
    with open(REFERENCES, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["language"] == "en"]
    reference = {r["file"]: r["reference_text"] for r in rows}
    found = {"lj": (SPEECH / LONG, reference[LONG])}
    clips = [SPEECH / r["file"] for r in rows]
    episode = concatenate_clips(clips, [0.6] * (len(clips) - 1), folder / "episode.wav")
    found["episode"] = (episode.path, " ".join(reference[c.name] for c in clips))
    return {k: v for k, v in found.items() if only in (None, k)}


async def one_run(audio: Path, folder: Path, words: int) -> tuple[str, float, int]:
    manifest = write_manifest(folder / f"m{words}.csv", [{"id": "bench", "audio": str(audio)}])
    started = time.perf_counter()
    result = await run_transcribe(manifest, folder / f"out{words}", max_audio_tokens=300,
                                  context_words=words, use_cache=False, word_times=False)
    elapsed = time.perf_counter() - started
    return result.item("bench", "transcripts")["text"], elapsed, len(result.dataset("costs"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", default="0,30,60,120,200")
    parser.add_argument("--only", choices=["lj", "episode"])
    args = parser.parse_args()
    settings = [int(w) for w in args.words.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        await one_run(SPEECH / "pocketsphinx__goforward.wav", folder / "warm-up", 0)  # engines, Prefect
        for name, (audio, reference) in recordings(folder, args.only).items():
            started = time.perf_counter()
            engine = corpus_wer([reference], [engine_transcript(audio)])
            engine_s = time.perf_counter() - started
            print(f"\n{name}: {audio.name}  engine single pass WER {engine:.2%} ({engine_s:.1f} s)")
            base_s = None
            for words in settings:
                text, seconds, requests = await one_run(audio, folder / f"{name}{words}", words)
                base_s = base_s or seconds
                wer = corpus_wer([reference], [text])
                print(f"  context {words:>3} words: WER {wer:.2%} ({wer - engine:+.2%} vs single pass), "
                      f"{requests} requests, {seconds:.1f} s (x{seconds / base_s:.2f} of the first setting)")


if __name__ == "__main__":
    asyncio.run(main())
