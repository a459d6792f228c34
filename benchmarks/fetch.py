"""Benchmark: what the fetch policy (#11) costs a download, against a plain httpx download.

A real HTTP server on 127.0.0.1 serves a large file (real speech, repeated) and many small
ones. Three ways to fetch them, measured in the same run:

  1. plain httpx: one AsyncClient streaming the body to a file (no checks at all: the floor);
  2. `fetch()` unguarded (`addresses=None`): the downloader with its size cap, resumable
     `.part` file, minimum-rate check and deadline, as for a feed URL the operator typed;
  3. `fetch()` guarded, as for URLs inside data: the address check on every connection (the
     host resolved and checked, then connected to), here with AUDIOBATCH_ALLOW_PRIVATE_URLS's
     policy so that the loopback server passes the check after it is made.

Prints MB/s for the large file, milliseconds per small file, and the ratios; asserts nothing.

    .venv/bin/python benchmarks/fetch.py [--mb 256] [--files 200] [--repeat 3]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audiobatch.tasks.inputs.netguard import AddressPolicy  # noqa: E402
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy  # noqa: E402
from audiobatch.tasks.inputs.sources import fetch  # noqa: E402
from tests.helpers.data import SPEECH  # noqa: E402  (AUDIOBATCH_TEST_DATA overrides)


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def guess_type(self, path) -> str:  # noqa: ANN001 - http.server's signature
        return "audio/wav"


def make_files(folder: Path, mb: int, files: int) -> None:
    clip = (SPEECH / "derived__LJ001-0009_to_0032_concat.wav").read_bytes()
    with open(folder / "big.wav", "wb") as out:
        written = 0
        while written < mb * 1024 * 1024:
            out.write(clip)
            written += len(clip)
    small = clip[: 100 * 1024]
    for index in range(files):
        (folder / f"small-{index}.wav").write_bytes(small)


async def plain(url: str, target: Path) -> None:
    async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", url) as response:
        with open(target, "wb") as out:
            async for block in response.aiter_bytes():
                out.write(block)


async def with_policy(url: str, work: Path, policy: FetchPolicy) -> None:
    fetched = await fetch(url, work, policy, label="bench")
    fetched.path.unlink()
    fetched.path.with_name(fetched.path.name + ".json").unlink(missing_ok=True)


def timed(ways: dict, urls: list[str], work: Path, repeat: int) -> dict[str, float]:
    """Median seconds per way for fetching all `urls` one after the other."""
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeat):
        for name, way in ways.items():  # interleaved: load changes hit every way alike
            started = time.perf_counter()
            for index, url in enumerate(urls):
                asyncio.run(way(url, work / f"{name}-{index}"))
            results[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="audiobatch-fetch-bench-"))
    try:
        site, work = folder / "site", folder / "work"
        site.mkdir()
        work.mkdir()
        make_files(site, args.mb, args.files)
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        guarded = FetchPolicy(addresses=AddressPolicy(allow_private=True))
        unguarded = FetchPolicy(addresses=None)
        ways = {"plain httpx": plain,
                "fetch unguarded": lambda u, t: with_policy(u, t.parent, unguarded),
                "fetch guarded": lambda u, t: with_policy(u, t.parent, guarded)}
        size = (site / "big.wav").stat().st_size / 1e6
        big = timed(ways, [f"{base}/big.wav"], work, args.repeat)
        small = timed(ways, [f"{base}/small-{i}.wav" for i in range(args.files)], work, args.repeat)
        server.shutdown()
        print(f"one {size:.0f} MB file and {args.files} files of 100 KB over loopback, median of "
              f"{args.repeat}")
        print(f"{'':18} {'large MB/s':>11} {'vs plain':>9} {'small ms/file':>14} {'vs plain':>9}")
        for name in ways:
            print(f"{name:18} {size / big[name]:11.0f} {big['plain httpx'] / big[name]:9.2f} "
                  f"{small[name] / args.files * 1000:14.2f} {small['plain httpx'] / small[name]:9.2f}")
        print(f"guarded / unguarded time: large {big['fetch guarded'] / big['fetch unguarded']:.3f}, "
              f"small {small['fetch guarded'] / small['fetch unguarded']:.3f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
