"""Benchmark: audio preparation (tasks.audio.prepare.prepare_chunks) against a bare decode of the same file.

Builds a long recording (default about 3 hours) by encoding real speech from the shared test
data over and over, block by block, so it is never held in memory; then times

  1. a bare `tasks.audio.codecs.iter_decoded` pass (the floor: decoding and resampling only), and
  2. `prepare_chunks` (decode + pause search + loudness + writing 16-bit wav chunks),

and prints the time ratio, x real time and the peak memory of each (tracemalloc peak, and the
growth of peak RSS during the pass). Each pass runs in its own process; times come from runs
without tracemalloc (it slows allocation-heavy code). Prints numbers; asserts nothing.

    .venv/bin/python benchmarks/prepare.py [--minutes 180] [--format flac|mp3] [--max-chunk-s 409]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audiobatch.tasks.audio.prepare import max_chunk_seconds, prepare_chunks  # noqa: E402
from audiobatch.tasks.audio.codecs import decode, iter_decoded  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech" / "audio" / "derived__LJ001-0009_to_0032_concat.wav"
_CODECS = {"flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame")}


def write_repeated_speech(path: Path, seconds: float, fmt: str = "flac", sample_rate: int = 16000,
                          speech: Path = SPEECH) -> Path:
    """Write `seconds` of real speech (one clip repeated) as flac or mp3, 10 s at a time."""
    clip = decode(speech, sample_rate, label=str(speech))
    container_format, codec = _CODECS[fmt]
    total = round(seconds * sample_rate)
    block = 10 * sample_rate
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=sample_rate)
        for done in range(0, total, block):
            n = min(block, total - done)
            offset = done % len(clip)
            piece = np.take(clip, np.arange(offset, offset + n), mode="wrap")
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = sample_rate
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        for out in resampler.resample(None):
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    return path


def bare_decode(path: Path) -> dict:
    return {"samples": sum(len(block) for block in iter_decoded(path, 16000, label=path.name))}


def pyav_decode(path: Path) -> dict:
    """PyAV's own idiom, as faster-whisper's `decode_audio` writes it: every decoded frame
    through an `av.AudioResampler` to 16 kHz mono float, streaming."""
    samples = 0
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            samples += sum(out.samples for out in resampler.resample(frame))
        samples += sum(out.samples for out in resampler.resample(None))
    return {"samples": samples}


def prepare(path: Path, max_chunk_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-chunks-") as work:
        prepared = prepare_chunks(path, Path(work), max_chunk_s=max_chunk_s, label=path.name)
    return {"samples": round(prepared.duration_s * 16000), "chunks": len(prepared.chunks)}


class RssSampler:
    """Highest resident set size seen while running (sampled every 5 ms in a thread)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline_mb = self.process.memory_info().rss / 1e6
        self.peak_mb = self.baseline_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 1e6)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_here(what: str, path: Path, max_chunk_s: float, trace: bool) -> dict:
    """Run one pass in this (fresh) process: time and peak-RSS growth, or tracemalloc peak."""
    run = {"decode": lambda: bare_decode(path), "pyav": lambda: pyav_decode(path),
           "prepare": lambda: prepare(path, max_chunk_s)}[what]
    if trace:
        tracemalloc.start()
    with RssSampler() as rss:
        started = time.perf_counter()
        result = run()
        result["seconds"] = time.perf_counter() - started
    if trace:
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    result["rss_growth_mb"] = rss.peak_mb - rss.baseline_mb
    return result


def measure(what: str, path: Path, max_chunk_s: float, trace: bool) -> dict:
    """measure_here in a child process, so that one pass's peak RSS does not hide the other's."""
    command = [sys.executable, __file__, "--measure", what, "--max-chunk-s", str(max_chunk_s),
               *(["--trace"] if trace else []), str(path)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(source: Path, fmt: str, max_chunk_s: float) -> None:
    decode_run = measure("decode", source, max_chunk_s, trace=False)
    prepare_run = measure("prepare", source, max_chunk_s, trace=False)
    decode_peak = measure("decode", source, max_chunk_s, trace=True)["tracemalloc_peak_mb"]
    prepare_peak = measure("prepare", source, max_chunk_s, trace=True)["tracemalloc_peak_mb"]
    audio_s = decode_run["samples"] / 16000
    decoded_mb = decode_run["samples"] * 4 / 1e6
    chunk_mb = max_chunk_s * 16000 * 4 / 1e6
    decode_s, prepare_s = decode_run["seconds"], prepare_run["seconds"]
    print(f"audio: {audio_s / 60:.1f} min of {fmt}; decoded whole it would be {decoded_mb:.0f} MB "
          f"float32; one {max_chunk_s:.0f} s chunk is {chunk_mb:.1f} MB; {prepare_run['chunks']} chunks")
    for name, run, peak in (("bare decode", decode_run, decode_peak),
                            ("prepare_chunks", prepare_run, prepare_peak)):
        print(f"{name:15s} {run['seconds']:7.2f} s {audio_s / run['seconds']:6.0f}x real time   "
              f"tracemalloc peak {peak:6.1f} MB   peak RSS growth {run['rss_growth_mb']:6.1f} MB")
    print(f"ratios: prepare / decode time {prepare_s / decode_s:.2f}; prepare tracemalloc peak / "
          f"one chunk {prepare_peak / chunk_mb:.2f}; / whole decoded file {prepare_peak / decoded_mb:.3f}; "
          f"prepare RSS growth / whole decoded file {prepare_run['rss_growth_mb'] / decoded_mb:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=180.0)
    parser.add_argument("--format", choices=sorted(_CODECS), default="flac")
    parser.add_argument("--max-chunk-s", type=float, default=max_chunk_seconds(4096, 10.0),
                        help="chunk limit (default: the 4096-token budget at 10 tokens/s)")
    parser.add_argument("--keep", type=Path, help="reuse / keep the generated file at this path")
    parser.add_argument("--measure", choices=["decode", "pyav", "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # child process of `measure`
        print(json.dumps(measure_here(args.measure, args.path, args.max_chunk_s, args.trace)))
        return
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-") as tmp:
        source = args.keep or Path(tmp) / f"long.{args.format}"
        if not source.exists():
            started = time.perf_counter()
            write_repeated_speech(source, args.minutes * 60, args.format)
            print(f"generated {source} ({source.stat().st_size / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - started:.1f} s")
        report(source, args.format, args.max_chunk_s)


if __name__ == "__main__":
    main()
