"""Commit markers seen before, so a checkpoint discovery pass reads only the new or changed ones.

``checkpoint_lifecycle`` discovers every 10 minutes; with hundreds of committed checkpoints,
re-reading every commit marker each pass costs one GET per checkpoint for nothing. The listing
that discovery makes anyway gives each marker's ETag (a file's inode and mtime on a local tier),
so a marker whose version and size are those of the cached copy is taken from the cache: a pass
makes O(new) marker reads, not O(all). An overwrite (a new ETag, or a rename's new inode) is read
again. Markers no longer listed under the root a pass covered are forgotten.

The cache is a JSON file in the state directory (``cache/commit-markers.json``), replaced whole;
two processes racing lose only cache entries, never correctness. A cache that cannot be read or
written is ignored with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipelines.core.config import state_dir
from pipelines.core.state import write_atomically
from pipelines.storage.tier import ObjectInfo, Tier

__all__ = ["MarkerCache"]

log = logging.getLogger(__name__)


class MarkerCache:
    """Raw commit markers by (tier URL of the marker, version, size); ``path`` ``None`` keeps them in memory.

    Attributes:
        reads: Markers read from their tier (cache misses) since this cache was made.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.reads = 0
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self._entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}
            except (OSError, ValueError) as exc:
                log.warning("%s: commit-marker cache unreadable, starting empty (%s)", path, exc)

    @classmethod
    def default(cls) -> MarkerCache:
        """The cache in the state directory."""
        return cls(state_dir() / "cache" / "commit-markers.json")

    def read(self, tier: Tier, info: ObjectInfo) -> bytes:
        """The marker listed as ``info``: from the cache when its version and size match, else from the tier.

        Raises:
            FileNotFoundError: The marker went away since the listing.
        """
        url = tier.url(info.key)
        hit = self._entries.get(url)
        if info.version is not None and hit and hit.get("version") == info.version and hit.get("size") == info.size:
            return str(hit["raw"]).encode("utf-8")
        raw = tier.read_bytes(info.key)
        self.reads += 1
        if info.version is not None and len(raw) == info.size:
            try:
                self._entries[url] = {"version": info.version, "size": info.size, "raw": raw.decode("utf-8")}
                self._dirty = True
            except UnicodeDecodeError:
                pass  # not a marker Tierflow wrote; parsing will say so
        return raw

    def forget_missing(self, tier: Tier, root: str, listed: set[str]) -> None:
        """Drop cached markers under ``root`` that the pass's listing (``listed`` keys) no longer holds."""
        base = tier.url(root).rstrip("/") + "/"
        keep = {tier.url(key) for key in listed}
        for url in [u for u in self._entries if u.startswith(base) and u not in keep]:
            del self._entries[url]
            self._dirty = True

    def save(self) -> None:
        """Write the cache back when it changed (a failure is logged, not raised)."""
        if self.path is None or not self._dirty:
            return
        try:
            write_atomically(self.path, json.dumps(self._entries).encode("utf-8"), fsync=False)
            self._dirty = False
        except OSError as exc:
            log.warning("%s: commit-marker cache not saved (%s)", self.path, exc)
