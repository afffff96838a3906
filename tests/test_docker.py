"""The docker/ stack, checked without a Docker engine.

The compose file must agree with the tier config, the DAGs, the Dockerfile and .env.example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.core.config import load_config

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parents[1] / "docker"
REPO = DOCKER.parent
AIRFLOW = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init"}
WORKERS = {"airflow-worker-node1", "airflow-worker-node2"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    out = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def tiers():
    return load_config(DOCKER / "tiers.toml")


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _mounts(service: dict) -> dict[str, str]:
    return dict(v.split(":", 1)[::-1] for v in service.get("volumes") or [])


def test_services_and_pinned_images(compose) -> None:
    services = compose["services"]
    assert (
        set(services)
        == {"postgres", "redis", "minio", "minio-init", "seaweedfs", "seaweedfs-init", "prometheus", "grafana"}
        | AIRFLOW
        | WORKERS
    )
    for name, svc in services.items():
        image = svc.get("image")
        assert image, name
        assert ":" in image and not image.endswith((":latest", ":main")), f"{name}: image {image} is not pinned"
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", services["minio"]["image"])
    assert services["seaweedfs"]["profiles"] == ["seaweedfs"] and services["seaweedfs-init"]["profiles"] == [
        "seaweedfs"
    ]
    assert "profiles" not in services["minio"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    lock = (REPO / "uv.lock").read_text()
    airflow_version = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock).group(1)
    assert f"FROM apache/airflow:{airflow_version}-python3.11" in dockerfile
    for src in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which is not in the repository"


def test_every_published_port_is_loopback(compose) -> None:
    published = [(n, p) for n, s in compose["services"].items() for p in s.get("ports") or []]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_variables_come_from_env_example_and_secrets_stay_out_of_git(compose, env_example) -> None:
    text = (DOCKER / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", text))
    assert used == set(env_example), f"compose uses {sorted(used)}, .env.example declares {sorted(env_example)}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO).returncode == 0
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "docker/.env.example"], cwd=REPO, capture_output=True
    )
    assert ignored and tracked.returncode == 0


def test_connection_buckets_and_tier_paths_agree_with_the_tier_config(compose, tiers) -> None:
    services = compose["services"]
    (obj,) = tiers.of_kind("object")
    (pfs,) = tiers.of_kind("pfs")
    (nvme,) = tiers.of_kind("nvme")
    for name in AIRFLOW | WORKERS:
        env = _env(services[name])
        assert env["TIERFLOW_CONFIG"] == "/opt/tierflow/tiers.toml"
        conn = json.loads(env[f"AIRFLOW_CONN_{obj.conn_id.upper()}"].replace("${", "{"))
        assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "{S3_ENDPOINT_URL}"
        assert _mounts(services[name])[pfs.root].startswith("pfs-staging"), f"{name} lacks the shared PFS volume"
    for init in ("minio-init", "seaweedfs-init"):
        assert f"tierflow/{obj.bucket}" in " ".join(services[init]["command"])
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for volume in _mounts(svc).values():
            if volume.startswith("./"):  # a file or directory of docker/, bound read-only
                assert (DOCKER / volume).exists(), f"{name} mounts {volume}, which is not in docker/"
                continue
            assert volume in declared, f"{name} mounts undeclared volume {volume}"
    # Node-local NVMe: each node's worker consumes the node's queue and has a volume of its own at the tier path.
    assert [n.queue for n in tiers.nodes] == ["node1", "node2"]
    nvme_volumes = set()
    for node in tiers.nodes:
        worker = services[f"airflow-worker-{node.name}"]
        queues = re.search(r"--queues (\S+)", worker["command"]).group(1).split(",")
        assert node.queue in queues and "default" in queues
        assert _env(worker)["TIERFLOW_NODE"] == node.name, f"{node.name}'s worker does not say which node it is"
        assert f"--celery-hostname {node.name}@" in worker["command"]
        nvme_volumes.add(_mounts(worker)[nvme.root])
    assert len(nvme_volumes) == len(tiers.nodes), "two nodes share an NVMe volume"
    init_mounts = _mounts(services["airflow-init"])
    assert nvme_volumes <= set(init_mounts.values()), "airflow-init must give every NVMe volume to the Airflow user"
    for name in AIRFLOW - {"airflow-init"}:
        assert nvme.root not in _mounts(services[name]), f"{name} is not a compute node but mounts an NVMe cache"


def test_dags_under_the_docker_config_use_only_queues_a_worker_serves(compose, tiers) -> None:
    code = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)\n"
        "queues = {t.queue for d in bag.dags.values() for t in d.tasks}\n"
        "pools = {t.pool for d in bag.dags.values() for t in d.tasks}\n"
        "nvme = sorted(t.task_id for t in bag.dags['dataset_staging'].tasks if t.task_id.startswith('stage_hop2'))\n"
        "print(json.dumps({'errors': list(bag.import_errors), 'queues': sorted(queues), 'pools': sorted(pools),"
        " 'nvme': nvme}))\n"
    )
    env = os.environ | {"TIERFLOW_CONFIG": str(DOCKER / "tiers.toml")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags")], env=env, capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["errors"] == []
    served = set()
    for name in WORKERS:
        served |= set(re.search(r"--queues (\S+)", compose["services"][name]["command"]).group(1).split(","))
    assert set(found["queues"]) <= served and {"node1", "node2"} <= set(found["queues"])
    assert found["nvme"] == ["stage_hop2_node1", "stage_hop2_node2"]
    assert set(found["pools"]) - {"default_pool"} <= {t.pool for t in tiers.tiers}


def test_the_monitoring_profile_scrapes_tierflow_and_every_dashboard_query_names_a_tierflow_metric(compose) -> None:
    from pipelines.model.bandwidth import Bottleneck
    from pipelines.model.observations import Observation
    from pipelines.operators.inventory import Place
    from pipelines.operators.metrics import exposition

    services = compose["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/storage-bandwidth/metrics"
    assert scrape["static_configs"][0]["targets"] == ["airflow-apiserver:8080"]
    # What Tierflow emits: the sample names of one exposition with a transfer, a failure and a tier.
    done = Observation(1.0, "d", "t", "object", "pfs", 10, 1, 1.0, 2.0, Bottleneck("object", "read", "latency"))
    failed = Observation(2.0, "d", "t", "object", "pfs", 0, 0, 1.0, 0.0, done.bottleneck, error="boom")
    text = exposition([done, failed], [Place("pfs", "pfs", None, "file:///x", 100)]).decode()
    emitted = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "tierflow.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"tierflow_[a-z_]+", target["expr"]))
            assert names, f"panel {panel['title']!r} queries no Tierflow metric"
            queried |= names
    assert queried <= emitted, f"the dashboard queries metrics Tierflow does not emit: {sorted(queried - emitted)}"
    assert {n for n in emitted if not n.endswith("_created")} <= queried, "a Tierflow metric has no panel"
    provisioned = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert {d["uid"] for d in provisioned["datasources"]} == {
        t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]
    }
