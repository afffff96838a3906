"""Two nodes, live: the CeleryExecutor with a Redis broker and one Celery worker per ``[[node]]``.

Everything is real and on loopback: Debian's ``redis-server`` (installed with apt-get when it is
missing), the embedded S3 server, an Airflow api-server, scheduler and dag-processor with the
CeleryExecutor, and two ``airflow celery worker`` processes standing for two compute nodes. Each
worker consumes ``default`` and its node's queue and runs with ``TIERFLOW_NODE=<node>``; the tier
config gives each node its own NVMe directory (``[node.tiers.nvme]``), as two machines would have.

``dataset_staging`` is triggered through the REST API. While node1's worker copies its shard into
node1's NVMe, the worker is killed (SIGKILL to it and every process under it) and started again: the
scheduler finds the task without a heartbeat, retries it, and the run finishes. Then each node's
NVMe holds the committed version, byte for byte, written by that node's worker (the commit
marker, the asset event and the task log say so), the object → PFS hop ran once, and nothing
partial is left anywhere. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debian import installed

from pipelines.core.config import DEFAULT_CONFIG, TierflowConfig, load_config
from pipelines.devtools.s3server import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
NODES = ("node1", "node2")
TEMPORARY = ".tierflow-tmp-"
#: Big enough that node1's copy is in flight for a while (a kill lands mid-copy), small enough to be quick.
FILES, FILE_SIZE = 8, 24 * 2**20
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 480


class Processes:
    """The processes this test starts, each in its own session (so a kill takes its children too)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL the process and every process under it, as a node that loses power.

        The whole tree, not the process group: Airflow runs each task in a process group of its own.
        """
        import psutil

        proc = self.running.pop(name)
        tree = [psutil.Process(proc.pid)]
        with contextlib.suppress(psutil.NoSuchProcess):
            tree += tree[0].children(recursive=True)
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        psutil.wait_procs(tree[1:], timeout=30)

    def stop_all(self) -> None:
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: workers leave pool children behind
            proc.wait(timeout=30)
        self.running.clear()

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Api:
    """The Airflow REST API as admin."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = ""

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.load(resp)

    def wait(self, path: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.call("GET", path, timeout=5)
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


def _cluster_config(home: Path) -> Path:
    """The packaged default on free ports, with two nodes each having its own NVMe directory."""
    text = re.sub(r"(?m)^port = \d+$", f"port = {free_port()}", DEFAULT_CONFIG.read_text(), count=1)
    for node in NODES:
        text += f'\n[[node]]\nname = "{node}"\n[node.tiers.nvme]\nurl = "file://{home}/nvme-{node}"\n'
    path = home / "tiers.toml"
    path.write_text(text)
    return path


def _publish(config: TierflowConfig, creds: Any, corpus: Path) -> Any:
    from pipelines.datasets.staging import publish_directory
    from pipelines.storage.tier import open_tier

    corpus.mkdir(parents=True)
    for i in range(FILES):
        (corpus / f"shard-{i:02d}.bin").write_bytes(os.urandom(FILE_SIZE))
    obj = open_tier(config, config.primary("object").name, creds.storage_options())
    _, record = publish_directory(str(corpus), obj, "nodes", "v1")
    return record.manifest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis, S3, api-server, scheduler, dag-processor and one Celery worker per node, all on loopback."""
    from pipelines.devtools.airflow_env import airflow_env
    from pipelines.devtools.s3server import EmbeddedS3

    redis = installed("redis-server", "redis-server")
    home = tmp_path_factory.mktemp("celery-cluster")
    logs = home / "logs"
    logs.mkdir()
    procs = Processes(logs)
    server = None
    # The cluster's own environment: none of the test session's Airflow or Tierflow settings.
    own = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TIERFLOW", "AWS_"))}
    own |= {"TIERFLOW_HOME": str(home / "state"), "TIERFLOW_CHECKOUT": str(REPO)}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key in set(os.environ) - set(own):
                mp.delenv(key)
            for key, value in own.items():
                mp.setenv(key, value)
            config = load_config(_cluster_config(home))
            server = EmbeddedS3.from_config(config)
            creds = server.start()
            api_port, redis_port = free_port(), free_port()
            env = airflow_env(config, creds, api_port=api_port)
        env |= {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # Only dataset_staging runs (unpaused below): no scheduled probe or calibration beside it.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # A killed worker's task is found without a heartbeat after this long, then retried.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        }
        procs.start(
            "redis",
            [redis, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            env,
        )
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        subprocess.run(
            [sys.executable, "-m", "pipelines.operators.pools", "sync"], env=env, check=True, capture_output=True
        )
        manifest = _publish(config, creds, home / "corpus")
        for name, args in {
            "api-server": ["api-server"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }.items():
            procs.start(name, [airflow, *args], env)

        def start_worker(node: str) -> None:
            node_env = env | {
                "TIERFLOW_NODE": node,
                # Two workers on one machine: each serves its logs on its own port.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            args = ["celery", "worker", "--queues", f"default,{node}", "--celery-hostname", f"{node}@%h"]
            procs.start(f"worker-{node}", [airflow, *args, "--pid", str(home / f"worker-{node}.pid")], node_env)

        for node in NODES:
            start_worker(node)
        api = Api(f"http://127.0.0.1:{api_port}")
        api.wait("/api/v2/version", START_TIMEOUT_S)
        password = json.loads((Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json").read_text())["admin"]
        api.token = api.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the dag-processor has parsed the DAG, with a hop per node
            with contextlib.suppress(urllib.error.HTTPError):
                tasks = api.call("GET", "/api/v2/dags/dataset_staging/tasks")["tasks"]
                if {f"stage_hop2_{n}" for n in NODES} <= {t["task_id"] for t in tasks}:
                    break
            assert time.monotonic() < deadline, f"dataset_staging not parsed: {procs.tail('dag-processor')}"
            time.sleep(2)
        api.call("PATCH", "/api/v2/dags/dataset_staging", {"is_paused": False})
        yield {
            "api": api,
            "procs": procs,
            "config": config,
            "manifest": manifest,
            "home": home,
            "start_worker": start_worker,
        }
    finally:
        procs.stop_all()
        if server is not None:
            server.stop()
        artifacts = REPO / "tests" / "artifacts" / "celery-logs"
        shutil.copytree(logs, artifacts, dirs_exist_ok=True)


def _temporaries(root: Path) -> list[str]:
    return [os.path.join(d, n) for d, _, files in os.walk(root) for n in files if TEMPORARY in n]


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    from pipelines.core.checksum import checksum_file

    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = Path(d) / name
            digest, size = checksum_file(str(path))
            out[str(path.relative_to(root))] = (size, digest)
    return out


def test_two_celery_workers_each_fill_their_own_node_and_a_killed_worker_recovers(cluster: dict[str, Any]) -> None:
    from pipelines.storage.commit import read_commit
    from pipelines.storage.tier import open_tier

    api: Api = cluster["api"]
    procs: Processes = cluster["procs"]
    config: TierflowConfig = cluster["config"]
    manifest = cluster["manifest"]
    nvme = {node: Path(config.for_node(node).primary("nvme").root) for node in NODES}
    landing = nvme["node1"] / manifest.prefix  # where node1's copy of the version lands
    assert nvme["node1"] != nvme["node2"]

    run = api.call(
        "POST",
        "/api/v2/dags/dataset_staging/dagRuns",
        {"logical_date": None, "conf": {"dataset": "nodes", "version": "v1", "verify": True}},
    )
    run_id = run["dag_run_id"]

    # Kill node1's worker while its copy is in flight: a temporary under node1's NVMe is the sign.
    deadline = time.monotonic() + RUN_TIMEOUT_S
    caught: list[str] = []
    asked = 0.0
    while not caught and time.monotonic() < deadline:
        caught = _temporaries(landing) if landing.exists() else []
        if not caught and time.monotonic() - asked > 5:  # the run may have failed before node1's hop
            asked = time.monotonic()
            state = api.call("GET", f"/api/v2/dags/dataset_staging/dagRuns/{run_id}")["state"]
            assert state not in ("success", "failed"), f"run ended {state!r} before node1's copy was seen"
        time.sleep(0.005)
    assert caught, f"node1's copy was never seen in flight: {procs.tail('worker-node1')}"
    procs.kill("worker-node1")
    node1_cfg = config.for_node("node1")
    assert read_commit(open_tier(node1_cfg, node1_cfg.primary("nvme").name), "nodes", "v1") is None
    cluster["start_worker"]("node1")

    state = ""
    while time.monotonic() < deadline:
        state = api.call("GET", f"/api/v2/dags/dataset_staging/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    tis = api.call("GET", f"/api/v2/dags/dataset_staging/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    by_task = {(t["task_id"], t["map_index"]): t for t in tis}
    summary = {k: (t["state"], t["try_number"], t["queue"]) for k, t in by_task.items()}
    assert state == "success", f"run {run_id} ended {state!r}: {summary}\n{procs.tail('scheduler')}"

    # The object → PFS hop ran once; each node's hop ran on its node's queue, node1's again after the kill.
    hop1 = {k: t for k, t in by_task.items() if k[0].endswith("_hop1")}
    assert {k[0] for k in hop1} == {"plan_hop1", "stage_hop1", "commit_hop1"}
    assert all(t["try_number"] == 1 and t["queue"] == "default" for t in hop1.values()), summary
    for node in NODES:
        mine = [t for k, t in by_task.items() if k[0].endswith(f"_hop2_{node}")]
        assert mine and all(t["queue"] == node and t["state"] == "success" for t in mine), summary
    killed = [t for k, t in by_task.items() if k[0] == "stage_hop2_node1"]
    assert max(t["try_number"] for t in killed) >= 2, f"the killed copy was not retried: {summary}"

    published = {f"{manifest.prefix}/{e.key}": (e.size, e.checksum) for e in manifest.entries}
    query = urllib.parse.urlencode({"source_run_id": run_id, "limit": 100})  # a run id holds a '+'
    events = api.call("GET", f"/api/v2/assets/events?{query}")["asset_events"]
    for node in NODES:
        # Byte for byte: every object of the manifest, nothing partial, the marker naming its writer.
        tree = _tree(nvme[node])
        files = {k: v for k, v in tree.items() if not Path(k).name.startswith("_tierflow_")}  # markers
        assert files == published, f"{node}'s NVMe does not hold the committed version as published"
        assert not _temporaries(nvme[node])
        cfg = config.for_node(node)
        commit = read_commit(open_tier(cfg, cfg.primary("nvme").name), "nodes", "v1")
        assert commit is not None and commit.manifest.checksum() == manifest.checksum()
        assert commit.extra["node"] == node and commit.extra["worker"].startswith(f"{node}@"), commit.extra
        extras = [e["extra"] for e in events if e["source_task_id"] == f"commit_hop2_{node}"]
        assert len(extras) == 1, f"commit_hop2_{node} emitted {len(extras)} asset event(s): {events}"
        assert extras[0]["node"] == node and extras[0]["worker"].startswith(f"{node}@"), extras
        ti = by_task[(f"commit_hop2_{node}", -1)]
        log = api.call(
            "GET",
            f"/api/v2/dags/dataset_staging/dagRuns/{run_id}/taskInstances/commit_hop2_{node}/logs/"
            f"{ti['try_number']}?full_content=true",
        )
        assert f"of node {node} (worker {node}@" in json.dumps(log), f"commit_hop2_{node}'s log: {log}"
    assert not _temporaries(Path(config.primary("pfs").root))
