"""The storage-bandwidth plugin inside Airflow's real API server app: listed, authenticated, answering."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.model.bandwidth import Bottleneck
from pipelines.model.observations import Observation, record

pytestmark = pytest.mark.integration

PREFIX = "/storage-bandwidth"


@pytest.fixture(scope="module")
def client(airflow_db, test_config_path):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    return TestClient(create_app())


@pytest.fixture(scope="module")
def token() -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))


def test_plugin_is_listed_with_its_view_and_no_import_errors(client, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    plugins = client.get("/api/v2/plugins", headers=auth).json()
    (ours,) = [p for p in plugins["plugins"] if p["name"] == "tierflow"]
    assert [v["url_route"] for v in ours["external_views"]] == ["storage-bandwidth"]
    assert {m.split(".")[-1] for m in ours["macros"]} >= {"plan_concurrency", "plan_shards", "plan_timeout_s"}
    errors = client.get("/api/v2/importErrors", headers=auth)
    assert errors.status_code == 200, errors.text
    assert "import_errors" in errors.json() and "tierflow" not in str(errors.json())


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/tiers",
        "/api/observations",
        "/api/inventory",
        "/api/whatif?size=1+TB",
        "/api/plan?source=object&target=pfs&size=1+TB",
        "/api/feed?demand=2+GB/s",
        "/metrics",
    ],
)
def test_every_route_requires_authentication(client, path: str) -> None:
    assert client.get(PREFIX + path).status_code == 401


def test_page_and_api_answer_with_a_token(client, token: str, test_config) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    tiers = client.get(f"{PREFIX}/api/tiers", headers=auth).json()
    assert [t["name"] for t in tiers] == [t.name for t in test_config.tiers]
    plan = client.get(
        f"{PREFIX}/api/plan",
        params={"source": "object", "target": "pfs", "size": "2 TB", "objects": 1000},
        headers=auth,
    )
    assert plan.status_code == 200 and plan.json()["concurrency"] >= 1 and plan.json()["reasons"]
    bad = client.get(f"{PREFIX}/api/plan", params={"source": "object", "target": "pfs", "size": "2 TBs"}, headers=auth)
    assert bad.status_code == 400 and "unknown size unit" in bad.json()["detail"]
    record(
        test_config,
        Observation(
            1.0,
            "dataset_staging",
            "stage_hop1",
            "object",
            "pfs",
            10**9,
            10,
            4.0,
            5.0,
            Bottleneck("object", "read", "bandwidth"),
        ),
    )
    page = client.get(f"{PREFIX}/", params={"size": "1 TB", "refresh": True}, headers=auth)
    assert page.status_code == 200
    assert '<table id="tiers">' in page.text and "<svg id='chart'" in page.text and 'id="plan"' in page.text
    assert "<svg id='error-chart'" in page.text and "class='error-point'" in page.text
    assert client.get(f"{PREFIX}/api/observations", headers=auth).json()[-1]["achieved_MBps"] == 200.0
    # The what-if takes a deadline and what the nodes read (the same planner as tierflow plan).
    asked = {"size": "200 TB", "objects": 800000, "nodes": 64, "deadline": "6h", "demand": "3000/s x 1 MiB"}
    page = client.get(f"{PREFIX}/", params=asked, headers=auth).text
    assert 'id="plan-deadline"' in page and "missed by" in page and "Widen object -&gt; pfs" in page
    assert 'id="plan-feed"' in page and "falls short" in page
    fed = client.get(f"{PREFIX}/api/feed", params={"demand": "1 MB/s", "nodes": 2}, headers=auth).json()
    assert [r["tier"] for r in fed["tiers"]] == ["object", "pfs", "nvme"] and fed["verdict"] == "every tier can feed it"
    bad = client.get(f"{PREFIX}/api/feed", params={"demand": "fast"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("demand:")


def test_validation_docs_are_served_from_object_storage(client, token: str, test_config, s3_credentials) -> None:
    import json
    import uuid

    from pipelines.datasets.preparation import prepare
    from pipelines.datasets.validation import load_suite
    from pipelines.operators.preparation import docs_route
    from pipelines.storage.tier import open_tier

    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    prefix, version = f"raw/docs-{uuid.uuid4().hex[:6]}", f"d{uuid.uuid4().hex[:6]}"
    rows = [{"id": i, "source": "web", "lang": "en", "text": "tier", "tokens": 1} for i in range(50)]
    obj.write_bytes(f"{prefix}/a.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    _, record, _ = prepare(obj, obj, prefix, "synthetic", version, load_suite("synthetic"), level=1)
    assert record is not None
    shard = next(e.key for e in record.manifest.entries if e.key.startswith("shards/"))
    route = docs_route("synthetic", version, shard)
    assert client.get(route).status_code == 401
    page = client.get(route, headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "expect_column_values_to_be_in_set" in page.text or "Expectation" in page.text
    missing = client.get(route.replace("index.html", "nope.html"), headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404
    hostile = client.get(
        f"/storage-bandwidth/docs/synthetic/{version}/..%2F..%2Fx", headers={"Authorization": f"Bearer {token}"}
    )
    assert hostile.status_code in (400, 404)


def test_storage_page_says_what_is_where(client, token: str, test_config, s3_credentials, tmp_path) -> None:
    """A version staged and pinned, a checkpoint promoted, a failed transfer: each where the page says."""
    import re
    import time
    import uuid

    from markupsafe import escape

    from pipelines.checkpoints import Rules, discover, promote_through
    from pipelines.datasets.cache import pin
    from pipelines.datasets.staging import publish_directory, stage_dataset
    from pipelines.devtools.corpus import write_checkpoint
    from pipelines.model.observations import failed_transfer
    from pipelines.storage.tier import open_tier

    auth = {"Authorization": f"Bearer {token}"}
    uid = uuid.uuid4().hex[:6]
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    nvme, pfs = open_tier(test_config, "nvme"), open_tier(test_config, "pfs")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 300_000)
    _, published = publish_directory(str(src), obj, f"page{uid}", "v1")
    stage_dataset(obj, nvme, f"page{uid}", "v1")
    pin(nvme, f"page{uid}", "v1", "trainer-7", ttl_s=3600)
    run = f"pagejob-{uid}"
    write_checkpoint(Path(nvme.root), run, 100, shards=2, shard_bytes=4096)
    write_checkpoint(Path(nvme.root), run, 200, shards=2, shard_bytes=4096)
    (first,) = [c for c in discover(nvme, run=run) if c.step == 100]
    promote_through([nvme, pfs], first, Rules())
    hostile = f"<script>alert('{uid}')</script> refused by the endpoint"
    record(
        test_config,
        failed_transfer(
            dag_id="dataset_staging",
            task_id="stage_hop1",
            source="object",
            target="pfs",
            error=hostile,
            dataset=f"page{uid}/v1",
            run_id=f"manual__{uid}",
        ),
    )

    places = {p["label"]: p for p in client.get(f"{PREFIX}/api/inventory?refresh=1", headers=auth).json()["places"]}
    assert set(places) == {"object", "pfs", "nvme"} and all(p["reachable"] for p in places.values())
    on_nvme = places["nvme"]
    (version,) = [v for v in on_nvme["versions"] if v["dataset"] == f"page{uid}"]
    assert version["committed"] and version["bytes"] >= published.manifest.total_bytes
    ((holder, expires),) = [(p["holder"], p["expires"]) for p in version["pins"]]
    assert holder == "trainer-7" and abs(expires - (time.time() + 3600)) < 120
    assert on_nvme["used_bytes"] >= version["bytes"] + sum(c["bytes"] for c in on_nvme["checkpoints"])
    assert on_nvme["free_bytes"] == min(on_nvme["capacity_bytes"] - on_nvme["used_bytes"], on_nvme["fs_free_bytes"])
    assert places["object"]["fs_free_bytes"] is None
    ours = {(c["name"], c["tier"]): c["status"] for p in places.values() for c in p["checkpoints"] if c["run"] == run}
    assert ours == {
        ("step_000100", "nvme"): "committed",
        ("step_000200", "nvme"): "uncommitted",
        ("step_000100", "pfs"): "committed",
    }

    page = client.get(f"{PREFIX}/", params={"size": "2 TB", "objects": 1000, "nodes": 4}, headers=auth).text
    assert f"page{uid}" in page and "trainer-7 until " in page
    assert str(escape(hostile)) in page and "<script>alert" not in page  # autoescaped
    rows = re.findall(r"<tr>\s*<td>" + re.escape(run) + r"</td>(.*?)</tr>", page, re.S)
    assert len(rows) == 2 and "committed" in rows[1] and "uncommitted" in rows[0]  # newest step first
    assert f'href="/dags/dataset_staging/runs/manual__{uid}"' in page
    plan = client.get(f"{PREFIX}/api/whatif", params={"size": "2 TB", "nodes": 4}, headers=auth).json()
    assert [h["hop"] for h in plan["hops"]] == ["object -> pfs", "pfs -> nvme"]
    # 2,000 GB read and written per hop at the configured J/GB (object 10, pfs 4, nvme 1), in kWh.
    assert plan["energy_kWh"] == pytest.approx(2000 * (10 + 4 + 4 + 1) / 3.6e6, rel=1e-3)
    assert f"{plan['energy_kWh']:.3f} kWh" in page and "to 4 node(s)" in page
    bad = client.get(f"{PREFIX}/", params={"size": "2 TBs"}, headers=auth).text
    assert re.search(r'id="plan-error"[^>]*>[^<]*unknown size unit', bad)

    # A calibration that disagrees is held back, and the page says so beside the numbers plans use.
    from dataclasses import replace

    from pipelines.model.calibration import TERMS, Fit, store_fit

    used = test_config.tier("pfs").bandwidth
    slow = replace(used, read_bps=used.read_bps / 100, stream_read_bps=used.stream_read_bps / 100)
    assert store_fit(test_config, "pfs", Fit(slow, dict.fromkeys(TERMS, 0.0), 1, []))[0] == "candidate"
    (pfs_row,) = [t for t in client.get(f"{PREFIX}/api/tiers", headers=auth).json() if t["name"] == "pfs"]
    assert pfs_row["candidate"] and "read" in pfs_row["candidate"]["why"]
    assert "held back: the fit of" in client.get(f"{PREFIX}/", headers=auth).text


@pytest.mark.unit
def test_a_node_whose_nvme_is_not_mounted_here_is_named_and_the_rest_still_surveyed(tmp_path) -> None:
    from pipelines.core.config import parse_config
    from pipelines.operators.inventory import survey_all
    from pipelines.storage.tier import open_tier

    (tmp_path / "pfs").mkdir()
    (tmp_path / "node1").mkdir()
    tiers = "".join(
        f"""
[[tier]]
name = "{kind}"
kind = "{kind}"
url = "file://{tmp_path}/{kind}"
capacity = "1 GB"
[tier.bandwidth]
read = "1 GB/s"
write = "1 GB/s"
latency = "1 ms"
metadata_ops = "1000/s"
"""
        for kind in ("pfs", "nvme")
    )
    config = parse_config(
        tiers
        + f"""
[[node]]
name = "node1"
[node.tiers.nvme]
url = "file://{tmp_path}/node1"

[[node]]
name = "node2"
[node.tiers.nvme]
url = "file:///nonexistent/tierflow-node2"
capacity = "2 GB"
""",
        base=tmp_path,
    )
    places = {p.label: p for p in survey_all(config, open_tier)}
    assert list(places) == ["pfs", "nvme@node1", "nvme@node2"]
    assert places["pfs"].reachable and places["nvme@node1"].reachable
    node2 = places["nvme@node2"]
    assert not node2.reachable and "/nonexistent/tierflow-node2" in (node2.error or "")
    assert node2.capacity_bytes == 2 * 10**9 and node2.to_json()["free_bytes"] is None
