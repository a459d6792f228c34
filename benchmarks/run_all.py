"""Run every benchmark script in benchmarks/ one after another and print what each prints.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...]     (python3 dev.py bench)

Each script runs in its own process (so one's memory does not colour another's figures),
with its output streamed as it comes. Benchmarks print numbers and assert nothing; a script
that crashes is reported and makes the exit status non-zero, the others still run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Extra arguments per script. prepare.py measures the 3-hour file itself, so transcribe.py
# (which can do the same through prepare.py) is told to skip it here.
ARGUMENTS = {"transcribe.py": ["--long-minutes", "0"]}


def scripts(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name
                   and not p.name.startswith("_"))
    if only:
        found = [p for p in found if p.stem in only or p.name in only]
    return found


def run(script: Path) -> tuple[int, float]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *ARGUMENTS.get(script.name, [])],
                          cwd=HERE.parent, env=env)
    return done.returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="script names to run (e.g. narrate prepare)")
    args = parser.parse_args(argv)
    failed = []
    for script in scripts(args.only):
        print(f"\n===== {script.name} =====", flush=True)
        code, seconds = run(script)
        print(f"----- {script.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
              f"in {seconds:.0f} s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
