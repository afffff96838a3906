"""Retention policies and the pruning invariants, on plain data (no tiers).

Retention is a composition of small policies (:class:`LatestN`, :class:`EveryNSteps`, :class:`BestN`,
:class:`AnyOf`) deciding what to *keep*; :func:`plan_prune` enforces the rules whatever a policy
says: only copies committed and verified on their tier are deleted, never the newest one, never a
pinned one, never one not committed and verified on the next more durable tier.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = [
    "AnyOf",
    "BestN",
    "Candidate",
    "EveryNSteps",
    "LatestN",
    "PruneDecision",
    "RetentionPolicy",
    "parse_retention",
    "plan_prune",
    "policy_from_spec",
]


@dataclass(frozen=True)
class Candidate:
    """What a retention decision sees of one checkpoint on one tier (plain data)."""

    step: int
    #: Committed by Tierflow's marker and verified on this tier (a framework marker alone is not enough).
    complete: bool = True
    manifest_checksum: str | None = None
    pinned: bool = False
    metrics: Mapping[str, float] = field(default_factory=dict)


class RetentionPolicy(Protocol):
    """Decides which steps to keep among complete checkpoints (everything else may go)."""

    def keep(self, checkpoints: Sequence[Candidate]) -> set[int]:
        """The steps this policy wants kept."""
        ...


@dataclass(frozen=True)
class LatestN:
    """Keep the ``n`` highest steps."""

    n: int

    def keep(self, checkpoints: Sequence[Candidate]) -> set[int]:
        """The n highest steps."""
        return set(sorted({c.step for c in checkpoints}, reverse=True)[: max(self.n, 0)])


@dataclass(frozen=True)
class EveryNSteps:
    """Keep every step that is a multiple of ``n`` (e.g. one per 10,000 steps for the long run)."""

    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"EveryNSteps needs a positive n (got {self.n})")

    def keep(self, checkpoints: Sequence[Candidate]) -> set[int]:
        """Steps divisible by n."""
        return {c.step for c in checkpoints if c.step % self.n == 0}


@dataclass(frozen=True)
class BestN:
    """Keep the ``n`` best checkpoints by ``metric`` (``mode`` ``min`` or ``max``); ties go to the later step."""

    metric: str
    n: int
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"BestN mode must be 'min' or 'max' (got {self.mode!r})")

    def keep(self, checkpoints: Sequence[Candidate]) -> set[int]:
        """The n best steps among those that report the metric."""
        scored = [(c.metrics[self.metric], c.step) for c in checkpoints if self.metric in c.metrics]
        sign = 1 if self.mode == "min" else -1
        scored.sort(key=lambda x: (sign * x[0], -x[1]))
        return {step for _, step in scored[: max(self.n, 0)]}


@dataclass(frozen=True)
class AnyOf:
    """Keep what any of the policies keeps."""

    policies: tuple[RetentionPolicy, ...]

    def keep(self, checkpoints: Sequence[Candidate]) -> set[int]:
        """The union of the policies' keeps."""
        out: set[int] = set()
        for policy in self.policies:
            out |= policy.keep(checkpoints)
        return out


def policy_from_spec(spec: Mapping[str, Any]) -> RetentionPolicy:
    """A policy from plain settings: ``{"latest": 3, "every": 1000, "best": {"metric": "eval_loss", "n": 2}}``.

    Raises:
        ValueError: An unknown key or a bad value (named).
    """
    parts: list[RetentionPolicy] = []
    for key, value in spec.items():
        if key == "latest":
            parts.append(LatestN(int(value)))
        elif key == "every":
            parts.append(EveryNSteps(int(value)))
        elif key == "best":
            if not isinstance(value, Mapping) or "metric" not in value:
                raise ValueError("retention 'best' needs {'metric': ..., 'n': ..., 'mode': 'min'|'max'}")
            parts.append(BestN(str(value["metric"]), int(value.get("n", 1)), str(value.get("mode", "min"))))
        else:
            raise ValueError(f"unknown retention setting {key!r} (latest, every, best)")
    if not parts:
        raise ValueError("a retention policy needs at least one of latest, every, best")
    return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))


@dataclass
class PruneDecision:
    """Which steps go and, for every step kept, why."""

    delete: list[int] = field(default_factory=list)
    keep: dict[int, str] = field(default_factory=dict)


def plan_prune(
    checkpoints: Sequence[Candidate] | None,
    policy: RetentionPolicy,
    durable: Mapping[int, str] | None,
    newest_overall: int | None = None,
) -> PruneDecision:
    """Decide what to delete on one tier. Pure: the invariants below hold whatever ``policy`` says.

    Args:
        checkpoints: The tier's checkpoints, or None when the listing failed (then nothing goes).
        policy: What to keep.
        durable: Step → manifest checksum of the copies committed and verified on the next more
            durable tier; None on the most durable tier (there is no further copy to require).
        newest_overall: The newest complete step on any tier (kept everywhere it is).

    Only complete checkpoints are ever deleted; never one that is pinned, the newest complete one
    (on this tier or overall), or one whose manifest is not committed and verified on the next tier.
    """
    decision = PruneDecision()
    if not checkpoints:
        return decision
    complete = [c for c in checkpoints if c.complete]
    kept_by_policy = policy.keep(complete) if complete else set()
    newest = max((c.step for c in complete), default=None)
    for c in checkpoints:
        if not c.complete:
            decision.keep[c.step] = "not committed and verified on this tier"
        elif c.step == newest or c.step == newest_overall:
            decision.keep[c.step] = "newest complete checkpoint"
        elif c.pinned:
            decision.keep[c.step] = "pinned"
        elif c.step in kept_by_policy:
            decision.keep[c.step] = "kept by the retention policy"
        elif durable is not None and (c.manifest_checksum is None or durable.get(c.step) != c.manifest_checksum):
            decision.keep[c.step] = "not committed and verified on the next more durable tier"
        else:
            decision.delete.append(c.step)
    decision.delete.sort()
    return decision


#: Retention per tier kind when none is given: a little on NVMe, more on the PFS, the long tail on object storage.
DEFAULT_RETENTION: dict[str, dict[str, Any]] = {
    "nvme": {"latest": 2},
    "pfs": {"latest": 4},
    "object": {"latest": 8, "every": 10_000},
}


def parse_retention(text: str) -> dict[str, Any]:
    """Settings from a command-line form: ``latest=2,every=1000,best=eval_loss:3:min``.

    Raises:
        ValueError: A malformed part (named).
    """
    spec: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"retention part {part!r} must look like key=value")
        if key == "best":
            metric, _, rest = value.partition(":")
            n, _, mode = rest.partition(":")
            spec["best"] = {"metric": metric, "n": int(n or 1), "mode": mode or "min"}
        else:
            try:
                spec[key] = int(value)
            except ValueError:
                raise ValueError(f"retention {key}={value!r}: expected an integer") from None
    policy_from_spec(spec)  # validates
    return spec
