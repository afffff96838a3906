"""DAG ``tier_health``: probe every configured tier (write, list, read back, verify, delete) every hour.

Run it by hand before a large staging job, or let it run hourly to catch a full PFS, an expired
object-store key or a slow NVMe before the training job does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from pipelines.operators import ProbeTierOperator

with DAG(
    dag_id="tier_health",
    description="Probe every storage tier: atomic write, listing, checksum read-back, delete",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tierflow", "storage"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    params={
        "tiers": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Tiers",
            description="Tier names to probe; empty probes every tier in the tier config.",
        ),
        "probe_size": Param(
            "8 MiB",
            type="string",
            title="Probe size",
            description="Size of the probe object, with its unit (e.g. 8 MiB, 64 MB).",
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def list_tiers(params: dict[str, Any] | None = None) -> list[str]:
        """The tiers to probe: those asked for in the params, else every tier in the config."""
        from pipelines.operators.context import select_tiers

        return select_tiers((params or {}).get("tiers"))

    probes = ProbeTierOperator.partial(
        task_id="probe",
        probe_size="{{ params.probe_size }}",
        map_index_template="{{ task.tier }}",
        execution_timeout=timedelta(minutes=10),
    ).expand(tier=list_tiers())

    @task
    def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
        """Log one line per tier and return the per-tier throughputs."""
        import logging

        log = logging.getLogger(__name__)
        out = {}
        for r in results:
            log.info(
                "%-8s %-6s write %8.1f MB/s  read %8.1f MB/s  %s",
                r["tier"],
                r["kind"],
                r["write_MBps"],
                r["read_MBps"],
                r["url"],
            )
            out[r["tier"]] = {"write_MBps": r["write_MBps"], "read_MBps": r["read_MBps"]}
        return out

    summary(probes.output)
