"""What an interrupted copy leaves: stale temporaries on file tiers, unfinished multipart uploads on object tiers."""

from __future__ import annotations

import os
from typing import Any

from pipelines.core.temporaries import TMP_MARKER, is_stale_temporary
from pipelines.storage.tier import Tier

__all__ = ["reap_multipart_uploads", "remove_temporaries"]


def join_key(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def remove_temporaries(tier: Tier, prefix: str) -> int:
    """Delete Tierflow temporaries left under ``prefix`` on a file tier by an interrupted copy.

    Only stale ones (:func:`pipelines.storage.tier.is_stale_temporary`): a concurrent copy's live
    temporaries are left alone.
    """
    if tier.config.is_object:
        return 0
    root = tier.path(prefix) if prefix else tier.root
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TMP_MARKER in name and is_stale_temporary(os.path.join(dirpath, name)):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def reap_multipart_uploads(tier: Tier, prefix: str) -> int:
    """Abort unfinished multipart uploads under ``prefix`` on an object tier; returns how many."""
    if not tier.config.is_object:
        return 0
    bucket, _, root = tier.root.partition("/")
    full = join_key(root, prefix) if prefix else root
    reaped = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": full}
    while True:
        page = tier.fs.call_s3("list_multipart_uploads", **kwargs)
        for upload in page.get("Uploads", []):
            tier.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            reaped += 1
        if not page.get("IsTruncated"):
            return reaped
        kwargs["KeyMarker"] = page.get("NextKeyMarker")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")
