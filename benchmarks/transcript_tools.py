"""Benchmark: what transcript QA, word alignment and VAD cost, against the engine's own time.

On one recording (default: the 171 s LJ Speech reading), measured in one process:

  1. the parts alone, each against faster-whisper tiny.en transcribing the same samples
     (the engine's own time): Silero VAD over the whole file, the forced aligner placing the
     engine's words, QA's checks of the text, and QA's reference hearing (the embedded Whisper
     hearing each chunk again - paid only when another model transcribes);
  2. the `transcribe-manifest` flow end to end (embedded model, no cache) with QA and word
     times off, QA on, word times on, and both (the default), as ratios of the first.

Prints numbers and ratios; asserts nothing. Warm-up (engines, Prefect) happens first.

    .venv/bin/python benchmarks/transcript_tools.py [--audio FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from audiobatch.localmodel.align import WhisperAligner  # noqa: E402
from audiobatch.localmodel.engines import WHISPER_SAMPLE_RATE, shared_engines  # noqa: E402
from audiobatch.tasks.audio.codecs import decode  # noqa: E402
from audiobatch.tasks.captions.words import word_pieces  # noqa: E402
from audiobatch.tasks.transcription.qa import Evidence, judge  # noqa: E402
from audiobatch.tasks.audio.vad import speech_spans  # noqa: E402
from tests.helpers.data import SPEECH  # noqa: E402
from tests.helpers.e2e import run_transcribe, write_manifest  # noqa: E402

DEFAULT_AUDIO = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def parts_alone(audio: Path) -> None:
    engines = shared_engines()
    samples = decode(audio, WHISPER_SAMPLE_RATE)
    engines.transcribe_blocking(samples[:WHISPER_SAMPLE_RATE * 5])  # warm-up
    seconds = len(samples) / WHISPER_SAMPLE_RATE
    text, engine_s = timed(engines.transcribe_blocking, samples)
    print(f"\n{audio.name}: {seconds:.0f} s of audio; engine alone {engine_s:.2f} s "
          f"({seconds / engine_s:.1f}x real time)")
    spans, vad_s = timed(speech_spans, samples)
    words = text.split()
    aligned, align_s = timed(WhisperAligner(engines).align_blocking, samples, word_pieces(text), "en")
    _, check_s = timed(judge, text, finish_reason="stop", refusal=None,
                       evidence=Evidence(spans, aligned, text))
    chunk = samples[: WHISPER_SAMPLE_RATE * 29]
    _, reference_s = timed(engines.transcribe_blocking, chunk)
    rows = [("Silero VAD, whole file", vad_s), (f"alignment of {len(words)} words", align_s),
            ("QA checks of the text", check_s),
            ("QA reference hearing (remote models only), per 29 s chunk", reference_s)]
    for name, value in rows:
        print(f"  {name:<58} {value:7.3f} s = {value / engine_s:.3f} of the engine's time")


async def flows(audio: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_manifest(folder / "m.csv", [{"id": "bench", "audio": str(audio)}])
        await run_transcribe(manifest, folder / "warm", use_cache=False, word_times=False, qa=False)
        base = None
        for name, options in [("QA off, word times off", {"qa": False, "word_times": False}),
                              ("QA on", {"qa": True, "word_times": False}),
                              ("word times on", {"qa": False, "word_times": True}),
                              ("both (the default)", {})]:
            started = time.perf_counter()
            await run_transcribe(manifest, folder / name.replace(" ", "_"), use_cache=False, **options)
            elapsed = time.perf_counter() - started
            base = base or elapsed
            print(f"  flow, {name:<24} {elapsed:7.2f} s (x{elapsed / base:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    args = parser.parse_args()
    parts_alone(args.audio)
    asyncio.run(flows(args.audio))


if __name__ == "__main__":
    main()
