"""Dataset staging between tiers: plan, copy shards, commit — the steps the Airflow operators run.

A hop copies one committed dataset version from a source tier to a target tier:

1. :func:`plan_stage` reads the source's commit marker (one GET, no listing), sizes the hop with
   the bandwidth planner, and splits the manifest into shards. Each shard is described by
   ``(index, count, manifest checksum)`` only — small enough for XCom.
2. :func:`stage_shard` (one mapped task per shard) reads the same marker, checks that the manifest
   is the one planned, takes its shard (deterministic split) and copies it with the transfer engine.
3. :func:`commit_stage` checks every object is at the target with its size, and writes the commit
   marker — last.

:func:`stage_dataset` does all three in one call, for small datasets. A version already committed
on the target with the same manifest is left alone ("already staged").
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.checksum import checksum_file
from pipelines.core.errors import Outcome, classify
from pipelines.core.manifest import COMMIT_MARKER, Manifest, ManifestError
from pipelines.datasets.cache import ensure_space, live_writer, require_space, space_needed, touch
from pipelines.datasets.payloads import ShardTask, StagingPlan
from pipelines.model.bandwidth import HopPlan, plan_hop
from pipelines.storage.commit import Commit, commit, read_commit
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferReport, TransferSettings, copy_entries, workload_of

__all__ = [
    "NotCommittedError",
    "StagePlan",
    "commit_stage",
    "discard_uncommitted",
    "plan_stage",
    "publish_directory",
    "stage_dataset",
    "stage_shard",
]

log = logging.getLogger(__name__)


class NotCommittedError(FileNotFoundError):
    """The dataset version is not committed on the source tier (so it does not exist there)."""


def source_commit(source: Tier, dataset: str, version: str) -> Commit:
    """The source's commit marker; a dataset without one does not exist, whatever objects are there."""
    found = read_commit(source, dataset, version)
    if found is None:
        raise NotCommittedError(
            f"dataset {dataset}/{version} is not committed on tier {source.name} ({source.url()}): no commit marker"
        )
    return found


@dataclass(frozen=True)
class StagePlan:
    """A planned hop: what to copy, how it is sized, and the shard descriptors for mapped tasks."""

    dataset: str
    version: str
    source: str
    target: str
    manifest_checksum: str
    objects: int
    bytes: int
    already_staged: bool
    hop: HopPlan
    manifest: Manifest = field(repr=False, compare=False)
    needed_bytes: int = 0  #: room the copy and its marker take on a file target (blocks, beyond what is there)

    def shards(self) -> list[ShardTask]:
        """One task per mapped copy (nothing when already staged), each with its share of the prediction."""
        if self.already_staged:
            return []
        count = self.hop.shards
        sizes = [sum(e.size for e in shard) for shard in self.manifest.shards(count)]
        sizes += [0] * (count - len(sizes))
        predicted = self.hop.predicted_s
        return [
            ShardTask(
                dataset=self.dataset,
                version=self.version,
                source=self.source,
                target=self.target,
                index=i,
                count=count,
                manifest_checksum=self.manifest_checksum,
                name=f"{self.dataset}/{self.version} {self.source}->{self.target} shard {i + 1}/{count}",
                concurrency=self.hop.concurrency,
                part_size=self.hop.part_size,
                bytes=size,
                predicted_s=round(predicted * size / self.bytes if self.bytes else predicted / count, 3),
                bottleneck=self.hop.predicted.bottleneck,
                correction=self.hop.predicted.binding.correction,
                uncertainty=self.hop.predicted.binding.uncertainty,
                timeout_s=round(self.hop.execution_timeout_s, 1),
            )
            for i, size in enumerate(sizes)
        ]

    def summary(self) -> StagingPlan:
        """What the hop's later tasks read of the plan (XCom ``plan``)."""
        return StagingPlan(
            dataset=self.dataset,
            version=self.version,
            source=self.source,
            target=self.target,
            manifest_checksum=self.manifest_checksum,
            objects=self.objects,
            bytes=self.bytes,
            already_staged=self.already_staged,
            needed_bytes=0 if self.already_staged else self.needed_bytes,
            hop=self.hop.summary(),
        )


def plan_stage(
    source: Tier,
    target: Tier,
    dataset: str,
    version: str,
    *,
    deadline_s: float | None = None,
    then: Tier | None = None,
    **planner: Any,
) -> StagePlan:
    """Plan copying a committed dataset version from ``source`` to ``target``.

    ``deadline_s`` is the time left for the staging; with ``then`` (the tier a later hop copies
    ``target`` to) it is shared between the two hops in proportion to their fastest predictions.

    When ``target`` holds the version committed with other content (it was replaced upstream), its
    old marker is removed here, before any shard copies: readers see no version rather than a
    marker over mixed content, and the new commit removes the objects the new manifest lacks.

    Raises:
        NotCommittedError: The version is not committed on ``source``.
    """
    found = source_commit(source, dataset, version)
    manifest = found.manifest
    existing = read_commit(target, dataset, version)
    already = existing is not None and existing.manifest.checksum() == manifest.checksum()
    if existing is not None and not already:
        log.info(
            "%s/%s on %s was committed with other content (manifest %s): its marker is removed before staging %s",
            dataset,
            version,
            target.name,
            existing.manifest.checksum(),
            manifest.checksum(),
        )
        target.delete([f"{manifest.prefix}/{COMMIT_MARKER}"])
    work = workload_of(source, manifest.prefix, manifest.entries, target)
    if deadline_s is not None and then is not None and deadline_s > 0:
        this = plan_hop(source.config, target.config, work, **planner).predicted_s
        later = plan_hop(target.config, then.config, work, **planner).predicted_s
        deadline_s *= this / (this + later) if this + later > 0 else 0.5
    if deadline_s is not None and deadline_s <= 0:
        raise ValueError(f"{dataset}/{version}: the run's deadline has passed ({-deadline_s:.0f} s ago)")
    hop = plan_hop(source.config, target.config, work, deadline_s=deadline_s, **planner)
    needed = 0 if already else space_needed(target, manifest)
    if target.config.kind != "nvme":  # a cache makes room by eviction (ensure_space), a staging area refuses
        require_space(target, needed, f"{dataset}/{version}")
    plan = StagePlan(
        dataset=dataset,
        version=version,
        source=source.name,
        target=target.name,
        manifest_checksum=manifest.checksum(),
        objects=len(manifest.entries),
        bytes=manifest.total_bytes,
        already_staged=already,
        hop=hop,
        manifest=manifest,
        needed_bytes=needed,
    )
    log.info(
        "%s/%s %s -> %s: %d objects, %d bytes; %s",
        dataset,
        version,
        source.name,
        target.name,
        plan.objects,
        plan.bytes,
        "already staged (same manifest)" if already else f"{hop.shards} shard(s), {hop.predicted.bottleneck}",
    )
    return plan


def _manifest_for(source: Tier, dataset: str, version: str, manifest_checksum: str) -> Manifest:
    manifest = source_commit(source, dataset, version).manifest
    if manifest.checksum() != manifest_checksum:
        raise ManifestError(
            f"dataset {dataset}/{version} on {source.name} changed since it was planned "
            f"(manifest {manifest.checksum()} != {manifest_checksum})"
        )
    return manifest


def stage_shard(
    source: Tier,
    target: Tier,
    dataset: str,
    version: str,
    index: int,
    count: int,
    manifest_checksum: str,
    settings: TransferSettings,
) -> TransferReport:
    """Copy shard ``index`` of ``count`` of a committed dataset version; verified, resumable."""
    manifest = _manifest_for(source, dataset, version, manifest_checksum)
    shards = manifest.shards(count)
    entries = shards[index] if index < len(shards) else []
    prefix = manifest.prefix
    return copy_entries(source, prefix, target, prefix, entries, settings)


def commit_stage(
    source: Tier, target: Tier, dataset: str, version: str, manifest_checksum: str, extra: dict[str, Any] | None = None
) -> Commit:
    """Commit a staged version on ``target``: every object there with its size, then the marker, last.

    A fatal failure (the marker does not fit, an object is missing) removes the version's
    uncommitted objects (:func:`discard_uncommitted`) before it propagates.
    """
    manifest = _manifest_for(source, dataset, version, manifest_checksum)
    with _discarded_if_fatal(target, manifest):
        return _commit_and_touch(target, manifest, source.url(manifest.prefix), extra)


def _commit_and_touch(target: Tier, manifest: Manifest, source_url: str, extra: dict[str, Any] | None) -> Commit:
    """Commit; on the NVMe cache also record the use, so eviction sees the version as fresh."""
    record = commit(target, manifest, source=source_url, extra=extra, exclusive=True)
    if target.config.kind == "nvme":
        touch(target, manifest.dataset, manifest.version)
    return record


def stage_dataset(
    source: Tier,
    target: Tier,
    dataset: str,
    version: str,
    settings: TransferSettings | None = None,
    verify: bool = False,
    durable: Sequence[Tier] = (),
    **planner: Any,
) -> tuple[StagePlan, TransferReport | None, Commit | None]:
    """Plan, copy and commit in one call (small datasets). Returns the plan, the copy report and the commit.

    ``settings`` default to the plan's (with ``verify``). Report and commit are None when the
    version was already staged. Room is checked before anything moves: an NVMe target makes it
    by eviction (versions committed on ``source`` or a tier in ``durable`` may go), another file
    tier refuses in one line. After a fatal failure the version's uncommitted objects are removed
    from the target (:func:`discard_uncommitted`); a transient one leaves them for the rerun.
    """
    started = time.monotonic()
    plan = plan_stage(source, target, dataset, version, **planner)
    if plan.already_staged:
        return plan, None, None
    settings = settings or TransferSettings.from_plan(plan.hop, verify=verify)
    manifest = plan.manifest
    if target.config.kind == "nvme":
        ensure_space(target, plan.needed_bytes, [source, *durable], keep=[(dataset, version)])
    with _discarded_if_fatal(target, manifest):
        report = copy_entries(source, manifest.prefix, target, manifest.prefix, manifest.entries, settings)
        seconds = time.monotonic() - started
        record = _commit_and_touch(
            target,
            manifest,
            source.url(manifest.prefix),
            {"seconds": round(seconds, 3), "predicted_s": round(plan.hop.predicted_s, 3)},
        )
    return plan, report, record


@contextlib.contextmanager
def _discarded_if_fatal(target: Tier, manifest: Manifest) -> Iterator[None]:
    """Run the block; if it fails for good, remove the version's uncommitted copy (:func:`discard_uncommitted`)."""
    try:
        yield
    except Exception as exc:
        if classify(exc) is Outcome.FATAL:
            discard_uncommitted(target, manifest)
        raise


def discard_uncommitted(target: Tier, manifest: Manifest) -> int:
    """After a fatal failure, remove this version's uncommitted objects from a file tier so they do not fill it.

    Nothing is removed when the version is committed there after all (another writer finished it)
    or while another live writer's temporaries lie under its prefix (it is still copying). Returns
    the objects removed.
    """
    if target.config.is_object or read_commit(target, manifest.dataset, manifest.version) is not None:
        return 0
    if live_writer(target, manifest.prefix):
        log.info("left %s: another copy of it is still being written", target.url(manifest.prefix))
        return 0
    listed = {f"{manifest.prefix}/{e.key}" for e in manifest.entries}
    mine = [o.key for o in target.list(manifest.prefix) if o.key in listed]
    target.delete(mine)
    if mine:
        log.info("removed the %d uncommitted objects of %s after the failure", len(mine), target.url(manifest.prefix))
    return len(mine)


def publish_directory(
    local_dir: str,
    target: Tier,
    dataset: str,
    version: str,
    settings: TransferSettings | None = None,
    *,
    replace: bool = False,
) -> tuple[TransferReport, Commit]:
    """Publish the files under a local directory as a committed dataset version on ``target``.

    The files are listed once (symlinks are not followed out of the directory) and hashed, then
    copied (each verified against its checksum as it is sent) and committed with that manifest.
    A committed version is immutable: publishing the same content again resumes and commits the
    same manifest; other content under its name is refused unless ``replace`` is given. A
    replacement first removes the old marker (readers see no version rather than a marker over
    mixed content), then copies, and its commit removes every object the new manifest does not list.

    Raises:
        FileNotFoundError: ``local_dir`` does not exist, or is not a directory (named).
        InputError: It holds no file (an empty version is never committed), or the version is
            already committed with other content and ``replace`` is not given.
    """
    from dataclasses import replace as dc_replace

    from pipelines.core.errors import InputError
    from pipelines.core.manifest import Entry, dataset_prefix, list_local_source

    local_dir = os.path.abspath(local_dir)
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"{local_dir}: no such directory to publish")
    # Checksums first (local reads are cheap): the manifest is complete before anything moves,
    # so an interrupted publish resumes by skipping what is already there and verified.
    entries = [
        Entry(e.key, e.size, checksum_file(os.path.join(local_dir, e.key))[0]) for e in list_local_source(local_dir)
    ]
    if not entries:
        raise InputError(f"{local_dir}: no files to publish as {dataset}/{version}")
    prefix = dataset_prefix(dataset, version)
    manifest = Manifest(dataset, version, tuple(entries))
    existing = read_commit(target, dataset, version)
    if existing is not None and existing.manifest.checksum() != manifest.checksum():
        if not replace:
            raise InputError(
                f"{target.url(prefix)} is already committed with other content ({len(existing.manifest.entries)} "
                f"objects, {existing.manifest.total_bytes} B; this directory has {len(entries)} objects, "
                f"{manifest.total_bytes} B): publish it under a new version, or replace it (--replace)",
                operation="publish",
                source=local_dir,
                destination=target.url(prefix),
            )
        log.info("replacing %s/%s on %s: its old commit marker is removed first", dataset, version, target.name)
        target.delete([f"{prefix}/{COMMIT_MARKER}"])
    source = Tier(dc_replace(target.config, name="local", kind="pfs", url=f"file://{local_dir}", conn_id=None))
    if settings is None:
        hop = plan_hop(source.config, target.config, workload_of(source, "", entries, target))
        settings = TransferSettings.from_plan(hop)
    report = copy_entries(source, "", target, prefix, entries, settings)
    return report, commit(target, manifest, source=f"file://{local_dir}", extra={"published": True}, exclusive=True)
