"""Deadlines of Tierflow DAG runs: an Airflow deadline alert set from the run's ``deadline`` param.

A run of ``dataset_staging`` or ``checkpoint_lifecycle`` triggered with ``deadline`` (e.g. ``"6h"``)
must finish within that long after it was queued. Two things follow from it:

* the plan tasks size each hop to finish in time (:func:`pipelines.model.bandwidth.plan_hop`'s
  ``deadline_s``: the fewest streams that do, or a warning naming what would), and each copy task's
  ``execution_timeout`` comes from its planned time;
* an Airflow **deadline alert** on the run (:data:`ALERT`): its reference, :class:`RunDeadlineParam`,
  reads the param when the run is created, so Airflow itself calls :func:`deadline_missed` if the
  run is still going at its deadline (a run without the param has no deadline). The reference is
  registered by the storage-bandwidth plugin, as Airflow requires of custom references.

Airflow 3.3's ``dag.test()`` (and so ``airflow dags test``) cannot finish a run of a DAG with a
deadline alert: on success it looks the DAG's alerts up by id but holds their serialized form
(``'dict' object has no attribute 'hex'``). :func:`alert` therefore leaves the alert out under
``airflow dags test`` and where ``TIERFLOW_DEADLINE_ALERTS=0`` (what tests that call ``dag.test()``
set); the scheduler, which reads the DAG from the database, is not affected. Plans and timeouts
follow the param either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from typing import Any

from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import BaseDeadlineReference, DeadlineAlert

log = logging.getLogger(__name__)

__all__ = ["ALERT", "PARAM", "RunDeadlineParam", "alert", "deadline_missed", "deadline_of", "seconds_left"]

#: The name of the run param (and conf key) that holds the deadline.
PARAM = "deadline"


def deadline_of(conf: dict[str, Any] | None) -> float | None:
    """The deadline a run's conf asks for, in seconds after the run is queued (None: no deadline).

    Raises:
        ValueError: The value is not a duration (one line naming the param).
    """
    from pipelines.core.units import UnitError, parse_duration

    text = (conf or {}).get(PARAM)
    if text in (None, ""):
        return None
    try:
        seconds = parse_duration(str(text))
    except UnitError as exc:
        raise ValueError(f"param {PARAM!r}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"param {PARAM!r}: the deadline must be positive (got {text!r})")
    return seconds


def seconds_left(conf: dict[str, Any] | None, started: dt.datetime | None) -> float | None:
    """Seconds from now to the run's deadline (negative once it passed), or None without one."""
    seconds = deadline_of(conf)
    if seconds is None:
        return None
    start = started or dt.datetime.now(dt.UTC)
    return (start + dt.timedelta(seconds=seconds) - dt.datetime.now(dt.UTC)).total_seconds()


class RunDeadlineParam(BaseDeadlineReference):
    """A deadline reference: when the run was queued (else created) plus its ``deadline`` param."""

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str, **kwargs: Any) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        try:
            seconds = deadline_of(run.conf)
        except ValueError as exc:  # the plan task fails the run with the same line
            log.warning("%s %s: no deadline alert: %s", dag_id, run_id, exc)
            return None
        if seconds is None:
            return None
        start = run.queued_at or run.run_after or dt.datetime.now(dt.UTC)
        return start + dt.timedelta(seconds=seconds)


def deadline_missed(**kwargs: Any) -> None:
    """Called by Airflow when a run passes its deadline: one warning line naming the run (never an error)."""
    context = kwargs.get("context") or {}
    dag_run = context.get("dag_run") or {}
    run_id = dag_run.get("run_id") if isinstance(dag_run, dict) else getattr(dag_run, "run_id", None)
    dag_id = dag_run.get("dag_id") if isinstance(dag_run, dict) else getattr(dag_run, "dag_id", None)
    log.warning("%s run %s missed its deadline (param %r)", dag_id, run_id, PARAM)


#: The deadline alert Tierflow's DAGs carry (a run without the param gets none).
ALERT = DeadlineAlert(
    reference=RunDeadlineParam(), interval=dt.timedelta(0), callback=SyncCallback(deadline_missed), name="tierflow"
)


def alert() -> DeadlineAlert | None:
    """The alert for a DAG file's ``deadline=``: :data:`ALERT`, or None where ``dag.test()`` would fail on it."""
    if os.environ.get("TIERFLOW_DEADLINE_ALERTS", "1").lower() in ("0", "false", "no", "off"):
        return None
    argv = [os.path.basename(a) for a in sys.argv[:3]]
    if argv[:1] == ["airflow"] and argv[1:3] == ["dags", "test"]:
        return None
    return ALERT
