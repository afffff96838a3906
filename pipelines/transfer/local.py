"""Local file copies: through one buffer while hashing, or inside the kernel (``copy_file_range``).

Many small files of one directory are copied by :func:`copy_small_files`, which opens both
directories once and does per file only what ``cp`` does, plus the hash and the one rename that
makes the file visible.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable, Sequence

from pipelines.core.checksum import Hasher, checksum_bytes
from pipelines.core.fileio import write_all
from pipelines.core.manifest import Entry
from pipelines.core.temporaries import temporary_suffix
from pipelines.storage.tier import file_version
from pipelines.transfer.seen import Identity, identity_of

__all__ = [
    "HAS_PROC",
    "SMALL_LOCAL_FILE",
    "Copied",
    "copy_hashing",
    "copy_small_files",
    "kernel_copy",
    "lies_under",
    "real_path_of",
    "still_written",
]


#: Read/write block of local copies.
COPY_BLOCK = 8 * 2**20


#: Local files above this are copied by the kernel while another thread hashes them.
LARGE_LOCAL_FILE = 16 * 2**20


#: Local files below this are read in one call by :func:`copy_small_files` (the thread's buffer holds them).
SMALL_LOCAL_FILE = COPY_BLOCK - 1

#: How many files :func:`copy_small_files` reports as copied at a time.
REPORT_EVERY = 256

#: Whether ``/proc/self/fd`` names open files here (Linux): what a descriptor opened is then read from it.
HAS_PROC = os.path.isdir("/proc/self/fd")

_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

#: A file :func:`copy_small_files` copied: its entry, its checksum, the identity of the file read and the
#: version of the one written (both None unless asked for).
Copied = tuple[Entry, str, Identity | None, str | None]

#: Each copying thread's buffer: allocated once (zeroing 8 MiB costs ~0.5 ms, more than copying a small file).
_buffers = threading.local()


def _buffer() -> bytearray:
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(COPY_BLOCK)
    return buf


def copy_hashing(src: str | int, dst: str) -> tuple[str, int]:
    """Copy a local file (a path, or a descriptor read from its start) through one buffer, hashing what passes.

    Returns checksum and size.

    Raises:
        OSError: A write failed, or the file on disk is not as long as what was read.
    """
    hasher = Hasher()
    buf = _buffer()
    view = memoryview(buf)
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC) if isinstance(src, str) else src
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            at = 0
            while n := os.preadv(fin, [buf], at):
                at += n
                hasher.update(view[:n])
                write_all(fout, view[:n])
            on_disk = os.fstat(fout).st_size
        finally:
            os.close(fout)
    finally:
        if isinstance(src, str):
            os.close(fin)
    if on_disk != hasher.size:
        raise OSError(errno.EIO, f"{dst}: wrote {on_disk} B of {hasher.size} B")
    return hasher.hexdigest(), hasher.size


def kernel_copy(src: str, dst: str) -> None:
    """Copy a local file inside the kernel (copy_file_range), falling back to a buffered copy."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                done = os.copy_file_range(fin.fileno(), fout.fileno(), min(left, 2**30))
                if done == 0:
                    break
                left -= done
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            shutil.copyfileobj(fin, fout, COPY_BLOCK)
            return
        if left > 0:  # the source shrank under the copy: never a short file under a final name
            raise OSError(errno.EIO, f"{src}: ended {left} B before its size when copied to {dst}")


def real_path_of(fd: int, path: str) -> str:
    """The real path of what ``fd`` (opened from ``path``) is.

    Read from the descriptor (``/proc/self/fd/N`` names the inode opened, so a symlink swapped in
    after the open does not count); where ``/proc`` is missing, from ``path``.
    """
    return os.readlink(f"/proc/self/fd/{fd}") if HAS_PROC else os.path.realpath(path)


def lies_under(real: str, root: str) -> bool:
    """Whether the real path ``real`` is ``root`` (a real path) or under it."""
    return real == root or real.startswith(root.rstrip("/") + "/")


def copy_small_files(
    src_dir: str,
    dst_dir: str,
    entries: Sequence[Entry],
    source_root: str,
    fsync: bool,
    copied: Callable[[list[Copied]], None],
    with_stats: bool = False,
) -> list[Entry]:
    """Copy files of one source directory (each under :data:`SMALL_LOCAL_FILE`) into one destination directory.

    Both directories are opened once, the source checked to lie under ``source_root`` (the real
    path of the source tier's root) through its descriptor; every file is then opened relative to
    it without following a symlink, read in one call, hashed (and checked against the entry's
    size and checksum), written to a temporary in the destination directory and renamed into
    place. ``copied`` receives ``(entry, checksum, source, version)`` as files become visible
    (after the directory's ``fsync`` when ``fsync`` is asked); with ``with_stats``, ``source`` is
    the identity of the file read (taken before the read) and ``version`` that of the file written,
    under its final name (after the rename: it moves the ctime), else both are None.

    Returns the entries not copied: a symlink, a file that changed since it was listed, any
    error. The caller copies those one by one, where they are retried and reported; none is left
    partial under its final name or as a temporary.
    """
    try:
        sfd = os.open(src_dir, _DIRECTORY)
    except OSError:
        return list(entries)
    try:
        if not lies_under(real_path_of(sfd, src_dir), source_root):
            return list(entries)  # the one-by-one copy says why
        try:
            dfd = os.open(dst_dir, _DIRECTORY)
        except OSError:
            return list(entries)
        try:
            return _copy_between(sfd, dfd, entries, fsync, copied, with_stats)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def still_written(path: str, written: os.stat_result, dir_fd: int | None = None) -> os.stat_result | None:
    """The status of ``path`` if it is still the file ``written`` is the status of (None: replaced since, or gone).

    Taken after the rename that made the file visible (a rename moves the ctime), it is what a
    copy index records, and only for the file this copy wrote: never another writer's.
    """
    try:
        now = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return now if (now.st_ino, now.st_dev) == (written.st_ino, written.st_dev) else None


def _copy_between(
    sfd: int,
    dfd: int,
    entries: Sequence[Entry],
    fsync: bool,
    copied: Callable[[list[Copied]], None],
    with_stats: bool,
) -> list[Entry]:
    """The loop of :func:`copy_small_files`, between two open directories."""
    buf = _buffer()
    view = memoryview(buf)
    suffix = temporary_suffix()
    left: list[Entry] = []
    done: list[Copied] = []

    def report() -> None:
        try:
            if fsync:
                os.fsync(dfd)  # the renames are durable before anyone is told
        except OSError:
            left.extend(copy[0] for copy in done)  # copied again one by one, each fsynced
        else:
            copied(done[:])
        done.clear()

    # The loop runs once per file: the calls it makes are bound to local names.
    open_, readv, close, replace, digest_of, fstat = os.open, os.readv, os.close, os.replace, checksum_bytes, os.fstat
    into = [buf]
    for i, entry in enumerate(entries):
        name = entry.key.rpartition("/")[2]
        tmp = f".{name}{suffix}-{i:x}"
        created = False
        read_st = written_st = None
        version = None
        try:
            fin = open_(name, _READ, dir_fd=sfd)
            try:
                if with_stats:
                    read_st = fstat(fin)  # before the read: a change while it is read moves its ctime
                n = readv(fin, into)  # asks for more than the file holds: a short read is its end
            finally:
                close(fin)
            if n != entry.size:
                left.append(entry)  # changed since it was listed
                continue
            data = view[:n]
            digest = digest_of(data)
            if entry.checksum is not None and digest != entry.checksum:
                left.append(entry)
                continue
            fout = open_(tmp, _CREATE, 0o644, dir_fd=dfd)
            created = True
            try:
                write_all(fout, data)
                if fsync:
                    os.fsync(fout)
                if with_stats:
                    written_st = fstat(fout)
            finally:
                close(fout)
            replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            if written_st is not None:
                final = still_written(name, written_st, dfd)
                version = file_version(final) if final is not None else None
        except OSError:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
            left.append(entry)
            continue
        done.append((entry, digest, identity_of(read_st) if read_st is not None else None, version))
        if len(done) >= REPORT_EVERY:
            report()
    if done:
        report()
    return left
