"""The transfer engine: copy a manifest (or one shard of it) from one tier to another, verified.

Guarantees, whatever the pair of tiers:

* **Nothing partial under a final name.** File tiers receive a temporary name in the destination
  directory and a rename; object tiers receive whole PUTs or completed multipart uploads, always
  from a finished local file or another object (never from a half-written stream).
* **Checksums end to end.** The xxh3-128 of the bytes is checked against the manifest before the
  destination name appears (file tiers) or before the upload starts (object tiers, from a local
  source); ``verify=True`` also reads every destination object back. Object-store copies carry
  the checksum in their metadata (``x-amz-meta-xxh3-128``), so a resume can check them by HEAD.
* **Resume.** Objects already at the destination with the manifest's size and checksum are
  skipped; Tierflow temporaries and unfinished multipart uploads under the destination prefix are
  removed first when provably abandoned (:mod:`pipelines.transfer.cleanup`), never a concurrent
  copy's live work.
* **Bounded concurrency and memory.** Small objects run ``concurrency`` at a time; large ones
  (over two parts) one at a time with ``concurrency`` ranged parts in flight, so memory stays near
  ``concurrency × part_size``.
* **Every failure collected.** Transient errors are retried with jittered exponential backoff;
  whatever still fails is reported per object in :class:`TransferError`, after all other objects
  were tried.

Progress (bytes, MB/s, ETA) is logged at most every ``progress_interval_s`` seconds, or drawn as a
live bar on a terminal (:mod:`pipelines.transfer.progress`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar, cast

from pipelines.core.checksum import checksum_file
from pipelines.core.config import state_dir
from pipelines.core.errors import is_server_fault
from pipelines.core.manifest import Entry
from pipelines.model.bandwidth import HopPlan, Workload
from pipelines.storage.local import LocalTier
from pipelines.storage.objects import ObjectTier
from pipelines.storage.s3 import CHECKSUM_METADATA, S3Tier
from pipelines.storage.s3crt import CrtMover, crt_available
from pipelines.storage.tier import ObjectInfo, Tier, file_version
from pipelines.transfer.cleanup import (
    ABANDONED_UPLOAD_S,
    join_key,
    reap_multipart_uploads,
    remove_temporaries,
    upload_lease,
)
from pipelines.transfer.local import (
    HAS_PROC,
    LARGE_LOCAL_FILE,
    SMALL_LOCAL_FILE,
    Copied,
    copy_hashing,
    copy_small_files,
    kernel_copy,
    lies_under,
    real_path_of,
    still_written,
)
from pipelines.transfer.progress import Progress
from pipelines.transfer.report import ChecksumMismatch, Failure, TransferError, TransferReport, TransferSettings
from pipelines.transfer.retry import is_fatal, retrying
from pipelines.transfer.seen import CopyIndex, Identity, identity, identity_of

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()

__all__ = ["copy_entries", "copy_prefix", "source_entries", "workload_of"]


def workload_of(src: Tier, prefix: str, entries: Sequence[Entry], dst: Tier | None = None) -> Workload:
    """What the planner sizes a copy of ``entries`` under ``prefix`` (to ``dst``, when given) by.

    Their sizes, the share of their bytes this machine's page cache holds (a file tier reads
    those at memory speed), and how much a file destination's page cache takes before writes go
    at the disk's pace.
    """
    keys = [f"{prefix.strip('/')}/{e.key}" if prefix.strip("/") else e.key for e in entries]
    headroom = dst.write_headroom() if dst is not None else None
    return replace(
        Workload.from_sizes(e.size for e in entries), resident=src.resident_share(keys), write_headroom=headroom
    )


def _object(tier: Tier) -> ObjectTier:
    """The object-store side of a hop (S3, GCS, Azure: :class:`~pipelines.storage.objects.ObjectTier`)."""
    if not isinstance(tier, ObjectTier):
        raise TypeError(f"{tier}: not an object store this engine can drive")
    return tier


def _local(tier: Tier) -> LocalTier:
    """The file side of a hop."""
    if not isinstance(tier, LocalTier):
        raise TypeError(f"{tier}: not a local file tier")
    return tier


class _InFlight:
    """Requests handed to the native client at once: at most ``limit`` in flight, and what failed.

    The submitting thread takes a slot before it starts a request (:meth:`take`) and marks it
    :meth:`started`, or gives the slot back if it never started; the request's callback calls
    :meth:`ended`. :meth:`wait` returns, once none is in flight, the entries that failed (to be
    copied again one by one, where they are retried and reported).
    """

    def __init__(self, limit: int, failed: list[Entry] | None = None) -> None:
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._idle = threading.Condition()
        self._count = 0
        self._failed = failed if failed is not None else []

    def take(self) -> None:
        self._slots.acquire()

    def started(self) -> None:
        with self._idle:
            self._count += 1

    def not_started(self, entry: Entry, exc: BaseException) -> None:
        """The request for ``entry`` could not be started: its slot back, the entry for one by one."""
        self._slots.release()
        self.failed(entry, exc)

    def failed(self, entry: Entry, exc: BaseException) -> None:
        log.debug("%s: %s (copied again one by one)", entry.key, exc)
        with self._idle:
            self._failed.append(entry)

    def ended(self) -> None:
        self._slots.release()
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait(self) -> list[Entry]:
        with self._idle:
            self._idle.wait_for(lambda: self._count == 0)
            return self._failed


class _Copier:
    """Copies single objects between two tiers; one instance per copy_entries call."""

    def __init__(self, src: Tier, src_prefix: str, dst: Tier, dst_prefix: str, settings: TransferSettings) -> None:
        self.src, self.dst = src, dst
        self.src_prefix, self.dst_prefix = src_prefix, dst_prefix
        self.settings = settings
        self.server_side = isinstance(src, ObjectTier) and src.same_store(dst)
        # The bulk data path between local files and an object store (see pipelines.storage.s3crt).
        self.crt: dict[str, CrtMover] = {}
        for role, tier in (("src", src), ("dst", dst)):
            if isinstance(tier, S3Tier) and settings.use_crt and crt_available(tier.storage_options):
                self.crt[role] = CrtMover(tier.storage_options, settings.concurrency, settings.part_size)
        self._real_root: str | None = None
        # Copies from local files: what earlier copies wrote or verified, so a rerun need not hash (and HEAD) it again.
        self.seen: CopyIndex | None = None
        if not src.config.is_object and settings.copy_index:
            self.seen = CopyIndex.for_destination(state_dir(), dst.url(dst_prefix) if dst_prefix else dst.url())

    # -- resume -------------------------------------------------------------------------------

    def already_there(self, entry: Entry, existing: dict[str, ObjectInfo]) -> str | None:
        """The checksum the destination already holds this object with, or None when it must be copied.

        The checksum wanted is the manifest's; without one (a plain directory or prefix), the
        source's own: a local file is hashed, which costs less than sending it again, and an
        object's stored checksum is read by HEAD. What the copy index proves (:meth:`known_there`)
        the caller asks first, without threads; what this proves is recorded there. Local to local
        without a manifest, and not in the index, is copied: hashing both files costs about what
        copying them does.
        """
        key = join_key(self.dst_prefix, entry.key)
        listed = existing.get(key)
        if listed is None or listed.size != entry.size:
            return None
        src_key = join_key(self.src_prefix, entry.key)  # the copy index was asked first (known_there)
        source = identity(self.src.path(src_key)) if self.seen is not None else None
        want = entry.checksum
        if want is None:
            if self.src.config.is_object:
                want = _object(self.src).stored_checksum(src_key)
            elif self.dst.config.is_object:
                want, size = checksum_file(self.src.path(src_key))
                want = want if size == entry.size else None  # changed since it was listed
        if want is None:
            return None
        if self.dst.config.is_object:
            have = _object(self.dst).stored_checksum(key)
        else:
            have = checksum_file(self.dst.path(key))[0]
        if have != want:
            return None
        if self.seen is not None and source is not None:
            self.seen.record(key, source, want, listed.version)
        return want

    def known_there(self, entry: Entry, existing: dict[str, ObjectInfo]) -> str | None:
        """The checksum the copy index proves the destination holds this object with, or None."""
        key = join_key(self.dst_prefix, entry.key)
        listed = existing.get(key)
        if self.seen is None or listed is None or listed.size != entry.size:
            return None
        try:
            source = identity(self.src.path(join_key(self.src_prefix, entry.key)))
        except FileNotFoundError:
            return None
        known = self.seen.verified(key, source, listed.version)
        return known if known is not None and entry.checksum in (None, known) else None

    # -- one object ---------------------------------------------------------------------------

    def copy(self, entry: Entry, progress: Progress, inner_concurrency: int) -> str:
        """Copy one object; returns its checksum. Raises on failure (nothing left under the final name)."""
        src_key = join_key(self.src_prefix, entry.key)
        dst_key = join_key(self.dst_prefix, entry.key)
        d = self.dst.config.is_object
        multipart = d and entry.size > 2 * self.settings.part_size
        with upload_lease(self.dst, dst_key) if multipart else contextlib.nullcontext():  # see transfer.cleanup
            digest = self._copy_one(src_key, dst_key, entry, progress, inner_concurrency)
        if self.settings.verify:
            back, size = self.dst.checksum(dst_key)
            if (back, size) != (digest, entry.size):
                if d:
                    self.dst.delete([dst_key])
                raise ChecksumMismatch(
                    f"read-back of {self.dst.url(dst_key)} gave {size} B / {back}, expected {entry.size} B / {digest}"
                )
        return digest

    def _copy_one(self, src_key: str, dst_key: str, entry: Entry, progress: Progress, inner: int) -> str:
        s, d = self.src.config.is_object, self.dst.config.is_object
        if not s and not d:
            return self._local_to_local(src_key, dst_key, entry, progress)
        if s and not d:
            return self._object_to_local(src_key, dst_key, entry, progress, inner)
        if not s and d:
            return self._local_to_object(src_key, dst_key, entry, progress, inner)
        if self.server_side:
            return self._server_side(src_key, dst_key, entry, progress)
        return self._object_to_object(src_key, dst_key, entry, progress)

    def _check(self, where: str, entry: Entry, digest: str, size: int) -> None:
        if size != entry.size:
            raise ChecksumMismatch(f"{where}: read {size} B, manifest says {entry.size} B")
        if entry.checksum is not None and digest != entry.checksum:
            raise ChecksumMismatch(f"{where}: checksum {digest} does not match the manifest's {entry.checksum}")

    @contextlib.contextmanager
    def _opened_source(self, src_key: str) -> Iterator[tuple[str, int]]:
        """Open a local source once; yield a path to *that* open file and its descriptor, checked to lie in the tier.

        The check is made on the file descriptor (``/proc/self/fd/N`` names the inode opened), and
        every later read — the hash, the kernel copy, the CRT upload — goes through that path or
        the descriptor, so a symlink swapped in after the check is never what is sent. Where
        ``/proc`` is missing the path is used and the inode is compared again once the block ends.
        """
        path = self.src.path(src_key)
        fd = self._open_source(path)
        try:
            if HAS_PROC:
                yield f"/proc/self/fd/{fd}", fd
                return
            opened = os.fstat(fd)
            yield path, fd
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                raise PermissionError(f"{path} was replaced while it was being copied")
        finally:
            os.close(fd)

    def _open_source(self, path: str) -> int:
        """A descriptor of the local source file at ``path``, checked to lie in the source tier."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            real = real_path_of(fd, path)
            if not lies_under(real, self._source_root()):
                raise PermissionError(f"{path} resolves outside the source tier ({real})")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _source_root(self) -> str:
        """The source tier's root with its symlinks resolved (once per copy, not once per file)."""
        if self._real_root is None:
            self._real_root = os.path.realpath(self.src.root)
        return self._real_root

    def _local_to_local(self, src_key: str, dst_key: str, entry: Entry, progress: Progress) -> str:
        dst = _local(self.dst)
        opened = self._opened_source(src_key)
        with opened as (src_path, fd), dst.staged_path(dst_key, fsync=self.settings.fsync) as tmp:
            # The source's identity before the read (a change while it is read moves its ctime) and the
            # written file's status before its rename, for the copy index.
            source = identity_of(os.fstat(fd)) if self.seen is not None else None
            if entry.size > LARGE_LOCAL_FILE:
                # The kernel copies (copy_file_range, as cp does) while a thread hashes the source.
                with ThreadPoolExecutor(max_workers=1) as hashing:
                    pending = hashing.submit(checksum_file, src_path)
                    kernel_copy(src_path, tmp)
                    digest, size = pending.result()
            else:
                digest, size = copy_hashing(fd, tmp)  # read through the descriptor checked above
            self._check(self.src.url(src_key), entry, digest, size)
            written = os.stat(tmp) if source is not None else None
        if self.seen is not None and source is not None and written is not None:
            final = still_written(dst.path(dst_key), written)  # after the rename, which moves the ctime
            if final is not None:
                self.seen.record(dst_key, source, digest, file_version(final))
        progress.add(entry.size)
        return digest

    def _object_to_local(self, src_key: str, dst_key: str, entry: Entry, progress: Progress, inner: int) -> str:
        with _local(self.dst).staged_path(dst_key, fsync=self.settings.fsync) as tmp:
            streamed = None
            if "src" in self.crt and entry.size > 0:  # CRT asks for a byte range, which an empty object refuses
                streamed = self.crt["src"].download(self.src.path(src_key), tmp)
            else:
                streamed = _object(self.src).download_file(src_key, tmp, entry.size, self.settings.part_size, inner)
            digest, size = streamed or checksum_file(tmp)
            on_disk = os.path.getsize(tmp)
            if on_disk != size:  # what was hashed must be what is on disk
                raise OSError(errno.EIO, f"{self.dst.url(dst_key)}: wrote {on_disk} B of {size} B")
            self._check(self.src.url(src_key), entry, digest, size)
        progress.add(entry.size)
        return digest

    def downloads_at_once(self) -> bool:
        """Whether small objects can all be in flight through the CRT at once (object -> local, no read-back)."""
        s, d = self.src.config.is_object, self.dst.config.is_object
        return s and not d and "src" in self.crt and not self.settings.verify and not self.settings.fsync

    def download_at_once(
        self, entries: Sequence[Entry], progress: Progress, copied: Callable[[Entry, str], None]
    ) -> list[Entry]:
        """Download small objects with every one in flight through the CRT (``concurrency`` at a time).

        Each is finished in its request's callback (size and checksum checked, then the one rename
        that makes it visible): no thread per object and no hand-off between threads, which cost
        ~25 % of the wall time of 2,000 x 256 KiB here. Returns the entries that failed or were
        not tried (empty objects); the caller copies them one by one, with retries, and reports
        what still fails.
        """
        dst, mover = _local(self.dst), self.crt["src"]
        flights = _InFlight(self.settings.concurrency, [e for e in entries if e.size == 0])  # no ranged GET of nothing

        def finish(entry: Entry, src_key: str, dst_key: str, tmp: str, done: Future[tuple[str, int] | None]) -> None:
            try:
                digest, size = done.result() or checksum_file(tmp)
                on_disk = os.path.getsize(tmp)
                if on_disk != size:  # what was hashed must be what is on disk
                    raise OSError(errno.EIO, f"{self.dst.url(dst_key)}: wrote {on_disk} B of {size} B")
                self._check(self.src.url(src_key), entry, digest, size)
                dst.publish(tmp, dst_key)
                copied(entry, digest)
                progress.add(entry.size)
            except Exception as exc:  # tried again one by one, where it is retried and reported
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                flights.failed(entry, exc)
            finally:
                flights.ended()

        for entry in entries:
            if entry.size == 0:
                continue
            src_key, dst_key = join_key(self.src_prefix, entry.key), join_key(self.dst_prefix, entry.key)
            flights.take()
            try:
                tmp = dst.stage(dst_key)
                started = mover.start_download(self.src.path(src_key), tmp)
            except Exception as exc:  # e.g. the directory cannot be created: said by the one-by-one copy
                flights.not_started(entry, exc)
                continue
            flights.started()
            started.add_done_callback(functools.partial(finish, entry, src_key, dst_key, tmp))
        return flights.wait()

    def uploads_at_once(self) -> bool:
        """Whether small files can all be in flight through the CRT at once (local -> object, no read-back)."""
        s, d = self.src.config.is_object, self.dst.config.is_object
        return not s and d and "dst" in self.crt and HAS_PROC and not self.settings.verify

    def upload_at_once(
        self, entries: Sequence[Entry], progress: Progress, copied: Callable[[Entry, str], None]
    ) -> list[Entry]:
        """Upload small files with every one in flight through the CRT (``concurrency`` at a time).

        This thread opens each file (checked to lie in the source tier, as one by one), hashes it
        and starts its PUT with the checksum; the PUT reads the file through that descriptor and
        is finished in its request's callback (the copy index and the report updated there): no
        thread per file and no hand-off between threads. Returns the entries that failed; the
        caller copies them one by one, with retries, and reports what still fails.
        """
        mover = self.crt["dst"]
        flights = _InFlight(self.settings.concurrency)

        def finish(
            entry: Entry, dst_key: str, fd: int, source: Identity, digest: str, done: Future[str | None]
        ) -> None:
            try:
                etag = done.result()
                if self.seen is not None:
                    self.seen.record(dst_key, source, digest, etag)
                copied(entry, digest)
                progress.add(entry.size)
            except Exception as exc:  # tried again one by one, where it is retried and reported
                flights.failed(entry, exc)
            finally:
                os.close(fd)
                flights.ended()

        for entry in entries:
            src_key, dst_key = join_key(self.src_prefix, entry.key), join_key(self.dst_prefix, entry.key)
            flights.take()
            fd = -1
            try:
                fd = self._open_source(self.src.path(src_key))
                path = f"/proc/self/fd/{fd}"  # every read below is of the file opened and checked
                source = identity(path)  # before the hash: a change while it is read changes the ctime
                digest, size = checksum_file(path)
                self._check(self.src.url(src_key), entry, digest, size)
                started = mover.start_upload(path, self.dst.path(dst_key), {CHECKSUM_METADATA: digest})
            except Exception as exc:  # e.g. a changed file: said by the one-by-one copy
                if fd >= 0:
                    os.close(fd)
                flights.not_started(entry, exc)
                continue
            flights.started()
            started.add_done_callback(functools.partial(finish, entry, dst_key, fd, source, digest))
        return flights.wait()

    def local_at_once(self) -> bool:
        """Whether small files can be copied a directory at a time (local -> local, no read-back)."""
        return not self.src.config.is_object and not self.dst.config.is_object and not self.settings.verify

    def copy_local_files(
        self,
        entries: Sequence[Entry],
        workers: int,
        progress: Progress,
        copied: Callable[[list[tuple[Entry, str]]], None],
    ) -> list[Entry]:
        """Copy small local files a directory at a time (:func:`~pipelines.transfer.local.copy_small_files`).

        Each worker takes a whole directory: files created and renamed in one directory from
        several threads contend for its lock in the kernel (20,000 files of 16 KiB on tmpfs:
        0.75 s on two threads, 0.44 s on one). Returns the entries not copied (and larger
        files), which the caller copies one by one, with retries, and reports.
        """
        dst = _local(self.dst)
        left = [e for e in entries if e.size > SMALL_LOCAL_FILE]
        small = [e for e in entries if e.size <= SMALL_LOCAL_FILE]
        by_directory: dict[str, list[Entry]] = {}
        for entry in small:
            by_directory.setdefault(posixpath.dirname(entry.key), []).append(entry)
        groups = list(by_directory.values())
        lock = threading.Lock()

        def done(files: list[Copied]) -> None:
            if self.seen is not None:
                for entry, digest, source, version in files:
                    if source is not None:
                        self.seen.record(join_key(self.dst_prefix, entry.key), source, digest, version)
            copied([(entry, digest) for entry, digest, _, _ in files])
            progress.add(sum(copy[0].size for copy in files), objects=len(files))

        def directory(group: list[Entry]) -> None:
            first = group[0].key
            src_dir = posixpath.dirname(self.src.path(join_key(self.src_prefix, first)))
            try:
                dst_dir = dst.directory_of(join_key(self.dst_prefix, first))
            except OSError:
                missed = group  # e.g. cannot be created: said by the one-by-one copy
            else:
                root, fsync = self._source_root(), self.settings.fsync
                missed = copy_small_files(src_dir, dst_dir, group, root, fsync, done, with_stats=self.seen is not None)
            for entry in missed:
                log.debug("%s: copied again one by one", entry.key)
            if missed:
                with lock:
                    left.extend(missed)

        _each_on_threads(workers, groups, directory)
        return left

    def _local_to_object(self, src_key: str, dst_key: str, entry: Entry, progress: Progress, inner: int) -> str:
        with self._opened_source(src_key) as (path, _):
            source = identity(path)  # before the hash: a change while it is read changes the ctime
            digest, size = checksum_file(path)
            self._check(self.src.url(src_key), entry, digest, size)
            etag = None
            if "dst" in self.crt:
                etag = self.crt["dst"].upload(path, self.dst.path(dst_key), {CHECKSUM_METADATA: digest})
            else:
                _object(self.dst).upload_file(path, dst_key, digest, self.settings.part_size, inner)
        if self.seen is not None:
            self.seen.record(dst_key, source, digest, etag)
        progress.add(entry.size)
        return digest

    def _server_side(self, src_key: str, dst_key: str, entry: Entry, progress: Progress) -> str:
        src = _object(self.src)
        stored = src.stored_checksum(src_key)
        digest = entry.checksum or stored
        if digest is None:  # nothing vouches for the source: read it once to learn its checksum
            digest, size = src.checksum(src_key)
            self._check(src.url(src_key), entry, digest, size)
        elif entry.checksum and stored not in (None, entry.checksum):
            raise ChecksumMismatch(f"{src.url(src_key)}: stored checksum differs from the manifest's")
        src.copy_within(src_key, _object(self.dst), dst_key, digest, stored)
        progress.add(entry.size)
        return str(digest)

    def _object_to_object(self, src_key: str, dst_key: str, entry: Entry, progress: Progress) -> str:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tierflow-relay-") as tmpdir:
            local = os.path.join(tmpdir, "object")
            digest, size = _object(self.src).download_file(src_key, local, entry.size, self.settings.part_size, 1)
            self._check(self.src.url(src_key), entry, digest, size)
            _object(self.dst).upload_file(local, dst_key, digest, self.settings.part_size, 1)
        progress.add(entry.size)
        return digest


def _clear_what_dead_copies_left(dst: Tier, dst_prefix: str, destination: str) -> None:
    """Remove temporaries and abort multipart uploads that copies no longer running left under the prefix."""
    stale = remove_temporaries(dst, dst_prefix)
    if stale:
        log.info("removed %d temporaries left under %s by a copy that is gone", stale, destination)
    reaped = reap_multipart_uploads(dst, dst_prefix)
    if reaped.aborted:
        log.info(
            "aborted %d unfinished multipart uploads under %s: %d of a writer that is gone, %d older than %.0f h",
            reaped.aborted,
            destination,
            reaped.writer_gone,
            reaped.expired,
            ABANDONED_UPLOAD_S / 3600,
        )
    if reaped.left:
        log.info(
            "left %d unfinished multipart uploads under %s alone: another copy may be writing them "
            "(aborted once older than %.0f h)",
            reaped.left,
            destination,
            ABANDONED_UPLOAD_S / 3600,
        )


def _not_yet_there(
    copier: _Copier, dst: Tier, dst_prefix: str, entries: Sequence[Entry], report: TransferReport, concurrency: int
) -> list[Entry]:
    """The entries still to copy; those already at the destination and verified are counted as skipped (resume)."""
    existing = {o.key: o for o in dst.list(dst_prefix)} if entries else {}
    # Only objects of the right size can already be there; their checksums are checked in parallel.
    candidates = [e for e in entries if getattr(existing.get(join_key(dst_prefix, e.key)), "size", None) == e.size]

    def there(entry: Entry) -> str | None:
        try:
            return copier.already_there(entry, existing)
        except FileNotFoundError:
            return None

    present: dict[str, str] = {}
    if copier.seen is not None:  # the copy index answers from stats alone: no threads needed for those
        known = {e.key: copier.known_there(e, existing) for e in candidates}
        present = {k: digest for k, digest in known.items() if digest}
        candidates = [e for e in candidates if e.key not in present]
    workers = max(1, min(concurrency, len(candidates)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tierflow-check") as pool:
        checked = zip(candidates, pool.map(there, candidates), strict=True)
        present |= {e.key: digest for e, digest in checked if digest}
    todo: list[Entry] = []
    for entry in entries:
        if entry.key in present:
            report.checksums[entry.key] = present[entry.key]
            report.skipped_objects += 1
            report.skipped_bytes += entry.size
        else:
            todo.append(entry)
    if report.skipped_objects:
        log.info(
            "resume: %d objects (%d bytes) already at the destination and verified",
            report.skipped_objects,
            report.skipped_bytes,
        )
    return todo


def _each_on_threads(workers: int, items: Sequence[T], work: Callable[[T], None]) -> None:
    """``work(item)`` for every item, on ``workers`` threads that each take the next item themselves.

    No hand-off per item between threads (a pool's map wakes the caller for every result: ~7
    futex calls per file); with one worker, the items run in the calling thread.
    """
    pending, lock = iter(items), threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                item = next(pending, _END)
            if item is _END:
                return
            work(cast(T, item))

    workers = min(workers, len(items))
    if workers <= 1:
        worker()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tierflow-copy") as pool:
        for started in [pool.submit(worker) for _ in range(workers)]:
            started.result()


def copy_entries(
    src: Tier,
    src_prefix: str,
    dst: Tier,
    dst_prefix: str,
    entries: Sequence[Entry],
    settings: TransferSettings | None = None,
) -> TransferReport:
    """Copy ``entries`` (keys relative to ``src_prefix``) to the same keys under ``dst_prefix``.

    Returns the report when every object is at the destination and verified.

    Raises:
        TransferError: Some objects failed (each named in ``error.report.failures``); the others
            were copied and verified, and nothing partial is visible.
    """
    settings = settings or TransferSettings()
    c = settings.concurrency
    report = TransferReport(
        source=src.url(src_prefix) if src_prefix else src.url(),
        destination=dst.url(dst_prefix) if dst_prefix else dst.url(),
        objects=len(entries),
        bytes=sum(e.size for e in entries),
        concurrency=c,
        part_size=settings.part_size,
    )
    started = time.monotonic()
    # The listings before the first byte are retried when the store fails them on its side (a server
    # restarting under the copy answers 500 for a moment); an endpoint that cannot be reached at
    # all is said at once, in one line.
    where, only = report.destination, is_server_fault
    retrying(lambda: _clear_what_dead_copies_left(dst, dst_prefix, where), settings, where, only)
    copier = _Copier(src, src_prefix, dst, dst_prefix, settings)
    todo = retrying(lambda: _not_yet_there(copier, dst, dst_prefix, entries, report, c), settings, where, only)
    todo_bytes, all_bytes = sum(e.size for e in todo), sum(e.size for e in entries)
    expected = settings.expected_s * todo_bytes / all_bytes if settings.expected_s and all_bytes else None
    label = f"{report.source} -> {report.destination}"
    progress = Progress(todo_bytes, label, settings.progress_interval_s, len(todo), expected_s=expected)
    lock = threading.Lock()

    def run(entry: Entry, inner: int) -> None:
        try:
            digest = retrying(lambda: copier.copy(entry, progress, inner), settings, entry.key)
        except Exception as exc:  # collected: every object is tried before the copy fails
            with lock:
                report.failures.append(Failure(entry.key, f"{type(exc).__name__}: {exc}", is_fatal(exc)))
            return
        copied(entry, digest)

    def copied(entry: Entry, digest: str) -> None:
        copied_many([(entry, digest)])

    def copied_many(pairs: list[tuple[Entry, str]]) -> None:
        with lock:
            for entry, digest in pairs:
                report.checksums[entry.key] = digest
                report.copied_bytes += entry.size
            report.copied_objects += len(pairs)

    large = [e for e in todo if e.size > 2 * settings.part_size]
    small = [e for e in todo if e.size <= 2 * settings.part_size]
    try:
        if small and copier.downloads_at_once():
            small = copier.download_at_once(small, progress, copied)
        elif small and copier.uploads_at_once():
            small = copier.upload_at_once(small, progress, copied)
        elif small and copier.local_at_once():
            small = copier.copy_local_files(small, c, progress, copied_many)
        if small:
            _each_on_threads(c, small, lambda e: run(e, 1))
        for entry in large:  # one at a time, its parts in parallel: memory stays near c × part size
            run(entry, c)
    finally:
        progress.close()
        if copier.seen is not None:
            copier.seen.save()
    report.seconds = time.monotonic() - started
    report.failures.sort(key=lambda f: f.key)
    if report.failures:
        raise TransferError(report)
    log.info("copied %s -> %s: %s", report.source, report.destination, report.line())
    return report


def source_entries(src: Tier, prefix: str) -> list[Entry]:
    """What to copy from ``prefix``: the committed manifest if one is there, else one listing pass.

    Local sources are listed without following symlinks out of the source; Tierflow's own
    markers and temporaries are left out. A listing error propagates (nothing is copied).
    """
    from pipelines.core.manifest import list_local_source
    from pipelines.storage.commit import build_manifest, read_marker

    committed = read_marker(src, prefix)
    if committed is not None:
        return list(committed.manifest.entries)
    if not src.config.is_object:
        root = src.path(prefix) if prefix else src.root
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{src.url(prefix)}: no such directory")
        return list_local_source(root)
    return list(build_manifest(src, prefix, "adhoc", "adhoc").entries)


def copy_prefix(
    src: Tier,
    src_prefix: str,
    dst: Tier,
    dst_prefix: str,
    *,
    concurrency: int | None = None,
    part_size: int | None = None,
    verify: bool = False,
    fsync: bool = False,
    entries: Sequence[Entry] | None = None,
) -> tuple[TransferReport, HopPlan]:
    """Copy everything under ``src_prefix`` (or just ``entries``) to ``dst_prefix``, sized by the planner.

    ``concurrency`` and ``part_size`` override the planner's; ``entries`` are the objects to copy
    when the caller has listed them already (:func:`source_entries`).
    """
    from pipelines.model.bandwidth import plan_hop

    if entries is None:
        entries = source_entries(src, src_prefix)
    plan = plan_hop(src.config, dst.config, workload_of(src, src_prefix, entries, dst), max_concurrency=concurrency)
    settings = TransferSettings(
        concurrency=concurrency or plan.concurrency,
        part_size=part_size or plan.part_size,
        verify=verify,
        fsync=fsync,
    )
    log.info(
        "plan: concurrency %d (%s); part size %d (%s); predicted %.1f s, %s",
        settings.concurrency,
        plan.reasons["concurrency"],
        settings.part_size,
        plan.reasons["part_size"],
        plan.predicted_s,
        plan.predicted.bottleneck,
    )
    return copy_entries(src, src_prefix, dst, dst_prefix, entries, settings), plan
