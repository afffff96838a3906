"""Temporary files beside their destination, named after their writer so a stale one can be told from a live one.

Every local write goes to a hidden temporary in the destination directory and is renamed into place
when it is whole. The name carries the writer's host and process, so a later run removes only what a
dead writer left, never the live temporaries of a concurrent copy (standard library only: the
compression CLI imports it and must start fast).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

__all__ = [
    "STALE_TEMPORARY_S",
    "TMP_MARKER",
    "host_tag",
    "is_stale_temporary",
    "process_alive",
    "process_started",
    "temporaries_under",
    "temporary_name",
    "temporary_suffix",
]

TMP_MARKER = ".tierflow-tmp-"
#: A temporary that no live writer can be shown to own is removed once it is this old.
STALE_TEMPORARY_S = 3600.0
# os.uname().nodename is what socket.gethostname() returns, without importing socket (~5 ms).
_HOST_TAG = hashlib.sha1(os.uname().nodename.encode()).hexdigest()[:8]


def host_tag() -> str:
    """A short, stable tag for this host (a hash of its name) that writers put in what they leave."""
    return _HOST_TAG


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None where unknown.

    With the pid it names one process for good: a later process that reuses the pid starts later.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5), counted after the command name
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` on this host is alive (this process always is).

    With ``started`` (:func:`process_started` when the writer recorded itself) a process that
    reused the pid later does not count as the writer.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return started is None or process_started(pid) == started


def temporary_name(path: str) -> str:
    """A hidden temporary beside ``path``, named after its writer (host, process) so others can tell it is live.

    ``dir/.name.tierflow-tmp-<host>.<pid>.<random>``.
    """
    parent, base = os.path.split(path)
    return os.path.join(parent, f".{base}{temporary_suffix()}")


def temporary_suffix() -> str:
    """What follows ``.name`` in a temporary's name: the marker, this host and process, and a random tag.

    A writer of many files takes one and appends ``-<n>`` per file (no ``.``: the owner is read
    from the dot-separated fields after the marker).
    """
    return f"{TMP_MARKER}{_HOST_TAG}.{os.getpid()}.{os.urandom(4).hex()}"


def temporaries_under(root: str) -> Iterator[tuple[str, bool]]:
    """Every Tierflow temporary under a local directory, with whether it is stale (its writer is gone)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TMP_MARKER in name:
                path = os.path.join(dirpath, name)
                yield path, is_stale_temporary(path)


def is_stale_temporary(path: str, now: float | None = None) -> bool:
    """Whether a temporary was left by a writer that is gone: a dead process on this host, else one too old.

    A temporary of this very process is never stale (another thread may be writing it); on another
    host (a shared PFS) only age tells, after ``STALE_TEMPORARY_S``.
    """
    owner = os.path.basename(path).rsplit(TMP_MARKER, 1)[-1].split(".")
    if len(owner) == 3 and owner[0] == _HOST_TAG and owner[1].isdigit():
        return not process_alive(int(owner[1]))
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_TEMPORARY_S
