"""Benchmark: are words at the right time? Clips joined by 1.5 s pauses, transcribed by the
`transcribe-manifest` flow (embedded model, default options); for each clip, how far its first
word starts from its voice's onset, and whether any word spans more than 1 s of a pause.

Two episodes (tests/helpers/heldout.py): the tuning clips and the held-out clips, each clip
clean, through a telephone line and in a noisy room. Issue 24's bar: 90% of clips within 0.3 s,
no word over a pause longer than 1 s. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/word_times.py [--max-audio-tokens N]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from tests.helpers.e2e import corpus_wer, run_transcribe, write_manifest  # noqa: E402
from tests.helpers.heldout import (CONDITIONS, HELD_OUT, TUNING, episode,  # noqa: E402
                                   first_word_errors, words_over_pauses)


async def measure(folder: Path, name: str, clips: list[str], max_audio_tokens: int | None) -> None:
    plan = [(clip, condition) for k, condition in enumerate(CONDITIONS)
            for clip in clips[k:] + clips[:k]]
    recording = episode(folder, [c for c, _ in plan], [c for _, c in plan], name=name)
    manifest = write_manifest(folder / f"{name}.csv", [{"id": name, "audio": str(recording.path)}])
    started = time.perf_counter()
    run = await run_transcribe(manifest, folder / f"out-{name}", max_audio_tokens=max_audio_tokens,
                               timeout_s=900)
    elapsed = time.perf_counter() - started
    words = run.dataset("words")
    timed = list(zip(words["start_s"], words["end_s"]))
    signed = np.array(first_word_errors(timed, recording, signed=True))
    errors = np.abs(signed)
    over = words_over_pauses(timed, recording)
    text = run.item(name, "transcripts")["text"]
    print(f"\n{name}: {len(plan)} clips, {recording.duration_s:.0f} s, {elapsed:.0f} s to run; "
          f"WER {corpus_wer([' '.join(recording.references)], [text]):.2%}")
    within = np.nan_to_num(errors, nan=99) <= 0.3
    print(f"  first word within 0.3 s of the voice: {within.mean():.0%} "
          f"(median {np.nanmedian(errors) * 1000:.0f} ms); words over a pause > 1 s: {len(over)}")
    for condition in CONDITIONS:
        mine = [e for e, c in zip(errors, recording.conditions) if c == condition]
        print(f"    {condition:<9} within 0.3 s {np.mean(np.nan_to_num(mine, nan=99) <= 0.3):.0%}")
    print(f"    signed (word start - onset): median {np.nanmedian(signed) * 1000:+.0f} ms")
    for clip, condition, error in zip(recording.clips, recording.conditions, signed):
        if not abs(error) <= 0.3:
            print(f"    off: {clip} ({condition}) {error:+.2f} s")
    for start, end in over:
        print(f"    over a pause: {start:.2f}-{end:.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-audio-tokens", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await measure(Path(tmp), "tuning", TUNING, args.max_audio_tokens)
        await measure(Path(tmp), "held-out", HELD_OUT, args.max_audio_tokens)


if __name__ == "__main__":
    asyncio.run(main())
