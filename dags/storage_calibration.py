"""DAG ``storage_calibration``: measure every tier and store its bandwidth profile, weekly.

One mapped task per tier sweeps object sizes × concurrency through the transfer engine within a
budget (three times by default; each term is the median, with its spread), fits latency,
per-stream and aggregate bandwidth and the object rate, and stores the profile with a timestamp
(``<state_dir>/profiles/<tier>.json``) when it agrees with the current one. A fit that disagrees
beyond the spread (a busy minute, or changed hardware) is kept as the tier's candidate, logged as
a warning and shown on the storage page; trigger with ``apply`` on to take it. Every planner in
Tierflow sizes work from these numbers. A tier that cannot be measured fails its task and keeps
its old profile. Run it by hand after changing hardware, or let it run weekly.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from pipelines.operators.calibration import CalibrateTierOperator

with DAG(
    dag_id="storage_calibration",
    description="Measure each tier and store its bandwidth profile for the planner",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tierflow", "storage"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "tiers": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Tiers",
            description="Tier names to calibrate; empty calibrates every tier.",
        ),
        "budget": Param(
            "256 MiB",
            type="string",
            title="Byte budget per tier",
            description="How much data each tier's sweep may move, with its unit.",
        ),
        "repeats": Param(3, type="integer", minimum=1, maximum=9, title="Sweeps per tier", description="Median of."),
        "apply": Param(
            False,
            type="boolean",
            title="Apply a disagreeing fit",
            description="Store the fit even where it disagrees with the current profile (else: a candidate).",
        ),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @task
    def tiers_to_calibrate(params: dict[str, Any] | None = None) -> list[str]:
        """The tiers asked for, else every tier in the config."""
        from pipelines.operators.context import select_tiers

        return select_tiers((params or {}).get("tiers"))

    CalibrateTierOperator.partial(
        task_id="calibrate",
        budget="{{ params.budget }}",
        repeats="{{ params.repeats }}",
        apply="{{ params.apply }}",
        map_index_template="{{ task.tier }}",
        execution_timeout=timedelta(minutes=15),
        max_active_tis_per_dag=1,  # one tier at a time: calibrations must not disturb each other
    ).expand(tier=tiers_to_calibrate())
