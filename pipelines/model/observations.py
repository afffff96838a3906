"""Observed transfers: what the model predicted and what a task achieved, and learning from them.

Every Tierflow transfer task's outcome is appended to ``<state_dir>/observations.jsonl`` (by the
plugin's listener). :func:`fold` moves the profile of the end that bound the prediction toward
what was achieved, as an exponentially weighted moving average: the bandwidths of that end are
scaled by ``1 - alpha + alpha * predicted / achieved``. Small transfers (under ``MIN_BYTES``) say
more about task start-up than about the tier and are recorded but not folded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pipelines.core.config import BandwidthProfile, TierflowConfig
from pipelines.core.payloads import Payload, PayloadError
from pipelines.model.bandwidth import Bottleneck
from pipelines.model.calibration import update_profile

__all__ = ["ALPHA", "Observation", "every", "failed_transfer", "fold", "recent", "record"]

#: Weight of one new observation in the moving average.
ALPHA = 0.2
#: Transfers smaller than this are not folded into profiles.
MIN_BYTES = 64 * 2**20
#: Limits on one step: a single odd task cannot move a profile by more than this factor.
MAX_STEP = 2.0


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
    """The latest observations, oldest first.

    Unreadable lines, and those written before the bottleneck was structured, are skipped.
    """
    try:
        lines = _path(config).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-limit:]:
        try:
            out.append(Observation.from_json(json.loads(line)))
        except (ValueError, PayloadError):
            continue
    return out


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


def fold(config: TierflowConfig, observation: Observation, alpha: float = ALPHA) -> bool:
    """Fold an observation into the stored profile of the bottleneck's tier; returns whether it changed.

    The bottleneck's tier has the bandwidths of its direction scaled (a write-bound hop on ``pfs``
    scales ``pfs``'s write bandwidths). Profiles not calibrated yet start from the configured numbers.
    """
    if observation.error is not None or observation.bytes < MIN_BYTES or observation.achieved_s <= 0:
        return False
    tier_name, direction = observation.bottleneck.tier, observation.bottleneck.direction
    if tier_name not in {t.name for t in config.tiers} or direction not in ("read", "write"):
        return False
    ratio = min(MAX_STEP, max(1 / MAX_STEP, observation.predicted_s / observation.achieved_s))
    scale = 1 - alpha + alpha * ratio

    def scaled(profile: BandwidthProfile) -> BandwidthProfile:
        if direction == "read":
            return replace(profile, read_bps=profile.read_bps * scale, stream_read_bps=profile.stream_read_bps * scale)
        return replace(profile, write_bps=profile.write_bps * scale, stream_write_bps=profile.stream_write_bps * scale)

    update_profile(config, tier_name, scaled)  # read, scale and store under the profile's lock
    return True


def now() -> float:
    """Wall-clock time for observations."""
    return time.time()
