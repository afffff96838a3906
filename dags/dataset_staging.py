"""DAG ``dataset_staging``: stage a committed dataset version object storage → PFS → NVMe.

Each hop is planned by the bandwidth model (concurrency, part size, shards, pool slots, timeout),
copied by mapped tasks (one per manifest shard, named after it), then committed: the target's
commit marker is written last, and an asset event for (dataset, tier) is emitted. Before the
NVMe hop, the cache makes room by evicting least-recently-used versions that are committed on a
more durable tier. A hop whose target already holds the same committed version copies nothing.
With ``[[node]]`` tables in the tier config, the NVMe hop runs once per node on its Celery queue
(task ids ``plan_hop2_<node>`` ...), since each node's NVMe cache is its own; each node's worker
runs with ``TIERFLOW_NODE=<node>``, and a per-node task that reaches another node's worker fails.
With a ``[kubernetes]`` table too, each per-node task carries a ``pod_override`` pinned to its node
(its NVMe, the shared PFS, resources from the plan's caps): see :mod:`pipelines.operators.kubernetes`.

Runs when a dataset version is published on object storage (asset ``tierflow_dataset_published``;
the event names the dataset and version), or by hand with the params below.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from pipelines.core.config import NodeConfig, load_config
from pipelines.operators import (
    CommitStagingOperator,
    EvictCacheOperator,
    PlanStagingOperator,
    StageShardOperator,
    deadlines,
)
from pipelines.operators.assets import PUBLISHED
from pipelines.operators.kubernetes import node_task_args, plan_caps
from pipelines.operators.roles import by_role

#: The tier config, read when the DAG is parsed (a small TOML file, no network): the compute nodes
#: with their own NVMe cache and Celery queue (``[[node]]``), and which tier plays which role.
CONFIG = load_config()
NODES = CONFIG.nodes
ROLES = by_role(CONFIG)
OBJECT, PFS, NVME = (ROLES[k].name if k in ROLES else "" for k in ("object", "pfs", "nvme"))

with DAG(
    dag_id="dataset_staging",
    description="Stage a dataset version object storage → PFS → NVMe, planned by the bandwidth model",
    schedule=[PUBLISHED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["tierflow", "staging"],
    default_args={"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": True},
    params={
        "dataset": Param("synthetic", type="string", title="Dataset", description="Dataset name."),
        "version": Param("v1", type="string", title="Version", description="Dataset version."),
        "source": Param(OBJECT, type="string", title="Source tier", description="Tier holding the committed version."),
        "targets": Param(
            [t for t in (PFS, NVME) if t],
            type="array",
            items={"type": "string"},
            minItems=1,
            maxItems=2,
            title="Target tiers",
            description="Hop 1 goes source → first target; hop 2 (optional) first → second target.",
        ),
        "verify": Param(False, type="boolean", title="Verify", description="Read every copied object back."),
        deadlines.PARAM: Param(
            None,
            type=["null", "string"],
            title="Deadline",
            description="Finish within this long after the run is queued, e.g. '6h': each hop is planned to (the "
            "fewest streams that do, else a warning naming what would), each copy's timeout comes from its plan, "
            "and Airflow's deadline alert fires if the run is late. Empty: none.",
        ),
    },
    deadline=deadlines.alert(),  # the run's deadline param, as an Airflow deadline alert
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @task
    def resolve(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> dict[str, Any]:
        """What to stage: the published version from the triggering event, else the params."""
        p = dict(params or {})
        if triggering_asset_events:
            events = list(triggering_asset_events[PUBLISHED])
            if events and events[-1].extra.get("dataset"):
                p["dataset"] = events[-1].extra["dataset"]
                p["version"] = events[-1].extra["version"]
        targets = [*p["targets"], ""]
        return {
            "dataset": p["dataset"],
            "version": p["version"],
            "source": p["source"],
            "hop1": targets[0],
            "hop2": targets[1],
        }

    what = resolve()
    # Everything below reads what to stage from resolve's XCom at run time.
    WHAT = "ti.xcom_pull(task_ids='resolve')"

    def hop(name: str, source_key: str, pool: str, node: NodeConfig | None, after: Any) -> Any:
        """Plan → (make room) → mapped copy → commit for one hop, on one node's queue when given."""
        hop_id = name.split("_", 1)[0]  # "hop2_node1" is hop 2 on node1
        # A per-node task runs on its node's queue (or in its node's pod) and checks it landed there.
        on_node = {"queue": node.queue, "node": node.name, **node_task_args(CONFIG, node.name)} if node else {}
        caps = plan_caps(CONFIG, node.name) if node else {}  # the plan stays within its node's pod
        plan = PlanStagingOperator(
            task_id=f"plan_{name}",
            dataset=f"{{{{ {WHAT}['dataset'] }}}}",
            version=f"{{{{ {WHAT}['version'] }}}}",
            source=f"{{{{ {WHAT}['{source_key}'] }}}}",
            target=f"{{{{ {WHAT}['{hop_id}'] }}}}",
            deadline="{{ params.deadline }}",
            then=f"{{{{ {WHAT}['hop2'] }}}}" if hop_id == "hop1" else None,
            **caps,
            **on_node,
        )
        stage = StageShardOperator.partial(
            task_id=f"stage_{name}",
            verify="{{ params.verify }}",
            map_index_template="{{ task.shard['name'] }}",
            pool=pool,
            **on_node,
        ).expand(shard=plan.output)
        commit = CommitStagingOperator(
            task_id=f"commit_{name}", plan_task_id=f"plan_{name}", stage_task_id=f"stage_{name}", **on_node
        )
        if hop_id == "hop2":  # make room on the cache before copying into it
            evict = EvictCacheOperator(
                task_id=f"make_room_{name}",
                tier=f"{{{{ {WHAT}['hop2'] }}}}",
                need_bytes=f"{{{{ ti.xcom_pull(task_ids='plan_{name}', key='plan')['needed_bytes'] }}}}",
                keep=f"{{{{ [[{WHAT}['dataset'], {WHAT}['version']]] }}}}",
                **on_node,
            )
            after >> plan >> evict >> stage >> commit
        else:
            after >> plan >> stage >> commit
        return commit

    # Pools bound the concurrent copy tasks per target tier. Airflow cannot size pool_slots at run
    # time (apache/airflow#35803), so each shard task takes one slot of its hop's default target's
    # pool (``tierflow_<tier name>``, as ``tierflow pools sync`` creates them).
    hop1 = hop("hop1", "source", ROLES["pfs"].pool if "pfs" in ROLES else "default_pool", None, what)
    nvme_pool = ROLES["nvme"].pool if "nvme" in ROLES else "default_pool"
    # NVMe caches are per node: with [[node]] tables in the tier config, the PFS → NVMe hop runs
    # once per node, on that node's Celery queue (a queue cannot be mapped at run time, so the
    # fan-out is per node at parse time; the shards within a node are mapped as usual).
    if NODES:
        for node in NODES:
            hop(f"hop2_{node.name}", "hop1", nvme_pool, node, hop1)
    else:
        hop("hop2", "hop1", nvme_pool, None, hop1)
