"""Checkpoint lifecycle: discover on NVMe, promote NVMe → PFS → object storage, retain, prune, restore.

Layout: a training run writes checkpoint directories under ``checkpoints/<run>/`` on the NVMe tier,
named with their step (``step_000100``, ``checkpoint-100``, ``global_step100`` by default). The
same key is used on every tier.

**One completion rule everywhere.** A checkpoint is *complete* on NVMe when its framework's
marker is there (PyTorch DCP ``.metadata``, Orbax ``commit_success.txt``, Hugging Face
``trainer_state.json``, or a configured file); without one it is *in progress*, and *partial* once
older than a grace period. Orbax ``*.orbax-checkpoint-tmp-*`` directories are never complete. A
copy on any tier exists only once Tierflow's commit marker (manifest with sizes and xxh3 checksums,
the framework marker seen, the metrics) is written there, last. Promotion writes it on NVMe too,
so every tier answers "is this copy whole?" the same way.

**Never lose the last good copy.** For retention and restore, a copy is *complete* on a tier only
when Tierflow's commit marker is there and every object of its manifest is listed with its size
(:attr:`Checkpoint.verified`); a framework marker alone only makes a checkpoint a candidate for
promotion (a promotion killed mid-copy leaves the framework marker and some shards, and any
uploader that does not order its writes does the same). Pruning deletes only complete checkpoints
that are committed *and verified* (same manifest) on the next more durable tier; never the newest
complete checkpoint; never a pinned one; nothing when a listing failed or is empty. Retention is
a composition of small policies (:class:`LatestN`, :class:`EveryNSteps`, :class:`BestN`,
:class:`AnyOf`) deciding what to *keep*; :func:`plan_prune` enforces the rules above whatever a
policy says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.core.lazy import lazy_getattr

if TYPE_CHECKING:
    from pipelines.checkpoints.discovery import (
        FRAMEWORK_MARKERS,
        ROOT,
        Checkpoint,
        CheckpointError,
        CheckpointRef,
        Rules,
        chain,
        discover,
        parse_step,
        pin,
        read_metrics,
        unpin,
        verify_local,
    )
    from pipelines.checkpoints.promotion import PromoteResult, promote, promote_through, to_promote
    from pipelines.checkpoints.pruning import TierPrune, candidates, cleanup_partial, durable_copies, prune, retain
    from pipelines.checkpoints.restoration import RestoreResult, restore
    from pipelines.checkpoints.retention import (
        DEFAULT_RETENTION,
        AnyOf,
        BestN,
        Candidate,
        EveryNSteps,
        LatestN,
        PruneDecision,
        RetentionPolicy,
        parse_retention,
        plan_prune,
        policy_from_spec,
    )

#: Public name → the submodule defining it; imported on first use, so importing one submodule (or
#: this package, at DAG parse time) does not import the others.
_EXPORTS = {
    "AnyOf": "retention",
    "BestN": "retention",
    "Candidate": "retention",
    "Checkpoint": "discovery",
    "CheckpointError": "discovery",
    "CheckpointRef": "discovery",
    "DEFAULT_RETENTION": "retention",
    "EveryNSteps": "retention",
    "FRAMEWORK_MARKERS": "discovery",
    "LatestN": "retention",
    "PromoteResult": "promotion",
    "PruneDecision": "retention",
    "ROOT": "discovery",
    "RestoreResult": "restoration",
    "TierPrune": "pruning",
    "RetentionPolicy": "retention",
    "Rules": "discovery",
    "candidates": "pruning",
    "chain": "discovery",
    "cleanup_partial": "pruning",
    "discover": "discovery",
    "durable_copies": "pruning",
    "parse_retention": "retention",
    "parse_step": "discovery",
    "pin": "discovery",
    "plan_prune": "retention",
    "policy_from_spec": "retention",
    "promote": "promotion",
    "promote_through": "promotion",
    "prune": "pruning",
    "read_metrics": "discovery",
    "restore": "restoration",
    "retain": "pruning",
    "to_promote": "promotion",
    "unpin": "discovery",
    "verify_local": "discovery",
}

__all__ = [
    "DEFAULT_RETENTION",
    "FRAMEWORK_MARKERS",
    "ROOT",
    "AnyOf",
    "BestN",
    "Candidate",
    "Checkpoint",
    "CheckpointError",
    "CheckpointRef",
    "EveryNSteps",
    "LatestN",
    "PromoteResult",
    "PruneDecision",
    "RestoreResult",
    "RetentionPolicy",
    "Rules",
    "TierPrune",
    "candidates",
    "chain",
    "cleanup_partial",
    "discover",
    "durable_copies",
    "parse_retention",
    "parse_step",
    "pin",
    "plan_prune",
    "policy_from_spec",
    "promote",
    "promote_through",
    "prune",
    "read_metrics",
    "restore",
    "retain",
    "to_promote",
    "unpin",
    "verify_local",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
