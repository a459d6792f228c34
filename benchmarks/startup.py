"""Benchmark: what a one-clip `audiobatch transcribe` costs against the engine on that clip.

Every number is a whole process, as a user meets it (wall time from exec to exit):

  engine    a fresh Python process that decodes the clip and runs faster-whisper on it the way
            the embedded model does (imports, weights loading and inference included);
  warm      `audiobatch transcribe` on a one-row manifest, with the local background Prefect
            server already running (every run after the first);
  cold      the same when it has to start that server first (the first run);
  prefect   the flow called from Python with no API configured, so that Prefect starts its own
            temporary server for the process (what every CLI run did before the background
            server).

Prints seconds and ratios to the engine measured in the same run; asserts nothing.

    .venv/bin/python benchmarks/startup.py [--clips N] [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH = Path(os.environ.get("AUDIOBATCH_TEST_DATA", ROOT.parent / "shared" / "data")) / "speech" / "audio"
ENGINE = """
import sys
from pathlib import Path
from audiobatch.localmodel.engines import WHISPER_SAMPLE_RATE, shared_engines
from audiobatch.tasks.audio.codecs import decode
path = Path(sys.argv[1])
print(shared_engines().transcribe_blocking(decode(path, WHISPER_SAMPLE_RATE, label=path.name)))
"""
PREFECT_OWN = """
import asyncio, sys
from audiobatch.flows.common import summary_of
from audiobatch.flows.transcribe import transcribe_manifest
from audiobatch.tasks.options import TranscribeOptions
asyncio.run(summary_of(transcribe_manifest(sys.argv[1], out=sys.argv[2], return_state=True,
    options=TranscribeOptions.from_flat(use_cache=False, progress=False))))
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="English clips of the corpus to use")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each, alternating; a clip's figure is their median")
    args = parser.parse_args()
    clips = sorted(p for p in SPEECH.iterdir() if p.suffix in (".wav", ".flac")
                   and "ru" not in p.stem and "chinese" not in p.stem)[:: max(1, 24 // args.clips)][:args.clips]
    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-startup-") as folder:
        env = {**os.environ, "AUDIOBATCH_STATE_DIR": f"{folder}/state", "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        cli = [sys.executable, "-m", "audiobatch.flows.cli"]

        def job(clip: Path, tag: str) -> list[str]:
            manifest = Path(folder) / f"{tag}.csv"
            manifest.write_text(f"audio\n{clip}\n")
            return [*cli, "transcribe", str(manifest), "--out", f"{folder}/out-{tag}", "--no-cache",
                    "--no-progress"]

        cold = timed(job(clips[0], "cold"), env)
        rows = []
        for i, clip in enumerate(clips):
            engines, warms = [], []
            for r in range(args.repeat):  # alternating, so both meet the same moments of load
                engines.append(timed([sys.executable, "-c", ENGINE, str(clip)], env))
                warms.append(timed(job(clip, f"warm{i}-{r}"), env))
            rows.append((clip.name, statistics.median(engines), statistics.median(warms)))
        subprocess.run([*cli, "server", "stop"], env=env, check=True, stdout=subprocess.DEVNULL)
        manifest = Path(folder) / "own.csv"
        manifest.write_text(f"audio\n{clips[0]}\n")
        own = timed([sys.executable, "-c", PREFECT_OWN, str(manifest), f"{folder}/out-own"],
                    {**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})

    print(f"{'clip':<58} {'engine s':>8} {'warm s':>7} {'warm/engine':>11}")
    for name, engine, warm in rows:
        print(f"{name:<58} {engine:>8.2f} {warm:>7.2f} {warm / engine:>11.2f}")
    engine0 = rows[0][1]
    median = statistics.median(warm / engine for _, engine, warm in rows)
    print(f"median warm/engine: {median:.2f} (target <= 2.5)")
    print(f"first clip, cold (starts the background server): {cold:.2f} s = {cold / engine0:.2f}x engine")
    print(f"first clip, Prefect's own temporary server:      {own:.2f} s = {own / engine0:.2f}x engine")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
