"""The NVMe cache: capacity accounting, pins with expiry, and least-recently-used eviction of whole datasets.

Rules no setting can break:

* only whole, committed dataset versions are evicted, least recently used first (and uncommitted
  copies no live writer has touched for an hour, which no one will finish);
* a version is evicted only when the *same content* (same manifest checksum) is committed on a
  more durable tier — never the only copy;
* a version pinned by a running job (a pin not yet expired) is never evicted;
* eviction removes the commit marker first (the dataset stops existing at once), then the data,
  and reports what it removed and why.

Per-version state lives next to the data, under Tierflow's reserved names:
``datasets/<name>/<version>/_tierflow_lastuse.json`` and ``.../_tierflow_pins/<holder>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.core.config import DURABILITY
from pipelines.core.errors import TierflowError
from pipelines.core.manifest import COMMIT_MARKER, Manifest, dataset_prefix
from pipelines.core.temporaries import STALE_TEMPORARY_S, temporaries_under
from pipelines.storage.commit import read_commit
from pipelines.storage.pins import pin_expiries, remove_pin, write_pin
from pipelines.storage.tier import Tier

__all__ = [
    "CacheEntry",
    "CacheFullError",
    "EvictionReport",
    "cache_entries",
    "ensure_space",
    "file_system_free",
    "live_writer",
    "pin",
    "require_space",
    "space_needed",
    "touch",
    "unpin",
]

LASTUSE = "_tierflow_lastuse.json"


class CacheFullError(TierflowError):
    """Not enough can be evicted to make room; the message says what blocks it."""


@dataclass(frozen=True)
class CacheEntry:
    """One dataset version present on a cache tier."""

    dataset: str
    version: str
    bytes: int
    committed: bool
    manifest_checksum: str | None
    last_used: float
    pinned_by: tuple[str, ...]
    abandoned: bool = False  #: uncommitted, no live writer's temporary and nothing written for STALE_TEMPORARY_S
    pins: tuple[tuple[str, float], ...] = ()  #: ``(holder, expires)`` of each live pin

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (the CLI's ``--json``, the plugin's inventory)."""
        return {
            "dataset": self.dataset,
            "version": self.version,
            "bytes": self.bytes,
            "committed": self.committed,
            "manifest_checksum": self.manifest_checksum,
            "last_used": self.last_used or None,
            "pinned_by": list(self.pinned_by),
            "pins": [{"holder": holder, "expires": expires} for holder, expires in self.pins],
            "abandoned": self.abandoned,
        }


@dataclass(frozen=True)
class EvictionReport:
    """What an eviction pass did: what it removed (with why) and what it kept (with why)."""

    needed_bytes: int
    free_before: int
    free_after: int
    evicted: tuple[dict[str, Any], ...]
    kept: tuple[dict[str, Any], ...]

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "needed_bytes": self.needed_bytes,
            "free_before": self.free_before,
            "free_after": self.free_after,
            "evicted": list(self.evicted),
            "kept": list(self.kept),
        }


def touch(tier: Tier, dataset: str, version: str, now: float | None = None) -> None:
    """Record that a dataset version was used now (staged or read)."""
    key = f"{dataset_prefix(dataset, version)}/{LASTUSE}"
    tier.write_bytes(key, json.dumps({"last_used": now if now is not None else time.time()}).encode())


def pin(tier: Tier, dataset: str, version: str, holder: str, ttl_s: float, now: float | None = None) -> None:
    """Pin a dataset version for ``ttl_s`` seconds on behalf of ``holder`` (e.g. a job id); renew by pinning again."""
    write_pin(tier, dataset_prefix(dataset, version), holder, ttl_s, now)


def unpin(tier: Tier, dataset: str, version: str, holder: str) -> None:
    """Remove ``holder``'s pin (no error if there is none)."""
    remove_pin(tier, dataset_prefix(dataset, version), holder)


#: A marker's size per manifest entry, at most (key, size and checksum as JSON), and its fixed part.
MARKER_BYTES_PER_ENTRY = 96
MARKER_BYTES_FIXED = 4096


def space_needed(tier: Tier, manifest: Manifest) -> int:
    """Bytes a version takes on a file tier beyond what is already there of it.

    Each object missing (or of another size) counts rounded up to the file system's block, plus
    its commit marker and use record: a version whose data fits but whose marker does not would
    fill the disk and never commit. Zero for object tiers (no space to check).
    """
    if tier.config.is_object:
        return 0
    try:
        block = os.statvfs(tier.root).f_frsize or 4096
    except OSError:
        block = 4096
    present = {o.key: o.size for o in tier.list(manifest.prefix)}

    def blocks(n: int) -> int:
        return -(-n // block) * block

    data = sum(blocks(e.size) for e in manifest.entries if present.get(f"{manifest.prefix}/{e.key}") != e.size)
    marker = MARKER_BYTES_FIXED + sum(MARKER_BYTES_PER_ENTRY + len(e.key.encode()) for e in manifest.entries)
    return data + blocks(marker) + blocks(1)


def file_system_free(tier: Tier) -> int | None:
    """Bytes free on the file system under a file tier's root (None for object tiers)."""
    if tier.config.is_object:
        return None
    return shutil.disk_usage(tier.root).free


def require_space(tier: Tier, needed_bytes: int, what: str) -> None:
    """Refuse, before anything is copied, a version that does not fit a file tier that is not a cache.

    Both limits count: the tier's capacity budget (its config) and the file system's real free space.

    Raises:
        CacheFullError: It does not fit (one line: how much is needed, free, and where).
    """
    if tier.config.is_object or needed_bytes <= 0:
        return
    used = sum(o.size for o in tier.list("datasets"))  # what cache_entries would sum, without reading markers
    budget = tier.config.capacity_bytes - used
    real = file_system_free(tier)
    free = budget if real is None else min(budget, real)
    if needed_bytes > free:
        limit = "its capacity budget" if real is None or budget <= real else f"the file system at {tier.root}"
        raise CacheFullError(
            f"{tier.name}: {what} needs {needed_bytes} B, {max(free, 0)} B free (limited by {limit}); "
            "nothing was copied"
        )


def cache_entries(tier: Tier, now: float | None = None) -> list[CacheEntry]:
    """Every dataset version on the tier (one listing), committed or not, with size, last use and live pins."""
    now = now if now is not None else time.time()
    groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
    newest: dict[tuple[str, str], float] = {}
    for info in tier.list("datasets"):
        parts = info.key.split("/", 3)
        if len(parts) < 4:
            continue
        groups.setdefault((parts[1], parts[2]), []).append((parts[3], info.size))
        newest[(parts[1], parts[2])] = max(newest.get((parts[1], parts[2]), 0.0), info.mtime or now)
    entries = []
    for (dataset, version), objects in sorted(groups.items()):
        prefix = dataset_prefix(dataset, version)
        names = {rel for rel, _ in objects}
        commit = read_commit(tier, dataset, version) if COMMIT_MARKER in names else None
        last_used = 0.0
        if LASTUSE in names:
            try:
                last_used = float(json.loads(tier.read_bytes(f"{prefix}/{LASTUSE}"))["last_used"])
            except (ValueError, KeyError, FileNotFoundError):
                last_used = 0.0
        pins = pin_expiries(tier, prefix, names, now)
        entries.append(
            CacheEntry(
                dataset=dataset,
                version=version,
                bytes=sum(size for _, size in objects),
                committed=commit is not None,
                manifest_checksum=commit.manifest.checksum() if commit else None,
                last_used=last_used,
                pinned_by=tuple(holder for holder, _ in pins),
                pins=pins,
                abandoned=commit is None
                and now - newest[(dataset, version)] > STALE_TEMPORARY_S
                and not live_writer(tier, prefix),
            )
        )
    return entries


def live_writer(tier: Tier, prefix: str) -> bool:
    """Whether a live writer's temporary lies under ``prefix`` on a file tier (someone is still copying)."""
    if tier.config.is_object:
        return False
    return any(not stale for _, stale in temporaries_under(tier.path(prefix)))


def _durable_copy(entry: CacheEntry, durable: Sequence[Tier]) -> str | None:
    """The name of a more durable tier holding the same committed content, or None."""
    for tier in durable:
        commit = read_commit(tier, entry.dataset, entry.version)
        if commit is not None and commit.manifest.checksum() == entry.manifest_checksum:
            return tier.name
    return None


def ensure_space(
    cache: Tier, needed_bytes: int, durable: Sequence[Tier], keep: Sequence[tuple[str, str]] = (), dry_run: bool = False
) -> EvictionReport:
    """Make ``needed_bytes`` free on ``cache``, evicting LRU-first.

    Free space is the smaller of the tier's capacity budget (its config) less what its versions
    take, and the file system's real free space (another tenant's files count there).

    ``durable`` are the tiers a version must be committed on (same content) before it may go;
    only tiers more durable than ``cache`` count. ``keep`` lists versions never to evict in this
    pass (e.g. the one being staged).

    Raises:
        CacheFullError: Even evicting everything allowed would not make room; nothing is evicted.
    """
    more_durable = [t for t in durable if DURABILITY[t.config.kind] < DURABILITY[cache.config.kind]]
    entries = cache_entries(cache)
    used = sum(e.bytes for e in entries)
    capacity = cache.config.capacity_bytes
    real = file_system_free(cache)
    # Both limits count: the budget the config gives the cache, and what the file system really has.
    free_before = capacity - used if real is None else min(capacity - used, real)
    if needed_bytes > capacity:
        raise CacheFullError(
            f"{cache.name}: {needed_bytes} B needed but the tier's capacity is {capacity} B ({cache.config.url})"
        )
    plan: list[tuple[CacheEntry, str]] = []
    kept: list[dict[str, Any]] = []
    free = free_before
    for entry in sorted(entries, key=lambda e: (e.last_used, e.dataset, e.version)):
        if free >= needed_bytes:
            break
        ident = {"dataset": entry.dataset, "version": entry.version, "bytes": entry.bytes}
        if (entry.dataset, entry.version) in keep:
            kept.append(ident | {"why": "being staged"})
        elif entry.pinned_by:
            kept.append(ident | {"why": f"pinned by {', '.join(entry.pinned_by)}"})
        elif not entry.committed and not entry.abandoned:
            kept.append(ident | {"why": "not committed here (in progress or partial)"})
        elif not entry.committed:
            plan.append((entry, f"an uncommitted copy untouched for over {STALE_TEMPORARY_S / 3600:.0f} h"))
            free += entry.bytes
        elif (holder := _durable_copy(entry, more_durable)) is None:
            kept.append(ident | {"why": "no committed copy on a more durable tier"})
        else:
            plan.append((entry, holder))
            free += entry.bytes
    if free < needed_bytes:
        blockers = "; ".join(f"{k['dataset']}/{k['version']}: {k['why']}" for k in kept) or "nothing to evict"
        raise CacheFullError(
            f"{cache.name}: need {needed_bytes} B, {free_before} B free, at most {free} B after eviction ({blockers})"
        )
    evicted = []
    for entry, holder in plan:
        reason = holder if not entry.committed else f"least recently used; committed on {holder}"
        if not dry_run:
            prefix = dataset_prefix(entry.dataset, entry.version)
            cache.delete([f"{prefix}/{COMMIT_MARKER}"])  # first: the dataset stops existing here
            cache.delete_prefix(prefix)
        evicted.append(
            {
                "dataset": entry.dataset,
                "version": entry.version,
                "bytes": entry.bytes,
                "why": reason,
                "dry_run": dry_run,
            }
        )
    return EvictionReport(needed_bytes, free_before, free, tuple(evicted), tuple(kept))
