"""The Google Cloud Storage backend (``gs://``, also ``gcs://``), through ``gcsfs`` (``pip install tierflow[gcs]``).

What GCS gives and how Tierflow uses it:

* an object is visible only once its upload is finalized (a single request, or the last chunk
  of a resumable upload), so nothing partial is ever listed; an unfinished resumable upload holds
  no listed object and expires on its own after a week, so there is nothing to reap;
* the xxh3-128 of each object is kept in its custom metadata (``xxh3-128``), as on S3, and a
  server-side copy (``rewrite``) keeps it; GCS's own MD5/CRC32C are not what the manifest records;
* credentials: the storage options are ``gcsfs.GCSFileSystem``'s (``token``: a service-account key
  file or its parsed JSON, ``"google_default"``, ``"anon"``; ``project``; ``endpoint_url`` for an
  emulator). Outside Airflow, gcsfs reads ``GOOGLE_APPLICATION_CREDENTIALS`` and
  ``STORAGE_EMULATOR_HOST`` itself; in Airflow, a ``google_cloud_platform`` connection gives them
  (:func:`pipelines.operators.context.options_from_connection`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from pipelines.core.config import ConfigError, TierConfig
from pipelines.storage.objects import ObjectTier

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = ["GcsTier"]

#: gcsfs sends resumable uploads in chunks that are multiples of 256 KiB.
_CHUNK_UNIT = 256 * 2**10


class GcsTier(ObjectTier):
    """A bucket and prefix on Google Cloud Storage (or an emulator of its JSON API)."""

    scheme = "gs"
    protocol = "gcs"
    identity_options = ("endpoint_url", "token", "project")

    def __init__(
        self, config: TierConfig, storage_options: dict[str, Any] | None = None, spool_dir: str | None = None
    ) -> None:
        super().__init__(config, storage_options, spool_dir)
        if os.environ.get("STORAGE_EMULATOR_HOST") and "token" not in self.storage_options:
            self.storage_options["token"] = "anon"  # an emulator checks no credentials; finding some would stall

    def _make_fs(self) -> AbstractFileSystem:
        """The JSON-API filesystem of gcsfs.

        Named directly: gcsfs's default class first probes each bucket over gRPC for hierarchical
        namespaces (a minute's timeout where only the JSON API answers, as emulators do).
        """
        try:
            from gcsfs.core import GCSFileSystem
        except ImportError:
            raise ConfigError(f"{self.url()}: gs:// tiers need gcsfs: pip install 'tierflow[gcs]'") from None
        quiet = logging.getLogger("gcsfs")
        if quiet.level == logging.NOTSET:  # it logs every failed request with a traceback; ours says it in one line
            quiet.setLevel(logging.CRITICAL)
        return GCSFileSystem(**self.storage_options)

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        try:
            return super()._find(base)
        except FileNotFoundError as exc:  # gcsfs names the request path ("b/<bucket>/o")
            raise FileNotFoundError(f"{self.scheme}://{base}: not found (is there a bucket '{self.bucket}'?)") from exc

    def upload_file(self, local_path: str, key: str, checksum: str, part_size: int, concurrency: int) -> None:
        """Upload a finished local file (resumable, in chunks of the planned part size) with its checksum."""
        chunk = max(_CHUNK_UNIT, part_size // _CHUNK_UNIT * _CHUNK_UNIT)
        self.fs.put_file(local_path, self.path(key), metadata={self.checksum_metadata: checksum}, chunksize=chunk)
