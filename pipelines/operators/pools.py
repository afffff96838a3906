"""One Airflow pool per tier (``tierflow_<tier>``), sized from the tier's stream limit.

``tierflow pools sync`` (``python -m pipelines.operators.pools sync`` inside Airflow's environment;
``tierflow airflow up`` runs it after migrating the DB) creates or updates them from the
calibrated profiles: a pool has the tier's ``max_streams`` slots, one per stream.
"""

from __future__ import annotations

import sys

from pipelines.core.config import TierflowConfig, load_config

__all__ = ["pool_slots", "sync_pools"]


def pool_slots(config: TierflowConfig) -> dict[str, int]:
    """Pool name → slots for every tier."""
    return {tier.pool: tier.bandwidth.max_streams for tier in config.tiers}


def sync_pools(config: TierflowConfig) -> dict[str, int]:
    """Create or update the tier pools in the Airflow metadata DB; returns what was set."""
    from airflow.models.pool import Pool

    wanted = pool_slots(config)
    for name, slots in wanted.items():
        Pool.create_or_update_pool(
            name=name,
            slots=slots,
            description=f"Tierflow: concurrent work on tier {name.removeprefix('tierflow_')} ({config.source})",
            include_deferred=False,
        )
    return wanted


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        sys.exit("usage: python -m pipelines.operators.pools sync")
    from sqlalchemy.exc import OperationalError

    from pipelines.model.calibration import calibrated

    try:
        synced = sync_pools(calibrated(load_config()))
    except OperationalError as exc:
        sys.exit(f"tierflow pools sync: the Airflow metadata DB is not ready ({exc.orig}); run 'airflow db migrate'")
    for pool, slots in synced.items():
        print(f"pool {pool}: {slots} slots")
