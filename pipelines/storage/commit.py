"""Commit markers: the one completion rule on every tier.

A dataset version (or checkpoint) exists on a tier only once its commit marker,
``<prefix>/_tierflow_commit.json``, is there: it holds the manifest and is written last, after
every object is in place and verified. A reader that finds no marker sees nothing, whatever
objects lie under the prefix.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.manifest import COMMIT_MARKER, RESERVED_PREFIX, Entry, Manifest, ManifestError, dataset_prefix
from pipelines.storage.tier import Tier

log = logging.getLogger(__name__)

__all__ = ["Commit", "build_manifest", "commit", "read_commit", "read_marker"]


def build_manifest(tier: Tier, prefix: str, dataset: str, version: str) -> Manifest:
    """Build a manifest from one listing pass over ``prefix`` on ``tier`` (Tierflow's own keys left out).

    Checksums are left ``None`` for the transfer to compute. A listing error propagates: no
    manifest, nothing downstream.
    """
    entries = []
    for info in tier.list(prefix):
        rel = info.key[len(prefix) :].lstrip("/") if prefix else info.key
        if rel.split("/", 1)[0].startswith(RESERVED_PREFIX):
            continue
        entries.append(Entry(rel, info.size))
    return Manifest(dataset, version, tuple(entries))


@dataclass(frozen=True)
class Commit:
    """A commit marker: the manifest plus where it came from and when."""

    manifest: Manifest
    committed_at: str
    tier: str
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The marker's content."""
        return {
            "committed_at": self.committed_at,
            "tier": self.tier,
            "source": self.source,
            "manifest_checksum": self.manifest.checksum(),
            "extra": self.extra,
            "manifest": self.manifest.to_json(),
        }


def commit(
    tier: Tier,
    manifest: Manifest,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
    *,
    exclusive: bool = False,
    keep: Sequence[str] = (),
) -> Commit:
    """Write the commit marker for ``manifest`` on ``tier`` — last, after its objects are verified.

    Checks, with one listing, that every object is there with its manifest size. With
    ``exclusive`` the prefix is the manifest's alone: objects under it that the manifest does not
    list (left by other content once written there) are deleted before the marker, so no reader
    of the prefix finds a file the version does not contain. Tierflow's own keys, live
    temporaries and the top-level directories named in ``keep`` stay.

    Raises:
        ManifestError: An entry has no checksum, or an object is missing or has the wrong size.
    """
    if not manifest.complete:
        missing = [e.key for e in manifest.entries if not e.checksum][:5]
        raise ManifestError(f"dataset {manifest.dataset}/{manifest.version}: no checksum for {missing}")
    present = {o.key: o.size for o in tier.list(manifest.prefix)}
    for entry in manifest.entries:
        got = present.get(f"{manifest.prefix}/{entry.key}")
        if got != entry.size:
            raise ManifestError(
                f"{tier.url(manifest.prefix + '/' + entry.key)}: expected {entry.size} B before commit, found {got}"
            )
    if exclusive:
        listed = {f"{manifest.prefix}/{e.key}" for e in manifest.entries}
        strays = sorted(k for k in present if k not in listed and not _kept(k[len(manifest.prefix) + 1 :], keep))
        if strays:
            log.info(
                "removing %d objects under %s that %s/%s does not list (left by other content)",
                len(strays),
                tier.url(manifest.prefix),
                manifest.dataset,
                manifest.version,
            )
            tier.delete(strays)
    record = Commit(
        manifest=manifest,
        committed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tier=tier.name,
        source=source,
        extra=dict(extra or {}),
    )
    tier.write_bytes(f"{manifest.prefix}/{COMMIT_MARKER}", json.dumps(record.to_json()).encode(), fsync=True)
    return record


def _kept(rel: str, keep: Sequence[str]) -> bool:
    top = rel.split("/", 1)[0]
    return top.startswith(RESERVED_PREFIX) or top in keep


def read_commit(tier: Tier, dataset: str, version: str) -> Commit | None:
    """The commit marker of a dataset version on ``tier``, or None when it is not committed there.

    Raises:
        ManifestError: The marker exists but is unreadable or inconsistent (named).
    """
    return read_marker(tier, dataset_prefix(dataset, version))


def read_marker(tier: Tier, prefix: str) -> Commit | None:
    """The commit marker directly under ``prefix`` on ``tier``, or None when there is none.

    Raises:
        ManifestError: The marker exists but is unreadable or inconsistent (named).
    """
    key = marker_key(prefix)
    try:
        raw = tier.read_bytes(key)
    except FileNotFoundError:
        return None
    return parse_marker(raw, tier.url(key))


def marker_key(prefix: str) -> str:
    """The key of the commit marker directly under ``prefix``."""
    return f"{prefix.strip('/')}/{COMMIT_MARKER}" if prefix.strip("/") else COMMIT_MARKER


def parse_marker(raw: bytes, where: str) -> Commit:
    """A commit marker's content, checked; ``where`` names it in errors.

    Raises:
        ManifestError: Not valid JSON, no manifest, or a manifest that does not match its checksum.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "manifest" not in data:
        raise ManifestError(f"{where}: missing field 'manifest'")
    manifest = Manifest.from_json(data["manifest"], where)
    if data.get("manifest_checksum") not in (None, manifest.checksum()):
        raise ManifestError(f"{where}: manifest checksum does not match its content")
    return Commit(
        manifest, str(data.get("committed_at")), str(data.get("tier")), data.get("source"), data.get("extra") or {}
    )
