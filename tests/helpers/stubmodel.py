"""A model stub for throughput measurements: answers every chat completion after a fixed
latency, optionally enforcing a requests-per-minute limit the way OpenAI describes its own
(a budget that refills continuously: a token bucket holding one minute's requests; 429 with
retry-after beyond it), and records when each request arrived.

In a test:      with RateLimitedModel(requests_per_minute=40) as model: ... model.base_url
As a process:   python -m tests.helpers.stubmodel [--latency-s 2] [--rpm 40] [--log FILE]
                (prints `ready http://127.0.0.1:PORT/v1`, then serves until killed; the
                benchmarks run it in its own process so it does not share their CPU time)
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from tests.helpers.faultserver import Behaviour, FaultServer, Received, ok, rate_limited

WINDOW_S = 60.0


class RateLimitedModel(FaultServer):
    """Answers after `latency_s`; with `requests_per_minute`, a bucket of that many requests
    refilling at requests_per_minute / 60 a second, and 429s (with retry-after) when empty."""

    def __init__(self, *, latency_s: float = 0.0, requests_per_minute: float | None = None,
                 log: Path | None = None) -> None:
        super().__init__(self._decide)
        self.latency_s = latency_s
        self.rpm = requests_per_minute
        self.level = float(requests_per_minute or 0)
        self.updated = time.monotonic()
        self.arrivals: list[tuple[float, int]] = []  # (time.time(), status)
        self.log = open(log, "a", encoding="utf-8") if log else None
        self._guard = threading.Lock()

    @property
    def refused(self) -> int:
        return sum(1 for _, status in self.arrivals if status == 429)

    def _decide(self, request: Received) -> Behaviour:
        now = time.monotonic()
        with self._guard:
            full, wait = False, 0.0
            if self.rpm is not None:
                rate = self.rpm / WINDOW_S
                self.level = min(float(self.rpm), self.level + (now - self.updated) * rate)
                self.updated = now
                full = self.level < 1.0
                wait = (1.0 - self.level) / rate if full else 0.0
                if not full:
                    self.level -= 1.0
            status = 429 if full else 200
            self.arrivals.append((time.time(), status))
            if self.log:
                self.log.write(json.dumps({"t": time.time(), "status": status}) + "\n")
                self.log.flush()
        if full:
            return rate_limited(retry_after_ms=max(1.0, wait * 1000))
        answer = ok(f"words of request {request.index}")
        return Behaviour("answer", delay_s=self.latency_s, text=answer.text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    with RateLimitedModel(latency_s=args.latency_s, requests_per_minute=args.rpm, log=args.log) as model:
        print(f"ready {model.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
