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

import itertools
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.core.config import DURABILITY, TierflowConfig
from pipelines.core.manifest import (
    COMMIT_MARKER,
    RESERVED_PREFIX,
    Entry,
    Manifest,
    ManifestError,
    dataset_prefix,
    validate_name,
)
from pipelines.storage.commit import Commit, commit, read_marker
from pipelines.storage.pins import live_pins, remove_pin, write_pin
from pipelines.storage.tier import Tier
from pipelines.transfer.engine import TransferError, TransferSettings, copy_entries

__all__ = [
    "AnyOf",
    "BestN",
    "Candidate",
    "Checkpoint",
    "CheckpointError",
    "EveryNSteps",
    "LatestN",
    "PruneDecision",
    "RetentionPolicy",
    "Rules",
    "chain",
    "cleanup_partial",
    "discover",
    "parse_step",
    "pin",
    "plan_prune",
    "policy_from_spec",
    "promote",
    "promote_through",
    "prune",
    "restore",
    "retain",
    "to_promote",
    "unpin",
]

log = logging.getLogger(__name__)

ROOT = "checkpoints"
DEFAULT_PATTERNS = (r"^step_(\d+)$", r"^checkpoint-(\d+)$", r"^global_step(\d+)$")
FRAMEWORK_MARKERS: dict[str, str] = {
    ".metadata": "pytorch-dcp",
    "commit_success.txt": "orbax",
    "trainer_state.json": "hf-trainer",
}
ORBAX_TMP = ".orbax-checkpoint-tmp-"
METRICS_FILES = ("metrics.json", "trainer_state.json")
DEFAULT_GRACE_S = 3600.0
DEFAULT_PIN_TTL_S = 24 * 3600.0


class CheckpointError(RuntimeError):
    """A checkpoint operation that cannot go on; the message names the run, checkpoint and tier."""


@dataclass(frozen=True)
class Rules:
    """How checkpoints are recognised: name patterns (one group: the step), completion markers, grace period."""

    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    markers: tuple[str, ...] = tuple(FRAMEWORK_MARKERS)
    grace_s: float = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        for p in self.patterns:
            if re.compile(p).groups != 1:
                raise ValueError(f"checkpoint pattern {p!r} must have exactly one group (the step)")
        if not self.markers:
            raise ValueError("at least one completion marker is needed")
        if self.grace_s < 0:
            raise ValueError(f"grace period must not be negative (got {self.grace_s})")

    @classmethod
    def with_extras(cls, pattern: str | None = None, marker: str | None = None, grace_s: float | None = None) -> Rules:
        """The defaults plus a configured pattern and marker file."""
        return cls(
            patterns=DEFAULT_PATTERNS + ((pattern,) if pattern else ()),
            markers=tuple(FRAMEWORK_MARKERS) + ((marker,) if marker else ()),
            grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s,
        )


def parse_step(name: str, rules: Rules = Rules()) -> int | None:
    """The step in a checkpoint directory name, or None when no pattern matches (``step_99`` → 99)."""
    base = name.split(ORBAX_TMP, 1)[0]
    for pattern in rules.patterns:
        m = re.match(pattern, base)
        if m:
            return int(m.group(1))
    return None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint directory on one tier, as found by :func:`discover`."""

    run: str
    name: str
    step: int
    tier: str
    #: What the framework says: "complete" (its marker is there), "in_progress" or "partial".
    state: str
    framework: str | None
    objects: int
    bytes: int
    newest_mtime: float | None
    manifest_checksum: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    pinned_by: tuple[str, ...] = ()
    #: What the discovery saw, kept so later decisions need no second request: data object → size,
    #: and the committed manifest (None when not committed).
    sizes: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    manifest: Manifest | None = field(default=None, compare=False, repr=False)
    #: Committed by Tierflow here and every object of the manifest listed with its size.
    verified: bool = False

    @property
    def prefix(self) -> str:
        """The checkpoint's key prefix (the same on every tier)."""
        return f"{ROOT}/{self.run}/{self.name}"

    @property
    def committed(self) -> bool:
        """Whether Tierflow's commit marker is on this tier."""
        return self.manifest_checksum is not None

    @property
    def status(self) -> str:
        """What this copy is, for display and decisions.

        ``committed`` (marker and every object there: restorable, retainable), ``damaged`` (marker, but
        objects missing or resized), ``uncommitted`` (the framework's marker only: a promotion candidate
        on NVMe, a half copy elsewhere), ``in_progress`` or ``partial``.
        """
        if self.committed:
            return "committed" if self.verified else "damaged"
        return "uncommitted" if self.state == "complete" else self.state

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (XCom, CLI)."""
        return {
            "run": self.run,
            "name": self.name,
            "step": self.step,
            "tier": self.tier,
            "state": self.state,
            "committed": self.committed,
            "verified": self.verified,
            "status": self.status,
            "framework": self.framework,
            "objects": self.objects,
            "bytes": self.bytes,
            "manifest_checksum": self.manifest_checksum,
            "metrics": self.metrics,
            "pinned_by": list(self.pinned_by),
        }


def chain(config: TierflowConfig) -> list[str]:
    """Tier names from the least durable (NVMe) to the most durable (object storage), one per kind."""
    seen: dict[str, str] = {}
    for tier in config.tiers:
        seen.setdefault(tier.kind, tier.name)
    return [seen[k] for k in sorted(seen, key=lambda k: -DURABILITY[k])]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_metrics(tier: Tier, prefix: str, names: set[str]) -> dict[str, float]:
    """Numbers from a checkpoint's own metadata: ``metrics.json`` (flat) and HF ``trainer_state.json``."""
    out: dict[str, float] = {}
    for name in METRICS_FILES:
        if name not in names:
            continue
        try:
            data = json.loads(tier.read_bytes(f"{prefix}/{name}"))
        except (ValueError, FileNotFoundError):
            continue
        if not isinstance(data, dict):
            continue
        if name == "trainer_state.json":
            for row in data.get("log_history") or []:
                if isinstance(row, dict):
                    out |= {k: v for k, v in ((k, _number(v)) for k, v in row.items()) if v is not None}
            best = _number(data.get("best_metric"))
            if best is not None:
                out["best_metric"] = best
        else:
            out |= {k: v for k, v in ((k, _number(v)) for k, v in data.items()) if v is not None}
    return out


def discover(tier: Tier, rules: Rules = Rules(), run: str | None = None, now: float | None = None) -> list[Checkpoint]:
    """Every checkpoint directory on ``tier`` (one listing), sorted by run and step.

    A listing error propagates: the caller must not act on an incomplete picture.
    """
    now = time.time() if now is None else now
    root = f"{ROOT}/{validate_name(run, 'run')}" if run else ROOT
    groups: dict[tuple[str, str], list[Any]] = {}
    for info in tier.list(root):
        parts = info.key.split("/", 3)
        if len(parts) < 4 or parts[1].startswith(RESERVED_PREFIX) or parts[2].startswith(RESERVED_PREFIX):
            continue
        groups.setdefault((parts[1], parts[2]), []).append((parts[3], info))
    out = []
    for (run_name, name), files in sorted(groups.items()):
        step = parse_step(name, rules)
        if step is None:
            continue
        names = {rel for rel, _ in files}
        prefix = f"{ROOT}/{run_name}/{name}"
        data = [(rel, info) for rel, info in files if not rel.startswith(RESERVED_PREFIX)]
        marker = next((m for m in rules.markers if m in names), None)
        newest = max((i.mtime for _, i in files if i.mtime is not None), default=None)
        tmp = ORBAX_TMP in name
        if marker and not tmp:
            state = "complete"
        elif newest is not None and now - newest > rules.grace_s:
            state = "partial"
        else:
            state = "in_progress"
        committed: Commit | None = None
        if COMMIT_MARKER in names and state == "complete":
            try:
                committed = read_marker(tier, prefix)
            except ManifestError as exc:
                log.warning("%s: unreadable commit marker, treated as uncommitted: %s", tier.url(prefix), exc)
        metrics = dict(committed.extra.get("metrics") or {}) if committed else {}
        if not metrics and state == "complete":
            metrics = read_metrics(tier, prefix, names)
        pins = live_pins(tier, prefix, names, now)
        sizes = {rel: i.size for rel, i in data}
        verified = committed is not None and all(sizes.get(e.key) == e.size for e in committed.manifest.entries)
        out.append(
            Checkpoint(
                run=run_name,
                name=name,
                step=step,
                tier=tier.name,
                state=state,
                framework=FRAMEWORK_MARKERS.get(marker or "", "custom" if marker else None),
                objects=len(data),
                bytes=sum(i.size for _, i in data),
                newest_mtime=newest,
                manifest_checksum=committed.manifest.checksum() if committed else None,
                metrics=metrics,
                pinned_by=pins,
                sizes=sizes,
                manifest=committed.manifest if committed else None,
                verified=verified,
            )
        )
    return sorted(out, key=lambda c: (c.run, c.step, c.name))


def pin(tier: Tier, run: str, name: str, holder: str, ttl_s: float = DEFAULT_PIN_TTL_S) -> None:
    """Pin a checkpoint on ``tier`` for ``ttl_s`` seconds on behalf of ``holder`` (a restore, a resumed job)."""
    write_pin(tier, dataset_prefix(run, name, ROOT), holder, ttl_s)


def unpin(tier: Tier, run: str, name: str, holder: str) -> None:
    """Remove ``holder``'s pin (no error if there is none)."""
    remove_pin(tier, dataset_prefix(run, name, ROOT), holder)


# -- promotion --------------------------------------------------------------------------------


def _listing(tier: Tier, prefix: str) -> dict[str, int]:
    """Data objects under a checkpoint prefix (Tierflow's own keys left out): key → size."""
    out = {}
    for info in tier.list(prefix):
        rel = info.key[len(prefix) + 1 :]
        if not rel.split("/", 1)[0].startswith(RESERVED_PREFIX):
            out[rel] = info.size
    return out


@dataclass(frozen=True)
class PromoteResult:
    """One hop of one checkpoint: copied or already there, with the numbers."""

    run: str
    name: str
    step: int
    source: str
    target: str
    copied_bytes: int
    objects: int
    bytes: int
    seconds: float
    already: bool
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (XCom, asset extras)."""
        return {
            "run": self.run,
            "checkpoint": self.name,
            "step": self.step,
            "source": self.source,
            "tier": self.target,
            "copied_bytes": self.copied_bytes,
            "objects": self.objects,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "already": self.already,
            "metrics": self.metrics,
        }


def promote(
    src: Tier, dst: Tier, ckpt: Checkpoint, rules: Rules = Rules(), settings: TransferSettings | None = None
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
    before: dict[str, int] = {}
    if source_commit is not None:
        entries = list(source_commit.manifest.entries)
        extra = dict(source_commit.extra)
    else:
        before = _listing(src, prefix)
        marker = next((m for m in rules.markers if m in before), None)
        if marker is None:
            raise CheckpointError(f"{src.url(prefix)}: its completion marker disappeared; not promoted")
        entries = [Entry(k, s) for k, s in sorted(before.items())]
        extra = {
            "step": ckpt.step,
            "framework": ckpt.framework,
            "framework_marker": marker,
            "metrics": ckpt.metrics,
        }
    existing = read_marker(dst, prefix)
    if existing is not None and (
        (source_commit is not None and existing.manifest.checksum() == source_commit.manifest.checksum())
        or (source_commit is None and {e.key: e.size for e in existing.manifest.entries} == dict(before))
    ):
        if source_commit is None:  # NVMe copy still without its marker (an earlier run stopped between the two)
            _verify_local(src, existing.manifest)  # same sizes is not enough to vouch for its checksums
            commit(src, existing.manifest, source=None, extra=dict(existing.extra))
        return PromoteResult(
            ckpt.run, ckpt.name, ckpt.step, src.name, dst.name, 0, len(entries), sum(e.size for e in entries),
            time.monotonic() - started, True, dict(extra.get("metrics") or {}),
        )  # fmt: skip
    if existing is not None:
        raise CheckpointError(
            f"{dst.url(prefix)} is committed with different content than {src.url(prefix)}; refusing to overwrite"
        )
    settings = settings or _settings(src, dst, entries)
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
    commit(dst, manifest, source=src.url(prefix), extra=extra)
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
        raise CheckpointError(f"{src.url(prefix)} changed while it was copied ({changed}); not committed")


def _settings(src: Tier, dst: Tier, entries: Sequence[Entry]) -> TransferSettings:
    from pipelines.model.bandwidth import Workload, plan_hop

    return TransferSettings.from_plan(plan_hop(src.config, dst.config, Workload.from_sizes(e.size for e in entries)))


# -- retention --------------------------------------------------------------------------------


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


# -- restore ----------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    """Which checkpoint was restored, from where, and every copy that was tried and refused first."""

    run: str
    name: str
    step: int
    source: str
    target: str
    path: str
    fallbacks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "run": self.run,
            "checkpoint": self.name,
            "step": self.step,
            "source": self.source,
            "target": self.target,
            "path": self.path,
            "fallbacks": self.fallbacks,
        }


def _verify_local(tier: Tier, manifest: Manifest) -> None:
    from pipelines.core.checksum import checksum_file

    for e in manifest.entries:
        digest, size = checksum_file(tier.path(f"{manifest.prefix}/{e.key}"))
        if (digest, size) != (e.checksum, e.size):
            raise CheckpointError(f"{tier.url(manifest.prefix + '/' + e.key)} does not match its manifest")


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
        raise CheckpointError(f"{source.url(c.prefix)}: commit marker vanished")
    manifest = found.manifest
    if source.name == target.name:
        _verify_local(target, manifest)
    else:
        pin(source, c.run, c.name, f"{holder}-source", ttl_s=3600)  # the lifecycle must not prune it meanwhile
        try:
            existing = read_marker(target, c.prefix)
            if existing is not None and existing.manifest.checksum() != manifest.checksum():
                target.delete([f"{c.prefix}/{COMMIT_MARKER}"])
            settings = _settings(source, target, manifest.entries)
            copy_entries(source, c.prefix, target, c.prefix, manifest.entries, settings)
            commit(target, manifest, source=source.url(c.prefix), extra=dict(found.extra))
        finally:
            unpin(source, c.run, c.name, f"{holder}-source")
    pin(target, c.run, c.name, holder, ttl_s)


# -- the lifecycle, as the DAG and the CLI run it ---------------------------------------------


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
    tiers: Sequence[Tier], ckpt: Checkpoint, rules: Rules = Rules(), settings: TransferSettings | None = None
) -> list[PromoteResult]:
    """Promote one checkpoint hop by hop along ``tiers`` (NVMe → PFS → object storage)."""
    from dataclasses import replace

    results = []
    current = ckpt
    for src, dst in itertools.pairwise(tiers):
        results.append(promote(src, dst, current, rules, settings))
        current = replace(current, tier=dst.name)
    return results


def retain(
    tiers: Sequence[Tier],
    policies: Mapping[str, RetentionPolicy],
    rules: Rules = Rules(),
    run: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Apply each tier's retention policy to every run; returns per tier what was deleted and kept, and why.

    Tiers are listed first, all of them. A tier whose listing fails deletes nothing, and neither
    does the tier below it (its copies cannot be shown to be safe).
    """
    listings: dict[str, list[Checkpoint] | None] = {}
    for tier in tiers:
        try:
            listings[tier.name] = discover(tier, rules, run)
        except (OSError, ManifestError) as exc:
            log.error("listing %s failed, nothing will be deleted there or below it: %s", tier.url(ROOT), exc)
            listings[tier.name] = None
    newest: dict[str, int] = {}
    for found in listings.values():
        for c in found or []:
            if c.verified:
                newest[c.run] = max(newest.get(c.run, c.step), c.step)
    summary: dict[str, Any] = {}
    for i, tier in enumerate(tiers):
        found = listings[tier.name]
        policy = policies.get(tier.name)
        entry: dict[str, Any] = {"deleted": [], "kept": {}, "objects": 0, "dry_run": dry_run}
        summary[tier.name] = entry
        if found is None or policy is None:
            entry["note"] = "listing failed" if found is None else "no retention policy for this tier"
            continue
        nxt = tiers[i + 1] if i + 1 < len(tiers) else None
        if nxt is not None and listings[nxt.name] is None:
            entry["note"] = f"listing of {nxt.name} failed: nothing can be shown safe to delete"
            continue
        for run_name in sorted({c.run for c in found}):
            mine = [c for c in found if c.run == run_name]
            durable = durable_copies(nxt, [c for c in listings[nxt.name] or [] if c.run == run_name]) if nxt else None
            decision = plan_prune(candidates(mine), policy, durable, newest.get(run_name))
            entry["objects"] += prune(tier, mine, decision.delete, dry_run)
            by_step = {c.step: c.name for c in mine}
            entry["deleted"] += [f"{run_name}/{by_step[s]}" for s in decision.delete]
            entry["kept"] |= {f"{run_name}/{by_step[s]}": why for s, why in decision.keep.items()}
    return summary


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
