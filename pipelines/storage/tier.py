"""Tier access through fsspec: s3fs for object tiers, the local filesystem for PFS and NVMe tiers.

:class:`Tier` is a thin handle over an fsspec filesystem rooted at the tier's URL. It adds what
every hop needs and fsspec leaves to the caller:

* relative keys are validated, so no key can escape the tier's root (``..``, absolute paths);
* writes are atomic on every tier: a local file is written under a temporary name and renamed, an
  object is uploaded from a finished local file (s3fs publishes a partial object when a streamed
  write fails) — nothing partial is ever visible under a final name;
* listings are recursive, sorted, relative and ignore Tierflow's own temporaries;
* checksums are computed by streaming (bounded memory) with :mod:`pipelines.core.checksum`.

Object-store credentials come from the caller's storage options (the Airflow operators turn a
connection into them), else from the embedded server's credentials when the tier uses its
connection id, else from the environment (``AWS_*``), as botocore reads it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import fsspec
from fsspec.spec import AbstractFileSystem

from pipelines.core.checksum import checksum_stream
from pipelines.core.config import ConfigError, TierConfig, TierflowConfig
from pipelines.core.keys import safe_key
from pipelines.core.state import fsync_dir
from pipelines.core.temporaries import TMP_MARKER, temporary_name
from pipelines.storage.credentials import storage_options_for

__all__ = [
    "TMP_MARKER",
    "ObjectInfo",
    "Tier",
    "open_tier",
    "tier_for_url",
]

#: Every temporary name Tierflow writes contains this, so listings can skip leftovers.


@dataclass(frozen=True)
class ObjectInfo:
    """One object (file) on a tier: its key relative to the tier root, its size and modification time."""

    key: str
    size: int
    mtime: float | None = None


def tier_for_url(config: TierflowConfig, url: str) -> tuple[TierConfig, str]:
    """The tier a URL or local path lies in, and the key prefix within it.

    A URL under a configured tier's root resolves to that tier (and its credentials); any other
    ``s3://bucket/prefix`` or local path becomes an ad-hoc tier rooted there, with the bandwidth
    profile of the first configured tier of the same kind (for planning).

    Raises:
        ValueError: The URL is neither ``s3://bucket[/prefix]`` nor a local path.
    """
    from dataclasses import replace

    if url.startswith("s3://"):
        kind, root = "object", url[len("s3://") :].strip("/")
    elif "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported URL {url!r}: use s3://bucket/prefix or a local path")
    else:
        kind, root = "file", os.path.abspath(url.removeprefix("file://"))
        if os.path.isfile(root):
            raise ValueError(f"{root} is a file: copy works on directories and prefixes (give its directory)")
    for tier in config.tiers:
        if (tier.is_object) != (kind == "object"):
            continue
        if root == tier.root or root.startswith(tier.root.rstrip("/") + "/"):
            return tier, root[len(tier.root) :].strip("/")
    if kind == "object" and not root:
        raise ValueError(f"unsupported URL {url!r}: name a bucket")
    same_kind = [t for t in config.tiers if t.is_object == (kind == "object")]
    like = same_kind[0] if same_kind else config.tiers[0]
    if kind == "object":
        adhoc = replace(like, name="adhoc-object", kind="object", url=f"s3://{root}/", conn_id="adhoc")
    else:
        adhoc = replace(  # a copy creates its destination directory, as cp -r does
            like,
            name="adhoc-file",
            kind=like.kind if same_kind else "pfs",
            url=f"file://{root}",
            conn_id=None,
            create=True,
        )
    return adhoc, ""


def open_tier(config: TierflowConfig, name: str, storage_options: dict[str, Any] | None = None) -> Tier:
    """Open the tier called ``name``; object tiers use ``storage_options`` or :func:`storage_options_for`."""
    tier = config.tier(name)
    if tier.is_object and storage_options is None:
        storage_options = storage_options_for(config, tier)
    return Tier(tier, storage_options or {})


class Tier:
    """A tier's filesystem rooted at its URL.

    Args:
        config: The tier's configuration.
        storage_options: Options for the fsspec filesystem (s3fs: key, secret, endpoint_url, ...).
        spool_dir: Where uploads to object storage are staged before they are sent whole.
    """

    def __init__(
        self,
        config: TierConfig,
        storage_options: dict[str, Any] | None = None,
        spool_dir: str | None = None,
    ) -> None:
        self.config = config
        self.root = config.root
        self.spool_dir = spool_dir
        options = dict(storage_options or {})
        if config.is_object:
            # Listings must be fresh: another process may have written since (resume, concurrent runs).
            options.setdefault("use_listings_cache", False)
            # Tierflow verifies its own xxh3 checksums; botocore's default CRC on every request costs
            # CPU and some S3-compatible servers reject the headers.
            config_kwargs = dict(options.get("config_kwargs") or {})
            config_kwargs.setdefault("request_checksum_calculation", "when_required")
            config_kwargs.setdefault("response_checksum_validation", "when_required")
            # Enough connections for the widest plan (botocore's default pool of 10 throttles transfers).
            config_kwargs.setdefault("max_pool_connections", 64)
            options["config_kwargs"] = config_kwargs
        self.storage_options = options
        if config.is_object:
            self.fs: AbstractFileSystem = fsspec.filesystem("s3", **options)
        else:
            self.fs = fsspec.filesystem("file", auto_mkdir=True)
            self.require_root()

    def require_root(self) -> None:
        """Make sure a file tier's root is there: created if the config allows it, else an error.

        Raises:
            ConfigError: The root does not exist (an unmounted file system?) and the tier's
                config does not say ``create = true``; or it is not a directory.
        """
        if self.config.is_object or os.path.isdir(self.root):
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

    def __repr__(self) -> str:
        return f"Tier({self.config.name!r}, {self.config.url!r})"

    @property
    def name(self) -> str:
        """The tier's name."""
        return self.config.name

    # -- naming -------------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """The fsspec path of a relative key."""
        return f"{self.root}/{safe_key(key)}"

    def url(self, key: str = "") -> str:
        """The URL of a key (or of the root): ``s3://bucket/prefix/key`` or ``file:///path/key``."""
        scheme = "s3://" if self.config.is_object else "file://"
        return scheme + (self.path(key) if key else self.root)

    def _key_of(self, path: str) -> str:
        path = path.removeprefix("s3://").removeprefix("file://")
        return posixpath.relpath(path, self.root)

    # -- reading ------------------------------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursive), sorted by key, without Tierflow temporaries.

        A prefix that does not exist lists as empty. Listing errors propagate: a failed listing
        must never look like an empty one.
        """
        base = self.path(prefix) if prefix else self.root
        if not self.config.is_object and not os.path.isdir(base):
            return []
        found = cast(dict[str, dict[str, Any]], self.fs.find(base, detail=True))
        out = []
        for path, info in found.items():
            if info.get("type") == "directory" or TMP_MARKER in path:
                continue
            out.append(ObjectInfo(self._key_of(path), int(info["size"]), _mtime(info)))
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of one object.

        Raises:
            FileNotFoundError: No such object.
        """
        info = self.fs.info(self.path(key))
        if info.get("type") == "directory":
            raise FileNotFoundError(f"{self.url(key)} is a directory, not an object")
        return ObjectInfo(safe_key(key), int(info["size"]), _mtime(info))

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        return True

    def open_read(self, key: str) -> BinaryIO:
        """Open an object for streaming reads."""
        return cast(BinaryIO, self.fs.open(self.path(key), "rb"))

    def read_bytes(self, key: str) -> bytes:
        """Read a whole (small) object."""
        return cast(bytes, self.fs.cat_file(self.path(key)))

    def checksum(self, key: str) -> tuple[str, int]:
        """Checksum (xxh3-128) and size of an object, streamed in bounded blocks."""
        with self.open_read(key) as fh:
            return checksum_stream(fh)

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Download an object to a local path atomically (temporary name, then rename)."""
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)  # any local path, not necessarily in a tier
        tmp = Path(temporary_name(str(dest)))
        try:
            self.fs.get_file(self.path(key), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staged_path(self, key: str, fsync: bool = False) -> Iterator[str]:
        """A temporary local path that becomes ``key`` if the block exits cleanly (file tiers only).

        The temporary name is in the destination directory, so the final rename is atomic; an
        exception (or a failed fsync) removes it and leaves nothing under ``key``.
        """
        if self.config.is_object:
            raise TypeError(f"{self}: staged_path is for file tiers; use writer() or put_file()")
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
        """Write an object atomically: it appears under ``key`` only if the block exits cleanly.

        On a file tier the data goes to a temporary name in the destination directory, then is
        renamed (after ``fsync`` if asked). On an object tier it is spooled to a local temporary
        file (bounded memory) and uploaded whole once complete. An exception discards everything.
        """
        if self.config.is_object:
            with tempfile.NamedTemporaryFile(prefix="tierflow-spool-", dir=self.spool_dir) as spool:
                yield cast(BinaryIO, spool)
                spool.flush()
                self.fs.put_file(spool.name, self.path(key))
            return
        with self.staged_path(key, fsync=fsync) as tmp, open(tmp, "wb") as fh:
            yield cast(BinaryIO, fh)

    def write_bytes(self, key: str, data: bytes, fsync: bool = False) -> None:
        """Write a small object atomically (one PUT on object tiers, temporary name + rename on file tiers)."""
        if self.config.is_object:
            self.fs.pipe_file(self.path(key), data)
            return
        with self.writer(key, fsync=fsync) as fh:
            fh.write(data)

    def put_file(self, local_path: str | os.PathLike[str], key: str, fsync: bool = False) -> None:
        """Upload or copy a finished local file to ``key`` atomically."""
        if self.config.is_object:
            self.fs.put_file(str(local_path), self.path(key))
            return
        with open(local_path, "rb") as src, self.writer(key, fsync=fsync) as dst:
            while block := src.read(8 * 2**20):
                dst.write(block)

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix`` (directories too, on file tiers). Returns the objects removed."""
        keys = [o.key for o in self.list(prefix)]
        self.delete(keys)
        if not self.config.is_object:
            import shutil

            shutil.rmtree(self.path(prefix), ignore_errors=True)
        return len(keys)

    def delete(self, keys: Iterable[str]) -> int:
        """Delete objects (batched: s3fs sends up to 1,000 keys per request). Returns how many were asked."""
        paths = [self.path(k) for k in keys]
        if not paths:
            return 0
        if self.config.is_object:
            self.fs.rm(paths)
        else:
            for path in paths:
                os.unlink(path)
        return len(paths)


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified"))
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
