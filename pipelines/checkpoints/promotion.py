"""Promotion NVMe → PFS → object storage.

A complete checkpoint is copied while hashed and committed (marker last) on the target and on the
source, so every tier answers "is this copy whole?" the same way.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.checkpoints.discovery import ROOT, Checkpoint, CheckpointError, Rules, _listing, discover, verify_local
from pipelines.core.errors import Outcome
from pipelines.core.manifest import (
    Entry,
    Manifest,
)
from pipelines.core.payloads import Payload
from pipelines.storage.commit import commit, read_marker
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferError, TransferSettings, copy_entries

log = logging.getLogger(__name__)

__all__ = ["PromoteResult", "promote", "promote_through", "to_promote"]


@dataclass(frozen=True)
class PromoteResult(Payload):
    """One hop of one checkpoint: copied or already there, with the numbers (a promote task's XCom item)."""

    run: str
    name: str = field(metadata={"json": "checkpoint"})
    step: int
    source: str
    target: str = field(metadata={"json": "tier"})
    copied_bytes: int
    objects: int
    bytes: int
    seconds: float
    already: bool
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (XCom, asset extras)."""
        return super().to_json() | {"seconds": round(self.seconds, 3)}


def _what_to_copy(
    src: Tier, ckpt: Checkpoint, rules: Rules, source_commit: Any
) -> tuple[dict[str, int], list[Entry], dict[str, Any]]:
    """The source listing before the copy (empty when committed), the entries to copy and the marker's extras.

    A source committed by Tierflow is copied by its manifest; an uncommitted one (NVMe, fresh from
    the trainer) by its listing, which must still hold the framework's completion marker.
    """
    if source_commit is not None:
        return {}, list(source_commit.manifest.entries), dict(source_commit.extra)
    before = _listing(src, ckpt.prefix)
    marker = next((m for m in rules.markers if m in before), None)
    if marker is None:
        raise CheckpointError(
            f"{src.url(ckpt.prefix)}: its completion marker disappeared; not promoted", outcome=Outcome.TRANSIENT
        )
    entries = [Entry(k, s) for k, s in sorted(before.items())]
    extra = {"step": ckpt.step, "framework": ckpt.framework, "framework_marker": marker, "metrics": ckpt.metrics}
    return before, entries, extra


def promote(
    src: Tier,
    dst: Tier,
    ckpt: Checkpoint,
    rules: Rules = Rules(),
    settings: TransferSettings | None = None,
    deadline_s: float | None = None,
) -> PromoteResult:
    """Copy one complete checkpoint from ``src`` to ``dst`` and commit it there (marker last).

    From NVMe (no Tierflow marker yet) the files are listed, copied while hashed, and the source is
    listed again: a checkpoint that changed meanwhile is not committed. The marker is then written
    on the source as well, so both copies carry the same manifest. A target already holding the
    same manifest is left alone (idempotent); objects already there and verified are skipped
    (resume).

    Raises:
        CheckpointError: The checkpoint is not complete, or changed during the copy.
        TransferError: Objects failed to copy (each named); nothing is committed.
    """
    if ckpt.state != "complete":
        raise CheckpointError(f"{src.url(ckpt.prefix)} is {ckpt.state}: only complete checkpoints are promoted")
    started = time.monotonic()
    prefix = ckpt.prefix
    source_commit = read_marker(src, prefix)
    before, entries, extra = _what_to_copy(src, ckpt, rules, source_commit)
    existing = read_marker(dst, prefix)
    if existing is not None and (
        (source_commit is not None and existing.manifest.checksum() == source_commit.manifest.checksum())
        or (source_commit is None and {e.key: e.size for e in existing.manifest.entries} == dict(before))
    ):
        if source_commit is None:  # NVMe copy still without its marker (an earlier run stopped between the two)
            verify_local(src, existing.manifest)  # same sizes is not enough to vouch for its checksums
            commit(src, existing.manifest, source=None, extra=dict(existing.extra))
        return PromoteResult(
            ckpt.run, ckpt.name, ckpt.step, src.name, dst.name, 0, len(entries), sum(e.size for e in entries),
            time.monotonic() - started, True, dict(extra.get("metrics") or {}),
        )  # fmt: skip
    if existing is not None:
        raise CheckpointError(
            f"{dst.url(prefix)} is committed with different content than {src.url(prefix)}; refusing to overwrite"
        )
    settings = settings or planned_settings(src, dst, entries, deadline_s, prefix)
    try:
        report = copy_entries(src, prefix, dst, prefix, entries, settings)
    except TransferError:
        if source_commit is None:
            _unchanged(src, prefix, before)  # a checkpoint rewritten under us is reported as such
        raise
    if source_commit is None:
        _unchanged(src, prefix, before)
        entries = [Entry(e.key, e.size, report.checksums[e.key]) for e in entries]
    manifest = Manifest(ckpt.run, ckpt.name, tuple(entries), namespace=ROOT)
    commit(dst, manifest, source=src.url(prefix), extra=extra, exclusive=True)  # an older half copy's strays go
    if source_commit is None:
        commit(src, manifest, source=None, extra=extra)
    result = PromoteResult(
        ckpt.run, ckpt.name, ckpt.step, src.name, dst.name, report.copied_bytes, len(entries), manifest.total_bytes,
        time.monotonic() - started, False, dict(extra.get("metrics") or {}),
    )  # fmt: skip
    log.info(
        "promoted %s/%s (step %d) %s -> %s: %s",
        ckpt.run,
        ckpt.name,
        ckpt.step,
        src.name,
        dst.name,
        report.line(),
    )
    return result


def _unchanged(src: Tier, prefix: str, before: Mapping[str, int]) -> None:
    after = _listing(src, prefix)
    if after != dict(before):
        changed = sorted(set(after.items()) ^ set(before.items()))[:5]
        raise CheckpointError(
            f"{src.url(prefix)} changed while it was copied ({changed}); not committed", outcome=Outcome.TRANSIENT
        )


def planned_settings(
    src: Tier, dst: Tier, entries: Sequence[Entry], deadline_s: float | None = None, prefix: str = ""
) -> TransferSettings:
    """The engine's settings from the model's plan of the copy (the fewest streams that meet a deadline, if any)."""
    from pipelines.model.bandwidth import plan_hop
    from pipelines.transfer import workload_of

    if deadline_s is not None and deadline_s <= 0:
        raise CheckpointError(f"{src.name} -> {dst.name}: the run's deadline has passed ({-deadline_s:.0f} s ago)")
    plan = plan_hop(src.config, dst.config, workload_of(src, prefix, entries, dst), deadline_s=deadline_s)
    if plan.meets_deadline is False:
        log.warning("%s -> %s will be late: %s", src.name, dst.name, plan.reasons["deadline"])
    return TransferSettings.from_plan(plan)


def to_promote(
    tiers: Sequence[Tier],
    rules: Rules = Rules(),
    run: str | None = None,
    on_first: Sequence[Checkpoint] | None = None,
) -> list[Checkpoint]:
    """Complete checkpoints on the first tier (NVMe) not yet committed with that content on the last tier.

    ``on_first``: the first tier's checkpoints when the caller has just discovered them.
    """
    first, last = tiers[0], tiers[-1]
    on_last = {(c.run, c.name): c for c in discover(last, rules, run) if c.verified}
    out = []
    for c in discover(first, rules, run) if on_first is None else on_first:
        if c.state != "complete":
            continue
        done = on_last.get((c.run, c.name))
        if done is None or c.manifest_checksum is None or done.manifest_checksum != c.manifest_checksum:
            out.append(c)
    return out


def promote_through(
    tiers: Sequence[Tier],
    ckpt: Checkpoint,
    rules: Rules = Rules(),
    settings: TransferSettings | None = None,
    deadline_at: float | None = None,
) -> list[PromoteResult]:
    """Promote one checkpoint hop by hop along ``tiers`` (NVMe → PFS → object storage).

    ``deadline_at`` (``time.monotonic()`` seconds): each hop is planned to finish within an equal
    share of the time left.
    """
    from dataclasses import replace

    results = []
    current = ckpt
    hops = list(itertools.pairwise(tiers))
    for i, (src, dst) in enumerate(hops):
        share = None if deadline_at is None else (deadline_at - time.monotonic()) / (len(hops) - i)
        results.append(promote(src, dst, current, rules, settings, deadline_s=share))
        current = replace(current, tier=dst.name)
    return results
