"""Listener of the storage-bandwidth plugin: learn from every finished Tierflow transfer task.

On success of a :class:`~pipelines.operators.staging.StageShardOperator` or
:class:`~pipelines.operators.staging.StageDatasetOperator`, its summary (from XCom) is recorded as
an observation (predicted vs achieved seconds) and folded into the bottleneck tier's profile. A
listener must never fail a task: any problem is logged and ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

TRANSFER_OPERATORS = ("StageShardOperator", "StageDatasetOperator")


def observation_from(dag_id: str, task_id: str, summary: dict[str, Any]) -> Any:
    """An observation from a transfer task's XCom summary, or None when it moved nothing."""
    from pipelines.model.observations import Observation, now

    seconds = float(summary.get("seconds") or 0)
    moved = int(summary.get("copied_bytes", summary.get("bytes", 0)) or 0)
    if seconds <= 0 or moved <= 0 or not summary.get("predicted_s"):
        return None
    return Observation(
        at=now(),
        dag_id=dag_id,
        task_id=task_id,
        source=str(summary.get("source", "")),
        target=str(summary.get("tier", summary.get("destination", ""))),
        bytes=moved,
        objects=int(summary.get("copied_objects", summary.get("objects", 0)) or 0),
        predicted_s=float(summary["predicted_s"]),
        achieved_s=seconds,
        bottleneck=str(summary.get("bottleneck", "")),
    )


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Record and fold the outcome of a Tierflow transfer task."""
    try:
        task = getattr(task_instance, "task", None)
        if type(task).__name__ not in TRANSFER_OPERATORS:
            return
        summary = task_instance.xcom_pull(task_ids=task_instance.task_id, map_indexes=task_instance.map_index)
        if not isinstance(summary, dict):
            return
        observation = observation_from(task_instance.dag_id, task_instance.task_id, summary)
        if observation is None:
            return
        from pipelines.core.config import load_config
        from pipelines.model.calibration import calibrated
        from pipelines.model.observations import fold, record

        config = calibrated(load_config())
        record(config, observation)
        fold(config, observation)
    except Exception:  # a listener must never fail the task it observes
        log.exception("tierflow listener: could not record the transfer")
