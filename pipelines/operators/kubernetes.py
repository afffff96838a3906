"""Per-node tasks as Kubernetes pods: a ``pod_override`` built from each ``[[node]]`` entry.

With a ``[kubernetes]`` table in the tier config, every per-node task of ``dataset_staging`` (the
PFS → NVMe hop of one node) carries ``executor_config={"pod_override": pod}``, where the pod:

- is pinned to its node by a node selector (``node_label`` = the node's ``hostname``, else its name);
- mounts the node's NVMe at the nvme tier's root, as a ``hostPath`` (the node's root on the host,
  ``DirectoryOrCreate``) or as a local PersistentVolume's claim (``nvme_claim``, ``{node}`` replaced);
- mounts the shared PFS claim (``pfs_claim``, ReadWriteMany) at the pfs tier's root;
- runs with ``TIERFLOW_NODE=<node>``, so the task reads the tier config as that node sees it;
- requests what the plan may use: ``streams × cpu_per_stream`` cores, and the task itself
  (``memory_base``) plus the planner's part-buffer budget in memory (request = limit). The plan
  task of the hop is given the same stream cap and memory budget, so no plan outgrows its pod.

The executor merges the override into its pod template (container ``base``), and the DAG names
the executor with ``executor=`` when ``[kubernetes] executor`` is set (e.g. ``KubernetesExecutor``
beside a default CeleryExecutor). Building pods needs the ``kubernetes`` client, which the
cncf-kubernetes provider brings (``pip install "tierflow[kubernetes]"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.core.config import NODE_ENV, ConfigError, KubernetesConfig, TierflowConfig
from pipelines.model.bandwidth import DEFAULT_MEMORY_BUDGET

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

__all__ = ["PodSizing", "node_pod", "node_task_args", "plan_caps", "pod_sizing"]

MiB = 2**20
#: Names of the pod's volumes.
NVME_VOLUME, PFS_VOLUME = "tierflow-nvme", "tierflow-pfs"


@dataclass(frozen=True)
class PodSizing:
    """What one node's task pod is given, and the caps its hop is planned within.

    Attributes:
        streams: Most concurrent streams the hop's plan may choose.
        memory_budget: Bytes of part buffers the plan may hold in flight.
        cpu: CPU cores requested.
        memory: Memory requested and the limit, bytes.
    """

    streams: int
    memory_budget: int
    cpu: float
    memory: int


def _kube(config: TierflowConfig) -> KubernetesConfig:
    if config.kubernetes is None:
        raise ConfigError(f"{config.source}: no [kubernetes] table: per-node tasks are not Kubernetes pods")
    return config.kubernetes


def pod_sizing(config: TierflowConfig, node: str) -> PodSizing:
    """Size node ``node``'s task pod from its hop's tiers (PFS → NVMe)."""
    kube = _kube(config)
    local = config.for_node(node)
    pfs, nvme = local.primary("pfs"), local.primary("nvme")
    streams = kube.streams or min(pfs.bandwidth.max_streams, nvme.bandwidth.max_streams)
    budget = DEFAULT_MEMORY_BUDGET
    return PodSizing(
        streams=streams,
        memory_budget=budget,
        cpu=round(max(0.1, streams * kube.cpu_per_stream), 3),
        memory=kube.memory_base + budget,
    )


def node_pod(config: TierflowConfig, node: str) -> k8s.V1Pod:
    """The ``pod_override`` of node ``node``'s tasks: selector, NVMe and PFS volumes, env, resources."""
    from kubernetes.client import models as k8s

    kube = _kube(config)
    entry = config.node_config(node)
    local = config.for_node(node)
    pfs, nvme = local.primary("pfs"), local.primary("nvme")
    size = pod_sizing(config, node)
    if kube.nvme_volume == "hostPath":
        nvme_source = {"host_path": k8s.V1HostPathVolumeSource(path=nvme.root, type="DirectoryOrCreate")}
    else:
        claim = kube.nvme_claim.replace("{node}", node)
        nvme_source = {"persistent_volume_claim": k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim)}
    memory = f"{math.ceil(size.memory / MiB)}Mi"
    container = k8s.V1Container(
        name="base",  # the container the executor merges an override into
        env=[k8s.V1EnvVar(name=NODE_ENV, value=node)],
        volume_mounts=[
            k8s.V1VolumeMount(name=NVME_VOLUME, mount_path=nvme.root),
            k8s.V1VolumeMount(name=PFS_VOLUME, mount_path=pfs.root),
        ],
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": f"{round(size.cpu * 1000)}m", "memory": memory},
            limits={"memory": memory},  # no CPU limit: throttling a copy only makes it slower
        ),
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(labels={"tierflow/node": node}),
        spec=k8s.V1PodSpec(
            containers=[container],
            node_selector={kube.node_label: entry.hostname or node},
            volumes=[
                k8s.V1Volume(name=NVME_VOLUME, **nvme_source),
                k8s.V1Volume(
                    name=PFS_VOLUME,
                    persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=kube.pfs_claim),
                ),
            ],
        ),
    )


def node_task_args(config: TierflowConfig, node: str) -> dict[str, Any]:
    """Operator arguments that run a task of node ``node`` as its pod (none without ``[kubernetes]``)."""
    if config.kubernetes is None:
        return {}
    args: dict[str, Any] = {"executor_config": {"pod_override": node_pod(config, node)}}
    if config.kubernetes.executor:
        args["executor"] = config.kubernetes.executor
    return args


def plan_caps(config: TierflowConfig, node: str) -> dict[str, int]:
    """The planner arguments that keep node ``node``'s plan within its pod (none without ``[kubernetes]``)."""
    if config.kubernetes is None:
        return {}
    size = pod_sizing(config, node)
    return {"max_concurrency": size.streams, "memory_budget": size.memory_budget}
