"""The inbox's files: its top folder (waiting manifests) and its own processing/, done/, failed/.

Whoever may drop a manifest may also plant links (README "Security model"). On a local disk
nothing here follows one: every operation opens the inbox folder once, then its subfolder
relative to it without following a link (O_NOFOLLOW | O_DIRECTORY; a link or file planted in
its place is moved aside and a real folder made), and then works on names inside that open
folder (`dir_fd`): files are created exclusively (O_EXCL, which never follows a link), read only
as regular files and not through a link (tasks/inputs/local_open.py), renamed and removed as
entries (a link is moved, never followed). Object stores have no links: there the same
operations go through fsspec (`StoreFolders`).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.local_open import read_checked
from audiobatch.tasks.inputs.sources import safe_url
from audiobatch.tasks.outputs.datasets import OutputRoot

log = logging.getLogger("audiobatch")
TOP = ""  # the inbox folder itself
_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class LocalFolders:
    """The inbox on a local disk, worked on through folder descriptors."""

    def __init__(self, root: OutputRoot) -> None:
        self.root = root
        self.path = root.path

    @contextmanager
    def _folder(self, name: str) -> Iterator[int]:
        top = os.open(self.path, _DIRECTORY)  # the inbox itself is the operator's: may be a link
        try:
            if name == TOP:
                yield top
                return
            folder = _own_subfolder(top, name, self.root.display(name))
            try:
                yield folder
            finally:
                os.close(folder)
        finally:
            os.close(top)

    def files(self) -> list[str]:
        with self._folder(TOP) as top:
            with os.scandir(top) as entries:
                return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]

    def is_file(self, folder: str, name: str) -> bool:
        with self._folder(folder) as fd:
            try:
                return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            except FileNotFoundError:
                return False

    def exists(self, folder: str, name: str) -> bool:
        with self._folder(folder) as fd:
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
                return True
            except FileNotFoundError:
                return False

    def create(self, folder: str, name: str, data: bytes) -> bool:
        """Write a new file; False when the name is taken (by anything, a link included)."""
        with self._folder(folder) as fd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            try:
                descriptor = os.open(name, flags, 0o644, dir_fd=fd)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            return True

    def read(self, folder: str, name: str) -> bytes:
        with self._folder(folder) as fd:
            return read_checked(name, f"manifest {name}", dir_fd=fd)

    def modified(self, folder: str, name: str) -> float:
        with self._folder(folder) as fd:
            return os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime

    def rename(self, folder: str, name: str, to_folder: str, to_name: str) -> None:
        with self._folder(folder) as source, self._folder(to_folder) as target:
            os.rename(name, to_name, src_dir_fd=source, dst_dir_fd=target)

    def remove(self, folder: str, name: str) -> None:
        with self._folder(folder) as fd:
            os.unlink(name, dir_fd=fd)


def _own_subfolder(top: int, name: str, shown: str) -> int:
    """The inbox's own subfolder `name`, opened without following a link; made when missing.
    Anything else in its place (a link, a file) is moved aside first."""
    for _ in range(3):  # a dropper racing us gets at most a few tries
        try:
            return os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o755, dir_fd=top)
            except FileExistsError:
                pass
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            aside = f"{name}.planted-{datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
            os.rename(name, aside, src_dir_fd=top, dst_dir_fd=top)
            log.warning("%s was a link or a file, not the inbox's own folder: moved aside to %s "
                        "(nothing is written through it)", shown, aside)
    raise InputError(f"{shown} keeps being replaced by something other than a folder: the "
                     "inbox writes only into folders of its own.")


class StoreFolders:
    """The inbox on an object store (fsspec): no links there, names as given."""

    def __init__(self, root: OutputRoot) -> None:
        self.root = root

    def _full(self, folder: str, name: str) -> str:
        return self.root.full(f"{folder}/{name}" if folder else name)

    def files(self) -> list[str]:
        entries = self.root.fs.ls(self.root.path, detail=True)
        return [entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries
                if entry.get("type") == "file"]

    def is_file(self, folder: str, name: str) -> bool:
        return self.root.fs.isfile(self._full(folder, name))

    def exists(self, folder: str, name: str) -> bool:
        return self.root.fs.exists(self._full(folder, name))

    def create(self, folder: str, name: str, data: bytes) -> bool:
        path = self._full(folder, name)
        self.root.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.root.fs.open(path, "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # this store cannot create exclusively
            log.warning("%s cannot create files exclusively: overlapping inbox runs are kept "
                        "apart only by the deployment's concurrency limit", safe_url(self.root.url))
            if self.root.fs.exists(path):
                return False
            self.root.fs.pipe_file(path, data)
            return True

    def read(self, folder: str, name: str) -> bytes:
        return self.root.fs.cat_file(self._full(folder, name))

    def modified(self, folder: str, name: str) -> float:
        return _modified(self.root.fs.info(self._full(folder, name)))

    def rename(self, folder: str, name: str, to_folder: str, to_name: str) -> None:
        target = self._full(to_folder, to_name)
        self.root.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self.root.fs.mv(self._full(folder, name), target)

    def remove(self, folder: str, name: str) -> None:
        self.root.fs.rm_file(self._full(folder, name))


def _modified(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
    return value.timestamp() if isinstance(value, datetime) else float(value)


def inbox_folders(root: OutputRoot) -> LocalFolders | StoreFolders:
    return LocalFolders(root) if root.is_local else StoreFolders(root)
