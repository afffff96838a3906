"""Prometheus metrics: a real Prometheus scrapes the plugin's endpoint, served by a real Airflow API server app.

After a ``dataset_staging`` run under ``dag.test()``, Prometheus (Debian's package, installed with
apt-get when missing, on a free loopback port) scrapes ``/storage-bandwidth/metrics`` with an
Airflow token, and its HTTP API must answer with the bytes the run moved and the tiers' state.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian import installed

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def airflow_api(port: int) -> Iterator[None]:
    """The Airflow API server's app (plugins included) served by uvicorn on loopback, in a thread."""
    import uvicorn
    from airflow.api_fastapi.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.1)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def prometheus(workdir: Path, target_port: int, token: str) -> Iterator[str]:
    """A real Prometheus scraping the plugin's metrics every second; yields its HTTP API's base URL."""
    binary = installed("prometheus", "prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(token)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "tierflow",
                "metrics_path": "/storage-bandwidth/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(workdir / "token")},
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = _free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115  # closed below, after the server stops
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def query(base: str, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    """An instant query through Prometheus's HTTP API: labels (without job/instance) -> value."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    out = {}
    for item in body["data"]["result"]:
        labels = tuple(sorted((k, v) for k, v in item["metric"].items() if k not in ("job", "instance", "__name__")))
        out[labels] = float(item["value"][1])
    return out


def scraped(base: str, promql: str, timeout: float = 60) -> dict[tuple[tuple[str, str], ...], float]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = query(base, promql)
        except OSError:  # not listening yet
            found = {}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_prometheus_scrapes_what_a_staging_run_moved(dagbag, test_config, s3_credentials, tmp_path: Path) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from pipelines.datasets.staging import publish_directory
    from pipelines.model.observations import every
    from pipelines.storage.tier import open_tier

    dataset = f"metrics{uuid.uuid4().hex[:6]}"
    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(12):
        (src / f"{i:02d}.bin").write_bytes(os.urandom(5000 + 1000 * i))
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    _, published = publish_directory(str(src), obj, dataset, "v1")
    run = dagbag.get_dag("dataset_staging").test(run_conf={"dataset": dataset, "version": "v1"})
    assert run.state == "success"

    # What the endpoint must say: every finished transfer the listener recorded, summed per hop.
    done = [o for o in every(test_config) if o.error is None]
    assert sum(o.bytes for o in done if o.run_id == run.run_id and o.target == "pfs") == published.manifest.total_bytes
    expected = {}
    for o in done:
        expected[(o.source, o.target)] = expected.get((o.source, o.target), 0) + o.bytes

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    api_port = _free_port()
    with airflow_api(api_port), prometheus(tmp_path / "prometheus", api_port, token) as base:
        moved = scraped(base, "tierflow_transfer_bytes_total")
        assert {dict(k)["source"] + "->" + dict(k)["target"]: v for k, v in moved.items()} == {
            f"{s}->{t}": float(b) for (s, t), b in expected.items()
        }
        up = scraped(base, 'up{job="tierflow"}')
        assert list(up.values()) == [1.0]  # scraped with the token, not refused
        capacity = scraped(base, "tierflow_tier_capacity_bytes")
        assert {dict(k)["tier"]: v for k, v in capacity.items()} == {
            t.name: float(t.capacity_bytes) for t in test_config.tiers
        }
        versions = scraped(base, 'tierflow_dataset_versions{tier="nvme",state="committed"}')
        assert versions and min(versions.values()) >= 1
        error = scraped(base, 'tierflow_prediction_error_ratio{source="object",target="pfs"}')
        assert len(error) == 1 and next(iter(error.values())) > -1  # achieved / predicted - 1, for the last copy


def test_a_transfer_is_sent_through_airflows_statsd_metrics(tmp_path: Path) -> None:
    """The listener's numbers reach a StatsD server (a UDP socket here) when Airflow's [metrics] say so."""
    import sys

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    code = (
        "from pipelines.model.bandwidth import Bottleneck\n"
        "from pipelines.model.observations import Observation, failed_transfer\n"
        "from pipelines.operators.listener import emit_metrics\n"
        "b = Bottleneck('object', 'read', 'x')\n"
        "emit_metrics(Observation(1.0, 'd', 't', 'object', 'pfs', 1000, 3, 1.0, 2.0, b))\n"
        "emit_metrics(failed_transfer(dag_id='d', task_id='t', run_id=None, node=None, error='boom',"
        " source='pfs', target='nvme'))\n"
    )
    env = os.environ | {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        received = set()
        with contextlib.suppress(TimeoutError):
            while "airflow.tierflow.transfer.failures.pfs.nvme:1|c" not in received:
                received.add(listener.recv(4096).decode())
    finally:
        listener.close()
    assert {
        "airflow.tierflow.transfer.tasks.object.pfs:1|c",
        "airflow.tierflow.transfer.bytes.object.pfs:1000|c",
        "airflow.tierflow.transfer.objects.object.pfs:3|c",
        "airflow.tierflow.transfer.duration.object.pfs:2000.000000|ms",
        "airflow.tierflow.transfer.predicted.object.pfs:1000.000000|ms",
        "airflow.tierflow.transfer.prediction_error.object.pfs:1.0|g",
        "airflow.tierflow.transfer.failures.pfs.nvme:1|c",
    } <= received


def test_the_exposition_counts_failures_by_outcome_and_the_recorded_events(tmp_path: Path) -> None:
    """Plain data in, Prometheus text out: failed tries by outcome, evictions, validations, quarantines."""
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.model.bandwidth import Bottleneck
    from pipelines.model.observations import Observation, failed_transfer
    from pipelines.operators.metrics import every_event, exposition, record_event

    done = Observation(1.0, "d", "t", "object", "pfs", 4000, 2, 1.0, 2.0, Bottleneck("object", "read", "x"))
    failures = [
        failed_transfer(dag_id="d", task_id="t", source="object", target="pfs", error="e", outcome=outcome)
        for outcome in ("transient", "transient", "fatal")
    ]
    record_event(tmp_path, "eviction", {"tier": "nvme", "node": "node1"}, bytes=100)
    record_event(tmp_path, "eviction", {"tier": "nvme", "node": "node1"}, bytes=50)
    for result in ("passed", "passed", "failed"):
        record_event(tmp_path, "validation", {"result": result})
    record_event(tmp_path, "quarantine", {}, shards=1)
    with (tmp_path / "metric-events.jsonl").open("a") as fh:
        fh.write("not json\n")  # a torn line is skipped
    text = exposition([done, *failures], [], every_event(tmp_path)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }
    hop = (("source", "object"), ("target", "pfs"))
    assert samples[("tierflow_transfer_failures_total", (("outcome", "fatal"), *hop))] == 1
    assert samples[("tierflow_transfer_failures_total", (("outcome", "transient"), *hop))] == 2
    assert samples[("tierflow_transfer_bytes_total", hop)] == 4000
    assert samples[("tierflow_prediction_error_ratio", hop)] == 1.0
    assert samples[("tierflow_cache_evictions_total", (("node", "node1"), ("tier", "nvme")))] == 2
    assert samples[("tierflow_cache_evicted_bytes_total", (("node", "node1"), ("tier", "nvme")))] == 150
    assert samples[("tierflow_validations_total", (("result", "failed"),))] == 1
    assert samples[("tierflow_validations_total", (("result", "passed"),))] == 2
    assert samples[("tierflow_quarantined_shards_total", ())] == 1
