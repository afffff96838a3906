"""An independent checker for the fault suite: its own listing and its own xxh3, none of Tierflow's code.

It reads only the on-store format (commit markers are JSON with a ``manifest`` whose ``entries``
are ``[key, size, xxh3-128 hex]``, relative to the marker's directory; temporaries contain
``.tierflow-tmp-``) and asserts the invariants every fault must leave intact:

* every commit marker's manifest verifies: each object there, with its size and checksum;
* nothing partial (or foreign) under a final name: each object under a copy's destination has the
  bytes of the source's object of the same key;
* no multipart upload left unfinished under a prefix (after the rerun);
* no temporary left (after the rerun).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import xxhash
from botocore.config import Config

MARKER = "_tierflow_commit.json"
TEMPORARY = ".tierflow-tmp-"
RESERVED = "_tierflow"


def xxh3_file(path: str) -> tuple[int, str]:
    h = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


@dataclass
class Verified:
    """What one check looked at."""

    markers: int = 0
    objects: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Verified) -> Verified:
        self.markers += other.markers
        self.objects += other.objects
        self.bytes += other.bytes
        self.problems += other.problems
        return self


class Store:
    """A place to check: a local directory, or a bucket and prefix on an S3 endpoint."""

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key (relative to the store) → size."""
        raise NotImplementedError

    def digest(self, key: str) -> tuple[int, str]:
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError


class LocalStore(Store):
    def __init__(self, root: str) -> None:
        self.root = os.fspath(root)

    def objects(self, prefix: str = "") -> dict[str, int]:
        base = os.path.join(self.root, prefix) if prefix else self.root
        out = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, self.root)] = os.lstat(path).st_size
        return out

    def digest(self, key: str) -> tuple[int, str]:
        return xxh3_file(os.path.join(self.root, key))

    def read(self, key: str) -> bytes:
        with open(os.path.join(self.root, key), "rb") as fh:
            return fh.read()


class S3Store(Store):
    def __init__(self, endpoint: str, key: str, secret: str, region: str, bucket: str, root: str) -> None:
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=region,
            config=Config(retries={"max_attempts": 10, "mode": "standard"}),
        )
        self.bucket, self.root = bucket, root.strip("/")

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def objects(self, prefix: str = "") -> dict[str, int]:
        out = {}
        full = self._full(prefix) if prefix else self.root
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(self.root) :].lstrip("/")] = int(obj["Size"])
        return out

    def digest(self, key: str) -> tuple[int, str]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        h = xxhash.xxh3_128()
        size = 0
        for block in iter(lambda: body.read(1 << 20), b""):
            h.update(block)
            size += len(block)
        return size, h.hexdigest()

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read())

    def pending_uploads(self, prefix: str = "") -> list[str]:
        full = self._full(prefix) if prefix else self.root
        page = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full)
        return [u["Key"] for u in page.get("Uploads", [])]


def markers(store: Store, prefix: str = "") -> Iterator[str]:
    for key in sorted(store.objects(prefix)):
        if key.rsplit("/", 1)[-1] == MARKER:
            yield key


def check_markers(store: Store, prefix: str = "") -> Verified:
    """Every commit marker under ``prefix`` names objects that are there with its sizes and checksums."""
    result = Verified()
    listing = store.objects(prefix)
    for key in markers(store, prefix):
        result.markers += 1
        base = key.rsplit("/", 1)[0] if "/" in key else ""
        try:
            data: dict[str, Any] = json.loads(store.read(key))
            entries = data["manifest"]["entries"]
        except (ValueError, KeyError, TypeError) as exc:
            result.problems.append(f"{key}: unreadable marker ({exc})")
            continue
        for rel, size, checksum in entries:
            obj = f"{base}/{rel}" if base else rel
            if listing.get(obj) != size:
                result.problems.append(f"{key}: {obj} is {listing.get(obj)} B, the manifest says {size}")
                continue
            got = store.digest(obj)
            if got != (size, checksum):
                result.problems.append(f"{key}: {obj} has checksum {got[1]}, the manifest says {checksum}")
            result.objects += 1
            result.bytes += size
    return result


def check_copy(dst: Store, dst_prefix: str, source: dict[str, tuple[int, str]]) -> Verified:
    """Each object under ``dst_prefix`` (Tierflow's own keys aside) is whole: the source's bytes for its key."""
    result = Verified()
    for key, size in dst.objects(dst_prefix).items():
        rel = key[len(dst_prefix) :].lstrip("/") if dst_prefix else key
        name = rel.rsplit("/", 1)[-1]
        if TEMPORARY in name or rel.split("/", 1)[0].startswith(RESERVED) or name == MARKER:
            continue
        if rel not in source:
            result.problems.append(f"{key}: not in the source")
            continue
        got = dst.digest(key)
        if got != source[rel]:
            result.problems.append(f"{key}: {got[0]} B / {got[1]} under a final name, the source has {source[rel]}")
        result.objects += 1
        result.bytes += size
    return result


def temporaries(root: str) -> list[str]:
    """Tierflow temporaries anywhere under a local directory."""
    return [os.path.join(d, n) for d, _, files in os.walk(root) for n in files if TEMPORARY in n]


def tree_digests(root: str) -> dict[str, tuple[int, str]]:
    """Every file under a local directory: relative key → (size, xxh3-128)."""
    store = LocalStore(root)
    return {k: store.digest(k) for k in store.objects()}
