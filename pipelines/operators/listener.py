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

#: The transfer operators the model learns from, and the payload each returns.
TRANSFER_OPERATORS = {"StageShardOperator": "ShardCopy", "StageDatasetOperator": "HopSummary"}


def observation_from(operator: str, dag_id: str, task_id: str, returned: Any) -> Any:
    """An observation from a transfer task's return value (its payload), or None when it moved nothing."""
    from pipelines.datasets import payloads

    payload = getattr(payloads, TRANSFER_OPERATORS[operator])
    return payload.from_json(returned, f"XCom of {dag_id}.{task_id}").observation(dag_id, task_id)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Record and fold the outcome of a Tierflow transfer task."""
    try:
        operator = type(getattr(task_instance, "task", None)).__name__
        if operator not in TRANSFER_OPERATORS:
            return
        returned = task_instance.xcom_pull(task_ids=task_instance.task_id, map_indexes=task_instance.map_index)
        if returned is None:
            return
        observation = observation_from(operator, task_instance.dag_id, task_instance.task_id, returned)
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
