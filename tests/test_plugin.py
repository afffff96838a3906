"""The storage-bandwidth plugin inside Airflow's real API server app: listed, authenticated, answering."""

from __future__ import annotations

import pytest

from pipelines.model.bandwidth import Bottleneck
from pipelines.model.observations import Observation, fold, recent, record

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
    "path", ["/", "/api/tiers", "/api/observations", "/api/plan?source=object&target=pfs&size=1+TB"]
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
    page = client.get(f"{PREFIX}/", params={"source": "object", "target": "pfs", "size": "1 TB"}, headers=auth)
    assert page.status_code == 200
    assert "<table id='tiers'>" in page.text and "<svg id='chart'" in page.text and "id='plan'" in page.text
    assert client.get(f"{PREFIX}/api/observations", headers=auth).json()[-1]["achieved_MBps"] == 200.0


@pytest.mark.unit
def test_fold_moves_the_bottleneck_profile_toward_what_was_achieved(tmp_path, monkeypatch) -> None:
    from pipelines.core.config import load_config
    from pipelines.model.calibration import calibrated, load_profile

    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    config = load_config()
    before = config.tier("object").bandwidth.read_bps
    slow = Observation(
        0,
        "d",
        "t",
        "object",
        "pfs",
        10**9,
        10,
        predicted_s=5.0,
        achieved_s=10.0,
        bottleneck=Bottleneck("object", "read", "bandwidth"),
    )
    assert fold(config, slow)
    after = load_profile(config, "object")[0]
    assert after.read_bps == pytest.approx(before * (1 - 0.2 + 0.2 * 0.5))
    assert after.write_bps == config.tier("object").bandwidth.write_bps
    assert calibrated(config).tier("object").bandwidth.read_bps == after.read_bps
    tiny = Observation(0, "d", "t", "object", "pfs", 1000, 1, 5.0, 10.0, Bottleneck("object", "read", "bandwidth"))
    assert not fold(config, tiny)
    record(config, slow)
    assert recent(config)[-1] == slow


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
