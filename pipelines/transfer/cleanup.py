"""What an interrupted copy leaves: stale temporaries on file tiers, unfinished multipart uploads on object tiers.

Both are removed only when provably abandoned, never when another copy may still be writing them.
A file temporary names its writer (host, process); a multipart upload cannot carry a name, so every
upload in flight holds a *lease*: a small file in this host's lease directory naming the object and
the writing process (and its start time, so a reused process id is not mistaken for the writer).
An unfinished upload is aborted when its lease's writer is dead, or, with no live lease on this
host (another node's, or another tool's), once it is older than :data:`ABANDONED_UPLOAD_S`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.temporaries import host_tag, process_alive, process_started, temporaries_under
from pipelines.storage.objects import ObjectTier
from pipelines.storage.tier import Tier

__all__ = [
    "ABANDONED_UPLOAD_S",
    "Reaped",
    "lease_directory",
    "reap_multipart_uploads",
    "remove_temporaries",
    "upload_lease",
]

#: An unfinished multipart upload that no live writer on this host owns is aborted once this old.
#: Long enough for any single object to finish uploading from another node; until then an orphan
#: only costs its parts' storage.
ABANDONED_UPLOAD_S = 24 * 3600.0


def join_key(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def remove_temporaries(tier: Tier, prefix: str) -> int:
    """Delete Tierflow temporaries left under ``prefix`` on a file tier by an interrupted copy.

    Only stale ones (:func:`pipelines.core.temporaries.is_stale_temporary`): a concurrent copy's
    live temporaries are left alone.
    """
    if tier.config.is_object:
        return 0
    removed = 0
    for path, stale in temporaries_under(tier.path(prefix) if prefix else tier.root):
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
    return removed


# -- leases on uploads in flight ------------------------------------------------------------------


def lease_directory() -> Path:
    """This host's directory of upload leases (``$TIERFLOW_LEASE_DIR``, else one per user in the temp dir)."""
    env = os.environ.get("TIERFLOW_LEASE_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"tierflow-uploads-{os.getuid()}"


@contextlib.contextmanager
def upload_lease(tier: Tier, key: str) -> Iterator[None]:
    """Hold a lease on the upload of ``key`` to an object tier for the block (nothing for file tiers).

    The lease goes when the block finishes. If it raises, the lease stays with this process: the
    client may have failed to abort its upload (a server that dropped the request), and the lease
    lets the next copy after this process ends abort it at once instead of in 24 hours.
    """
    if not tier.config.is_object:
        yield
        return
    directory = lease_directory()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    obj = tier.path(key)  # bucket/key: the endpoint is spelled differently by the config and the environment
    digest = hashlib.sha1(obj.encode()).hexdigest()[:16]
    lease = directory / f"{host_tag()}.{os.getpid()}.{digest}.{os.urandom(4).hex()}.json"
    record = {"object": obj, "host": host_tag(), "pid": os.getpid(), "started": process_started(os.getpid())}
    lease.write_text(json.dumps(record))
    yield
    lease.unlink(missing_ok=True)


def _writer_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote a lease on this host is still that process."""
    pid, started = record.get("pid"), record.get("started")
    return isinstance(pid, int) and process_alive(pid, started if isinstance(started, int) else None)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _leases(directory: Path) -> tuple[set[str], dict[str, list[Path]]]:
    """Objects with a live lease, and objects whose only leases are a dead writer's (with those lease files).

    Dead leases are not removed here: only once their uploads are known to be aborted (a reaper
    that cannot list, e.g. with revoked credentials, must not forget them).
    """
    live: set[str] = set()
    dead: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return live, dead
    for path in directory.glob(f"{host_tag()}.*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or already gone
        obj = str(record.get("object", ""))
        if _writer_alive(record):
            live.add(obj)
        elif _age(path) > ABANDONED_UPLOAD_S:  # its upload, if any, is aborted by age anyway
            path.unlink(missing_ok=True)
        else:
            dead.setdefault(obj, []).append(path)
    return live, {obj: paths for obj, paths in dead.items() if obj not in live}


@dataclass
class Reaped:
    """What the start-up cleanup of an object prefix did."""

    writer_gone: int = 0
    expired: int = 0
    left: int = 0

    @property
    def aborted(self) -> int:
        """Uploads aborted, for either reason."""
        return self.writer_gone + self.expired


def reap_multipart_uploads(
    tier: Tier, prefix: str, *, abandoned_after_s: float = ABANDONED_UPLOAD_S, now: float | None = None
) -> Reaped:
    """Abort the unfinished multipart uploads under ``prefix`` that are provably abandoned.

    Aborted: uploads whose lease on this host belongs to a dead process, and uploads older than
    ``abandoned_after_s`` that no live writer on this host holds. Left (and counted): the others,
    which a concurrent copy on this or another node may still be writing.
    """
    result = Reaped()
    if not isinstance(tier, ObjectTier):
        return result
    live, dead = _leases(lease_directory())
    now = time.time() if now is None else now
    uploads = list(tier.unfinished_uploads(prefix))  # a failed listing raises: no lease is forgotten
    for upload in uploads:
        obj = f"{tier.bucket}/{upload['Key']}"
        initiated = upload.get("Initiated")
        age = now - initiated.timestamp() if isinstance(initiated, dt.datetime) else abandoned_after_s + 1
        if obj in live:
            result.left += 1
            continue
        if obj in dead:
            result.writer_gone += 1
        elif age > abandoned_after_s:
            result.expired += 1
        else:
            result.left += 1
            continue
        tier.abort_upload(upload)
    # Every upload under the prefix was listed and a dead writer's aborted: its leases can go.
    under = tier.path(prefix) if prefix else tier.root
    for obj, paths in dead.items():
        if obj == under or obj.startswith(under.rstrip("/") + "/"):
            for path in paths:
                path.unlink(missing_ok=True)
    return result
