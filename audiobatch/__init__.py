"""audiobatch: batch transcription and narration with audio LLMs, orchestrated by Prefect.

The repository keeps its stages in top-level folders (flows/, tasks/, localmodel/); installed,
they are the subpackages `audiobatch.flows`, `audiobatch.tasks` and `audiobatch.localmodel`
(setuptools `package-dir`), so nothing named `flows` or `tasks` lands in site-packages.
"""
from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# The embedded model's CTranslate2 runs on OpenMP (libgomp), whose idle threads spin between
# parallel regions by default. On a busy machine they took the cores from the threads with
# work: a one-clip job at load 3-4 took 9-13 s against 4.0-4.5 s with passive waiting, and
# Whisper itself ran ~6% faster (measured, 2 cores). libgomp reads this when it loads, which
# is after any audiobatch import; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# NumPy's OpenBLAS starts a thread per core whose idle loop spins too; its only work here is
# small products (Whisper's mel filter over a window's spectrum), which one thread does at no
# loss. With its threads, issue 24's 96 short clips took 37.8-42.6 CPU s, without 26.9-29.9
# (measured 2026-12-07, 2 cores: blas_thread_server was 30% of the process's samples).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    __version__ = version("audiobatch")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
