"""DAG ``checkpoint_lifecycle``: every 10 minutes, promote new checkpoints NVMe → PFS → object storage and prune.

1. ``discover`` lists checkpoint directories on NVMe (names with a step; complete only with their
   framework's marker) and returns the complete ones not yet committed on object storage.
2. ``promote`` (mapped, one task per checkpoint) copies each hop through the transfer engine and
   commits it with Tierflow's marker, on every tier; each committed copy is an asset event.
3. ``retain`` applies each tier's retention policy (``params.retention``; dry-run available) and
   removes partial checkpoints past the grace period. It never deletes a checkpoint that is not
   committed and verified on the next more durable tier, the newest complete one, or a pinned one.
4. ``summary`` logs promoted and pruned checkpoints.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, TriggerRule, task

from pipelines.operators import deadlines
from pipelines.operators.checkpoints import (
    CHECKPOINT_ALIAS,
    DiscoverCheckpointsOperator,
    PromoteCheckpointOperator,
    RetainCheckpointsOperator,
)
from pipelines.operators.roles import default_retention

COMMON = {
    "run": "{{ params.run }}",
    "pattern": "{{ params.pattern }}",
    "marker": "{{ params.marker }}",
    "grace_s": "{{ params.grace_s }}",
}

with DAG(
    dag_id="checkpoint_lifecycle",
    description="Promote checkpoints NVMe → PFS → object storage, retain and prune per tier",
    schedule="*/10 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["tierflow", "checkpoints"],
    default_args={"retries": 3, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    params={
        # Optional strings are null by default: the trigger form refuses an empty required string.
        "run": Param(None, type=["null", "string"], title="Training run", description="Empty: every run."),
        "retention": Param(
            default_retention(),  # keyed by this config's tier names: {"<nvme>": {"latest": 2}, ...}
            type="object",
            title="Retention per tier",
            description='Per tier: latest N, every N steps, best {"metric", "n", "mode"}; kept = any of them.',
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Log what would be deleted."),
        "grace_s": Param(3600, type="number", minimum=0, title="Grace (s)", description="Unmarked → partial after."),
        "pattern": Param(
            None, type=["null", "string"], title="Extra name pattern", description="Regex, one group: the step."
        ),
        "marker": Param(None, type=["null", "string"], title="Extra completion marker", description="A file name."),
        "mlflow_run_id": Param(
            None,
            type=["null", "string"],
            title="MLflow training run",
            description="With [lineage] in the tier config: tag each promoted copy on this MLflow run.",
        ),
        deadlines.PARAM: Param(
            None,
            type=["null", "string"],
            title="Deadline",
            description="Finish within this long after the run is queued, e.g. '30min': copies are planned to "
            "(the fewest streams that do) and Airflow's deadline alert fires if the run is late. Empty: none.",
        ),
    },
    deadline=deadlines.alert(),  # the run's deadline param, as an Airflow deadline alert
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    discover = DiscoverCheckpointsOperator(task_id="discover", **COMMON)
    promote = PromoteCheckpointOperator.partial(
        task_id="promote",
        map_index_template="{{ task.checkpoint['run'] }}/{{ task.checkpoint['name'] }}",
        outlets=[CHECKPOINT_ALIAS],  # a mapped task's outlets must be known when the DAG is parsed
        mlflow_run_id="{{ params.mlflow_run_id }}",
        deadline="{{ params.deadline }}",
        **COMMON,
    ).expand(checkpoint=discover.output)
    retain = RetainCheckpointsOperator(
        task_id="retain",
        retention="{{ params.retention }}",
        dry_run="{{ params.dry_run }}",
        trigger_rule=TriggerRule.NONE_FAILED,  # also when there was nothing to promote
        **COMMON,
    )

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summary(promoted: Any = None, pruned: Any = None) -> dict[str, Any]:
        """Promoted and pruned checkpoints of this run, one log line per tier."""
        import logging

        from pipelines.checkpoints import PromoteResult, TierPrune

        hops = [PromoteResult.from_json(h) for hops in (promoted or []) if hops for h in hops]
        copied = [h for h in hops if not h.already]
        pruning = {tier: TierPrune.from_json(entry) for tier, entry in (pruned or {}).items()}
        log = logging.getLogger("airflow.task")
        log.info("promoted %d copies, %d bytes", len(copied), sum(h.copied_bytes for h in copied))
        for h in copied:
            log.info("promoted %s/%s (step %d) %s -> %s", h.run, h.name, h.step, h.source, h.target)
        for tier, entry in pruning.items():
            verb = "would delete" if entry.dry_run else "deleted"
            log.info("%s: %s %s", tier, verb, ", ".join(entry.deleted) or "nothing")
        return {
            "promoted": [f"{h.run}/{h.name} -> {h.target}" for h in copied],
            "promoted_bytes": sum(h.copied_bytes for h in copied),
            "deleted": {tier: entry.deleted for tier, entry in pruning.items()},
        }

    promote >> retain
    summary(promote.output, retain.output)
