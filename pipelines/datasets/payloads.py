"""What the staging tasks hand each other: a hop's plan, one shard's task and result, the hop's summary.

Each is a :class:`~pipelines.core.payloads.Payload`, written by one task with ``to_json()`` and
read by the next with ``from_json()``:

* :class:`StagingPlan`: the plan task's XCom ``plan`` (read by the commit and make-room tasks);
* :class:`ShardTask`: one item of the plan task's return value, the mapped copy task's ``shard``;
* :class:`ShardCopy`: the mapped copy task's return value (read by the commit task and the listener);
* :class:`HopSummary`: the commit task's (or the one-task form's) return value and asset event extra.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipelines.core.payloads import Payload
from pipelines.model.bandwidth import Bottleneck, HopSizing
from pipelines.model.observations import Observation, now

if TYPE_CHECKING:
    from pipelines.transfer import TransferReport

__all__ = ["HopSummary", "ShardCopy", "ShardTask", "StagingPlan"]


@dataclass(frozen=True)
class StagingPlan(Payload):
    """A planned hop of one committed dataset version."""

    dataset: str
    version: str
    source: str
    target: str
    manifest_checksum: str
    objects: int
    bytes: int
    already_staged: bool
    needed_bytes: int  #: room the copy and its marker take on a file target, beyond what is there
    hop: HopSizing


@dataclass(frozen=True)
class ShardTask(Payload):
    """One mapped copy task: shard ``index`` of ``count`` of a committed version, and how the hop is sized."""

    dataset: str
    version: str
    source: str
    target: str
    index: int
    count: int
    manifest_checksum: str
    name: str  #: the mapped task's label
    concurrency: int
    part_size: int
    bytes: int  #: this shard's bytes
    predicted_s: float  #: this shard's share of the hop's predicted time
    bottleneck: Bottleneck
    correction: float = 1.0  #: the learnt factor the prediction used (see :class:`HopSizing`)
    uncertainty: float = 0.0  #: relative uncertainty of ``predicted_s``
    timeout_s: float = 0.0  #: the copy task's execution_timeout from the plan (0: none)


def _observed(done: ShardCopy | HopSummary, dag_id: str, task_id: str) -> Observation | None:
    """An observation of a copy, or None when it moved nothing (or nothing was predicted for it)."""
    if done.seconds <= 0 or done.copied_bytes <= 0 or done.predicted_s <= 0 or done.bytes <= 0:
        return None
    return Observation(
        at=now(),
        dag_id=dag_id,
        task_id=task_id,
        source=done.source,
        target=done.tier,
        bytes=done.copied_bytes,
        objects=done.copied_objects,
        predicted_s=done.predicted_s * min(1.0, done.copied_bytes / done.bytes),  # objects already there cost ~0
        achieved_s=done.seconds,
        bottleneck=done.bottleneck,
        correction=done.correction,
        dataset=f"{done.dataset}/{done.version}" if done.dataset else None,
        node=getattr(done, "node", None),
    )


@dataclass(frozen=True)
class ShardCopy(Payload):
    """What one shard's copy did, against what was predicted for it."""

    source: str
    tier: str  #: the target tier
    objects: int
    bytes: int
    copied_objects: int
    copied_bytes: int
    skipped_objects: int
    skipped_bytes: int
    seconds: float
    MBps: float
    concurrency: int
    part_size: int
    failures: int
    predicted_s: float
    bottleneck: Bottleneck
    dataset: str = ""  #: the version copied (older payloads lack it)
    version: str = ""
    correction: float = 1.0  #: the learnt factor the prediction used

    @classmethod
    def of(cls, task: ShardTask, report: TransferReport) -> ShardCopy:
        """What the copy of ``task`` reported."""
        return cls(
            source=task.source,
            tier=task.target,
            objects=report.objects,
            bytes=report.bytes,
            copied_objects=report.copied_objects,
            copied_bytes=report.copied_bytes,
            skipped_objects=report.skipped_objects,
            skipped_bytes=report.skipped_bytes,
            seconds=round(report.seconds, 3),
            MBps=round(report.throughput_bps / 1e6, 1),
            concurrency=report.concurrency,
            part_size=report.part_size,
            failures=len(report.failures),
            predicted_s=task.predicted_s,
            bottleneck=task.bottleneck,
            dataset=task.dataset,
            version=task.version,
            correction=task.correction,
        )

    def observation(self, dag_id: str, task_id: str) -> Observation | None:
        """What the model learns from this copy (None when it moved nothing)."""
        return _observed(self, dag_id, task_id)


@dataclass(frozen=True)
class HopSummary(Payload):
    """A committed hop: what it moved, how long it took, and what the model predicted."""

    dataset: str
    version: str
    source: str
    tier: str  #: the target tier
    objects: int
    bytes: int
    manifest_checksum: str
    predicted_s: float
    predicted_MBps: float
    bottleneck: Bottleneck
    already_staged: bool
    shards: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    seconds: float = 0.0
    MBps: float | None = None
    node: str | None = None  #: the ``[[node]]`` whose tier this is (per-node hops)
    worker: str | None = None  #: who committed it: ``<node>@<host>``, else the host
    correction: float = 1.0  #: the learnt factor the prediction used

    @classmethod
    def planned(cls, plan: StagingPlan) -> HopSummary:
        """The hop as planned, before anything is copied (what an already staged hop reports)."""
        return cls(
            dataset=plan.dataset,
            version=plan.version,
            source=plan.source,
            tier=plan.target,
            objects=plan.objects,
            bytes=plan.bytes,
            manifest_checksum=plan.manifest_checksum,
            predicted_s=plan.hop.predicted_s,
            predicted_MBps=plan.hop.predicted_MBps,
            bottleneck=plan.hop.bottleneck,
            already_staged=plan.already_staged,
            correction=plan.hop.correction,
        )

    def at(self, node: str | None, worker: str | None) -> HopSummary:
        """The summary with where it was committed."""
        return replace(self, node=node, worker=worker)

    def copied(self, shards: int, objects: int, copied_bytes: int, seconds: float) -> HopSummary:
        """The summary once ``shards`` copy tasks moved ``objects`` / ``copied_bytes``, the slowest in ``seconds``."""
        rate = round(copied_bytes / seconds / 1e6, 1) if seconds > 0 else None
        return replace(
            self,
            shards=shards,
            copied_objects=objects,
            copied_bytes=copied_bytes,
            seconds=round(seconds, 3),
            MBps=rate,
        )

    def observation(self, dag_id: str, task_id: str) -> Observation | None:
        """What the model learns from the hop, when one task copied it all (the one-task form)."""
        return _observed(self, dag_id, task_id)

    def line(self) -> str:
        """One line for the task log."""
        on = f" of node {self.node} (worker {self.worker})" if self.node else ""
        if self.already_staged:
            return f"{self.dataset}/{self.version} already committed on {self.tier}{on} with the same manifest"
        rate = f", {self.MBps:.1f} MB/s" if self.MBps is not None else ""
        return (
            f"committed {self.dataset}/{self.version} on {self.tier}{on}: {self.objects} objects, {self.bytes} bytes "
            f"({self.copied_bytes} bytes copied by {self.shards} shard task(s), slowest {self.seconds:.2f} s{rate}); "
            f"predicted {self.predicted_s:.2f} s, {self.bottleneck}"
        )
