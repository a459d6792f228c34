"""Benchmark: what transcript QA (judged against the audio, issue 24) and word times cost.

Each run is a whole `audiobatch transcribe` process, as a user meets it; its CPU time
(user + sys, from the kernel's accounting of the waited child) is what the local work costs,
since the model runs in another process.

  1. A clean run: the held-out clips (tests/helpers/heldout.py) and the 171 s LJ reading,
     transcribed by a well-behaved remote model (the embedded model served by `audiobatch
     serve` in its own process, behind tests/helpers/misbehaving.py's proxy with no
     misbehaviour, called gpt-audio-mini). QA and word times off / QA only / word times only /
     both (the default): requests, wall time, and the local CPU seconds per second of audio
     that QA and word times add (target: at most 0.05).
  2. Issue 24's example: 96 short clips (3 s of distinct speech) at --concurrency 16 against a
     model stub with 2 s latency that answers every clip with text that is not in it
     (benchmarks/scale.py's stub): the default run against --no-qa --no-word-times.

Prints figures and ratios; asserts nothing.

    .venv/bin/python benchmarks/qa_agreement.py [--only clean short]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from scale import Stub  # noqa: E402  (benchmarks/scale.py)

from audiobatch.tasks.audio.codecs import probe  # noqa: E402
from tests.helpers.clips import distinct_clips  # noqa: E402
from tests.helpers.data import SPEECH  # noqa: E402
from tests.helpers.heldout import HELD_OUT  # noqa: E402
from tests.helpers.localserver import server_process  # noqa: E402
from tests.helpers.misbehaving import MODEL_NAME, misbehaving_model  # noqa: E402

SETTINGS = {"off": ["--no-qa", "--no-word-times"], "QA only": ["--no-word-times"],
            "word times only": ["--no-qa"], "both (default)": []}


def transcribe(manifest: Path, out: Path, base_url: str, *extra: str) -> dict:
    """One `audiobatch transcribe` process: its summary, wall time and CPU time."""
    command = [str(ROOT / ".venv" / "bin" / "audiobatch"), "transcribe", str(manifest), "--out",
               str(out), "--base-url", base_url, "--model", MODEL_NAME, "--no-cache",
               "--no-progress", "--json", "--timeout-s", "600", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"audiobatch failed ({done.returncode}): {done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"summary": summary, "wall_s": wall, "cpu_s": cpu, "load": (load + os.getloadavg()[0]) / 2}


def clean(folder: Path) -> None:
    files = [SPEECH / name for name in HELD_OUT] + [SPEECH / "derived__LJ001-0009_to_0032_concat.wav"]
    seconds = sum(probe(str(f), f.name).duration_s or 0.0 for f in files)
    manifest = folder / "clean.csv"
    manifest.write_text("id,audio\n" + "".join(f"{f.stem},{f}\n" for f in files))
    with server_process([]) as (upstream, _), misbehaving_model(share=0.0, upstream_url=upstream) as model:
        transcribe(manifest, folder / "warm", model.base_url)  # the background Prefect server
        runs = {name: transcribe(manifest, folder / name.replace(" ", "-"), model.base_url, *flags)
                for name, flags in SETTINGS.items()}
    base = runs["off"]
    print(f"\n1. clean run: {len(files)} files, {seconds:.0f} s of audio, a well-behaved remote model")
    for name, run in runs.items():
        extra = (run["cpu_s"] - base["cpu_s"]) / seconds
        print(f"  {name:<16} requests {run['summary']['requests']:>3}, wall {run['wall_s']:6.1f} s "
              f"(x{run['wall_s'] / base['wall_s']:.2f}), CPU {run['cpu_s']:6.1f} s, added CPU "
              f"{extra:.4f} s per audio s; load {run['load']:.1f}", flush=True)


def short(folder: Path, count: int = 96) -> None:
    stub = Stub(folder, latency_s=2.0)
    try:
        clips = distinct_clips(folder / "short-clips", count, seconds=3.0)
        manifest = folder / "short.csv"
        manifest.write_text("id,audio\n" + "".join(f"{p.stem},{p}\n" for p in clips))
        transcribe(manifest, folder / "warm-short", stub.base_url, *SETTINGS["off"])
        off = transcribe(manifest, folder / "short-off", stub.base_url, "--concurrency", "16",
                         *SETTINGS["off"])
        default = transcribe(manifest, folder / "short-default", stub.base_url, "--concurrency", "16")
    finally:
        stub.close()
    print(f"\n2. {count} clips of 3 s, concurrency 16, a 2 s model answering text not in them "
          f"(calls alone: {-(-count // 16) * 2} s)")
    for name, run in (("QA and word times off", off), ("default", default)):
        print(f"  {name:<22} requests {run['summary']['requests']:>3}, wall {run['wall_s']:6.1f} s, "
              f"CPU {run['cpu_s']:6.1f} s ({run['cpu_s'] / (count * 3):.3f} per audio s); "
              f"load {run['load']:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["clean", "short"], default=["clean", "short"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "clean" in args.only:
            clean(Path(tmp))
        if "short" in args.only:
            short(Path(tmp))


if __name__ == "__main__":
    main()
