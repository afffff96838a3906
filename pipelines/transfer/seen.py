"""Copies from local files seen before, so a rerun skips what is there without reading it again.

A rerun of ``tierflow copy DIR s3://bucket/prefix`` (or of ``DIR`` to another directory) must
skip what is already at the destination with the same checksum. Proving that from nothing
means hashing every local file and one HEAD per object for its stored checksum (1.3-1.5 s for
2,000 x 256 KiB here, where ``s5cmd sync`` compares sizes and times from one listing in 0.3 s
and would miss a changed file of the same size and time), or, to a local destination, hashing
both files. This index keeps the proof instead: for each object or file a copy wrote or a rerun
verified, the identity of the local file it came from (size, mtime and ctime in ns, inode and
device) with the file's checksum, and the destination's version as its listing gives it (an
object's ETag; a file's inode and mtime). A later rerun takes a destination as verified when
the source's identity and the listed version are still those recorded — a file cannot change
without its ctime changing, nor an object without its ETag, nor a file without its mtime or
inode (short of setting its mtime back by hand) — and proves everything else as without the index.

One JSON file per destination in the state directory (``cache/copies/<digest>.json``), replaced
whole; two copies racing lose only entries (a miss costs a hash and a HEAD), never correctness.
A file that cannot be read or written is ignored with a warning. Destinations of more than
:data:`MAX_OBJECTS` objects are not indexed (the file would cost more to read than it saves).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pipelines.core.state import write_atomically

__all__ = ["MAX_OBJECTS", "CopyIndex", "identity", "identity_of"]

log = logging.getLogger(__name__)

#: Above this many objects under one destination, reruns hash and HEAD as without an index.
MAX_OBJECTS = 200_000

#: What identifies a local file's content without reading it: size, mtime_ns, ctime_ns, inode, device.
#: (Inode and device name the file wherever it is reached from; any write moves its ctime.)
Identity = tuple[int, int, int, int, int]


def identity(path: str) -> Identity:
    """The identity of the file at ``path`` (symlinks followed: the file whose bytes are read)."""
    return identity_of(os.stat(path))


def identity_of(st: os.stat_result) -> Identity:
    """The identity of the file ``st`` is the status of."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class CopyIndex:
    """Objects or files under one destination, by key: the local file they came from, its checksum, their version."""

    def __init__(self, path: Path | None, destination: str) -> None:
        self.path, self.destination = path, destination
        self._lock = threading.Lock()
        self._objects: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if loaded.get("destination") == destination:
                    self._objects = {k: v for k, v in loaded["objects"].items() if isinstance(v, list) and len(v) == 7}
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                log.warning("%s: copy index unreadable, starting empty (%s)", path, exc)

    @classmethod
    def for_destination(cls, state: Path, destination: str) -> CopyIndex:
        """The index of ``destination`` (a URL) in the state directory ``state``."""
        name = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:32]
        return cls(state / "cache" / "copies" / f"{name}.json", destination)

    def verified(self, key: str, source: Identity, version: str | None) -> str | None:
        """The checksum ``key`` was verified with, if its source file and its listed version are those recorded."""
        if version is None:
            return None
        with self._lock:
            seen = self._objects.get(key)
        if seen is None or tuple(seen[:5]) != source or seen[6] != version:
            return None
        return str(seen[5])

    def record(self, key: str, source: Identity, checksum: str, version: str | None) -> None:
        """Remember that ``key`` holds the bytes of ``source`` (checksum ``checksum``) as version ``version``."""
        if version is None:
            return  # nothing to recognise the object by later
        with self._lock:
            if len(self._objects) >= MAX_OBJECTS and key not in self._objects:
                return
            self._objects[key] = [*source, checksum, version]
            self._dirty = True

    def save(self) -> None:
        """Write the index back when it changed (a failure is logged, not raised)."""
        with self._lock:
            if self.path is None or not self._dirty:
                return
            data = json.dumps({"destination": self.destination, "objects": self._objects}).encode("utf-8")
            self._dirty = False
        try:
            write_atomically(self.path, data, fsync=False)
        except OSError as exc:
            log.warning("%s: copy index not saved (%s)", self.path, exc)
