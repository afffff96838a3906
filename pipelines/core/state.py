"""Shared state files (profiles, observations): written atomically, updated under a file lock.

Every worker of a deployment shares the state directory, so two tasks may update the same file at
once. A file is only ever replaced whole (a temporary named after its writer, then a rename), so a
reader never sees half of it; a read-modify-write holds an exclusive ``flock`` on a lock file
beside it, so no update is lost. ``flock`` works across processes on one host and across hosts on
file systems that support it (Lustre with ``-o flock``, NFSv4, GPFS, BeeGFS). Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipelines.core.temporaries import temporary_name

__all__ = ["fsync_dir", "locked", "write_atomically", "written_whole"]

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def written_whole(dst: str | os.PathLike[str], fsync: bool = False) -> Iterator[BinaryIO]:
    """A file at a temporary name beside ``dst``, renamed to ``dst`` only if the block finishes.

    With ``fsync`` the data (and then the directory entry) reach the disk before the rename counts.
    """
    dst = os.fspath(dst)
    tmp = temporary_name(dst)
    try:
        with open(tmp, "wb") as fout:
            yield fout
            if fsync:
                fout.flush()
                os.fsync(fout.fileno())
        os.replace(tmp, dst)
        if fsync:
            fsync_dir(os.path.dirname(dst) or ".")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomically(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` whole: readers see the old content or the new, never a mix."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path, fsync=fsync) as fh:
        fh.write(data)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (on ``<path>.lock``) for the block: one updater at a time."""
    lock = Path(os.fspath(path) + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
