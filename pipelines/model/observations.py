"""Observed transfers, kept as data, and what the model learns from them.

Every Tierflow transfer task's outcome is appended to ``<state_dir>/observations.jsonl`` (by the
plugin's listener): tier, direction, bytes, objects, seconds, the prediction it was made against
and the learnt factor that prediction used. Nothing is folded into the stored profiles: they hold
what calibration measured, and :func:`corrections` derives from the log, whenever a plan is made,
how much faster or slower each tier and direction runs than its calibration says — with the
samples it used (provenance), so the plugin page can show why a plan changed.

The correction of a tier's direction is the median, over the last :data:`WINDOW` eligible
observations since the tier was last calibrated, of *calibrated prediction ÷ achieved time*
(the recorded prediction times the factor it used, so learning does not compound its own
corrections). It applies once :data:`MIN_SAMPLES` agree enough to count, and is bounded by
:data:`MAX_CORRECTION` either way. Small transfers (under :data:`MIN_BYTES`) say more about task
start-up than about the tier, and failed ones say nothing of its speed: both are recorded, never
learnt from. A new calibration starts learning afresh.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.core.config import TierflowConfig
from pipelines.core.payloads import Payload, PayloadError
from pipelines.model.bandwidth import Bottleneck

__all__ = [
    "MIN_BYTES",
    "MIN_SAMPLES",
    "WINDOW",
    "Correction",
    "Observation",
    "corrections",
    "every",
    "failed_transfer",
    "recent",
    "record",
    "tail",
]

#: Transfers smaller than this are not learnt from.
MIN_BYTES = 64 * 2**20
#: Observations a correction needs before it applies (one odd task never moves a plan).
MIN_SAMPLES = 3
#: The latest this many eligible observations make a correction.
WINDOW = 9
#: A correction stays within this factor either way (beyond it, recalibrate).
MAX_CORRECTION = 4.0
#: How much of the log's end is read when learning (about 2,500 observations).
TAIL_BYTES = 2**20


@dataclass(frozen=True)
class Observation(Payload):
    """One finished transfer task."""

    at: float
    dag_id: str
    task_id: str
    source: str
    target: str
    bytes: int
    objects: int
    predicted_s: float
    achieved_s: float
    bottleneck: Bottleneck  #: what the model said would limit it: the tier and direction that learn
    dataset: str | None = None  #: the dataset version it moved, ``<name>/<version>``
    run_id: str | None = None  #: the DAG run it belonged to
    node: str | None = None  #: the ``[[node]]`` it ran for (per-node hops)
    #: Why the task failed (one line), ``None`` for a finished copy; failures are shown, never learnt from.
    error: str | None = None
    #: What the failure means (:class:`~pipelines.core.errors.Outcome`: ``transient`` is retried, ``fatal`` is not).
    outcome: str | None = None
    #: The learnt factor ``predicted_s`` was made with, for the bottleneck's tier and direction.
    correction: float = 1.0

    @property
    def achieved_MBps(self) -> float:
        """Achieved MB/s."""
        return self.bytes / self.achieved_s / 1e6 if self.achieved_s > 0 else 0.0

    @property
    def predicted_MBps(self) -> float:
        """Predicted MB/s."""
        return self.bytes / self.predicted_s / 1e6 if self.predicted_s > 0 else 0.0


def failed_transfer(
    *,
    dag_id: str,
    task_id: str,
    source: str,
    target: str,
    error: str,
    bytes: int = 0,
    predicted_s: float = 0.0,
    bottleneck: Bottleneck | None = None,
    dataset: str | None = None,
    run_id: str | None = None,
    node: str | None = None,
    outcome: str | None = None,
) -> Observation:
    """A failed try of a transfer task: what it was to move, why it failed and what that means (nothing achieved)."""
    return Observation(
        at=now(),
        dag_id=dag_id,
        task_id=task_id,
        source=source,
        target=target,
        bytes=bytes,
        objects=0,
        predicted_s=predicted_s,
        achieved_s=0.0,
        bottleneck=bottleneck or Bottleneck(target, "write", "unknown"),
        dataset=dataset,
        run_id=run_id,
        node=node,
        error=error,
        outcome=outcome,
    )


def _path(config: TierflowConfig) -> Any:
    return config.state_dir / "observations.jsonl"


def record(config: TierflowConfig, observation: Observation) -> None:
    """Append an observation (one JSON line; appends of one line are atomic enough for this log)."""
    path = _path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(observation.to_json()) + "\n")


def recent(config: TierflowConfig, limit: int = 50) -> list[Observation]:
    """The latest observations (at most ``limit``, from the end of the log), oldest first.

    Unreadable lines, and those written before the bottleneck was structured, are skipped.
    """
    return tail(config)[-limit:] if limit > 0 else []


def every(config: TierflowConfig) -> Iterator[Observation]:
    """Every observation, oldest first, read line by line (the metrics' counters sum them all)."""
    path = _path(config)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                yield Observation.from_json(json.loads(line))
            except (ValueError, PayloadError):
                continue


def tail(config: TierflowConfig, max_bytes: int = TAIL_BYTES, learnable: bool = False) -> list[Observation]:
    """The observations in the last ``max_bytes`` of the log, oldest first (a cut first line is skipped).

    ``learnable`` reads only finished transfers of :data:`MIN_BYTES` or more, skipping the others
    by a look at their text (plans read the log's end every time: most lines are small shards).
    """
    try:
        with open(_path(config), "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # begins mid-line
    out = []
    for line in lines:
        if learnable and not _may_teach(line):
            continue
        try:
            out.append(Observation.from_json(json.loads(line)))
        except (ValueError, PayloadError):
            continue
    return out


_BYTES = re.compile(rb'"bytes": (\d+)')


def _may_teach(line: bytes) -> bool:
    """A look at a log line's text: a finished transfer big enough to learn from (JSON decides the rest)."""
    found = _BYTES.search(line)
    return found is not None and int(found[1]) >= MIN_BYTES and b'"error": null' in line


@dataclass(frozen=True)
class LearntSample:
    """One observation a correction is made of."""

    at: float
    dag_id: str
    task_id: str
    run_id: str | None
    bytes: int
    #: What the calibrated numbers alone predicted ÷ what was achieved (above 1: faster than calibrated).
    ratio: float

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "at": self.at,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "bytes": self.bytes,
            "ratio": round(self.ratio, 4),
        }


@dataclass(frozen=True)
class Correction:
    """What observed transfers teach about one tier's direction, and which transfers taught it."""

    tier: str
    direction: str
    samples: tuple[LearntSample, ...]  #: the window used, oldest first
    since: float | None  #: when the tier was last calibrated (epoch s); None: never

    @property
    def factor(self) -> float:
        """The speed-up to apply (1 until :data:`MIN_SAMPLES` observations are in)."""
        if len(self.samples) < MIN_SAMPLES:
            return 1.0
        from statistics import median  # imported when a correction is in force, not on every start

        middle = median(s.ratio for s in self.samples)
        return min(MAX_CORRECTION, max(1 / MAX_CORRECTION, middle))

    @property
    def spread(self) -> float:
        """``(max - min) / median`` of the samples' ratios (0 with fewer than two)."""
        if len(self.samples) < 2:
            return 0.0
        from statistics import median

        ratios = [s.ratio for s in self.samples]
        return (max(ratios) - min(ratios)) / median(ratios)

    def line(self) -> str:
        """One line for logs and the plugin page."""
        n = len(self.samples)
        if n < MIN_SAMPLES:
            return f"{self.tier} {self.direction}: learning ({n} of {MIN_SAMPLES} observations), calibration as is"
        return (
            f"{self.tier} {self.direction}: {self.factor:.2f}x the calibrated speed, median of {n} observations "
            f"(spread {self.spread:.0%})"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (the plugin's API)."""
        return {
            "tier": self.tier,
            "direction": self.direction,
            "factor": round(self.factor, 4),
            "spread": round(self.spread, 4),
            "since": self.since,
            "samples": [s.to_json() for s in self.samples],
            "line": self.line(),
        }


def learns_from(observation: Observation, tiers: set[str]) -> bool:
    """Whether an observation says something of its bottleneck tier's speed."""
    return (
        observation.error is None
        and observation.bytes >= MIN_BYTES
        and observation.achieved_s > 0
        and observation.predicted_s > 0
        and observation.bottleneck.tier in tiers
        and observation.bottleneck.direction in ("read", "write")
    )


def corrections(
    config: TierflowConfig,
    since: Mapping[str, float | None],
    observed: list[Observation] | None = None,
) -> dict[tuple[str, str], Correction]:
    """Each tier's learnt correction per direction, from the observations after its last calibration.

    ``since`` maps a tier to when it was calibrated (epoch seconds; None or absent: never, so
    every observation counts). ``observed`` defaults to the end of the log.
    """
    tiers = {t.name for t in config.tiers}
    found: dict[tuple[str, str], list[LearntSample]] = {}
    for o in observed if observed is not None else tail(config, learnable=True):
        if not learns_from(o, tiers) or o.at < (since.get(o.bottleneck.tier) or 0.0):
            continue
        key = (o.bottleneck.tier, o.bottleneck.direction)
        # The recorded prediction already used a correction: undo it to compare with calibration alone.
        ratio = o.predicted_s * o.correction / o.achieved_s
        found.setdefault(key, []).append(LearntSample(o.at, o.dag_id, o.task_id, o.run_id, o.bytes, ratio))
    return {
        (tier, d): Correction(tier, d, tuple(found.get((tier, d), [])[-WINDOW:]), since.get(tier))
        for tier in sorted(tiers)
        for d in ("read", "write")
    }


def now() -> float:
    """Wall-clock time for observations."""
    return time.time()
