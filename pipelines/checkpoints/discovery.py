"""Finding checkpoints on a tier: names and steps, framework markers, Tierflow's commit, metrics, pins.

Layout: a training run writes checkpoint directories under ``checkpoints/<run>/`` on the NVMe tier,
named with their step (``step_000100``, ``checkpoint-100``, ``global_step100`` by default). The
same key is used on every tier. A framework's marker (PyTorch DCP ``.metadata``, Orbax
``commit_success.txt``, Hugging Face ``trainer_state.json``, or a configured file) makes a
checkpoint *complete* for its framework and so a candidate for promotion; without one it is *in
progress*, and *partial* once older than a grace period. For retention and restore, a copy counts
only once Tierflow's commit marker is there and every object of its manifest is listed with its
size (:attr:`Checkpoint.verified`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.checkpoints.markers import MarkerCache
from pipelines.core.config import DURABILITY, TierflowConfig
from pipelines.core.errors import TierflowError
from pipelines.core.manifest import (
    COMMIT_MARKER,
    RESERVED_PREFIX,
    Manifest,
    ManifestError,
    dataset_prefix,
    validate_name,
)
from pipelines.core.payloads import Payload
from pipelines.storage.commit import Commit, marker_key, parse_marker
from pipelines.storage.pins import live_pins, remove_pin, write_pin
from pipelines.storage.tier import Tier

log = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointRef",
    "Rules",
    "chain",
    "discover",
    "parse_step",
    "pin",
    "read_metrics",
    "unpin",
]


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


class CheckpointError(TierflowError):
    """A checkpoint operation that cannot go on; the message names the run, checkpoint and tier.

    Fatal unless raised with ``outcome=Outcome.TRANSIENT`` (a checkpoint that changed while it was
    copied, or a marker that vanished under a concurrent prune: a retry sees the new state).
    """


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
class CheckpointRef(Payload):
    """Which checkpoint a mapped promote task takes (one item of the discover task's XCom)."""

    run: str
    name: str
    step: int | None = None
    bytes: int | None = None


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

    def ref(self) -> CheckpointRef:
        """The checkpoint named for a task that takes it."""
        return CheckpointRef(self.run, self.name, self.step, self.bytes)

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


def chain(config: TierflowConfig, names: Sequence[str] | None = None) -> list[str]:
    """Tier names from the least durable (NVMe) to the most durable (object storage).

    ``names`` picks the tiers (ordered here by durability); by default, the one tier of each kind
    the config has (:meth:`~pipelines.core.config.TierflowConfig.primary`: several of one kind must
    be named).

    Raises:
        ConfigError: Several tiers of one kind and none named, or a named tier that does not exist.
    """
    if names:
        picked = [config.tier(n) for n in names]
    else:
        kinds = sorted({t.kind for t in config.tiers}, key=lambda k: -DURABILITY[k])
        picked = [config.primary(k) for k in kinds]
    return [t.name for t in sorted(picked, key=lambda t: -DURABILITY[t.kind])]


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


def discover(
    tier: Tier,
    rules: Rules = Rules(),
    run: str | None = None,
    now: float | None = None,
    markers: MarkerCache | None = None,
) -> list[Checkpoint]:
    """Every checkpoint directory on ``tier`` (one listing), sorted by run and step.

    Commit markers come from ``markers`` (default: the state directory's cache) when the listing
    shows them unchanged, so a pass reads only new or rewritten ones. A listing error propagates:
    the caller must not act on an incomplete picture.
    """
    now = time.time() if now is None else now
    markers = MarkerCache.default() if markers is None else markers
    marker_keys: set[str] = set()
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
            listed = next(i for rel, i in files if rel == COMMIT_MARKER)
            marker_keys.add(listed.key)
            try:
                committed = parse_marker(markers.read(tier, listed), tier.url(marker_key(prefix)))
            except FileNotFoundError:
                committed = None  # removed since the listing
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
    markers.forget_missing(tier, root, marker_keys)
    markers.save()
    return sorted(out, key=lambda c: (c.run, c.step, c.name))


def pin(tier: Tier, run: str, name: str, holder: str, ttl_s: float = DEFAULT_PIN_TTL_S) -> None:
    """Pin a checkpoint on ``tier`` for ``ttl_s`` seconds on behalf of ``holder`` (a restore, a resumed job)."""
    write_pin(tier, dataset_prefix(run, name, ROOT), holder, ttl_s)


def unpin(tier: Tier, run: str, name: str, holder: str) -> None:
    """Remove ``holder``'s pin (no error if there is none)."""
    remove_pin(tier, dataset_prefix(run, name, ROOT), holder)


def _listing(tier: Tier, prefix: str) -> dict[str, int]:
    """Data objects under a checkpoint prefix (Tierflow's own keys left out): key → size."""
    out = {}
    for info in tier.list(prefix):
        rel = info.key[len(prefix) + 1 :]
        if not rel.split("/", 1)[0].startswith(RESERVED_PREFIX):
            out[rel] = info.size
    return out


def verify_local(tier: Tier, manifest: Manifest) -> None:
    from pipelines.core.checksum import checksum_file

    for e in manifest.entries:
        digest, size = checksum_file(tier.path(f"{manifest.prefix}/{e.key}"))
        if (digest, size) != (e.checksum, e.size):
            raise CheckpointError(f"{tier.url(manifest.prefix + '/' + e.key)} does not match its manifest")
