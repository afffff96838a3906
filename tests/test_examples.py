"""The README's example DAGs, one per operator group: each loads as a DAG file, and three run green on real tiers."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from dagfiles import load_dag_file

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> dict[str, str]:
    """``# example: NAME`` python blocks of the README, by name."""
    blocks = re.findall(r"```python\n# example: (\w+)\n(.*?)```", README.read_text(), re.S)
    return dict(blocks)


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(_examples()[name])
    return path


def _state(dag_id: str, run_id: str, task_id: str) -> dict[int, str | None]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        ).all()
    return dict(rows)


def test_there_is_an_example_per_operator_group_and_each_uses_only_exported_names() -> None:
    import pipelines.operators as ops

    examples = _examples()
    assert set(examples) == {"stage_to_nvme", "keep_checkpoints", "prepare_corpus", "watch_tiers"}
    used = set()
    for text in examples.values():
        for names in re.findall(r"from pipelines\.operators import \(?([^)]*?)\)?\n\n", text, re.S):
            used |= {n.strip() for n in names.replace("\n", " ").split(",") if n.strip()}
    operators = {n for n in ops.__all__ if n.endswith("Operator")}
    # Every operator a user composes appears in an example (the staging internals run inside StageDataset).
    internal = {"PlanStagingOperator", "StageShardOperator", "CommitStagingOperator"}
    assert operators - internal - used == set()
    assert used <= set(ops.__all__)


def test_every_example_loads_as_a_dag_file(airflow_db, test_config_path, tmp_path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    for name in _examples():
        bag = DagBag(dag_folder=str(_write(tmp_path, name)), safe_mode=False)
        assert bag.import_errors == {} and name in bag.dag_ids, (name, bag.import_errors)


def test_the_staging_example_runs_green(airflow_db, test_config, s3_credentials, tmp_path) -> None:
    from pipelines.datasets.staging import publish_directory
    from pipelines.storage.commit import read_commit
    from pipelines.storage.tier import open_tier

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.bin").write_bytes(os.urandom(10_000 + i))
    name = f"ex{uuid.uuid4().hex[:6]}"
    _, published = publish_directory(
        str(src), open_tier(test_config, "object", s3_credentials[0].storage_options()), name, "v1"
    )
    dag = load_dag_file(_write(tmp_path, "stage_to_nvme"), "stage_to_nvme")
    dr = dag.test(run_conf={"dataset": name, "version": "v1"})
    assert dr.state == "success"
    on_nvme = read_commit(open_tier(test_config, "nvme"), name, "v1")
    assert on_nvme is not None and on_nvme.manifest.checksum() == published.manifest.checksum()


def test_the_checkpoint_example_runs_green(airflow_db, test_config, s3_credentials, tmp_path) -> None:
    from pipelines.checkpoints import discover
    from pipelines.devtools.corpus import write_checkpoint
    from pipelines.storage.tier import open_tier

    run = f"exrun-{uuid.uuid4().hex[:6]}"
    for step in (100, 200, 300):
        write_checkpoint(Path(test_config.tier("nvme").root), run, step, shards=2, shard_bytes=4096)
    dag = load_dag_file(_write(tmp_path, "keep_checkpoints"), "keep_checkpoints")
    dr = dag.test(run_conf={"run": run})
    assert dr.state == "success", _state("keep_checkpoints", dr.run_id, "promote")
    on_nvme = {c.step: c for c in discover(open_tier(test_config, "nvme"), run=run)}
    assert sorted(on_nvme) == [200, 300] and on_nvme[300].pinned_by == ("resume-job",)
    on_object = discover(open_tier(test_config, "object", s3_credentials[0].storage_options()), run=run)
    assert sorted(c.step for c in on_object if c.status == "committed") == [100, 200, 300]


def test_the_tier_example_runs_green(airflow_db, test_config, tmp_path) -> None:
    dag = load_dag_file(_write(tmp_path, "watch_tiers"), "watch_tiers")
    dr = dag.test()
    assert dr.state == "success"
    assert _state("watch_tiers", dr.run_id, "probe") == {0: "success", 1: "success", 2: "success"}
    assert _state("watch_tiers", dr.run_id, "calibrate_pfs") == {-1: "success"}
