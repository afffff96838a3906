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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import fsspec

from pipelines.core.config import ConfigError, TierConfig
from pipelines.core.state import fsync_dir
from pipelines.core.temporaries import temporary_name
from pipelines.storage.tier import Tier

__all__ = ["LocalTier"]


class LocalTier(Tier):
    """A directory tree on a local or shared POSIX file system."""

    scheme = "file"

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        self.fs = fsspec.filesystem("file", auto_mkdir=True)
        self.require_root()

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
        if not os.path.isdir(base):
            return {}
        return super()._find(base)

    @contextlib.contextmanager
    def staged_path(self, key: str, fsync: bool = False) -> Iterator[str]:
        """A temporary path that becomes ``key`` if the block exits cleanly.

        The temporary name is in the destination directory, so the final rename is atomic; an
        exception (or a failed fsync) removes it and leaves nothing under ``key``.
        """
        path = self.path(key)
        parent = os.path.dirname(path)
        self._make_parent(parent)
        tmp = temporary_name(path)
        try:
            yield tmp
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, path)
            if fsync:
                fsync_dir(parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

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
