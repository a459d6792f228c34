"""Benchmark: speaker labels (--speakers) - accuracy, speed and memory, on recordings built from
the shared speech with exact truth (tests/helpers/conversations.py: turns of different readers,
pauses, 15% of turns overlapping the one before).

Prints:
  1. accuracy and engine speed: DER (0.25 s collar, overlap scored), speaker-count accuracy, and
     CPU seconds and wall seconds per audio second of the diarization engine, per set of
     recordings (2, 3 and 4 readers);
  2. the whole process: `audiobatch transcribe` (embedded model, no result cache) on one long
     conversation, with and without --speakers auto, alternated and repeated: wall time, CPU
     (user+sys) and peak RSS of the process, and their ratios (with / without);
  3. memory against length: the engine alone in a fresh process on a short and a long recording
     (peak RSS of each process, and the difference).
Machine load (`os.getloadavg`) is printed with each part. Asserts nothing.

    .venv/bin/python benchmarks/speakers.py [--recordings 4] [--long-minutes 5] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402

from tests.helpers.conversations import RATE, conversation, der, write_conversation  # noqa: E402

SETS = {"2 readers": (["LJ", "Austen", "JFK", "AN4"], 2, 90),
        "3 readers": (["LJ", "Austen", "JFK", "AN4", "Cards"], 3, 120),
        "4 readers": (["LJ", "Austen", "JFK", "AN4", "Cards", "RU"], 4, 150)}
LONG_READERS = ["LJ", "Austen", "JFK", "AN4"]
# The embedded model answers one request at a time: on a busy machine 4 requests of 6.8 min
# waiting for it outlast the default 120 s timeout, so requests are shorter and waited for longer.
PATIENT = ["--max-audio-tokens", "1200", "--timeout-s", "900"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min: {five:.1f}) on {os.cpu_count()} CPUs"


def accuracy(recordings: int) -> None:
    from audiobatch.localmodel.diarization.engine import ArraySamples, SpeakerEngine

    diarizer = SpeakerEngine().diarizer()
    print(f"1. accuracy and engine speed, {recordings} recordings per set ({load()})")
    print(f"   {'set':<10} {'DER':>6} {'count ok':>9} {'CPU s/s':>8} {'wall s/s':>9}")
    for name, (pool, size, seconds) in SETS.items():
        errors = speech = audio_s = cpu = wall = 0.0
        right = 0
        for seed in range(recordings):
            rng = np.random.default_rng(1000 + seed)
            readers = list(rng.choice(pool, size=size, replace=False))
            audio, truth = conversation(readers, seconds, seed=1000 + seed)
            duration = len(audio) / RATE
            started, started_cpu = time.perf_counter(), time.process_time()
            turns = diarizer.diarize(ArraySamples(audio))
            wall += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            true_s = sum(end - start for start, end, _ in truth)
            errors += der(truth, turns, duration) * true_s
            speech += true_s
            audio_s += duration
            right += len({t[2] for t in turns}) == size
        print(f"   {name:<10} {errors / speech:>6.1%} {right / recordings:>9.0%} "
              f"{cpu / audio_s:>8.3f} {wall / audio_s:>9.3f}")


# Linux keeps a process's peak RSS across exec, so a child forked from this (large) process would
# report this one's size: a small launcher starts the command and reports the command's own usage.
LAUNCHER = """import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"status": status, "wall_s": time.perf_counter() - started,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
                  "stderr": child.stderr.read().decode(errors="replace")[-2000:]}))
"""


def _measured(command: list[str]) -> dict:
    """Run `command`: its wall time, CPU time (user+sys) and peak RSS (MB)."""
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ}, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    if measured.pop("status"):
        sys.exit(f"{command[:3]} failed: {measured['stderr']}")
    return measured


def whole_process(minutes: float, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-speakers-") as folder:
        audio = Path(folder) / "long.wav"
        write_conversation(audio, LONG_READERS, minutes * 60, seed=7)
        manifest = Path(folder) / "m.csv"
        manifest.write_text(f"id,audio\nlong,{audio}\n")
        seconds = len(__import__("soundfile").read(audio)[0]) / RATE
        print(f"\n2. whole process: audiobatch transcribe on {seconds / 60:.1f} min of "
              f"{len(LONG_READERS)} readers, embedded model, no cache ({load()})")
        runs: dict[str, list[dict]] = {"without": [], "with": []}
        for repeat in range(repeats):
            for label, extra in (("without", []), ("with", ["--speakers", "auto"])):
                out = Path(folder) / f"out-{label}-{repeat}"
                command = [str(Path(sys.executable).parent / "audiobatch"), "transcribe", str(manifest),
                           "--out", str(out), "--no-cache", "--no-progress", *PATIENT, *extra]
                runs[label].append(_measured(command))
                print(f"   {label:<8} speakers: wall {runs[label][-1]['wall_s']:6.1f} s, "
                      f"CPU {runs[label][-1]['cpu_s']:6.1f} s, peak RSS {runs[label][-1]['rss_mb']:5.0f} MB "
                      f"({load()})", flush=True)
        # each pair ran back to back: its ratios; on a busy machine the transcription's own CPU
        # time moves by tens of percent between identical runs, so read them side by side
        for repeat, (plain, labelled) in enumerate(zip(runs["without"], runs["with"])):
            print(f"   pair {repeat + 1}, with/without: wall {labelled['wall_s'] / plain['wall_s']:.2f}, "
                  f"CPU {labelled['cpu_s'] / plain['cpu_s']:.2f} "
                  f"({(labelled['cpu_s'] - plain['cpu_s']) / seconds:+.3f} CPU s per audio s), "
                  f"peak RSS {labelled['rss_mb'] / plain['rss_mb']:.2f} "
                  f"({labelled['rss_mb'] - plain['rss_mb']:+.0f} MB)")


def engine_only(path: Path) -> None:
    """The child of part 3: diarize one file with the engine (as the pipeline does), print JSON."""
    from audiobatch.localmodel.diarization.engine import SpeakerEngine

    started, started_cpu = time.perf_counter(), time.process_time()
    turns = SpeakerEngine().turns_blocking(path, None, path.name)
    print(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - started_cpu,
                      "speakers": len({t[2] for t in turns})}))


def memory_against_length(short_minutes: float, long_minutes: float) -> None:
    print(f"\n3. memory against length: the engine alone in a fresh process ({load()})")
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-speakers-") as folder:
        results = {}
        for minutes in (short_minutes, long_minutes):
            path = Path(folder) / f"{minutes:g}.wav"
            write_conversation(path, LONG_READERS, minutes * 60, seed=11)
            measured = _measured([sys.executable, __file__, "--engine-only", str(path)])
            results[minutes] = measured
            print(f"   {minutes:>5g} min: peak RSS {measured['rss_mb']:5.0f} MB, CPU {measured['cpu_s']:6.1f} s "
                  f"({measured['cpu_s'] / (minutes * 60):.3f} per audio s), wall {measured['wall_s']:6.1f} s", flush=True)
        grown = results[long_minutes]["rss_mb"] - results[short_minutes]["rss_mb"]
        print(f"   {long_minutes / short_minutes:g}x the audio: peak RSS {grown:+.0f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=4, help="recordings per set (part 1; 0: skip it)")
    parser.add_argument("--long-minutes", type=float, default=5, help="the whole-process recording (part 2; 0: skip it)")
    parser.add_argument("--repeats", type=int, default=2, help="runs with and without speakers (part 2)")
    parser.add_argument("--memory-minutes", type=float, nargs=2, default=(5, 30), help="part 3's two lengths")
    parser.add_argument("--engine-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_only:
        return engine_only(args.engine_only)
    if args.recordings:
        accuracy(args.recordings)
    if args.long_minutes:
        whole_process(args.long_minutes, args.repeats)
    memory_against_length(*args.memory_minutes)


if __name__ == "__main__":
    main()
