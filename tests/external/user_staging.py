"""A user's own DAG in their own deployment: it imports only ``pipelines.operators``.

``tests/test_wheel.py`` copies this file into a dags folder outside the repository, beside Airflow
and the Tierflow wheel installed with plain pip, and runs it with ``dag.test()``. The tier config it
uses names its tiers ``shared`` (a PFS) and ``scratch`` (an NVMe cache), not Tierflow's defaults.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from pipelines.operators import ProbeTierOperator, StageDatasetOperator

with DAG(
    dag_id="user_staging",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"dataset": "corpus", "version": "v1"},
) as dag:
    probe = ProbeTierOperator(task_id="probe_scratch", tier="scratch", probe_size="1 MiB")
    stage = StageDatasetOperator(
        task_id="stage",
        dataset="{{ params.dataset }}",
        version="{{ params.version }}",
        source="shared",
        target="scratch",
        verify=True,
    )
    probe >> stage

if __name__ == "__main__":
    run = dag.test()
    print(f"user_staging: {getattr(run.state, 'value', run.state)}")
