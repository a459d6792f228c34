"""Benchmark: issue 12's figures, in one run, each as a whole `audiobatch transcribe` process
against a model stub in its own process (tests/helpers/stubmodel.py), as a user meets them.

  1. long files: a 1-second and a long (default 3-hour) mp3 of real speech, stub answering at
     once. Per hour of audio, the run's cost (3 h run minus 1 s run) against a bare PyAV
     decode of the same file (target >= 0.5): PyAV's own idiom (frames through
     av.AudioResampler to 16 kHz mono, as faster-whisper decodes), and, stricter, audiobatch's
     decoder (tasks.audio.codecs.iter_decoded, which joins frames before converting them and skips
     the resampler for mono audio at the rate); peak RSS growth from 1 s to 3 h (target
     < 150 MB); time to the first request as a share of the run (target < 30%).
  2. 96 short items (3 s of distinct real speech each) at --concurrency 16 against a stub
     with 2 s latency: ideal time (96 / 16 x 2 s) over the flow's wall time (target >= 0.9).
  3. a 100,000-row manifest whose files are all missing (target: under 5 minutes).
  4. 10,000 distinct one-second clips against the instant stub (target >= 100 items/s).

Transcript QA and word alignment are off (--no-qa --no-word-times): both run the embedded
Whisper on every chunk of a remote model's reply, which is not the pipeline's overhead but a
second model. Prints numbers, the load average around each, and ratios; asserts nothing.

    .venv/bin/python benchmarks/scale.py [--hours 3] [--short 96] [--missing 100000] [--clips 10000]
                                         [--only long short missing clips]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import prepare as prepare_bench  # noqa: E402  (benchmarks/prepare.py)

from tests.helpers.clips import distinct_clips  # noqa: E402

FAST = ["--no-qa", "--no-word-times", "--no-cache", "--no-progress", "--json",
        "--model", "gpt-audio-1.5"]


class Stub:
    """tests.helpers.stubmodel in its own process; `arrivals()` reads its request log."""

    def __init__(self, folder: Path, latency_s: float = 0.0) -> None:
        self.log = folder / f"stub-{latency_s:g}.jsonl"
        self.process = subprocess.Popen([sys.executable, "-m", "tests.helpers.stubmodel",
                                         "--latency-s", str(latency_s), "--log", str(self.log)],
                                        cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().split()[-1]

    def arrivals(self) -> list[float]:
        if not self.log.exists():
            return []
        return [json.loads(line)["t"] for line in self.log.read_text().splitlines() if line]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def run_audiobatch(manifest: Path, out: Path, base_url: str, *extra: str) -> dict:
    """One `audiobatch transcribe` process: its summary, wall time and peak RSS (sampled)."""
    command = [str(ROOT / ".venv" / "bin" / "audiobatch"), "transcribe", str(manifest), "--out", str(out),
               "--base-url", base_url, *FAST, *extra]
    load = os.getloadavg()[0]
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], watched.memory_info().rss / 1e6)
            except psutil.Error:
                break
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    ended = time.time()
    sampler.join()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"audiobatch failed ({process.returncode}): {stderr[-3000:]}")
    summary = json.loads(stdout[stdout.index("{"):])
    return {"summary": summary, "started": started, "ended": ended, "wall_s": ended - started,
            "peak_rss_mb": peak[0], "load": (load + os.getloadavg()[0]) / 2}


def warm_up(folder: Path, base_url: str) -> None:
    """One tiny run first: starts the background Prefect server the other runs reuse."""
    clip = distinct_clips(folder / "warm", 1)[0]
    manifest = folder / "warm.csv"
    manifest.write_text(f"id,audio\nwarm,{clip}\n")
    run_audiobatch(manifest, folder / "out-warm", base_url)


def long_files(folder: Path, stub: Stub, hours: float) -> None:
    long_mp3 = prepare_bench.write_repeated_speech(folder / "long.mp3", hours * 3600, fmt="mp3")
    short_mp3 = prepare_bench.write_repeated_speech(folder / "short.mp3", 1.0, fmt="mp3")
    pyav = prepare_bench.measure("pyav", long_mp3, 409.0, trace=False)
    decode = prepare_bench.measure("decode", long_mp3, 409.0, trace=False)
    runs = {}
    for name, path in (("1 s", short_mp3), (f"{hours:g} h", long_mp3)):
        manifest = folder / f"{name.replace(' ', '')}.csv"
        manifest.write_text(f"id,audio\nfile,{path}\n")
        before = len(stub.arrivals())
        run = run_audiobatch(manifest, folder / f"out-{name.replace(' ', '')}", stub.base_url)
        first = stub.arrivals()[before]
        run["first_request_share"] = (first - run["started"]) / run["wall_s"]
        runs[name] = run
        print(f"{name:>5}: run {run['wall_s']:7.2f} s (flow {run['summary']['wall_s']:.2f} s), "
              f"{run['summary']['requests']} requests, peak RSS {run['peak_rss_mb']:.0f} MB, first "
              f"request at {first - run['started']:.2f} s = {run['first_request_share']:.0%} of the "
              f"run; load {run['load']:.1f}", flush=True)
    short, long = runs["1 s"], runs[f"{hours:g} h"]
    per_hour = (long["wall_s"] - short["wall_s"]) / hours
    pyav_per_hour, decode_per_hour = pyav["seconds"] / hours, decode["seconds"] / hours
    print(f"bare decode of the {hours:g} h mp3: PyAV's idiom {pyav['seconds']:.2f} s, audiobatch's "
          f"decoder {decode['seconds']:.2f} s")
    print(f"RESULT long files: per-hour cost {per_hour:.2f} s vs a bare PyAV decode {pyav_per_hour:.2f} s: "
          f"ratio {pyav_per_hour / per_hour:.2f} (target >= 0.5); vs audiobatch's own decoder "
          f"{decode_per_hour:.2f} s: {decode_per_hour / per_hour:.2f}; peak RSS growth 1 s -> "
          f"{hours:g} h {long['peak_rss_mb'] - short['peak_rss_mb']:.0f} MB (target < 150); first "
          f"request at {long['first_request_share']:.0%} of the {hours:g} h run (target < 30%)", flush=True)


def short_items(folder: Path, count: int, concurrency: int = 16, latency_s: float = 2.0) -> None:
    stub = Stub(folder, latency_s)
    try:
        clips = distinct_clips(folder / "short-clips", count, seconds=3.0)
        manifest = folder / "short.csv"
        manifest.write_text("id,audio\n" + "".join(f"{p.stem},{p}\n" for p in clips))
        run = run_audiobatch(manifest, folder / "out-short", stub.base_url,
                             "--concurrency", str(concurrency))
    finally:
        stub.close()
    ideal = -(-count // concurrency) * latency_s
    flow_s = run["summary"]["wall_s"]
    print(f"RESULT {count} short items at concurrency {concurrency}, {latency_s:g} s latency: flow "
          f"{flow_s:.2f} s (process {run['wall_s']:.2f} s), ideal {ideal:.1f} s: {ideal / flow_s:.2f} "
          f"of ideal (target >= 0.9); load {run['load']:.1f}", flush=True)


def missing_rows(folder: Path, stub: Stub, count: int) -> None:
    manifest = folder / "missing.csv"
    manifest.write_text("id,audio\n" + "".join(f"r{i},/nonexistent/clip{i}.wav\n" for i in range(count)))
    run = run_audiobatch(manifest, folder / "out-missing", stub.base_url)
    print(f"RESULT {count:,} rows, all files missing: process {run['wall_s']:.1f} s (flow "
          f"{run['summary']['wall_s']:.1f} s, {count / run['summary']['wall_s']:.0f} rows/s; target "
          f"< 300 s); peak RSS {run['peak_rss_mb']:.0f} MB; load {run['load']:.1f}", flush=True)


def clip_items(folder: Path, stub: Stub, count: int) -> None:
    clips = distinct_clips(folder / "clips", count)
    manifest = folder / "clips.csv"
    manifest.write_text("id,audio\n" + "".join(f"{p.stem},{p}\n" for p in clips))
    run = run_audiobatch(manifest, folder / "out-clips", stub.base_url, "--concurrency", "16")
    cpu = psutil.cpu_count()
    print(f"RESULT {count:,} distinct 1 s clips, instant stub: flow {run['summary']['wall_s']:.1f} s = "
          f"{count / run['summary']['wall_s']:.0f} items/s (process {run['wall_s']:.1f} s; target >= "
          f"100 items/s); {run['summary']['ok']} ok; peak RSS {run['peak_rss_mb']:.0f} MB; load "
          f"{run['load']:.1f} on {cpu} CPUs", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--short", type=int, default=96)
    parser.add_argument("--missing", type=int, default=100_000)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--only", nargs="+", choices=["long", "short", "missing", "clips"])
    args = parser.parse_args(argv)
    parts = set(args.only or ["long", "short", "missing", "clips"])
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-scale-") as tmp:
        folder = Path(tmp)
        os.environ["AUDIOBATCH_STATE_DIR"] = str(folder / "state")  # a background server of its own
        stub = Stub(folder)
        try:
            warm_up(folder, stub.base_url)
            if "long" in parts:
                long_files(folder, stub, args.hours)
            if "short" in parts:
                short_items(folder, args.short)
            if "missing" in parts:
                missing_rows(folder, stub, args.missing)
            if "clips" in parts:
                clip_items(folder, stub, args.clips)
        finally:
            stub.close()
            subprocess.run([str(ROOT / ".venv" / "bin" / "audiobatch"), "server", "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
