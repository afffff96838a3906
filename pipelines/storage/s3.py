"""The S3 backend (``s3://``): S3, MinIO, SeaweedFS and other S3-compatible stores, through s3fs.

s3fs serves listings, metadata, deletes, small objects and server-side copies; the bulk bytes of
large transfers go through the AWS Common Runtime client (:mod:`pipelines.storage.s3crt`). The
object-store operations the engine needs beyond the :class:`~pipelines.storage.tier.Tier`
interface are methods here, so that other object stores can offer the same ones: the stored
checksum (user metadata ``xxh3-128``), uploads and downloads of local files, server-side copies,
and unfinished multipart uploads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast

import fsspec

from pipelines.core.config import TierConfig
from pipelines.storage.credentials import CRT_CREDENTIALS
from pipelines.storage.tier import Tier

__all__ = ["CHECKSUM_METADATA", "S3Tier"]

#: User metadata key carrying the xxh3-128 checksum (``x-amz-meta-xxh3-128``).
CHECKSUM_METADATA = "xxh3-128"
#: Sub-prefixes listed at once when listing a tree.
LIST_CONCURRENCY = 32
#: Seconds to open a connection to the store before the attempt counts as failed.
CONNECT_TIMEOUT_S = 2


class S3Tier(Tier):
    """A bucket and key prefix on an S3-compatible store."""

    scheme = "s3"

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        options = self.storage_options
        # Listings must be fresh: another process may have written since (resume, concurrent runs).
        options.setdefault("use_listings_cache", False)
        # Tierflow verifies its own xxh3 checksums; botocore's default CRC on every request costs
        # CPU and some S3-compatible servers reject the headers.
        config_kwargs = dict(options.get("config_kwargs") or {})
        config_kwargs.setdefault("request_checksum_calculation", "when_required")
        config_kwargs.setdefault("response_checksum_validation", "when_required")
        # A store that does not answer is reported within seconds, not after botocore's 60 s
        # connect timeout and five attempts; throttling (503 SlowDown) is still retried with backoff.
        config_kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        config_kwargs.setdefault("retries", {"total_max_attempts": 2, "mode": "standard"})
        # Enough connections for the widest plan (botocore's default pool of 10 throttles transfers).
        config_kwargs.setdefault("max_pool_connections", 64)
        options["config_kwargs"] = config_kwargs
        self.fs = fsspec.filesystem("s3", **{k: v for k, v in options.items() if k != CRT_CREDENTIALS})

    @property
    def bucket(self) -> str:
        """The tier's bucket."""
        return self.root.partition("/")[0]

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, _, full = self.path(key).partition("/")
        return bucket, full

    # -- reading ------------------------------------------------------------------------------

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        """Every object under ``base``: one delimited listing, then each common prefix listed concurrently.

        A store pages a flat listing 1,000 keys at a time, one page after the other; a dataset
        spread over sub-prefixes (shards, ranks, parts) lists as fast as the prefixes can be listed
        side by side. Under a single level of keys it is the flat listing.
        """
        import asyncio

        from fsspec.asyn import sync

        try:
            top = self.fs.ls(base, detail=True, refresh=True)
        except FileNotFoundError:
            return super()._find(base)  # nothing there (or no bucket): as the flat listing says
        found = {o["name"]: o for o in top if o.get("type") != "directory"}
        prefixes = [o["name"] for o in top if o.get("type") == "directory"]
        if not prefixes:
            return found
        gate = asyncio.Semaphore(LIST_CONCURRENCY)

        async def below(prefix: str) -> dict[str, dict[str, Any]]:
            async with gate:
                return cast(dict[str, dict[str, Any]], await self.fs._find(prefix, detail=True))

        async def every() -> list[dict[str, dict[str, Any]]]:
            return list(await asyncio.gather(*(below(p) for p in prefixes)))

        for part in sync(self.fs.loop, every):
            found.update(part)
        return found

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str, fsync: bool = False) -> Iterator[BinaryIO]:
        """Spool to a local temporary file (bounded memory), uploaded whole once the block exits cleanly."""
        with tempfile.NamedTemporaryFile(prefix="tierflow-spool-", dir=self.spool_dir) as spool:
            yield cast(BinaryIO, spool)
            spool.flush()
            self.fs.put_file(spool.name, self.path(key))

    def write_bytes(self, key: str, data: bytes, fsync: bool = False) -> None:
        """Write a small object in one PUT."""
        self.fs.pipe_file(self.path(key), data)

    def put_file(self, local_path: str | os.PathLike[str], key: str, fsync: bool = False) -> None:
        """Upload a finished local file to ``key`` (a whole PUT or a completed multipart upload)."""
        self.fs.put_file(str(local_path), self.path(key))

    def delete(self, keys: Iterable[str]) -> int:
        """Delete objects (batched: s3fs sends up to 1,000 keys per request). Returns how many were asked."""
        paths = [self.path(k) for k in keys]
        if paths:
            self.fs.rm(paths)
        return len(paths)

    # -- what the engine needs of an object store ------------------------------------------

    def stored_checksum(self, key: str) -> str | None:
        """The xxh3-128 the object carries in its metadata, if any (one HEAD)."""
        value = self.fs.metadata(self.path(key)).get(CHECKSUM_METADATA)
        return str(value) if value else None

    def upload_file(self, local_path: str, key: str, checksum: str, part_size: int, concurrency: int) -> None:
        """Upload a finished local file with its checksum in the metadata (s3fs; the CRT path is faster)."""
        self.fs.put_file(
            local_path,
            self.path(key),
            chunksize=part_size,
            max_concurrency=concurrency,
            Metadata={CHECKSUM_METADATA: checksum},
        )

    def download_file(self, key: str, local_path: str, part_size: int, concurrency: int) -> None:
        """Download an object to a local path (ranged parts in parallel)."""
        self.fs.get_file(self.path(key), local_path, chunksize=part_size, max_concurrency=concurrency)

    def copy_within(self, src_key: str, dst: S3Tier, dst_key: str, checksum: str, stored: str | None) -> None:
        """Server-side copy to ``dst`` (same store), setting the checksum metadata if the source lacks it."""
        self.fs.copy(self.path(src_key), dst.path(dst_key))
        if stored != checksum:
            bucket, key = dst._bucket_key(dst_key)
            dst.fs.call_s3(
                "copy_object",
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                Metadata={CHECKSUM_METADATA: checksum},
                MetadataDirective="REPLACE",
            )

    def same_store(self, other: Tier) -> bool:
        """Whether ``other`` is on the same endpoint with the same credentials (server-side copies work)."""
        if not isinstance(other, S3Tier):
            return False
        keys = ("endpoint_url", "key", "secret", "profile", "session")  # one connection's tiers share a session
        return all(self.storage_options.get(k) == other.storage_options.get(k) for k in keys)

    def unfinished_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Unfinished multipart uploads under ``prefix``: ``Key`` (bucket-relative), ``UploadId``, ``Initiated``."""
        bucket, full = self._bucket_key(prefix) if prefix else (self.bucket, self.root.partition("/")[2])
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": full}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", **kwargs)
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def abort_upload(self, upload: dict[str, Any]) -> None:
        """Abort one unfinished multipart upload (gone already is fine)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.call_s3(
                "abort_multipart_upload", Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
