"""The Azure Blob Storage backend (``az://``, also ``abfs://``), through ``adlfs`` (``pip install tierflow[azure]``).

What Azure Blob gives and how Tierflow uses it:

* a block blob is visible only once its block list is committed: staged blocks of an upload that
  died are never listed and are discarded by the service after a week, so there is nothing to reap;
* the xxh3-128 is kept in the blob's metadata under ``xxh3_128`` (metadata names are C#
  identifiers: no ``-``), set in the same request that commits the blob;
* a server-side copy (``Copy Blob``) may finish after its request returns: the copy waits until
  the service reports it done;
* credentials: the storage options are ``adlfs.AzureBlobFileSystem``'s (``account_name`` with
  ``account_key`` or ``sas_token``, or a ``connection_string``; without them, adlfs reads
  ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` or uses
  Azure's default credential); in Airflow, a ``wasb`` connection gives them
  (:func:`pipelines.operators.context.options_from_connection`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipelines.core.config import ConfigError
from pipelines.storage.objects import ObjectTier

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = ["AzureTier"]

#: How long a server-side copy may stay pending before the copy fails.
COPY_TIMEOUT_S = 600.0


class AzureTier(ObjectTier):
    """A container and prefix on Azure Blob Storage (or Azurite)."""

    scheme = "az"
    protocol = "abfs"
    checksum_metadata = "xxh3_128"
    identity_options = ("account_name", "account_key", "connection_string", "sas_token", "account_host")

    def _make_fs(self) -> AbstractFileSystem:
        try:
            from adlfs import AzureBlobFileSystem
        except ImportError:
            raise ConfigError(f"{self.url()}: az:// tiers need adlfs: pip install 'tierflow[azure]'") from None
        return AzureBlobFileSystem(**self.storage_options)

    def _metadata(self, checksum: str) -> dict[str, str]:
        # adlfs marks its blobs as files in their metadata; keep that beside the checksum.
        return {"is_directory": "false", self.checksum_metadata: checksum}

    def upload_file(self, local_path: str, key: str, checksum: str, part_size: int, concurrency: int) -> None:
        """Upload a finished local file as a block blob, committed together with its checksum metadata."""
        from fsspec.asyn import sync

        fs: Any = self.fs
        container, blob = self._bucket_key(key)

        async def upload() -> None:
            async with fs.service_client.get_blob_client(container, blob) as client:
                with open(local_path, "rb") as fh:
                    await client.upload_blob(
                        fh, overwrite=True, metadata=self._metadata(checksum), max_concurrency=max(1, concurrency)
                    )

        try:
            with self._translated(f"upload to {self.url(key)}"):
                sync(fs.loop, upload)
        finally:
            fs.invalidate_cache()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Azure's errors from the blob client as the builtins the rest of Tierflow classifies, in one line."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        try:
            yield
        except ResourceNotFoundError as exc:
            code = getattr(exc, "error_code", None) or "not found"
            if code == "ContainerNotFound":
                raise FileNotFoundError(f"{what}: no container '{self.bucket}' in this storage account") from exc
            raise FileNotFoundError(f"{what}: {code}") from exc
        except ClientAuthenticationError as exc:
            raise PermissionError(f"{what}: refused ({getattr(exc, 'error_code', None) or 'authentication'})") from exc
        except HttpResponseError as exc:
            status = getattr(exc, "status_code", None)
            code = getattr(exc, "error_code", None) or status
            if status in (401, 403):
                raise PermissionError(f"{what}: refused ({code})") from exc
            raise OSError(f"{what}: Azure error {status} ({code})") from exc  # 5xx and throttling: retried

    def copy_within(self, src_key: str, dst: ObjectTier, dst_key: str, checksum: str, stored: str | None) -> None:
        """Server-side copy to ``dst`` (same account), waited for until the service reports it finished."""
        assert isinstance(dst, AzureTier)
        with self._translated(f"copy of {self.url(src_key)} to {dst.url(dst_key)}"):
            self.fs.copy(self.path(src_key), dst.path(dst_key))
        deadline = time.monotonic() + COPY_TIMEOUT_S
        while (status := dst._copy_status(dst_key)) == "pending":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dst.url(dst_key)}: server-side copy still pending after {COPY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        if status not in (None, "success"):
            raise OSError(f"{dst.url(dst_key)}: server-side copy from {self.url(src_key)} ended {status}")
        if stored != checksum:
            dst.fs.setxattrs(dst.path(dst_key), **dst._metadata(checksum))

    def _copy_status(self, key: str) -> str | None:
        from fsspec.asyn import sync

        fs: Any = self.fs
        container, blob = self._bucket_key(key)

        async def status() -> str | None:
            async with fs.service_client.get_blob_client(container, blob) as client:
                props = await client.get_blob_properties()
                return props.copy.status if props.copy is not None else None

        with self._translated(f"copy status of {self.url(key)}"):
            return sync(fs.loop, status)
