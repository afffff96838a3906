"""Local file copies: through one buffer while hashing, or inside the kernel (``copy_file_range``)."""

from __future__ import annotations

import errno
import os
import shutil
import threading

from pipelines.core.checksum import Hasher

__all__ = ["copy_hashing", "kernel_copy"]


#: Read/write block of local copies.
COPY_BLOCK = 8 * 2**20


#: Local files above this are copied by the kernel while another thread hashes them.
LARGE_LOCAL_FILE = 16 * 2**20


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
                _write_all(fout, view[:n])
            on_disk = os.fstat(fout).st_size
        finally:
            os.close(fout)
    finally:
        if isinstance(src, str):
            os.close(fin)
    if on_disk != hasher.size:
        raise OSError(errno.EIO, f"{dst}: wrote {on_disk} B of {hasher.size} B")
    return hasher.hexdigest(), hasher.size


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte: an unbuffered write may take only part (a disk or quota nearly full), then fail."""
    while data:
        data = data[os.write(fd, data) :]


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
