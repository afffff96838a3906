"""The S3 backend (``s3://``): S3, MinIO, SeaweedFS and other S3-compatible stores.

Two clients: the AWS Common Runtime (:mod:`pipelines.storage.s3crt`) moves the bytes of
transfers and answers what a copy asks before them (HEAD, listings, unfinished uploads, small
GETs); s3fs serves everything else (writes of small objects, deletes, server-side copies) and
whatever the native client cannot answer — an error there is asked again through s3fs, whose
errors the error map names in one line. s3fs (with aiobotocore and its event loop, ~0.5 s to
import and set up) is only imported when first needed, so a copy of one object starts in a
fraction of that. What the engine needs of an object store is
:class:`~pipelines.storage.objects.ObjectTier`'s; S3 overrides it where S3 differs: the stored
checksum read from a HEAD (``x-amz-meta-xxh3-128``), uploads and downloads with planned part size
and concurrency, and unfinished multipart uploads, which hold storage until aborted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from pipelines.core.config import TierConfig
from pipelines.core.keys import safe_key
from pipelines.storage.credentials import CRT_CREDENTIALS
from pipelines.storage.objects import CHECKSUM_METADATA, ObjectTier
from pipelines.storage.tier import ObjectInfo, _mtime

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

    from pipelines.storage.s3crt import CrtMover

__all__ = ["CHECKSUM_METADATA", "S3Tier", "list_pages"]

log = logging.getLogger(__name__)

#: Seconds to open a connection to the store before the attempt counts as failed.
CONNECT_TIMEOUT_S = 2


class S3Tier(ObjectTier):
    """A bucket and key prefix on an S3-compatible store."""

    scheme = "s3"
    protocol = "s3"
    identity_options = ("endpoint_url", "key", "secret", "profile", "session")  # one connection's tiers share a session

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        options = self.storage_options
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
        # Presigned listing URLs (list_pages) need SigV4 query signing; requests are SigV4 already.
        if not options.get("anon"):
            config_kwargs.setdefault("signature_version", "s3v4")
        options["config_kwargs"] = config_kwargs
        self._native_client: CrtMover | bool | None = False  # False: not tried yet

    def _make_fs(self) -> AbstractFileSystem:
        """The s3fs filesystem (s3fs is imported on first use)."""
        import fsspec

        options = {k: v for k, v in self.storage_options.items() if k != CRT_CREDENTIALS}
        return fsspec.filesystem("s3", **options)

    @property
    def native(self) -> CrtMover | None:
        """The CRT client for metadata requests, or None when it cannot serve these options (s3fs does)."""
        with self._opening:
            if self._native_client is False:
                self._native_client = None
                from pipelines.storage.s3crt import CrtMover, crt_available

                if crt_available(self.storage_options) and _fast_listing_applies(self.storage_options):
                    self._native_client = CrtMover(
                        self.storage_options, 16, 8 * 2**20, retries=False, connect_timeout_ms=CONNECT_TIMEOUT_S * 1000
                    )
            return cast("CrtMover | None", self._native_client)

    def _natively(self, what: str, ask: Any) -> tuple[bool, Any]:
        """``(True, answer)`` from the native client, or ``(False, None)`` when s3fs must be asked instead."""
        from pipelines.storage.s3crt import NativeUnavailable

        client = self.native
        if client is None:
            return False, None
        try:
            return True, ask(client)
        except NativeUnavailable as exc:
            log.debug("%s: asking s3fs (%s)", what, exc)
            return False, None

    # -- reading ------------------------------------------------------------------------------

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        """Every object under ``base``, listed page by page by the native client, else :func:`list_pages`.

        botocore spends ~100 µs parsing each listed object (12 s for 100,000 here, where the
        server answers in 2); the pages are fetched by the CRT client (or, where it cannot sign
        for these options, by presigned ``ListObjectsV2`` URLs from s3fs's client) and parsed with
        ElementTree, the next page in flight while this one is parsed. What neither can serve
        (an error, a proxy, an exact object for the presigned path) is listed through s3fs, whose
        errors are the ones to show.
        """
        if not _fast_listing_applies(self.storage_options):
            return super()._find(base)
        done, found = self._natively(base, lambda native: self._native_find(native, base))
        if done:
            return cast(dict[str, dict[str, Any]], found)
        try:
            found = list_pages(self.fs, base)
        except Exception as exc:  # the s3fs listing below raises the error worth showing, if any
            log.debug("%s: fast listing unavailable (%s): listing through s3fs", base, exc)
            return super()._find(base)
        return found or super()._find(base)

    @staticmethod
    def _native_find(native: CrtMover, base: str) -> dict[str, dict[str, Any]]:
        """s3fs's ``find`` through the native client: the objects under ``base/``, else ``base`` itself."""
        from pipelines.storage.s3crt import object_info

        bucket, _, key = base.partition("/")
        found = native.list_objects(bucket, f"{key.rstrip('/')}/" if key else "")
        if found or not key:
            return found
        headers = native.head(base)  # an object named exactly by the prefix, or nothing there
        return {} if headers is None else {base: object_info(base, headers)}

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of one object (one HEAD).

        Raises:
            FileNotFoundError: No such object (a prefix with objects under it is not one).
        """
        from pipelines.storage.s3crt import object_info

        done, headers = self._natively(key, lambda native: native.head(self.path(key)))
        if not done:
            return super().stat(key)
        if headers is None:
            raise FileNotFoundError(f"{self.url(key)}: no such object")
        return ObjectInfo(safe_key(key), int(headers.get("content-length", 0)), _mtime(object_info(key, headers)))

    def read_bytes(self, key: str) -> bytes:
        """Read a whole (small) object in one GET."""
        done, body = self._natively(key, lambda native: native.get(self.path(key)))
        if not done:
            return super().read_bytes(key)
        if body is None:
            raise FileNotFoundError(f"{self.url(key)}: no such object")
        return cast(bytes, body)

    # -- what the engine needs of an object store ------------------------------------------

    def stored_checksum(self, key: str) -> str | None:
        """The xxh3-128 the object carries in its metadata, if any (one HEAD).

        Raises:
            FileNotFoundError: No such object.
        """
        done, headers = self._natively(key, lambda native: native.head(self.path(key)))
        if not done:
            value = self.fs.metadata(self.path(key)).get(CHECKSUM_METADATA)
            return str(value) if value else None
        if headers is None:
            raise FileNotFoundError(f"{self.url(key)}: no such object")
        return headers.get(f"x-amz-meta-{CHECKSUM_METADATA}") or None

    def upload_file(self, local_path: str, key: str, checksum: str, part_size: int, concurrency: int) -> None:
        """Upload a finished local file with its checksum in the metadata (s3fs; the CRT path is faster)."""
        self.fs.put_file(
            local_path,
            self.path(key),
            chunksize=part_size,
            max_concurrency=concurrency,
            Metadata={CHECKSUM_METADATA: checksum},
        )

    def copy_within(self, src_key: str, dst: ObjectTier, dst_key: str, checksum: str, stored: str | None) -> None:
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

    def unfinished_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Unfinished multipart uploads under ``prefix``: ``Key`` (bucket-relative), ``UploadId``, ``Initiated``."""
        bucket, full = self._bucket_key(prefix) if prefix else (self.bucket, self.root.partition("/")[2])
        done, uploads = self._natively(prefix, lambda native: list(native.list_uploads(bucket, full)))
        if done:
            yield from uploads
            return
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


_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def _fast_listing_applies(options: dict[str, Any]) -> bool:
    """Whether presigned listing reaches the store as the client would: signed, no proxy in between."""
    return not options.get("anon") and not any(os.environ.get(k) for k in _PROXY_ENV)


def list_pages(fs: Any, base: str) -> dict[str, dict[str, Any]]:
    """Every object under ``base`` (``bucket/prefix``) by presigned ``ListObjectsV2`` pages, s3fs-shaped.

    Raises:
        OSError: A page came back with another status than 200 (the caller lists through s3fs).
    """
    from concurrent.futures import ThreadPoolExecutor

    import urllib3
    from fsspec.asyn import sync

    from pipelines.storage.s3crt import add_listed, read_list_page

    bucket, _, key = base.partition("/")
    prefix = f"{key.rstrip('/')}/" if key else ""
    sync(fs.loop, fs.set_session)
    client = fs.s3
    pool = getattr(fs, "_tierflow_list_pool", None)  # one pool per filesystem: its connections are kept
    if pool is None:
        verify = (fs.client_kwargs or {}).get("verify", True)
        pool = urllib3.PoolManager(
            cert_reqs="CERT_NONE" if verify is False else "CERT_REQUIRED",
            ca_certs=verify if isinstance(verify, str) else None,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=60),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        )
        fs._tierflow_list_pool = pool

    def fetch(token: str | None) -> bytes:
        params = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000, "EncodingType": "url"}
        if token:
            params["ContinuationToken"] = token
        url = sync(fs.loop, client.generate_presigned_url, "list_objects_v2", Params=params, ExpiresIn=900)
        answer = pool.request("GET", url, preload_content=True)
        if answer.status != 200:
            raise OSError(f"ListObjectsV2 {bucket}/{prefix}: HTTP {answer.status}")
        return bytes(answer.data)

    found: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=1) as ahead:
        page = fetch(None)
        while True:
            root, token, truncated = read_list_page(page)
            following = ahead.submit(fetch, token) if truncated and token else None  # in flight while we parse
            add_listed(root, bucket, found)
            if following is None:
                if truncated:
                    raise OSError(f"ListObjectsV2 {bucket}/{prefix}: truncated page without a continuation token")
                return found
            page = following.result()
