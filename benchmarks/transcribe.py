"""Benchmark: the transcription pipeline against the engine it drives, on the same audio.

Prints, for one recording measured in one run:

  1. end to end: the `transcribe-manifest` flow (manifest -> fetch -> prepare -> requests to the
     embedded model over the wire contract -> assemble -> Parquet, SRT, VTT) against
     faster-whisper's own transcription of the same file decoded at 16 kHz (inference alone:
     the floor any pipeline around this engine can reach);
  2. prepare: `prepare_chunks` against a bare PyAV decode of the same file (the passes of
     benchmarks/prepare.py, each in its own process);
  3. peak memory of prepare on a generated long recording (default 3 hours), by
     benchmarks/prepare.py's report. `benchmarks/run_all.py` skips this part because it runs
     prepare.py itself.

Prints numbers and ratios; asserts nothing. Warm-up (Prefect's temporary server, loading the
engines) happens before anything is timed.

    .venv/bin/python benchmarks/transcribe.py [--audio FILE | --minutes N] [--long-minutes 180]
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
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")

import prepare as prepare_bench  # noqa: E402  (benchmarks/prepare.py)

from audiobatch.tasks.audio.prepare import max_chunk_seconds  # noqa: E402
from audiobatch.tasks.options import TranscribeOptions
from audiobatch.tasks.audio.codecs import decode  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech" / "audio"
DEFAULT_AUDIO = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"  # 171 s of read speech
WARM_UP_AUDIO = SPEECH / "pocketsphinx__goforward.wav"


def write_manifest(folder: Path, audio: Path) -> Path:
    manifest = folder / "manifest.csv"
    manifest.write_text(f"id,audio\nbench,{audio}\n", encoding="utf-8")
    return manifest


async def run_flow(audio: Path, folder: Path) -> dict:
    """One real flow run (embedded model, no result cache: every request is made)."""
    from audiobatch.flows.transcribe import transcribe_manifest

    return await transcribe_manifest(manifest=str(write_manifest(folder, audio)), out=str(folder / "out"),
                                     options=TranscribeOptions.from_flat(use_cache=False, progress=False))


def time_flow(audio: Path) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-flow-") as folder:
        started = time.perf_counter()
        summary = asyncio.run(run_flow(audio, Path(folder)))
        return time.perf_counter() - started, summary


def time_engine(audio: Path) -> float:
    """faster-whisper on the whole file, as the embedded model runs it, with no pipeline."""
    from audiobatch.localmodel.engines import WHISPER_SAMPLE_RATE, shared_engines

    started = time.perf_counter()
    samples = decode(audio, WHISPER_SAMPLE_RATE, label=audio.name)
    shared_engines().transcribe_blocking(samples)
    return time.perf_counter() - started


def end_to_end(audio: Path) -> None:
    time_flow(WARM_UP_AUDIO)  # starts Prefect's temporary server and loads the engines
    audio_s = decode(audio, 16000, label=audio.name).size / 16000
    engine_s = time_engine(audio)
    flow_s, summary = time_flow(audio)
    print(f"audio: {audio.name}, {audio_s:.1f} s; the flow made {summary['requests']} request(s)")
    for name, seconds in (("engine alone (decode + faster-whisper)", engine_s),
                          ("transcribe-manifest flow, end to end", flow_s)):
        print(f"{name:38s} {seconds:7.2f} s  {audio_s / seconds:5.1f}x real time")
    print(f"ratio flow / engine {flow_s / engine_s:.3f}; pipeline overhead {flow_s - engine_s:+.2f} s "
          f"({(flow_s - engine_s) / audio_s * 3600:+.0f} s per hour of audio)")


def prepare_against_decode(audio: Path) -> None:
    max_chunk_s = max_chunk_seconds(4096, 10.0)
    decode_run = prepare_bench.measure("decode", audio, max_chunk_s, trace=False)
    prepare_run = prepare_bench.measure("prepare", audio, max_chunk_s, trace=False)
    audio_s = decode_run["samples"] / 16000
    print(f"bare PyAV decode to 16 kHz mono     {decode_run['seconds']:7.3f} s  "
          f"{audio_s / decode_run['seconds']:6.0f}x real time")
    print(f"prepare_chunks (decode, levels, cut, loudness, write) {prepare_run['seconds']:7.3f} s  "
          f"{audio_s / prepare_run['seconds']:6.0f}x real time")
    print(f"ratio prepare / decode {prepare_run['seconds'] / decode_run['seconds']:.2f}")


def long_file_memory(minutes: float) -> None:
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-long-") as folder:
        source = prepare_bench.write_repeated_speech(Path(folder) / "long.flac", minutes * 60, "flac")
        prepare_bench.report(source, "flac", max_chunk_seconds(4096, 10.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--minutes", type=float,
                        help="instead of --audio, generate this much speech (the LJ clip repeated)")
    parser.add_argument("--long-minutes", type=float, default=180.0,
                        help="length of the generated file for the memory figures (0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-audio-") as folder:
        audio = args.audio
        if args.minutes:
            audio = prepare_bench.write_repeated_speech(Path(folder) / "speech.flac",
                                                        args.minutes * 60, "flac")
        print("== end to end: flow against the engine alone ==", flush=True)
        end_to_end(audio)
        print("\n== prepare against a bare decode (same file) ==", flush=True)
        prepare_against_decode(audio)
    if args.long_minutes > 0:
        print(f"\n== prepare on a generated {args.long_minutes:.0f}-minute file ==", flush=True)
        long_file_memory(args.long_minutes)


if __name__ == "__main__":
    main()
