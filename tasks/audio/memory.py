"""Process memory: a freed chunk-sized buffer goes back to the operating system.

Invariant: after `return_large_buffers()`, every allocation of LARGE_BUFFER_BYTES or more gets
its own mapping, which is unmapped when freed, so a long file's peak memory is its working
set (one chunk's samples and one request's payload), not that plus what the allocator kept.

Why: glibc serves large allocations from mmap only until the first one is freed; then it
raises its threshold (up to 32 MB) and serves them from its heaps, one per thread, which keep
the freed space. A long file's chunk buffers (26 MB of samples for a 409 s chunk) are under
32 MB and made in several threads, so without this the peak grew by a few such buffers
(measured: DEVELOPERS.md "Scale-out"). Other C libraries (macOS, musl) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("audiobatch")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BUFFER_BYTES = 1 << 20  # decoder blocks (~0.3 MB) stay on the heap; chunks do not
_done = False


def return_large_buffers() -> None:
    """Fix glibc's mmap threshold at LARGE_BUFFER_BYTES for this process (once; no-op elsewhere)."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc
    if not mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; memory is left to the allocator's default")
