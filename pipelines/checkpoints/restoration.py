"""Restore: the nearest committed copy of a step onto NVMe, verified object by object, committed and pinned."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.checkpoints.discovery import (
    DEFAULT_PIN_TTL_S,
    Checkpoint,
    CheckpointError,
    Rules,
    discover,
    pin,
    unpin,
    verify_local,
)
from pipelines.checkpoints.promotion import planned_settings
from pipelines.core.errors import Outcome
from pipelines.core.manifest import (
    COMMIT_MARKER,
    ManifestError,
)
from pipelines.core.payloads import Payload
from pipelines.storage.commit import commit, read_marker
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferError, copy_entries

log = logging.getLogger(__name__)

__all__ = ["RestoreResult", "restore"]


@dataclass
class RestoreResult(Payload):
    """Which checkpoint was restored, from where, and every copy that was tried and refused first (the XCom)."""

    run: str
    name: str = field(metadata={"json": "checkpoint"})
    step: int
    source: str
    target: str
    path: str
    fallbacks: list[str] = field(default_factory=list)


def restore(
    tiers: Sequence[Tier],
    target: Tier,
    run: str,
    step: int | None = None,
    rules: Rules = Rules(),
    holder: str = "restore",
    ttl_s: float = DEFAULT_PIN_TTL_S,
) -> RestoreResult:
    """Restore a checkpoint (``step``, or the latest committed) of ``run`` onto ``target``, verified and pinned.

    ``tiers`` are searched nearest first (NVMe, PFS, object storage). Every object is checked against
    the manifest as it arrives; a copy that fails is reported and the next tier holding the step is
    tried, then the previous step. The restored copy is committed and pinned on ``target``.

    Raises:
        CheckpointError: No committed copy of the run (or of the step) verifies anywhere.
    """
    found: dict[int, list[tuple[Tier, Checkpoint]]] = {}
    for tier in tiers:
        for c in discover(tier, rules, run):
            if c.verified:
                found.setdefault(c.step, []).append((tier, c))
    if not found:
        raise CheckpointError(f"run {run!r}: no committed checkpoint on {[t.name for t in tiers]}")
    if step is not None and step not in found:
        raise CheckpointError(f"run {run!r}: step {step} is committed on none of {[t.name for t in tiers]}")
    steps = sorted((s for s in found if step is None or s <= step), reverse=True)
    fallbacks: list[str] = []
    for s in steps:
        for tier, c in found[s]:
            try:
                _restore_copy(tier, target, c, holder, ttl_s)
            except (CheckpointError, TransferError, ManifestError) as exc:
                why = f"step {s} on {tier.name} failed verification: {str(exc).splitlines()[0]}"
                log.warning("restore %s: %s", run, why)
                fallbacks.append(why)
                continue
            if fallbacks:
                log.warning("restore %s: fell back to step %d from %s", run, s, tier.name)
            result = RestoreResult(run, c.name, s, tier.name, target.name, target.url(c.prefix), fallbacks)
            log.info("restored %s/%s (step %d) from %s to %s", run, c.name, s, tier.name, target.url(c.prefix))
            return result
    raise CheckpointError(f"run {run!r}: no copy verified; tried: {' | '.join(fallbacks)}")


def _restore_copy(source: Tier, target: Tier, c: Checkpoint, holder: str, ttl_s: float) -> None:
    found = read_marker(source, c.prefix)
    if found is None:
        raise CheckpointError(f"{source.url(c.prefix)}: commit marker vanished", outcome=Outcome.TRANSIENT)
    manifest = found.manifest
    if source.name == target.name:
        verify_local(target, manifest)
    else:
        pin(source, c.run, c.name, f"{holder}-source", ttl_s=3600)  # the lifecycle must not prune it meanwhile
        try:
            existing = read_marker(target, c.prefix)
            if existing is not None and existing.manifest.checksum() != manifest.checksum():
                target.delete([f"{c.prefix}/{COMMIT_MARKER}"])
            settings = planned_settings(source, target, manifest.entries, prefix=c.prefix)
            copy_entries(source, c.prefix, target, c.prefix, manifest.entries, settings)
            commit(target, manifest, source=source.url(c.prefix), extra=dict(found.extra))
        finally:
            unpin(source, c.run, c.name, f"{holder}-source")
    pin(target, c.run, c.name, holder, ttl_s)
