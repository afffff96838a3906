"""What is where: each tier's capacity and use, the dataset versions and checkpoints on it, per node.

The storage page of the plugin (:mod:`pipelines.operators.plugin`) shows this. One survey of a
tier costs one listing of its ``datasets/`` and one of its ``checkpoints/`` prefix (plus the
commit markers and pins those name), so the page keeps a survey for :data:`SURVEY_TTL_S`.

A node-local tier (NVMe) is surveyed once per ``[[node]]`` at that node's URL. The API server
sees only the roots mounted on its own host: a node whose NVMe is elsewhere is listed as not
reachable from here, with the reason, and the other tiers are still surveyed.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.config import TierConfig, TierflowConfig
from pipelines.core.errors import one_line
from pipelines.storage.tier import Tier

__all__ = ["SURVEY_TTL_S", "Place", "checkpoint_matrix", "places", "survey", "survey_all"]

#: How long the page reuses a survey (seconds); ``?refresh=1`` surveys again at once.
SURVEY_TTL_S = 30.0


@dataclass
class Place:
    """One tier as one node sees it: its budget, what Tierflow keeps there and what is free."""

    tier: str
    kind: str
    node: str | None
    url: str
    capacity_bytes: int
    reachable: bool = True
    error: str | None = None
    #: Bytes of Tierflow's dataset versions and checkpoints there (what the listings sum).
    used_bytes: int = 0
    #: Bytes free on the file system under a file tier's root (``None`` for object tiers).
    fs_free_bytes: int | None = None
    versions: list[Any] = field(default_factory=list)  #: :class:`~pipelines.datasets.cache.CacheEntry`
    checkpoints: list[Any] = field(default_factory=list)  #: :class:`~pipelines.checkpoints.Checkpoint`

    @property
    def label(self) -> str:
        """``nvme`` or, for one node's copy of a node-local tier, ``nvme@node1``."""
        return f"{self.tier}@{self.node}" if self.node else self.tier

    @property
    def free_bytes(self) -> int:
        """What may still be written: the capacity budget left, and no more than the file system has."""
        budget = max(0, self.capacity_bytes - self.used_bytes)
        return budget if self.fs_free_bytes is None else min(budget, self.fs_free_bytes)

    @property
    def used_fraction(self) -> float:
        """Used share of the capacity budget (0 to 1)."""
        return min(1.0, self.used_bytes / self.capacity_bytes) if self.capacity_bytes > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (the plugin's ``/api/inventory``)."""
        return {
            "tier": self.tier,
            "label": self.label,
            "kind": self.kind,
            "node": self.node,
            "url": self.url,
            "reachable": self.reachable,
            "error": self.error,
            "capacity_bytes": self.capacity_bytes,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes if self.reachable else None,
            "fs_free_bytes": self.fs_free_bytes,
            "versions": [v.to_json() for v in self.versions],
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }


def places(config: TierflowConfig) -> list[tuple[str | None, TierConfig]]:
    """``(node, tier)`` for every tier, a node-local one once per ``[[node]]`` at that node's URL."""
    out: list[tuple[str | None, TierConfig]] = []
    declared = config.declared_tiers or config.tiers
    for tier in declared:
        if tier.kind == "nvme" and config.nodes:
            out += [(node.name, config.for_node(node.name).tier(tier.name)) for node in config.nodes]
        else:
            out.append((None, tier))
    return out


def survey(tier: Tier, node: str | None = None, now: float | None = None) -> Place:
    """What is on ``tier``: its versions (with size, pins, last use) and checkpoints, and the space left.

    A tier that cannot be listed (not mounted here, not reachable) comes back with ``reachable``
    false and the one-line reason; nothing raises.
    """
    from pipelines.checkpoints import discover
    from pipelines.datasets.cache import cache_entries

    cfg = tier.config
    place = Place(cfg.name, cfg.kind, node, cfg.url, cfg.capacity_bytes)
    try:
        place.versions = cache_entries(tier, now)
        place.checkpoints = discover(tier, now=now)
        if not cfg.is_object:
            place.fs_free_bytes = shutil.disk_usage(tier.root).free
    except Exception as exc:  # shown on the page as this tier's error; the other tiers are still surveyed
        place.reachable, place.error = False, one_line(exc)
        return place
    place.used_bytes = sum(v.bytes for v in place.versions) + sum(c.bytes for c in place.checkpoints)
    return place


def survey_all(config: TierflowConfig, open_tier: Callable[[TierflowConfig, str], Tier]) -> list[Place]:
    """Survey every place of :func:`places`; ``open_tier(config, name)`` opens a tier with its credentials."""
    out = []
    for node, tier_cfg in places(config):
        view = config.for_node(node) if node else config
        try:
            tier = open_tier(view, tier_cfg.name)
        except Exception as exc:  # a root that is not mounted on this host, a connection that is missing
            place = Place(tier_cfg.name, tier_cfg.kind, node, tier_cfg.url, tier_cfg.capacity_bytes)
            place.reachable, place.error = False, one_line(exc)
            out.append(place)
            continue
        out.append(survey(tier, node))
    return out


def checkpoint_matrix(surveyed: list[Place]) -> dict[str, Any]:
    """Checkpoints by run and step, with each tier's copy's status: ``{"tiers": [...], "runs": {run: [row]}}``.

    A row is ``{"name", "step", "bytes", "status": {label: status}}``, newest step first.
    """
    labels = [p.label for p in surveyed if p.reachable]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for place in surveyed:
        for c in place.checkpoints:
            row = rows.setdefault((c.run, c.name), {"name": c.name, "step": c.step, "bytes": c.bytes, "status": {}})
            row["status"][place.label] = c.status
            row["bytes"] = max(row["bytes"], c.bytes)
    runs: dict[str, list[dict[str, Any]]] = {}
    for (run, _), row in sorted(rows.items(), key=lambda item: (item[0][0], -item[1]["step"])):
        runs.setdefault(run, []).append(row)
    return {"tiers": [label for label in labels if any(label in r["status"] for r in rows.values())], "runs": runs}


class SurveyCache:
    """The last survey, reused for :data:`SURVEY_TTL_S` (a page load must not list a big bucket every time)."""

    def __init__(self, ttl_s: float = SURVEY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: tuple[float, list[Place]] | None = None

    def get(self, make: Callable[[], list[Place]], refresh: bool = False) -> tuple[float, list[Place]]:
        """``(when, places)``: the cached survey, or a new one when it is older than the TTL or ``refresh``."""
        with self._lock:
            if refresh or self._value is None or time.time() - self._value[0] > self.ttl_s:
                self._value = (time.time(), make())
            return self._value
