"""Opening a local file that others named or dropped: what was opened is checked, not what was
listed or named (README "Security model").

A path checked first and opened later can change in between: whoever may write the folder can
swap a link in. So such a file is opened first, without following a link in its last part
(O_NOFOLLOW), without waiting on a pipe (O_NONBLOCK), optionally relative to a folder already
opened (`dir_fd`); then the open file itself is checked: a regular file and, where roots apply,
really inside them - its place read back from /proc/self/fd (the kernel's answer; elsewhere the
real path, checked just before). Errors say what is wrong with the file, never what is in it.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.locations import inside

_PROC_FD = Path("/proc/self/fd")


def open_checked(path: str | Path, label: str, *, roots: tuple[str, ...] | None = None,
                 dir_fd: int | None = None) -> int:
    """A descriptor of the regular file `path` (its last part not a link; inside `roots` when
    given); InputError naming `label` otherwise. The caller closes it."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputError(f"{label} not found: check the path.") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{label} is a symbolic link: files from others are read only as "
                             "the file itself, never through a link.") from None
        raise InputError(f"{label} cannot be opened ({error.strerror or error}).") from None
    try:
        _check_opened(fd, path, label, roots)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_checked(path: str | Path, label: str, *, roots: tuple[str, ...] | None = None,
                 dir_fd: int | None = None) -> bytes:
    """The bytes of a file opened as `open_checked` opens it."""
    with os.fdopen(open_checked(path, label, roots=roots, dir_fd=dir_fd), "rb") as handle:
        return handle.read()


def opened_path(fd: int) -> str | None:
    """Where the open file `fd` really is (Linux), or None where the system cannot say."""
    try:
        return os.readlink(_PROC_FD / str(fd))
    except OSError:
        return None


def _check_opened(fd: int, path: str | Path, label: str, roots: tuple[str, ...] | None) -> None:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{label} is a folder, not a file.")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{label} is not a regular file (a pipe, socket or device).")
    if roots is None:
        return
    where = opened_path(fd) or os.path.realpath(path)  # roots come with absolute paths
    if not any(inside(where, root) for root in roots):
        raise InputError(f"{label} is outside the folders this run may read "
                         f"({', '.join(roots) or 'none'}).")
