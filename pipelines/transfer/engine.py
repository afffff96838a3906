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
  removed first.
* **Bounded concurrency and memory.** Small objects run ``concurrency`` at a time; large ones
  (over two parts) one at a time with ``concurrency`` ranged parts in flight, so memory stays near
  ``concurrency × part_size``.
* **Every failure collected.** Transient errors are retried with jittered exponential backoff;
  whatever still fails is reported per object in :class:`TransferError`, after all other objects
  were tried.

Progress (bytes, MB/s, ETA) is logged at most every ``progress_interval_s`` seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.checksum import Hasher, checksum_file
from pipelines.core.manifest import Entry
from pipelines.core.temporaries import TMP_MARKER, is_stale_temporary
from pipelines.model.bandwidth import DEFAULT_PART_SIZE, HopPlan
from pipelines.storage.s3crt import CrtMover, crt_available
from pipelines.storage.tier import Tier

__all__ = [
    "ChecksumMismatch",
    "Failure",
    "TransferError",
    "TransferReport",
    "TransferSettings",
    "copy_entries",
    "reap_multipart_uploads",
    "remove_temporaries",
]

log = logging.getLogger(__name__)

#: User metadata key carrying the xxh3-128 checksum on object stores.
CHECKSUM_METADATA = "xxh3-128"
#: Read/write block of local copies.
COPY_BLOCK = 8 * 2**20
#: Local files above this are copied by the kernel while another thread hashes them.
LARGE_LOCAL_FILE = 16 * 2**20


class ChecksumMismatch(ValueError):
    """The bytes moved do not match the manifest (or the destination does not match the source)."""


@dataclass(frozen=True)
class TransferSettings:
    """How a copy runs; normally derived from a :class:`~pipelines.model.bandwidth.HopPlan`."""

    concurrency: int = 8
    part_size: int = DEFAULT_PART_SIZE
    verify: bool = False
    fsync: bool = False
    retries: int = 4
    backoff_s: float = 0.5
    progress_interval_s: float = 5.0
    use_crt: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {self.concurrency})")
        if self.part_size < 5 * 2**20:
            raise ValueError(f"part size must be at least 5 MiB, the S3 minimum (got {self.part_size})")

    @classmethod
    def from_plan(cls, plan: HopPlan, **overrides: Any) -> TransferSettings:
        """Settings sized by the planner."""
        return cls(concurrency=plan.concurrency, part_size=plan.part_size, **overrides)


@dataclass(frozen=True)
class Failure:
    """One object that could not be copied, and why."""

    key: str
    error: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.error}"


@dataclass
class TransferReport:
    """What a copy did. ``checksums`` holds every object's checksum (for manifests and commits)."""

    source: str
    destination: str
    objects: int = 0
    bytes: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    skipped_objects: int = 0
    skipped_bytes: int = 0
    seconds: float = 0.0
    concurrency: int = 0
    part_size: int = 0
    checksums: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def throughput_bps(self) -> float:
        """Bytes actually moved per second."""
        return self.copied_bytes / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe summary (no per-object data): for XCom, logs and asset extras."""
        return {
            "source": self.source,
            "destination": self.destination,
            "objects": self.objects,
            "bytes": self.bytes,
            "copied_objects": self.copied_objects,
            "copied_bytes": self.copied_bytes,
            "skipped_objects": self.skipped_objects,
            "skipped_bytes": self.skipped_bytes,
            "seconds": round(self.seconds, 3),
            "MBps": round(self.throughput_bps / 1e6, 1),
            "concurrency": self.concurrency,
            "part_size": self.part_size,
            "failures": len(self.failures),
        }

    def line(self) -> str:
        """One human line: objects, bytes, seconds, MB/s."""
        return (
            f"{self.objects} objects, {self.bytes} bytes ({self.copied_objects} copied, {self.skipped_objects} "
            f"already there) in {self.seconds:.2f} s, {self.throughput_bps / 1e6:.1f} MB/s"
        )


class TransferError(RuntimeError):
    """Some objects could not be copied; ``report.failures`` names each one."""

    def __init__(self, report: TransferReport) -> None:
        self.report = report
        shown = "; ".join(str(f) for f in report.failures[:10])
        more = f" (+{len(report.failures) - 10} more)" if len(report.failures) > 10 else ""
        super().__init__(
            f"{len(report.failures)} of {report.objects} objects failed copying {report.source} -> "
            f"{report.destination}: {shown}{more}; {report.copied_objects} objects / {report.copied_bytes} bytes were "
            "copied and verified"
        )

    @property
    def fatal(self) -> bool:
        """Whether retrying cannot help (checksum mismatch, permission, missing source, disk full)."""
        return any(f.fatal for f in self.report.failures)


def _is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, ChecksumMismatch | PermissionError | FileNotFoundError | IsADirectoryError | ValueError):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class _Progress:
    """Thread-safe byte counter that logs at most every ``interval`` seconds."""

    def __init__(self, total: int, label: str, interval: float) -> None:
        self.total = total
        self.label = label
        self.interval = interval
        self.done = 0
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %.1f / %.1f MB (%.0f%%), %.1f MB/s, ETA %.0f s",
                self.label,
                self.done / 1e6,
                self.total / 1e6,
                100 * self.done / self.total if self.total else 100,
                rate / 1e6,
                eta,
            )


def _join(prefix: str, key: str) -> str:
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
    full = _join(root, prefix) if prefix else root
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


def _same_store(a: Tier, b: Tier) -> bool:
    if not (a.config.is_object and b.config.is_object):
        return False
    keys = ("endpoint_url", "key", "secret", "profile")
    return all(a.storage_options.get(k) == b.storage_options.get(k) for k in keys)


class _Copier:
    """Copies single objects between two tiers; one instance per copy_entries call."""

    def __init__(self, src: Tier, src_prefix: str, dst: Tier, dst_prefix: str, settings: TransferSettings) -> None:
        self.src, self.dst = src, dst
        self.src_prefix, self.dst_prefix = src_prefix, dst_prefix
        self.settings = settings
        self.server_side = _same_store(src, dst)
        # The bulk data path between local files and an object store (see pipelines.storage.s3crt).
        self.crt: dict[str, CrtMover] = {}
        for role, tier in (("src", src), ("dst", dst)):
            if tier.config.is_object and settings.use_crt and crt_available(tier.storage_options):
                self.crt[role] = CrtMover(tier.storage_options, settings.concurrency, settings.part_size)

    # -- resume -------------------------------------------------------------------------------

    def already_there(self, entry: Entry, existing: dict[str, int]) -> bool:
        """Whether the destination holds this object with the manifest's size and checksum."""
        key = _join(self.dst_prefix, entry.key)
        if entry.checksum is None or existing.get(key) != entry.size:
            return False
        if self.dst.config.is_object:
            meta = self.dst.fs.metadata(self.dst.path(key))
            return bool(meta.get(CHECKSUM_METADATA) == entry.checksum)
        return checksum_file(self.dst.path(key))[0] == entry.checksum

    # -- one object ---------------------------------------------------------------------------

    def copy(self, entry: Entry, progress: _Progress, inner_concurrency: int) -> str:
        """Copy one object; returns its checksum. Raises on failure (nothing left under the final name)."""
        src_key = _join(self.src_prefix, entry.key)
        dst_key = _join(self.dst_prefix, entry.key)
        s, d = self.src.config.is_object, self.dst.config.is_object
        if not s and not d:
            digest = self._local_to_local(src_key, dst_key, entry, progress)
        elif s and not d:
            digest = self._object_to_local(src_key, dst_key, entry, progress, inner_concurrency)
        elif not s and d:
            digest = self._local_to_object(src_key, dst_key, entry, progress, inner_concurrency)
        elif self.server_side:
            digest = self._server_side(src_key, dst_key, entry, progress)
        else:
            digest = self._object_to_object(src_key, dst_key, entry, progress)
        if self.settings.verify:
            back, size = self.dst.checksum(dst_key)
            if (back, size) != (digest, entry.size):
                if d:
                    self.dst.delete([dst_key])
                raise ChecksumMismatch(
                    f"read-back of {self.dst.url(dst_key)} gave {size} B / {back}, expected {entry.size} B / {digest}"
                )
        return digest

    def _check(self, where: str, entry: Entry, digest: str, size: int) -> None:
        if size != entry.size:
            raise ChecksumMismatch(f"{where}: read {size} B, manifest says {entry.size} B")
        if entry.checksum is not None and digest != entry.checksum:
            raise ChecksumMismatch(f"{where}: checksum {digest} does not match the manifest's {entry.checksum}")

    def _source_path(self, src_key: str) -> str:
        path = self.src.path(src_key)
        real, root = os.path.realpath(path), os.path.realpath(self.src.root)
        if os.path.commonpath([real, root]) != root:
            raise PermissionError(f"{path} resolves outside the source tier ({real})")
        return path

    def _local_to_local(self, src_key: str, dst_key: str, entry: Entry, progress: _Progress) -> str:
        src_path = self._source_path(src_key)
        with self.dst.staged_path(dst_key, fsync=self.settings.fsync) as tmp:
            if entry.size > LARGE_LOCAL_FILE:
                # The kernel copies (copy_file_range, as cp does) while a thread hashes the source.
                with ThreadPoolExecutor(max_workers=1) as hashing:
                    pending = hashing.submit(checksum_file, src_path)
                    _kernel_copy(src_path, tmp)
                    digest, size = pending.result()
            else:
                digest, size = _copy_hashing(src_path, tmp)
            self._check(self.src.url(src_key), entry, digest, size)
        progress.add(entry.size)
        return digest

    def _object_to_local(self, src_key: str, dst_key: str, entry: Entry, progress: _Progress, inner: int) -> str:
        with self.dst.staged_path(dst_key, fsync=self.settings.fsync) as tmp:
            streamed = None
            if "src" in self.crt and entry.size > 0:  # CRT asks for a byte range, which an empty object refuses
                streamed = self.crt["src"].download(self.src.path(src_key), tmp)
            else:
                self.src.fs.get_file(
                    self.src.path(src_key), tmp, chunksize=self.settings.part_size, max_concurrency=inner
                )
            digest, size = streamed or checksum_file(tmp)
            on_disk = os.path.getsize(tmp)
            if on_disk != size:  # what was hashed must be what is on disk
                raise OSError(errno.EIO, f"{self.dst.url(dst_key)}: wrote {on_disk} B of {size} B")
            self._check(self.src.url(src_key), entry, digest, size)
        progress.add(entry.size)
        return digest

    def _local_to_object(self, src_key: str, dst_key: str, entry: Entry, progress: _Progress, inner: int) -> str:
        path = self._source_path(src_key)
        digest, size = checksum_file(path)
        self._check(self.src.url(src_key), entry, digest, size)
        if "dst" in self.crt:
            self.crt["dst"].upload(path, self.dst.path(dst_key), {CHECKSUM_METADATA: digest})
        else:
            self.dst.fs.put_file(
                path,
                self.dst.path(dst_key),
                chunksize=self.settings.part_size,
                max_concurrency=inner,
                Metadata={CHECKSUM_METADATA: digest},
            )
        progress.add(entry.size)
        return digest

    def _server_side(self, src_key: str, dst_key: str, entry: Entry, progress: _Progress) -> str:
        src_path = self.src.path(src_key)
        meta = self.src.fs.metadata(src_path)
        digest = entry.checksum or meta.get(CHECKSUM_METADATA)
        if digest is None:  # nothing vouches for the source: read it once to learn its checksum
            digest, size = self.src.checksum(src_key)
            self._check(self.src.url(src_key), entry, digest, size)
        elif entry.checksum and meta.get(CHECKSUM_METADATA) not in (None, entry.checksum):
            raise ChecksumMismatch(f"{self.src.url(src_key)}: stored checksum differs from the manifest's")
        self.dst.fs.copy(src_path, self.dst.path(dst_key))
        if meta.get(CHECKSUM_METADATA) != digest:
            bucket, _, key = self.dst.path(dst_key).partition("/")
            self.dst.fs.call_s3(
                "copy_object",
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                Metadata={CHECKSUM_METADATA: digest},
                MetadataDirective="REPLACE",
            )
        progress.add(entry.size)
        return str(digest)

    def _object_to_object(self, src_key: str, dst_key: str, entry: Entry, progress: _Progress) -> str:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tierflow-relay-") as tmpdir:
            local = os.path.join(tmpdir, "object")
            self.src.fs.get_file(self.src.path(src_key), local)
            digest, size = checksum_file(local)
            self._check(self.src.url(src_key), entry, digest, size)
            self.dst.fs.put_file(
                local, self.dst.path(dst_key), chunksize=self.settings.part_size, Metadata={CHECKSUM_METADATA: digest}
            )
        progress.add(entry.size)
        return digest


def _copy_hashing(src: str, dst: str) -> tuple[str, int]:
    """Copy a local file through one buffer, hashing what passes; returns checksum and size."""
    hasher = Hasher()
    buf = bytearray(COPY_BLOCK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        while n := fin.readinto(buf):
            hasher.update(view[:n])
            fout.write(view[:n])
    return hasher.hexdigest(), hasher.size


def _kernel_copy(src: str, dst: str) -> None:
    """Copy a local file inside the kernel (copy_file_range), falling back to a buffered copy."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                done = os.copy_file_range(fin.fileno(), fout.fileno(), min(left, 2**30))
                if done == 0:
                    break
                left -= done
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            shutil.copyfileobj(fin, fout, COPY_BLOCK)


def _retrying(fn: Callable[[], str], settings: TransferSettings, what: str) -> str:
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # classified below: fatal errors are not retried
            attempt += 1
            if _is_fatal(exc) or attempt > settings.retries:
                raise
            delay = settings.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("%s: %s (attempt %d of %d), retrying in %.1f s", what, exc, attempt, settings.retries, delay)
            time.sleep(delay)


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
    stale = remove_temporaries(dst, dst_prefix) + reap_multipart_uploads(dst, dst_prefix)
    if stale:
        log.info(
            "removed %d temporaries / unfinished uploads left under %s by an earlier run", stale, report.destination
        )
    existing = {o.key: o.size for o in dst.list(dst_prefix)} if entries else {}
    copier = _Copier(src, src_prefix, dst, dst_prefix, settings)
    # Only objects of the right size can already be there; their checksums are checked in parallel.
    candidates = [e for e in entries if e.checksum is not None and existing.get(_join(dst_prefix, e.key)) == e.size]

    def there(entry: Entry) -> bool:
        try:
            return copier.already_there(entry, existing)
        except FileNotFoundError:
            return False

    with ThreadPoolExecutor(max_workers=max(1, min(c, len(candidates))), thread_name_prefix="tierflow-check") as pool:
        present = {e.key for e, ok in zip(candidates, pool.map(there, candidates), strict=True) if ok}
    todo: list[Entry] = []
    for entry in entries:
        if entry.key in present:
            assert entry.checksum is not None
            report.checksums[entry.key] = entry.checksum
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
    progress = _Progress(
        sum(e.size for e in todo), f"{report.source} -> {report.destination}", settings.progress_interval_s
    )
    lock = threading.Lock()

    def run(entry: Entry, inner: int) -> None:
        try:
            digest = _retrying(lambda: copier.copy(entry, progress, inner), settings, entry.key)
        except Exception as exc:  # collected: every object is tried before the copy fails
            with lock:
                report.failures.append(Failure(entry.key, f"{type(exc).__name__}: {exc}", _is_fatal(exc)))
            return
        with lock:
            report.checksums[entry.key] = digest
            report.copied_objects += 1
            report.copied_bytes += entry.size

    large = [e for e in todo if e.size > 2 * settings.part_size]
    small = [e for e in todo if e.size <= 2 * settings.part_size]
    if small:
        with ThreadPoolExecutor(max_workers=min(c, len(small)), thread_name_prefix="tierflow-copy") as pool:
            list(pool.map(lambda e: run(e, 1), small))
    for entry in large:  # one at a time, its parts in parallel: memory stays near c × part size
        run(entry, c)
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
) -> tuple[TransferReport, HopPlan]:
    """Copy everything under ``src_prefix`` to ``dst_prefix``, sized by the planner unless overridden."""
    from pipelines.model.bandwidth import Workload, plan_hop

    entries = source_entries(src, src_prefix)
    plan = plan_hop(src.config, dst.config, Workload.from_sizes(e.size for e in entries), max_concurrency=concurrency)
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
