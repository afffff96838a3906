"""What every object-store backend shares: an fsspec filesystem over buckets, and the engine's extras.

:class:`ObjectTier` is the base of the S3 (:mod:`pipelines.storage.s3`), Google Cloud Storage
(:mod:`pipelines.storage.gcs`) and Azure Blob (:mod:`pipelines.storage.azure`) backends. Beyond
the :class:`~pipelines.storage.tier.Tier` interface it offers what the transfer engine asks of an
object store, in fsspec's terms, so a backend overrides only where its store differs:

* the checksum an object carries in its user metadata (:attr:`ObjectTier.checksum_metadata`);
* uploads and downloads of finished local files (an object becomes visible whole, or not at all);
* server-side copies between tiers of one store (:meth:`ObjectTier.same_store`);
* unfinished uploads, for stores whose partial uploads outlive their writer (S3 multipart).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, cast

from pipelines.core.config import TierConfig
from pipelines.storage.tier import Tier

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = ["CHECKSUM_METADATA", "ObjectTier"]

#: User metadata key carrying the xxh3-128 checksum (``x-amz-meta-xxh3-128`` on S3).
CHECKSUM_METADATA = "xxh3-128"


class ObjectTier(Tier):
    """A bucket (container) and key prefix on an object store, reached through an fsspec filesystem.

    Subclasses set :attr:`protocol` (the fsspec protocol) and may override :meth:`_make_fs` and the
    engine's operations below.
    """

    #: The fsspec protocol that serves this store.
    protocol: ClassVar[str] = ""
    #: User metadata key of the xxh3-128 checksum (stores differ in which names they allow).
    checksum_metadata: ClassVar[str] = CHECKSUM_METADATA
    #: Storage options that identify one account: tiers equal in all of them can copy server-side.
    identity_options: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        # Listings must be fresh: another process may have written since (resume, concurrent runs).
        self.storage_options.setdefault("use_listings_cache", False)
        # The URL's own spelling (gs:// or gcs://, az:// or abfs://), so URLs read back as configured.
        self.scheme = config.url.partition("://")[0]
        self._opening = threading.Lock()
        self._fs: AbstractFileSystem | None = None

    @property
    def fs(self) -> AbstractFileSystem:
        """The store's fsspec filesystem, created (and its library imported) on first use."""
        with self._opening:
            if self._fs is None:
                self._fs = self._make_fs()
            return self._fs

    def _make_fs(self) -> AbstractFileSystem:
        import fsspec

        return fsspec.filesystem(self.protocol, **self.storage_options)

    @property
    def bucket(self) -> str:
        """The tier's bucket (container)."""
        return self.root.partition("/")[0]

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, _, full = self.path(key).partition("/")
        return bucket, full

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str, fsync: bool = False) -> Iterator[BinaryIO]:
        """Spool to a local temporary file (bounded memory), uploaded whole once the block exits cleanly."""
        with tempfile.NamedTemporaryFile(prefix="tierflow-spool-", dir=self.spool_dir) as spool:
            yield cast(BinaryIO, spool)
            spool.flush()
            self.put_file(spool.name, key)

    def write_bytes(self, key: str, data: bytes, fsync: bool = False) -> None:
        """Write a small object in one request."""
        self.fs.pipe_file(self.path(key), data)

    def put_file(self, local_path: Any, key: str, fsync: bool = False) -> None:
        """Upload a finished local file to ``key`` (visible only once the upload completes)."""
        self.fs.put_file(str(local_path), self.path(key))

    def delete(self, keys: Iterable[str]) -> int:
        """Delete objects (batched where the store allows). Returns how many were asked."""
        paths = [self.path(k) for k in keys]
        if paths:
            self.fs.rm(paths)
        return len(paths)

    # -- what the engine needs of an object store ------------------------------------------

    def stored_checksum(self, key: str) -> str | None:
        """The xxh3-128 the object carries in its metadata, if any.

        Raises:
            FileNotFoundError: No such object.
        """
        value = (self.fs.info(self.path(key)).get("metadata") or {}).get(self.checksum_metadata)
        return str(value) if value else None

    def upload_file(self, local_path: str, key: str, checksum: str, part_size: int, concurrency: int) -> None:
        """Upload a finished local file with its checksum in the object's metadata."""
        self.fs.put_file(local_path, self.path(key), metadata={self.checksum_metadata: checksum})

    def download_file(self, key: str, local_path: str, size: int, part_size: int, concurrency: int) -> tuple[str, int]:
        """Download an object of ``size`` bytes (as listed) to a local path; its checksum and the bytes written.

        An object larger than one part is read in ranges of ``part_size``, ``concurrency`` at a
        time, and written in order as they arrive, hashed while they pass (never read back) and
        written in the page cache's slices (:mod:`pipelines.core.fileio`). At most ``concurrency``
        parts are held at once. A smaller one is one request. The caller compares the result with
        what it expected and renames the file into place once verified.
        """
        import itertools
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        from pipelines.core.checksum import Hasher
        from pipelines.core.fileio import write_all

        path, hasher = self.path(key), Hasher()
        fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if size <= part_size:  # whole: no range to refuse on an empty object, and a grown one shows
                data = self.fs.cat_file(path)
                hasher.update(data)
                write_all(fd, data)
                return hasher.hexdigest(), hasher.size
            ranges = iter([(start, min(start + part_size, size)) for start in range(0, size, part_size)])
            with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="tierflow-get") as pool:
                pending = deque(
                    pool.submit(self.fs.cat_file, path, start=a, end=b)
                    for a, b in itertools.islice(ranges, concurrency)
                )
                try:
                    while pending:
                        data = pending.popleft().result()
                        for a, b in itertools.islice(ranges, 1):  # the next range as this one is taken
                            pending.append(pool.submit(self.fs.cat_file, path, start=a, end=b))
                        hasher.update(data)
                        write_all(fd, data)
                finally:
                    for left in pending:  # after a failure: the ranges not started are not fetched
                        left.cancel()
            return hasher.hexdigest(), hasher.size
        finally:
            os.close(fd)

    def copy_within(self, src_key: str, dst: ObjectTier, dst_key: str, checksum: str, stored: str | None) -> None:
        """Server-side copy to ``dst`` (same store); the checksum metadata is set if the source lacks it."""
        self.fs.copy(self.path(src_key), dst.path(dst_key))
        if stored != checksum:
            dst.fs.setxattrs(dst.path(dst_key), **{dst.checksum_metadata: checksum})

    def same_store(self, other: Tier) -> bool:
        """Whether ``other`` is on the same store with the same credentials (server-side copies work)."""
        if type(other) is not type(self):
            return False
        assert isinstance(other, ObjectTier)
        return all(self.storage_options.get(k) == other.storage_options.get(k) for k in self.identity_options)

    def unfinished_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Unfinished uploads under ``prefix`` that hold storage until aborted: none, unless the store has them."""
        return iter(())

    def abort_upload(self, upload: dict[str, Any]) -> None:
        """Abort one unfinished upload (see :meth:`unfinished_uploads`)."""
        raise NotImplementedError(f"{self.url()}: this store has no unfinished uploads to abort")
