"""Lineage: dataset versions and checkpoints in MLflow (a SQLite tracking store), and hops in OpenLineage.

Both run the DAGs for real: ``dag.test()`` with ``[lineage]`` in the tier config for MLflow, and
``airflow dags test`` in a fresh process with the OpenLineage provider's file transport for OpenLineage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def lineage_config(test_config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's tier config with ``[lineage]`` pointing at a fresh SQLite MLflow store; its tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "tiers.toml"
    path.write_text(test_config_path.read_text() + f'\n[lineage]\nmlflow_tracking_uri = "{uri}"\n')
    monkeypatch.setenv("TIERFLOW_CONFIG", str(path))
    return uri


def publish(test_config, s3_credentials, tmp_path: Path, dataset: str):
    from pipelines.datasets.staging import publish_directory
    from pipelines.storage.tier import open_tier

    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(6):
        (src / f"{i:02d}.jsonl").write_bytes(os.urandom(2000 + 100 * i))
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    return publish_directory(str(src), obj, dataset, "v1")[1]


def test_a_staged_version_is_an_mlflow_dataset_with_its_manifest_as_digest(
    dagbag, lineage_config: str, test_config, s3_credentials, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    dataset = f"lineage{uuid.uuid4().hex[:6]}"
    published = publish(test_config, s3_credentials, tmp_path, dataset)
    run = dagbag.get_dag("dataset_staging").test(run_conf={"dataset": dataset, "version": "v1"})
    assert run.state == "success"

    client = MlflowClient(tracking_uri=lineage_config)
    experiment = client.get_experiment_by_name("tierflow")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`tierflow.dataset` = '{dataset}'")
    (logged,) = found.inputs.dataset_inputs
    assert logged.dataset.name == f"{dataset}/v1"
    assert logged.dataset.digest == published.manifest.checksum()
    pfs, nvme = test_config.tier("pfs"), test_config.tier("nvme")
    assert json.loads(logged.dataset.source)["uri"] == f"{pfs.url}/datasets/{dataset}/v1"  # committed there first
    assert found.data.tags["tierflow.uri.pfs"] == f"{pfs.url}/datasets/{dataset}/v1"
    assert found.data.tags["tierflow.uri.nvme"] == f"{nvme.url}/datasets/{dataset}/v1"

    again = dagbag.get_dag("dataset_staging").test(run_conf={"dataset": dataset, "version": "v1"})
    assert again.state == "success"  # already staged: nothing new is logged
    assert len(client.search_runs([experiment.experiment_id], f"tags.`tierflow.dataset` = '{dataset}'")) == 1


def test_a_promoted_checkpoint_is_tagged_on_its_training_run(dagbag, lineage_config: str, test_config) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.devtools.corpus import write_checkpoint
    from pipelines.storage.tier import open_tier

    client = MlflowClient(tracking_uri=lineage_config)
    training = client.create_run(client.create_experiment(f"train-{uuid.uuid4().hex[:6]}")).info.run_id
    run = f"mlrun{uuid.uuid4().hex[:6]}"
    nvme = open_tier(test_config, "nvme")
    write_checkpoint(Path(nvme.root), run, 100)
    dr = dagbag.get_dag("checkpoint_lifecycle").test(run_conf={"run": run, "mlflow_run_id": training})
    assert dr.state == "success"
    tags = client.get_run(training).data.tags
    obj = test_config.tier("object")
    assert tags["tierflow.checkpoint.step_000100.object"] == f"{obj.url}checkpoints/{run}/step_000100"
    assert tags["tierflow.checkpoint.step_000100.step"] == "100"
    assert len(tags["tierflow.checkpoint.step_000100.manifest_checksum"]) == 32


def test_staging_reports_its_inputs_and_outputs_to_openlineage(
    airflow_db, test_config_path: Path, test_config, s3_credentials, tmp_path: Path
) -> None:
    """``airflow dags test`` with the OpenLineage provider's file transport: each hop's URLs are the task's lineage."""
    dataset = f"ol{uuid.uuid4().hex[:6]}"
    publish(test_config, s3_credentials, tmp_path, dataset)
    events = tmp_path / "openlineage.jsonl"
    env = os.environ | {
        "TIERFLOW_CONFIG": str(test_config_path),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tierflow-test",
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    conf = json.dumps({"dataset": dataset, "version": "v1"})
    done = subprocess.run(
        [airflow, "dags", "test", "dataset_staging", "-c", conf], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert events.exists(), done.stdout[-3000:]
    found = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    completed = [e for e in found if e.get("eventType") == "COMPLETE" and ".commit_hop" in e["job"]["name"]]
    assert {e["job"]["name"] for e in completed} == {"dataset_staging.commit_hop1", "dataset_staging.commit_hop2"}
    pfs, nvme, obj = (test_config.tier(t) for t in ("pfs", "nvme", "object"))
    prefix = f"datasets/{dataset}/v1"
    on_s3 = ("s3://" + obj.bucket, f"{obj.root.partition('/')[2]}/{prefix}".lstrip("/"))
    on_pfs, on_nvme = ("file", f"{pfs.root}/{prefix}"), ("file", f"{nvme.root}/{prefix}")

    def names(event: dict, side: str) -> set[tuple[str, str]]:
        return {(d["namespace"], d["name"]) for d in event.get(side, [])}

    hop = {e["job"]["name"].rsplit(".", 1)[1]: e for e in completed}
    assert (names(hop["commit_hop1"], "inputs"), names(hop["commit_hop1"], "outputs")) == ({on_s3}, {on_pfs})
    # `airflow dags test` runs every task in one process, whose collector keeps what earlier tasks
    # reported (a worker runs each task in a process of its own): hop 2 has its own hop at least.
    assert on_pfs in names(hop["commit_hop2"], "inputs") and on_nvme in names(hop["commit_hop2"], "outputs")
    assert on_nvme not in names(hop["commit_hop1"], "outputs")
