"""One Airflow pool per tier (``tierflow_<tier>``), sized from the tier's stream limit.

``python -m pipelines.operators.pools sync`` creates or updates them; it runs inside Airflow's
environment (``tierflow airflow up`` calls it after migrating the DB). The bandwidth planner will
size slots from calibrated profiles; until then a pool has the tier's ``max_streams`` slots.
"""

from __future__ import annotations

import sys

from pipelines.config import TierflowConfig, load_config

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
    for pool, slots in sync_pools(load_config()).items():
        print(f"pool {pool}: {slots} slots")
