"""DAG ``checkpoint_restore``: bring a checkpoint back onto NVMe, verified and pinned.

The nearest tier holding a committed copy (NVMe, then PFS, then object storage) is used; every
object is checked against the manifest as it arrives. A copy that fails verification is reported
and the next copy, then the previous step, is tried. The restored checkpoint is pinned, so the
lifecycle will not prune it while a job resumes from it.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from pipelines.operators.checkpoints import RestoreCheckpointOperator
from pipelines.operators.roles import role_name

with DAG(
    dag_id="checkpoint_restore",
    description="Restore a checkpoint (a step or the latest) onto NVMe, verified and pinned",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tierflow", "checkpoints"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "run": Param("demo-run", type="string", title="Training run"),
        "step": Param("latest", type=["string", "integer"], title="Step", description='A step number or "latest".'),
        "target": Param(role_name("nvme"), type="string", title="Target tier"),
        "holder": Param("restore", type="string", title="Pin holder", description="e.g. the resuming job's id."),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    RestoreCheckpointOperator(
        task_id="restore",
        run="{{ params.run }}",
        step="{{ params.step }}",
        target="{{ params.target }}",
        holder="{{ params.holder }}",
    )
