"""Per-node pods for the KubernetesExecutor, without a cluster, and the Helm values checked against them.

``dataset_staging`` is parsed under ``docker/helm/tiers.toml`` (two nodes, one with its NVMe
elsewhere), serialized and read back as the scheduler does, and each per-node task's pod is built by
the cncf-kubernetes provider's own ``PodGenerator`` from its ``pod_override`` and a worker pod
template: node selector, NVMe and PFS volumes and mounts, ``TIERFLOW_NODE``, resources. The plan
task of each node must be capped at what its pod was given. ``docker/helm/values.yaml`` is checked
against the same config: the executors, the tier config path, the PFS claim and its mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
HELM = REPO / "docker" / "helm"

BUILD_PODS = """
import json, datetime
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from kubernetes.client import ApiClient, models as k8s

bag = DagBag(dag_folder={dags!r}, safe_mode=False)
assert not bag.import_errors, bag.import_errors
parsed = bag.dags["dataset_staging"]
# As the scheduler reads it: serialized to JSON (the DB), read back.
dag = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(parsed))))
template = k8s.V1Pod(  # a worker pod template, as the chart's pod_template_file gives one
    metadata=k8s.V1ObjectMeta(labels={{"component": "worker"}}),
    spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="tierflow-airflow:0.1.0")]),
)
out = {{}}
for task in dag.tasks:
    override = (task.executor_config or {{}}).get("pod_override")
    pod = None
    if override is not None:
        pod = PodGenerator.construct_pod(
            dag_id=dag.dag_id, task_id=task.task_id, pod_id="p", try_number=1, kube_image="tierflow-airflow:0.1.0",
            date=datetime.datetime(2026, 1, 1), args=["airflow", "tasks", "run"], pod_override_object=override,
            base_worker_pod=template, namespace="tierflow", scheduler_job_id="1", run_id="r",
        )
        pod = ApiClient().sanitize_for_serialization(pod)
    out[task.task_id] = {{
        "pod": pod, "executor": getattr(task, "executor", None), "queue": task.queue,
        "max_concurrency": getattr(parsed.get_task(task.task_id), "max_concurrency", None),
        "memory_budget": getattr(parsed.get_task(task.task_id), "memory_budget", None),
    }}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tasks() -> dict[str, Any]:
    executors = yaml.safe_load((HELM / "values.yaml").read_text())["executor"]  # as the chart configures Airflow
    env = os.environ | {"TIERFLOW_CONFIG": str(HELM / "tiers.toml"), "AIRFLOW__CORE__EXECUTOR": executors}
    env.pop("TIERFLOW_NODE", None)
    script = BUILD_PODS.format(dags=str(REPO / "dags"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_each_per_node_task_gets_a_pod_pinned_to_its_node_with_its_nvme_and_the_pfs(tasks: dict[str, Any]) -> None:
    from pipelines.operators.kubernetes import pod_sizing

    config = load_config(HELM / "tiers.toml")
    assert config.kubernetes is not None
    for node in config.nodes:
        local = config.for_node(node.name)
        nvme, pfs = local.primary("nvme").root, local.primary("pfs").root
        size = pod_sizing(config, node.name)
        mine = {t: v for t, v in tasks.items() if t.endswith(f"_hop2_{node.name}")}
        assert set(mine) == {f"{s}_hop2_{node.name}" for s in ("plan", "make_room", "stage", "commit")}
        for task_id, task in mine.items():
            assert task["executor"] == "KubernetesExecutor", task_id
            spec = task["pod"]["spec"]
            assert spec["nodeSelector"] == {"kubernetes.io/hostname": node.hostname}, task_id
            (base,) = spec["containers"]
            assert base["name"] == "base" and base["image"] == "tierflow-airflow:0.1.0"  # the template's, kept
            assert {"name": "TIERFLOW_NODE", "value": node.name} in base["env"]
            mounts = {m["mountPath"]: m["name"] for m in base["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes[mounts[nvme]]["hostPath"] == {"path": nvme, "type": "DirectoryOrCreate"}, task_id
            assert volumes[mounts[pfs]]["persistentVolumeClaim"] == {"claimName": "tierflow-pfs"}
            assert base["resources"]["requests"] == {
                "cpu": f"{round(size.cpu * 1000)}m",
                "memory": f"{-(-size.memory // 2**20)}Mi",
            }
            assert base["resources"]["limits"] == {"memory": base["resources"]["requests"]["memory"]}
            assert task["pod"]["metadata"]["labels"]["tierflow/node"] == node.name
        # The plan stays within what the pod was given: streams → CPU, part buffers → memory.
        plan = mine[f"plan_hop2_{node.name}"]
        assert (plan["max_concurrency"], plan["memory_budget"]) == (size.streams, size.memory_budget)
    sizes = {n.name: pod_sizing(config, n.name) for n in config.nodes}
    assert sizes["gpu-a"].streams == 16 and sizes["gpu-a"].cpu == 4.0  # min(pfs 32, nvme 16) × 0.25
    a, b = (tasks[f"stage_hop2_{n}"]["pod"]["spec"] for n in ("gpu-a", "gpu-b"))
    assert a["volumes"] != b["volumes"], "gpu-b mounts its own NVMe path"
    # Tasks that are not per node run on the default executor (Celery) with no pod of their own.
    assert all(t["pod"] is None and t["executor"] is None for k, t in tasks.items() if "_hop2_" not in k)


def test_the_helm_values_match_the_tier_config_and_the_image() -> None:
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    config = load_config(HELM / "tiers.toml")
    assert config.kubernetes is not None and config.kubernetes.executor
    assert config.kubernetes.executor in values["executor"].split(",") and "CeleryExecutor" in values["executor"]
    env = {e["name"]: e["value"] for e in values["env"]}
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert f"docker/helm/tiers.toml {env['TIERFLOW_CONFIG']}" in dockerfile, "the image lacks the config"
    obj = config.primary("object")
    assert f"AIRFLOW_CONN_{obj.conn_id.upper()}" in {s["envName"] for s in values["secret"]}
    # The Celery workers run the object → PFS hop: they mount the same PFS claim at the pfs root.
    workers = values["workers"]
    (pfs_volume,) = [v for v in workers["extraVolumes"] if "persistentVolumeClaim" in v]
    assert pfs_volume["persistentVolumeClaim"]["claimName"] == config.kubernetes.pfs_claim
    mounts = {m["name"]: m["mountPath"] for m in workers["extraVolumeMounts"]}
    assert mounts[pfs_volume["name"]] == config.primary("pfs").root
    assert values["airflowVersion"] in dockerfile, "the chart's Airflow version is the image's"


def test_the_kubernetes_table_is_checked_in_one_line() -> None:
    base = (HELM / "tiers.toml").read_text().split("[kubernetes]")[0]
    with pytest.raises(ConfigError, match=r"kubernetes\.pfs_claim: missing required field"):
        parse_config(base + "[kubernetes]\n")
    with pytest.raises(ConfigError, match=r"kubernetes\.nvme_volume: must be hostPath or claim"):
        parse_config(base + '[kubernetes]\npfs_claim = "p"\nnvme_volume = "emptyDir"\n')
    with pytest.raises(ConfigError, match=r"kubernetes\.cpu_per_stream: must be a number of cores"):
        parse_config(base + '[kubernetes]\npfs_claim = "p"\ncpu_per_stream = 0\n')
    with pytest.raises(ConfigError, match=r"node 'a'\.kubernetes\.hostname: not a valid node label value"):
        parse_config(
            base + '[kubernetes]\npfs_claim = "p"\n[[node]]\nname = "a"\n[node.kubernetes]\nhostname = "A B"\n'
        )
    claims = parse_config(base + '[kubernetes]\npfs_claim = "p"\nnvme_volume = "claim"\n[[node]]\nname = "a"\n')
    from pipelines.operators.kubernetes import node_pod

    pod = node_pod(claims, "a")
    nvme = next(v for v in pod.spec.volumes if v.name == "tierflow-nvme")
    assert nvme.persistent_volume_claim.claim_name == "tierflow-nvme-a" and nvme.host_path is None
