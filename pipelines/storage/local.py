"""The local POSIX backend (``file://``): PFS and NVMe tiers.

Every write goes to a temporary beside its destination (named after its writer) and is renamed
into place when whole, with an ``fsync`` of the data and the directory when asked. The tier's
root must exist unless its config says ``create = true``: a missing root is more often an
unmounted file system than a new directory, and writing into the mount point would fill the disk
under it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from pipelines.core.config import ConfigError, TierConfig
from pipelines.core.keys import safe_key
from pipelines.core.state import fsync_dir
from pipelines.core.temporaries import temporary_name
from pipelines.storage.tier import FILE_VERSION, ObjectInfo, Tier, file_version

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = ["LocalTier"]


class LocalTier(Tier):
    """A directory tree on a local or shared POSIX file system."""

    scheme = "file"

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        self._fs: AbstractFileSystem | None = None
        self.require_root()

    @property
    def fs(self) -> AbstractFileSystem:
        """The local filesystem of fsspec, for what the tier does not do with ``os`` itself (imported on first use)."""
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file", auto_mkdir=True)
        return self._fs

    def require_root(self) -> None:
        """Make sure the root is there: created if the config allows it, else an error.

        Raises:
            ConfigError: The root does not exist (an unmounted file system?) and the tier's
                config does not say ``create = true``; or it is not a directory.
        """
        if os.path.isdir(self.root):
            return
        if os.path.lexists(self.root):
            raise ConfigError(f"tier '{self.name}': its root {self.root} is not a directory")
        if not self.config.create:
            raise ConfigError(
                f"tier '{self.name}': its root {self.root} does not exist (not mounted?); "
                "create it, or set create = true for the tier in the config"
            )
        Path(self.root).mkdir(parents=True, exist_ok=True)

    def _make_parent(self, parent: str) -> None:
        """Create a directory under the root, never the root itself (it may have been unmounted since)."""
        if not os.path.isdir(parent):
            self.require_root()
            os.makedirs(parent, exist_ok=True)

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        """Every entry under ``base`` that is not a directory, as fsspec's ``find`` gives it.

        Walked with ``os.scandir`` (one ``lstat`` per entry, which the directory read mostly
        answers); symlinks are listed, not followed, with their target's size (0 when broken).
        """
        found: dict[str, dict[str, Any]] = {}
        if not os.path.isdir(base):
            return found
        pending = [base]
        while pending:
            directory = pending.pop()
            try:
                entries = os.scandir(directory)
            except FileNotFoundError:
                continue  # removed while we walked
            with entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                            continue
                        found[entry.path] = _entry_info(
                            entry.path, entry.stat(follow_symlinks=False), entry.is_symlink()
                        )
                    except FileNotFoundError:
                        continue  # removed while we walked
        return found

    def resident_share(self, keys: Sequence[str]) -> float:
        """The share of these files' bytes in the page cache (a sample of them, by ``mincore``)."""
        from pipelines.storage.pagecache import resident_share, spread

        return resident_share([self.path(k) for k in spread(keys)])  # a path for the sample only

    def write_headroom(self) -> int | None:
        """Bytes this machine's page cache takes before writes go at the disk's pace (from ``/proc/vmstat``)."""
        from pipelines.storage.pagecache import write_headroom

        return write_headroom()

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of one file.

        Raises:
            FileNotFoundError: No such file (a directory is not one).
        """
        path = self.path(key)
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise FileNotFoundError(f"{self.url(key)} is a directory, not an object")
        return ObjectInfo(safe_key(key), info.st_size, info.st_mtime)

    def open_read(self, key: str) -> BinaryIO:
        """Open a file for streaming reads."""
        return open(self.path(key), "rb")

    def read_bytes(self, key: str) -> bytes:
        """Read a whole (small) file."""
        with open(self.path(key), "rb") as fh:
            return fh.read()

    @contextlib.contextmanager
    def staged_path(self, key: str, fsync: bool = False) -> Iterator[str]:
        """A temporary path that becomes ``key`` if the block exits cleanly.

        The temporary name is in the destination directory, so the final rename is atomic; an
        exception (or a failed fsync) removes it and leaves nothing under ``key``.
        """
        tmp = self.stage(key)
        published = False
        try:
            yield tmp
            self.publish(tmp, key, fsync)
            published = True
        finally:
            if not published:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def directory_of(self, key: str) -> str:
        """The directory ``key`` goes in, created if need be (never the root: see :meth:`require_root`)."""
        parent = os.path.dirname(self.path(key))
        self._make_parent(parent)
        return parent

    def stage(self, key: str) -> str:
        """A temporary path in ``key``'s directory (created if need be), for :meth:`publish` or removal."""
        path = self.path(key)
        self._make_parent(os.path.dirname(path))
        return temporary_name(path)

    def publish(self, tmp: str, key: str, fsync: bool = False) -> None:
        """Rename a finished temporary from :meth:`stage` to ``key`` (fsyncing it and its directory, if asked)."""
        path = self.path(key)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(os.path.dirname(path))

    @contextlib.contextmanager
    def writer(self, key: str, fsync: bool = False) -> Iterator[BinaryIO]:
        """Write to a temporary name in the destination directory, renamed (after ``fsync`` if asked)."""
        with self.staged_path(key, fsync=fsync) as tmp, open(tmp, "wb") as fh:
            yield cast(BinaryIO, fh)

    def put_file(self, local_path: str | os.PathLike[str], key: str, fsync: bool = False) -> None:
        """Copy a finished local file to ``key`` atomically."""
        with open(local_path, "rb") as src, self.writer(key, fsync=fsync) as dst:
            shutil.copyfileobj(src, dst, 8 * 2**20)

    def delete(self, keys: Iterable[str]) -> int:
        """Delete files. Returns how many were asked."""
        paths = [self.path(k) for k in keys]
        for path in paths:
            os.unlink(path)
        return len(paths)

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix``, directories too. Returns the files removed."""
        removed = super().delete_prefix(prefix)
        shutil.rmtree(self.path(prefix), ignore_errors=True)
        return removed


def _entry_info(path: str, st: os.stat_result, link: bool) -> dict[str, Any]:
    """The info fsspec gives of a listed entry (the fields Tierflow reads), from its ``lstat``."""
    size = st.st_size
    if link:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
    kind = "file" if stat.S_ISREG(st.st_mode) else "other"
    return {
        "name": path,
        "size": size,
        "type": kind,
        "islink": link,
        "mtime": st.st_mtime,
        "ino": st.st_ino,
        FILE_VERSION: file_version(st),
    }
