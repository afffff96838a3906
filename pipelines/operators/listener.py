"""Listener of the storage-bandwidth plugin: learn from every finished Tierflow transfer task.

On success of a :class:`~pipelines.operators.staging.StageShardOperator` or
:class:`~pipelines.operators.staging.StageDatasetOperator`, its summary (from XCom) is recorded as
an observation (predicted vs achieved seconds, with its dataset version, DAG run and node);
later plans learn from the log (:func:`pipelines.model.observations.corrections`), the stored
profiles stay as calibrated. A failed try of one is recorded with its error (one line) so the
plugin page lists it beside the copies that finished; failures are never learnt from. A listener
must never fail a task: any problem is logged and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import replace
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
    """Record the outcome of a Tierflow transfer task (plans learn from the record)."""
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
        from pipelines.model.observations import record

        config = _config()
        observation = replace(
            observation,
            run_id=getattr(task_instance, "run_id", None),
            node=observation.node or getattr(task_instance.task, "node", None),
        )
        record(config, observation)  # plans learn from the log (observations.corrections)
        emit_metrics(observation)
    except Exception:  # a listener must never fail the task it observes
        log.exception("tierflow listener: could not record the transfer")


def emit_metrics(observation: Any) -> None:
    """Send a transfer's numbers through Airflow's metrics (StatsD or OpenTelemetry, as ``[metrics]`` says).

    Names are ``tierflow.transfer.<what>.<source>.<target>`` (plain StatsD keeps no tags) and carry
    ``source`` and ``target`` tags too (OpenTelemetry, DogStatsD); nothing is sent when Airflow's
    metrics are off. The plugin's Prometheus endpoint serves the same numbers from the observation log.
    """
    from datetime import timedelta

    from airflow.sdk.observability import stats

    tags = {"source": observation.source, "target": observation.target}
    hop = f"{observation.source}.{observation.target}"
    if observation.error is not None:
        stats.incr(f"tierflow.transfer.failures.{hop}", tags=tags)
        return
    stats.incr(f"tierflow.transfer.tasks.{hop}", tags=tags)
    stats.incr(f"tierflow.transfer.bytes.{hop}", count=observation.bytes, tags=tags)
    stats.incr(f"tierflow.transfer.objects.{hop}", count=observation.objects, tags=tags)
    stats.timing(f"tierflow.transfer.duration.{hop}", timedelta(seconds=observation.achieved_s), tags=tags)
    stats.timing(f"tierflow.transfer.predicted.{hop}", timedelta(seconds=observation.predicted_s), tags=tags)
    if observation.predicted_s > 0:
        error = observation.achieved_s / observation.predicted_s - 1
        stats.gauge(f"tierflow.transfer.prediction_error.{hop}", error, tags=tags)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Record a failed try of a Tierflow transfer task with its error (shown by the plugin, never learnt from)."""
    try:
        task = getattr(task_instance, "task", None)
        if type(task).__name__ not in TRANSFER_OPERATORS:
            return
        from pipelines.core.errors import classify, one_line
        from pipelines.model.observations import failed_transfer, record

        failed = failed_transfer(
            dag_id=task_instance.dag_id,
            task_id=task_instance.task_id,
            run_id=getattr(task_instance, "run_id", None),
            node=getattr(task, "node", None),
            error=one_line(error) if isinstance(error, BaseException) else str(error or "failed"),
            outcome=_outcome(error, classify),
            **_planned(task),
        )
        record(_config(), failed)
        emit_metrics(failed)
    except Exception:  # a listener must never fail the task it observes
        log.exception("tierflow listener: could not record the failed transfer")


def _outcome(error: Any, classify: Any) -> str | None:
    """``fatal`` or ``transient`` for a task's failure (an ``AirflowFailException`` is the operator's own "fatal")."""
    if not isinstance(error, BaseException):
        return None
    if type(error).__name__ == "AirflowFailException":
        return "fatal"
    return str(classify(error).value)


def _config() -> Any:
    """The tier config (recording needs its state directory, not the plans' calibrated profiles)."""
    from pipelines.core.config import load_config

    return load_config()


def _planned(task: Any) -> dict[str, Any]:
    """What a failed transfer task was to move, from its rendered arguments (a shard's descriptor, a hop's names)."""
    from pipelines.datasets.payloads import ShardTask

    shard = getattr(task, "shard", None)
    if isinstance(shard, dict):
        s = ShardTask.from_json(shard, f"{task.task_id}.shard")
        return {
            "source": s.source,
            "target": s.target,
            "dataset": f"{s.dataset}/{s.version}",
            "bytes": s.bytes,
            "predicted_s": s.predicted_s,
            "bottleneck": s.bottleneck,
        }
    names = {k: getattr(task, k, None) for k in ("dataset", "version", "source", "target")}
    return {
        "source": str(names["source"] or "?"),
        "target": str(names["target"] or "?"),
        "dataset": f"{names['dataset']}/{names['version']}" if names["dataset"] else None,
    }
