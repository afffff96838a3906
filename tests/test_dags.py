"""The DAGs in dags/: they import cleanly and run green under dag.test() on a real metadata DB and real tiers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def _states(run_id: str) -> dict[tuple[str, int], str | None]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.run_id == run_id
            )
        ).all()
    return {(task_id, map_index): state for task_id, map_index, state in rows}


def _xcom(dag_id: str, run_id: str, task_id: str, map_index: int = -1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == "return_value",
            )
        ).first()
        assert row is not None, f"no XCom for {task_id}[{map_index}]"
        return XComModel.deserialize_value(row)


@pytest.fixture(scope="session")
def dagbag(airflow_db, test_config_path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"), safe_mode=False)


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "tier_health" in dagbag.dag_ids
    for dag in dagbag.dags.values():
        assert "tierflow" in dag.tags, dag.dag_id


def test_dag_files_parse_quickly() -> None:
    """Parsing a DAG file must not do I/O or heavy imports: measured beyond Airflow's own import."""
    import importlib.util

    import airflow.sdk  # noqa: F401 - paid once, as the DAG processor does

    for path in sorted((REPO / "dags").glob("*.py")):
        start = time.perf_counter()
        spec = importlib.util.spec_from_file_location(f"parse_check_{path.stem}", path)
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{path.name} took {elapsed:.2f} s to parse"


def test_tier_health_runs_green(dagbag, test_config, s3_credentials) -> None:
    dag = dagbag.get_dag("tier_health")
    dr = dag.test(run_conf={"probe_size": "1 MiB"})
    assert dr.state == "success", _states(dr.run_id)
    states = _states(dr.run_id)
    assert {k: v for k, v in states.items() if k[0] == "probe"} == {("probe", i): "success" for i in range(3)}
    summary = _xcom("tier_health", dr.run_id, "summary")
    assert set(summary) == {"object", "pfs", "nvme"}
    assert all(v["write_MBps"] > 0 and v["read_MBps"] > 0 for v in summary.values())
    probe = _xcom("tier_health", dr.run_id, "probe", 0)
    assert probe["bytes"] == 2**20 and probe["tier"] == "object"
    # The probe cleaned up after itself on every tier.
    from pipelines.probe import PROBE_PREFIX
    from pipelines.tiers import open_tier

    for name in ("pfs", "nvme"):
        assert open_tier(test_config, name).list(PROBE_PREFIX) == []
    assert open_tier(test_config, "object", s3_credentials[0].storage_options()).list(PROBE_PREFIX) == []


def test_tier_health_rejects_unknown_tier(dagbag) -> None:
    dag = dagbag.get_dag("tier_health")
    dr = dag.test(run_conf={"tiers": ["tape"]})
    assert dr.state == "failed"
    assert _states(dr.run_id)[("list_tiers", -1)] == "failed"
