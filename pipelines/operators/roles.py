"""Tiers by role for DAG files and operator defaults: which configured tier is the object store, the PFS, the NVMe.

A tier's *kind* is its role; its *name* is the user's. DAGs and operators never spell a tier name:
their defaults come from here, read from the tier config when the DAG is parsed (a small TOML
file, no network), so a config that calls its tiers ``s3main``, ``lustre`` and ``localssd`` needs
no change to any DAG. With several tiers of one kind, a form default is the first of them in the
file (the user can pick another); the library itself refuses to guess
(:meth:`~pipelines.core.config.TierflowConfig.primary`).
"""

from __future__ import annotations

from typing import Any

from pipelines.core.config import TIER_KINDS, TierConfig, TierflowConfig, load_config

__all__ = ["by_role", "default_retention", "role_name"]


def by_role(config: TierflowConfig | None = None) -> dict[str, TierConfig]:
    """Role (``object``, ``pfs``, ``nvme``) → the tier playing it (the first of its kind in the file)."""
    config = config or load_config()
    return {kind: config.of_kind(kind)[0] for kind in TIER_KINDS if config.of_kind(kind)}


def role_name(kind: str, config: TierflowConfig | None = None) -> str:
    """The name of the tier playing ``kind``; ``""`` when the config has none (the form shows it empty)."""
    found = by_role(config).get(kind)
    return found.name if found else ""


def default_retention(config: TierflowConfig | None = None) -> dict[str, dict[str, Any]]:
    """The default retention keyed by the config's tier names (the library's defaults are by kind)."""
    from pipelines.checkpoints.retention import DEFAULT_RETENTION

    return {tier.name: DEFAULT_RETENTION[kind] for kind, tier in by_role(config).items()}
