"""Applying retention to tiers: durable copies elsewhere, deletes (markers first, data in batches), partials.

Tiers are listed first, all of them; a tier whose listing fails deletes nothing, and neither does
the tier below it (its copies cannot be shown to be safe).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipelines.checkpoints.discovery import FRAMEWORK_MARKERS, ROOT, Checkpoint, Rules, discover
from pipelines.checkpoints.retention import Candidate, RetentionPolicy, plan_prune
from pipelines.core.manifest import (
    COMMIT_MARKER,
    ManifestError,
)
from pipelines.core.payloads import Payload
from pipelines.storage.tier import Tier

log = logging.getLogger(__name__)

__all__ = ["TierPrune", "candidates", "cleanup_partial", "durable_copies", "prune", "retain"]


@dataclass
class TierPrune(Payload):
    """What retention did on one tier (a retain task's XCom holds one per tier name).

    ``deleted`` and the keys of ``kept`` are ``run/checkpoint``; ``kept`` says why each stayed;
    ``note`` says why nothing on the tier was considered, when nothing was.
    """

    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    objects: int = 0
    dry_run: bool = False
    note: str | None = None
    partial_removed: list[str] = field(default_factory=list)


def durable_copies(tier: Tier, checkpoints: Sequence[Checkpoint]) -> dict[int, str]:
    """Step → manifest checksum of the committed copies whose every object is there with its size.

    ``checkpoints`` are :func:`discover`'s for ``tier``: its one listing and the markers it read
    decide, with no further request.
    """
    out = {}
    for c in checkpoints:
        if c.verified and c.manifest_checksum is not None:
            out[c.step] = c.manifest_checksum
        elif c.committed:
            log.warning("%s: committed but objects are missing or resized; not counted as a copy", tier.url(c.prefix))
    return out


def candidates(checkpoints: Sequence[Checkpoint]) -> list[Candidate]:
    """The plain data a decision needs; complete = committed and verified on this tier, never the framework's marker."""
    return [Candidate(c.step, c.verified, c.manifest_checksum, bool(c.pinned_by), c.metrics) for c in checkpoints]


def prune(tier: Tier, checkpoints: Sequence[Checkpoint], steps: Sequence[int], dry_run: bool = False) -> int:
    """Delete the given steps' checkpoints from ``tier``; returns the number of objects removed.

    Markers go first, in one batch (Tierflow's, then the framework's), so no copy looks complete
    while its data is being removed; then the data, in batches (up to 1,000 keys per request on
    object storage).
    """
    chosen = [c for c in checkpoints if c.step in set(steps)]
    markers: list[str] = []
    data: list[str] = []
    for c in chosen:
        for info in tier.list(c.prefix):
            rel = info.key[len(c.prefix) + 1 :]
            (markers if rel == COMMIT_MARKER or rel in FRAMEWORK_MARKERS else data).append(info.key)
    markers.sort(key=lambda k: not k.endswith(COMMIT_MARKER))
    for c in chosen:
        log.info(
            "%s %s (step %d, %d bytes)", "would delete" if dry_run else "deleting", tier.url(c.prefix), c.step, c.bytes
        )
    if dry_run:
        return len(markers) + len(data)
    removed = tier.delete(markers) + tier.delete(data)
    if not tier.config.is_object:
        import shutil

        for c in chosen:
            shutil.rmtree(tier.path(c.prefix), ignore_errors=True)
    return removed


def cleanup_partial(tier: Tier, checkpoints: Sequence[Checkpoint], dry_run: bool = False) -> list[str]:
    """Remove partial checkpoint directories (no completion marker, older than the grace period)."""
    gone = []
    for c in checkpoints:
        if c.state != "partial" or c.pinned_by:
            continue
        gone.append(c.prefix)
        log.info("%s partial checkpoint %s", "would remove" if dry_run else "removing", tier.url(c.prefix))
        if not dry_run:
            tier.delete_prefix(c.prefix)
    return gone


def _what_a_failed_listing_stops(
    tiers: Sequence[Tier], failed: int, listings: Mapping[str, list[Checkpoint] | None]
) -> str:
    """One line saying which tiers a failed listing keeps from pruning, which it does not, and why."""
    name = tiers[failed].name
    held = [name]
    why = f"nothing is deleted on {name} (its checkpoints are unknown)"
    if failed > 0:
        before = tiers[failed - 1].name
        held.append(before)
        why += f" nor on {before} (its copies cannot be checked against {name})"
    others = [t.name for t in tiers if t.name not in held and listings[t.name] is not None]
    rest = f"; {', '.join(others)} pruned as usual, each against the tier after it" if others else ""
    return f"listing {name} failed: {why}{rest}"


def retain(
    tiers: Sequence[Tier],
    policies: Mapping[str, RetentionPolicy],
    rules: Rules = Rules(),
    run: str | None = None,
    dry_run: bool = False,
) -> dict[str, TierPrune]:
    """Apply each tier's retention policy to every run; returns per tier what was deleted and kept, and why.

    Tiers are listed first, all of them, least durable first. A tier whose listing fails deletes
    nothing, and neither does the tier just before it (its copies are checked against that one's);
    every other tier is pruned as usual, against the tier after it.
    """
    listings: dict[str, list[Checkpoint] | None] = {}
    for tier in tiers:
        try:
            listings[tier.name] = discover(tier, rules, run)
        except (OSError, ManifestError) as exc:
            log.error("listing %s failed: %s", tier.url(ROOT), exc)
            listings[tier.name] = None
    for i, tier in enumerate(tiers):
        if listings[tier.name] is None:
            log.error("%s", _what_a_failed_listing_stops(tiers, i, listings))
    newest: dict[str, int] = {}
    for found in listings.values():
        for c in found or []:
            if c.verified:
                newest[c.run] = max(newest.get(c.run, c.step), c.step)
    summary: dict[str, TierPrune] = {}
    for i, tier in enumerate(tiers):
        found = listings[tier.name]
        policy = policies.get(tier.name)
        entry = summary[tier.name] = TierPrune(dry_run=dry_run)
        if found is None or policy is None:
            entry.note = "listing failed" if found is None else "no retention policy for this tier"
            continue
        nxt = tiers[i + 1] if i + 1 < len(tiers) else None
        if nxt is not None and listings[nxt.name] is None:
            entry.note = f"listing of {nxt.name} failed: nothing can be shown safe to delete"
            continue
        for run_name in sorted({c.run for c in found}):
            mine = [c for c in found if c.run == run_name]
            durable = durable_copies(nxt, [c for c in listings[nxt.name] or [] if c.run == run_name]) if nxt else None
            decision = plan_prune(candidates(mine), policy, durable, newest.get(run_name))
            entry.objects += prune(tier, mine, decision.delete, dry_run)
            by_step = {c.step: c.name for c in mine}
            entry.deleted += [f"{run_name}/{by_step[s]}" for s in decision.delete]
            entry.kept |= {f"{run_name}/{by_step[s]}": why for s, why in decision.keep.items()}
    return summary
