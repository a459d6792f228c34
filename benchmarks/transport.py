"""Benchmark: the model client's own HTTP/1.1 transport (tasks/model/http11.py) against httpx's
own (httpcore), against a realistic endpoint (issue 23: keep it, or replace it).

The endpoint is the model stub (tests/helpers/stubmodel.py) in its own process, answering each
chat completion after `--latency-s` (default 1 s, a real endpoint's pace); the client sends a
one-second clip's request (a 16 kHz wav, ~43 KB of JSON) `--requests` times at `--concurrency`
(default 150 at 5: ~300 requests a minute), through `ModelClient` as a run does. The two
transports alternate, `--repeat` times each, so both meet the same machine load. Also, with
`--fast`, against the stub answering at once (what #12 measured: CPU is then all that counts).

Prints, per run: wall time, requests a minute, this process's CPU time (user+sys) per request;
then the medians and the ratios httpx's own / http11. Then each transport against the two hostile
answers of the issue (raw sockets on 127.0.0.1): an unasked second answer in the same TCP write
as the asked one, and a 20 KiB head in one read. Asserts nothing.

    .venv/bin/python benchmarks/transport.py [--requests 150] [--concurrency 5] [--latency-s 1]
                                             [--repeat 3] [--fast]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audiobatch.tasks.audio import codecs  # noqa: E402
from audiobatch.tasks.model.client import ClientSettings, ModelClient  # noqa: E402
from audiobatch.tasks.model.http11 import Http11Transport  # noqa: E402

TRANSPORTS = {"http11": lambda n: Http11Transport(max_idle=n),
              "httpx": lambda n: httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=n))}


def start_stub(latency_s: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.helpers.stubmodel", "--latency-s", str(latency_s)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().split()[-1]  # type: ignore[union-attr]


async def run_once(kind: str, base_url: str, clip: bytes, requests: int, concurrency: int) -> dict:
    settings = ClientSettings(base_url=base_url, api_key="sk-bench", concurrency=concurrency,
                              model="gpt-audio-1.5")
    async with ModelClient(settings, transport=TRANSPORTS[kind](concurrency)) as client:
        await client.transcribe(clip, "wav")  # connect and warm up outside the measurement
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client.transcribe(clip, "wav") for _ in range(requests)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"kind": kind, "wall_s": wall, "per_min": requests / wall * 60,
            "cpu_ms": cpu / requests * 1000, "load": os.getloadavg()[0]}


def measure(latency_s: float, requests: int, concurrency: int, repeat: int, clip: bytes) -> dict[str, list[dict]]:
    process, base_url = start_stub(latency_s)
    runs: dict[str, list[dict]] = {kind: [] for kind in TRANSPORTS}
    try:
        for round_ in range(repeat):
            order = list(TRANSPORTS) if round_ % 2 == 0 else list(reversed(TRANSPORTS))
            for kind in order:
                result = asyncio.run(run_once(kind, base_url, clip, requests, concurrency))
                runs[kind].append(result)
                print(f"  {kind:7s} latency {latency_s:g} s: wall {result['wall_s']:6.2f} s, "
                      f"{result['per_min']:7.1f} requests/min, CPU {result['cpu_ms']:5.2f} ms a request "
                      f"(load {result['load']:.1f})", flush=True)
    finally:
        process.terminate()
        process.wait()
    return runs


def report(title: str, runs: dict[str, list[dict]]) -> None:
    median = {kind: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "cpu_ms", "per_min")}
              for kind, rs in runs.items()}
    print(f"{title}: medians")
    for kind, values in median.items():
        print(f"  {kind:7s} wall {values['wall_s']:6.2f} s, {values['per_min']:7.1f} requests/min, "
              f"CPU {values['cpu_ms']:5.2f} ms a request")
    print(f"  ratio httpx/http11: wall x{median['httpx']['wall_s'] / median['http11']['wall_s']:.3f}, "
          f"CPU a request x{median['httpx']['cpu_ms'] / median['http11']['cpu_ms']:.2f}")


async def hostile(kind: str) -> dict[str, str]:
    """What the transport makes of the two hostile answers: "refused" or what it accepted."""
    count = [0]

    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                return  # the client is gone, or the measurement is over
            count[0] += 1
            for text in (b"answer %d" % count[0], b"unasked %d" % count[0]):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text))
            await writer.drain()

    async def big_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-f-%d: %s\r\n" % (i, b"a" * 200) for i in range(100))
                     + b"content-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    found = {}
    servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for handler in (two_answers, big_head)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    async with httpx.AsyncClient(transport=TRANSPORTS[kind](4), timeout=5) as http:
        texts = [(await http.get(f"http://127.0.0.1:{ports[0]}/")).text for _ in range(3)]
        found["unasked answer"] = ("never taken" if texts == ["answer 1", "answer 2", "answer 3"]
                                   else f"taken: the answers read were {texts}")
        try:
            response = await http.get(f"http://127.0.0.1:{ports[1]}/")
            found["20 KiB head"] = f"accepted ({len(response.headers)} headers)"
        except httpx.RemoteProtocolError:
            found["20 KiB head"] = "refused"
    for server in servers:
        server.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--latency-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="also against the stub answering at once")
    args = parser.parse_args()
    clip = codecs.encode(np.zeros(16000, dtype=np.float32) + 0.01, 16000, "wav")
    print(f"load before: {os.getloadavg()[0]:.1f}")
    report(f"endpoint with {args.latency_s:g} s latency, {args.concurrency} at once",
           measure(args.latency_s, args.requests, args.concurrency, args.repeat, clip))
    if args.fast:
        report("instant endpoint, 16 at once",
               measure(0.0, args.requests * 10, 16, args.repeat, clip))
    for kind in TRANSPORTS:
        for case, outcome in asyncio.run(hostile(kind)).items():
            print(f"  {kind:7s} {case}: {outcome}")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
