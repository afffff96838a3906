"""Datasets, manifests and commit markers: one completion rule on every tier.

A dataset version lives under ``datasets/<name>/<version>/`` on a tier. Its manifest lists every
object (key relative to that prefix, size, xxh3-128 checksum). The dataset *exists* on a tier only
once its commit marker, ``datasets/<name>/<version>/_tierflow_commit.json``, is there: the marker
holds the manifest and is written last, after every object is in place and verified. A reader
that finds no marker sees no dataset, whatever objects are lying under the prefix.

Keys are validated when a manifest is built or read (no ``..``, no absolute paths, no NUL or
backslash, nothing under the reserved ``_tierflow`` names), so a hostile manifest is refused
before anything is written.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.core.checksum import ALGORITHM, checksum_bytes
from pipelines.core.keys import safe_key
from pipelines.core.temporaries import TMP_MARKER

__all__ = [
    "COMMIT_MARKER",
    "NAMESPACES",
    "Entry",
    "Manifest",
    "ManifestError",
    "dataset_prefix",
    "list_local_source",
]

COMMIT_MARKER = "_tierflow_commit.json"
#: Keys starting with this are Tierflow's own (markers, probes) and never part of a manifest.
RESERVED_PREFIX = "_tierflow"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ValueError):
    """A manifest or marker that cannot be used; the message names the dataset, object or field."""


@dataclass(frozen=True)
class Entry:
    """One object of a dataset: key relative to the dataset prefix, size, checksum (None until known)."""

    key: str
    size: int
    checksum: str | None = None

    def to_json(self) -> list[Any]:
        """Compact form ``[key, size, checksum]``."""
        return [self.key, self.size, self.checksum]


def _validated_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise ManifestError(f"{where}: key must be a string (got {key!r})")
    try:
        clean = safe_key(key)
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if clean != key:
        raise ManifestError(f"{where}: key {key!r} is not in normal form (expected {clean!r})")
    if clean.split("/", 1)[0].startswith(RESERVED_PREFIX):
        raise ManifestError(f"{where}: key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")
    return clean


def validate_name(value: str, what: str) -> str:
    """Check a dataset name or version: letters, digits, ``.``, ``_``, ``-``; not starting with punctuation."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ManifestError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-'")
    return value


#: What a manifest describes: a dataset version (``datasets/<name>/<version>``) or a checkpoint
#: (``checkpoints/<run>/<checkpoint>``). The same completion rule holds for both.
NAMESPACES = ("datasets", "checkpoints")


def dataset_prefix(name: str, version: str, namespace: str = "datasets") -> str:
    """The key prefix of a dataset version (or, in namespace ``checkpoints``, of a checkpoint) on any tier."""
    if namespace not in NAMESPACES:
        raise ManifestError(f"unknown namespace {namespace!r} (one of {NAMESPACES})")
    return f"{namespace}/{validate_name(name, 'dataset name')}/{validate_name(version, 'dataset version')}"


@dataclass(frozen=True)
class Manifest:
    """Every object of a dataset version, sorted by key."""

    dataset: str
    version: str
    entries: tuple[Entry, ...]
    algorithm: str = ALGORITHM
    namespace: str = "datasets"

    def __post_init__(self) -> None:
        where = f"{self.namespace.rstrip('s')} {self.dataset}/{self.version}"
        if self.namespace not in NAMESPACES:
            raise ManifestError(f"{where}: unknown namespace {self.namespace!r}")
        validate_name(self.dataset, "dataset name")
        validate_name(self.version, "dataset version")
        seen: set[str] = set()
        for entry in self.entries:
            _validated_key(entry.key, where)
            if entry.key in seen:
                raise ManifestError(f"{where}: object {entry.key!r} listed twice")
            if isinstance(entry.size, bool) or not isinstance(entry.size, int) or entry.size < 0:
                raise ManifestError(f"{where}: object {entry.key!r} has an invalid size {entry.size!r}")
            seen.add(entry.key)
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.key)))

    @property
    def total_bytes(self) -> int:
        """Sum of object sizes."""
        return sum(e.size for e in self.entries)

    @property
    def prefix(self) -> str:
        """The dataset version's key prefix."""
        return dataset_prefix(self.dataset, self.version, self.namespace)

    @property
    def complete(self) -> bool:
        """Whether every entry has a checksum (required before a commit)."""
        return all(e.checksum for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-safe data (``namespace`` only when not ``datasets``, so older checksums hold)."""
        data = {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "version": self.version,
            "algorithm": self.algorithm,
            "objects": len(self.entries),
            "bytes": self.total_bytes,
            "entries": [e.to_json() for e in self.entries],
        }
        if self.namespace != "datasets":
            data["namespace"] = self.namespace
        return data

    def checksum(self) -> str:
        """Checksum of the manifest's canonical JSON: the identity of this exact content."""
        return checksum_bytes(json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode())

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest") -> Manifest:
        """Parse and validate a manifest; errors name ``source`` and the field or object at fault."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object")
        for key in ("dataset", "version", "algorithm", "entries", "objects", "bytes"):
            if key not in data:
                raise ManifestError(f"{source}: missing field {key!r}")
        if data["algorithm"] != ALGORITHM:
            raise ManifestError(f"{source}: unsupported checksum algorithm {data['algorithm']!r}")
        entries = []
        for i, raw in enumerate(data["entries"]):
            if not isinstance(raw, list) or len(raw) != 3:
                raise ManifestError(f"{source}: entries[{i}] must be [key, size, checksum]")
            entries.append(Entry(_validated_key(raw[0], f"{source}: entries[{i}]"), raw[1], raw[2]))
        try:
            manifest = cls(
                str(data["dataset"]),
                str(data["version"]),
                tuple(entries),
                data["algorithm"],
                str(data.get("namespace", "datasets")),
            )
        except ManifestError as exc:
            raise ManifestError(f"{source}: {exc}") from None
        if manifest.total_bytes != data["bytes"] or len(manifest.entries) != data["objects"]:
            raise ManifestError(
                f"{source}: totals say {data['objects']} objects / {data['bytes']} B, "
                f"entries hold {len(manifest.entries)} / {manifest.total_bytes} B (truncated?)"
            )
        return manifest

    def shards(self, count: int) -> list[list[Entry]]:
        """Split into at most ``count`` non-empty shards of nearly equal bytes (largest first, deterministic)."""
        count = max(1, min(count, len(self.entries)))
        heap: list[tuple[int, int]] = [(0, i) for i in range(count)]
        shards: list[list[Entry]] = [[] for _ in range(count)]
        for entry in sorted(self.entries, key=lambda e: (-e.size, e.key)):
            size, i = heapq.heappop(heap)
            shards[i].append(entry)
            heapq.heappush(heap, (size + max(entry.size, 1), i))
        return [sorted(s, key=lambda e: e.key) for s in shards if s]


def list_local_source(root: str) -> list[Entry]:
    """List a local directory for a manifest without following symlinks out of it.

    Symlinked directories are not descended into; a symlinked file is included only if it
    resolves inside ``root``. Each directory's files come before its subdirectories', in name
    order (as ``os.walk`` gives them); the walk reads each directory once with ``os.scandir``,
    whose entries tell files from directories and symlinks without a ``stat`` each.

    Raises:
        ManifestError: A symlink points outside the source root (named).
    """
    base = os.path.realpath(root)
    entries: list[Entry] = []
    if not os.path.isdir(base):
        return entries

    def walk(directory: str, rel: str) -> None:
        with os.scandir(directory) as listed:
            found = sorted(listed, key=lambda e: e.name)
        subdirectories = []
        for item in found:
            if not rel and item.name.startswith(RESERVED_PREFIX):  # Tierflow's own, at the top only
                continue
            if item.is_dir():  # following a symlink: a symlinked directory is skipped, not listed as a file
                if not item.is_symlink():
                    subdirectories.append(item)
                continue
            if TMP_MARKER in item.name:
                continue
            if item.is_symlink():
                target = os.path.realpath(item.path)
                if os.path.commonpath([target, base]) != base:
                    raise ManifestError(f"{item.path}: symlink points outside the source {base} (to {target})")
            entries.append(Entry(rel + item.name, item.stat().st_size))
        for item in subdirectories:
            walk(item.path, f"{rel}{item.name}/")

    walk(base, "")
    return entries


def entries_from_json(rows: Sequence[Sequence[Any]], source: str = "shard") -> list[Entry]:
    """Entries from their compact JSON form (as mapped tasks receive them), validated."""
    out = []
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise ManifestError(f"{source}[{i}]: expected [key, size, checksum]")
        out.append(Entry(_validated_key(row[0], f"{source}[{i}]"), int(row[1]), row[2]))
    return out
