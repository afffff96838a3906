"""The DAGs in dags/: they import cleanly and run green under dag.test() on a real metadata DB and real tiers."""

from __future__ import annotations

import json
import os
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


def _events(run_id: str) -> list[tuple[str, dict]]:
    """(asset name, extra) of every asset event the run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_run_id == run_id)
        ).all()
    return [(name, dict(extra)) for name, extra in rows]


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "tier_health" in dagbag.dag_ids
    for dag in dagbag.dags.values():
        assert "tierflow" in dag.tags, dag.dag_id


def test_dag_files_do_no_network_io_at_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a DAG file opens no connection: the DAG processor parses every file every few seconds.

    Connections are refused by replacing the socket layer's connect and name lookup for the
    duration of the parse (no real network fault can single out the parse). How long parsing takes
    is a benchmark (``make bench BENCH=dag_parse``), not an assertion.
    """
    import importlib.util
    import socket

    import airflow.sdk  # noqa: F401 - paid once, as the DAG processor does

    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network I/O while parsing a DAG file")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for path in sorted((REPO / "dags").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"parse_check_{path.stem}", path)
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert not attempts, f"{path.name} opened connections at parse: {attempts}"


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
    from pipelines.storage.probe import PROBE_PREFIX
    from pipelines.storage.tier import open_tier

    for name in ("pfs", "nvme"):
        assert open_tier(test_config, name).list(PROBE_PREFIX) == []
    assert open_tier(test_config, "object", s3_credentials[0].storage_options()).list(PROBE_PREFIX) == []


def test_tier_health_rejects_unknown_tier(dagbag) -> None:
    dag = dagbag.get_dag("tier_health")
    dr = dag.test(run_conf={"tiers": ["tape"]})
    assert dr.state == "failed"
    assert _states(dr.run_id)[("list_tiers", -1)] == "failed"


def test_dataset_staging_runs_green_and_emits_asset_events(dagbag, test_config, s3_credentials, tmp_path) -> None:

    from pipelines.datasets.staging import publish_directory
    from pipelines.storage.commit import read_commit
    from pipelines.storage.tier import open_tier

    src = tmp_path / "corpus"
    for i in range(30):
        (src / f"part-{i // 10}").mkdir(parents=True, exist_ok=True)
        (src / f"part-{i // 10}" / f"{i:03d}.jsonl").write_bytes(os.urandom(1000 + 997 * i))
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    _, published = publish_directory(str(src), obj, "dagtest", "v1")

    dag = dagbag.get_dag("dataset_staging")
    dr = dag.test(run_conf={"dataset": "dagtest", "version": "v1", "targets": ["pfs", "nvme"], "verify": True})
    states = _states(dr.run_id)
    assert dr.state == "success", states
    assert {k: v for k, v in states.items() if k[0].startswith("commit")} == {
        ("commit_hop1", -1): "success",
        ("commit_hop2", -1): "success",
    }
    assert all(v == "success" for k, v in states.items() if k[0].startswith("stage_")), states
    for tier in ("pfs", "nvme"):
        found = read_commit(open_tier(test_config, tier), "dagtest", "v1")
        assert found is not None and found.manifest.checksum() == published.manifest.checksum()
    hop1 = _xcom("dataset_staging", dr.run_id, "commit_hop1")
    assert hop1["tier"] == "pfs" and hop1["objects"] == 30 and hop1["copied_bytes"] == published.manifest.total_bytes
    events = dict(_events(dr.run_id))
    assert set(events) == {"tierflow/dagtest@pfs", "tierflow/dagtest@nvme"}
    for extra in events.values():
        assert extra["version"] == "v1" and extra["objects"] == 30
        assert extra["manifest_checksum"] == published.manifest.checksum()
        assert extra["bytes"] == published.manifest.total_bytes and "seconds" in extra and "MBps" in extra

    # The plugin's listener recorded each copy with its dataset version and DAG run (the storage page lists them).
    from pipelines.model.observations import recent

    seen = [o for o in recent(test_config, 200) if o.run_id == dr.run_id]
    assert seen and all(o.dataset == "dagtest/v1" and o.error is None for o in seen)
    assert sum(o.bytes for o in seen if o.target == "pfs") == published.manifest.total_bytes

    # A second run finds both hops already committed and copies nothing.
    again = dag.test(run_conf={"dataset": "dagtest", "version": "v1"})
    assert again.state == "success"
    assert _xcom("dataset_staging", again.run_id, "commit_hop2")["already_staged"] is True


def _plan_xcom(dag_id: str, run_id: str, task_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(XComModel.run_id == run_id, XComModel.task_id == task_id, XComModel.key == "plan")
        ).one()
        return XComModel.deserialize_value(row)


def test_a_deadline_plans_each_hop_sets_timeouts_and_an_airflow_deadline_alert(
    dagbag, test_config, s3_credentials, tmp_path
) -> None:
    """The run's deadline param: each hop planned within its share, copy timeouts from the plan, an alert on the run.

    dag.test() cannot run a DAG that carries its deadline alert (an Airflow 3.3 bug, see
    pipelines.operators.deadlines), so the alert's reference is evaluated here on the run dag.test() made.
    """
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.datasets.staging import publish_directory
    from pipelines.operators.deadlines import RunDeadlineParam, deadline_of
    from pipelines.storage.tier import open_tier

    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(6):
        (src / f"{i:03d}.bin").write_bytes(os.urandom(4096 * (i + 1)))
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    publish_directory(str(src), obj, "deadlined", "v1")
    dag = dagbag.get_dag("dataset_staging")
    dr = dag.test(run_conf={"dataset": "deadlined", "version": "v1", "deadline": "2h"})
    assert dr.state == "success", _states(dr.run_id)
    hop1 = _plan_xcom("dataset_staging", dr.run_id, "plan_hop1")["hop"]
    hop2 = _plan_xcom("dataset_staging", dr.run_id, "plan_hop2")["hop"]
    # Hop 1 was given its share of the two hops' time, hop 2 what was left: both within two hours.
    assert 0 < hop1["deadline_s"] < 7200 and 0 < hop2["deadline_s"] <= 7200 and hop1["meets_deadline"]
    assert hop1["concurrency"] == 1  # a loose deadline takes the fewest streams that finish in time
    shard = _xcom("dataset_staging", dr.run_id, "plan_hop1")[0]
    assert shard["timeout_s"] >= 300  # the copy's execution_timeout comes from the plan
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == dr.run_id))
        due = RunDeadlineParam()._evaluate_with(session=session, dag_id="dataset_staging", run_id=dr.run_id)
        assert due is not None and abs((due - (run.queued_at or run.run_after)).total_seconds() - 7200) < 1

    # Without the param a run has no deadline. (dag.test() keeps a run's params on the task objects
    # for the next run of the same DAG object: the empty deadline is passed, not left out.)
    plain = dag.test(run_conf={"dataset": "deadlined", "version": "v1", "deadline": None})
    assert _plan_xcom("dataset_staging", plain.run_id, "plan_hop1")["hop"]["deadline_s"] is None
    with create_session() as session:
        assert RunDeadlineParam()._evaluate_with(session=session, dag_id="dataset_staging", run_id=plain.run_id) is None
    # A value that is not a duration is refused in one line naming the param (the plan task fails with it).
    with pytest.raises(ValueError, match="param 'deadline': not a duration"):
        deadline_of({"deadline": "soon"})


def test_a_failed_copy_is_recorded_with_its_error(dagbag, test_config, s3_credentials, tmp_path) -> None:
    """A shard whose source object changed under its manifest fails; the listener records it with the error."""
    from pipelines.datasets.staging import publish_directory
    from pipelines.model.observations import recent
    from pipelines.storage.tier import open_tier

    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(50_000))
    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    _, published = publish_directory(str(src), obj, "dagfail", "v1")
    key = f"{published.manifest.prefix}/a.bin"
    obj.write_bytes(key, os.urandom(50_000))  # same size, other bytes: the copy's checksum cannot match
    dr = dagbag.get_dag("dataset_staging").test(run_conf={"dataset": "dagfail", "version": "v1"})
    assert dr.state == "failed"
    failed = [o for o in recent(test_config, 200) if o.run_id == dr.run_id and o.error]
    assert failed, [o for o in recent(test_config, 20)]
    assert all(o.dataset == "dagfail/v1" and o.source == "object" and o.target == "pfs" for o in failed)
    assert "a.bin" in (failed[0].error or "") and "\n" not in (failed[0].error or "")


def test_dataset_staging_fails_clearly_for_an_unpublished_version(dagbag) -> None:
    dr = dagbag.get_dag("dataset_staging").test(run_conf={"dataset": "nosuch", "version": "v9"})
    assert dr.state == "failed"
    assert _states(dr.run_id)[("plan_hop1", -1)] == "failed"


def test_storage_calibration_stores_profiles(dagbag, test_config) -> None:
    from pipelines.model.calibration import load_profile

    conf = {"tiers": ["object", "nvme"], "budget": "16 MiB", "repeats": 2, "apply": True}
    dr = dagbag.get_dag("storage_calibration").test(run_conf=conf)
    assert dr.state == "success", _states(dr.run_id)
    for name in ("object", "nvme"):
        stored = load_profile(test_config, name)
        assert stored is not None and stored[0].read_bps > 0 and stored[0].latency_s > 0
    assert {k for k in _states(dr.run_id) if k[0] == "calibrate"} == {("calibrate", 0), ("calibrate", 1)}
    summary = _xcom("storage_calibration", dr.run_id, "calibrate", 0)
    assert summary["tier"] == "object" and summary["stored"].endswith("profiles/object.json")
    assert summary["status"] == "applied" and summary["repeats"] == 2 and set(summary["spread"]) >= {"read_bps"}


def test_dataset_preparation_then_staging_runs_green_end_to_end(dagbag, test_config, s3_credentials, tmp_path) -> None:
    import uuid

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.devtools.corpus import generate_corpus
    from pipelines.storage.commit import read_commit
    from pipelines.storage.tier import open_tier

    obj = open_tier(test_config, "object", s3_credentials[0].storage_options())
    files = generate_corpus(tmp_path / "raw")
    prefix = f"raw/dagtest-{uuid.uuid4().hex[:6]}"
    for f in files:
        obj.put_file(tmp_path / "raw" / f.key, f"{prefix}/{f.key}")
    version = f"p{uuid.uuid4().hex[:6]}"

    prep = dagbag.get_dag("dataset_preparation")
    dr = prep.test(
        run_conf={"version": version, "source_prefix": prefix, "shard_size": "1 MiB", "policy": "quarantine"}
    )
    states = _states(dr.run_id)
    assert dr.state == "success", states
    validations = [k for k in states if k[0] == "validate"]
    assert len(validations) >= 2 and all(states[k] == "success" for k in validations)
    summary = _xcom("dataset_preparation", dr.run_id, "publish")
    assert summary["rows"] == sum(f.records for f in files) and summary["quarantined"] == []
    # XComs carry indexes and counts; the full plan (every input key) is stored with the version.
    groups = _xcom("dataset_preparation", dr.run_id, "plan")
    assert groups and all(set(g) == {"index", "name", "count", "inputs", "input_bytes"} for g in groups)
    assert sum(g["inputs"] for g in groups) == len(files)
    with create_session() as session:
        ref = XComModel.deserialize_value(
            session.scalars(
                select(XComModel).where(
                    XComModel.run_id == dr.run_id, XComModel.task_id == "plan", XComModel.key == "plan"
                )
            ).one()
        )
    assert ref["key"].startswith(f"datasets/synthetic/{version}/_tierflow_plan/") and ref["inputs"] == len(files)
    stored = json.loads(obj.read_bytes(ref["key"]))
    assert sorted(k for group in stored["groups"] for k, _ in group) == sorted(f"{prefix}/{f.key}" for f in files)
    committed = read_commit(obj, "synthetic", version)
    assert committed is not None and committed.extra["preparation"]["shards"] == len(validations)
    events = _events(dr.run_id)
    with create_session() as session:
        links = session.scalars(
            select(XComModel).where(XComModel.run_id == dr.run_id, XComModel.key.like("_link_%"))
        ).all()
    assert [(name, extra["dataset"], extra["version"]) for name, extra in events] == [
        ("tierflow_dataset_published", "synthetic", version)
    ]
    urls = [XComModel.deserialize_value(x) for x in links]
    assert len(urls) == len(validations)
    assert all(f"/storage-bandwidth/docs/synthetic/{version}/part-" in u and u.endswith("/index.html") for u in urls)

    # The published event schedules staging; run it as the scheduler would, with the event's dataset/version.
    staging = dagbag.get_dag("dataset_staging")
    assert "tierflow_dataset_published" in str(staging.timetable.asset_condition)
    extra = events[0][1]
    staged = staging.test(run_conf={"dataset": extra["dataset"], "version": extra["version"]})
    assert staged.state == "success", _states(staged.run_id)
    on_nvme = read_commit(open_tier(test_config, "nvme"), "synthetic", version)
    assert on_nvme is not None, (_states(staged.run_id), _xcom("dataset_staging", staged.run_id, "commit_hop2"))
    assert on_nvme.manifest.checksum() == committed.manifest.checksum()


def test_checkpoint_lifecycle_and_restore_run_green(dagbag, test_config, s3_credentials) -> None:
    import uuid

    from pipelines.checkpoints import discover
    from pipelines.devtools.corpus import write_checkpoint
    from pipelines.storage.tier import open_tier

    run = f"job-{uuid.uuid4().hex[:6]}"
    nvme_root = Path(test_config.tier("nvme").root)
    for i, step in enumerate((100, 200, 300)):
        write_checkpoint(nvme_root, run, step, shards=3, metrics={"loss": 3.0 - i, "eval_score": 0.5 + i / 10})
    retention = {"nvme": {"latest": 1}, "pfs": {"latest": 2}, "object": {"best": {"metric": "loss", "n": 5}}}
    dr = dagbag.get_dag("checkpoint_lifecycle").test(run_conf={"run": run, "retention": retention})
    states = _states(dr.run_id)
    assert dr.state == "success", states
    assert sorted(v for k, v in states.items() if k[0] == "promote") == ["success"] * 3
    every = _events(dr.run_id)
    rows = [(name, extra) for name, extra in every if extra.get("event") != "pruned"]
    events = sorted((name, extra["step"], extra["tier"]) for name, extra in rows)
    # What retention deleted is an event too (NVMe keeps the latest, the PFS the latest two).
    pruned = sorted((name, extra["checkpoint"]) for name, extra in every if extra.get("event") == "pruned")
    assert pruned == [
        (f"tierflow/checkpoints/{run}@nvme", "step_000100"),
        (f"tierflow/checkpoints/{run}@nvme", "step_000200"),
        (f"tierflow/checkpoints/{run}@pfs", "step_000100"),
    ]
    assert events == sorted(
        (f"tierflow/checkpoints/{run}@{tier}", step, tier) for step in (100, 200, 300) for tier in ("pfs", "object")
    )
    assert all(extra["metrics"]["loss"] > 0 and extra["bytes"] > 0 for _, extra in rows)
    steps = {
        name: [c.step for c in discover(open_tier(test_config, name, s3_credentials[0].storage_options()), run=run)]
        for name in ("nvme", "pfs", "object")
    }
    assert steps == {"nvme": [300], "pfs": [200, 300], "object": [100, 200, 300]}
    summary = _xcom("checkpoint_lifecycle", dr.run_id, "summary")
    assert len(summary["promoted"]) == 6 and summary["deleted"]["nvme"] == [f"{run}/step_000100", f"{run}/step_000200"]

    restored = dagbag.get_dag("checkpoint_restore").test(run_conf={"run": run, "step": 100, "holder": "resume-1"})
    assert restored.state == "success", _states(restored.run_id)
    result = _xcom("checkpoint_restore", restored.run_id, "restore")
    # Step 100 is gone from NVMe (latest 1) and the PFS (latest 2): only object storage holds it.
    assert (result["step"], result["source"], result["fallbacks"]) == (100, "object", [])
    (back,) = [c for c in discover(open_tier(test_config, "nvme"), run=run) if c.step == 100]
    assert back.committed and back.pinned_by == ("resume-1",)
    missing = dagbag.get_dag("checkpoint_restore").test(run_conf={"run": "no-such-run"})
    assert missing.state == "failed"


def test_eviction_emits_an_asset_event_naming_what_left(airflow_db, tiers, tmp_path) -> None:
    """An evicted version is an event of its (dataset, tier) asset with ``event: evicted``, its version and why."""
    from dagfiles import load_dag_file

    from pipelines.datasets.cache import touch
    from pipelines.datasets.staging import publish_directory, stage_dataset
    from pipelines.storage.commit import read_commit

    nvme = tiers["nvme"]
    for i, name in enumerate(("older", "newer")):
        src = tmp_path / name
        src.mkdir()
        (src / "data.bin").write_bytes(os.urandom(2 * 2**20))
        publish_directory(str(src), tiers["object"], name, "v1")
        stage_dataset(tiers["object"], nvme, name, "v1")
        touch(nvme, name, "v1", now=1000.0 + i)
    need = nvme.config.capacity_bytes - 3 * 2**20  # room only once the older version has gone
    dag_file = tmp_path / "evict_events.py"  # a user's DAG file: dag.test() runs DAGs the DB has serialized
    dag_file.write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from pipelines.operators import EvictCacheOperator\n"
        "with DAG('evict_events', schedule=None, start_date=pendulum.datetime(2026, 1, 1)):\n"
        f"    EvictCacheOperator(task_id='evict', tier='nvme', need_bytes={need}, "
        f"config_path={str(tmp_path / 'tiers.toml')!r})\n"
    )
    dag = load_dag_file(dag_file, "evict_events")
    dr = dag.test()
    assert dr.state == "success", _states(dr.run_id)
    assert read_commit(nvme, "older", "v1") is None and read_commit(nvme, "newer", "v1") is not None
    ((asset, extra),) = _events(dr.run_id)
    assert asset == "tierflow/older@nvme"
    assert (extra["event"], extra["version"], extra["tier"]) == ("evicted", "v1", "nvme")
    assert extra["why"] == "least recently used; committed on object" and extra["bytes"] >= 2 * 2**20
    # ... and counted for the metrics (tierflow_cache_evictions_total).
    from pipelines.core.config import load_config
    from pipelines.operators.metrics import every_event

    counted = [e for e in every_event(load_config(tmp_path / "tiers.toml").state_dir) if e["kind"] == "eviction"]
    assert counted and (counted[-1]["labels"]["tier"], counted[-1]["bytes"]) == ("nvme", extra["bytes"])


def test_dags_find_tiers_by_role_under_any_names(tmp_path) -> None:
    """Renamed tiers (object→s3main, pfs→lustre, nvme→localssd): param defaults, pools and retention follow."""
    import json
    import subprocess
    import sys

    from pipelines.core.config import DEFAULT_CONFIG

    text = DEFAULT_CONFIG.read_text()
    for old, new in {"object": "s3main", "pfs": "lustre", "nvme": "localssd"}.items():
        text = text.replace(f'name = "{old}"', f'name = "{new}"')
    (tmp_path / "tiers.toml").write_text(text)
    script = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r}, safe_mode=False)
assert not bag.import_errors, bag.import_errors
ids = ("dataset_staging", "checkpoint_lifecycle", "checkpoint_restore")
staging, lifecycle, restore = (bag.dags[d] for d in ids)
print(json.dumps({{
    "source": staging.params["source"], "targets": staging.params["targets"],
    "pools": {{t.task_id: t.pool for t in staging.tasks if t.task_id.startswith("stage_")}},
    "retention": sorted(lifecycle.params["retention"]), "restore_target": restore.params["target"],
}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "TIERFLOW_CONFIG"} | {
        "TIERFLOW_CONFIG": str(tmp_path / "tiers.toml")
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        "source": "s3main",
        "targets": ["lustre", "localssd"],
        "pools": {"stage_hop1": "tierflow_lustre", "stage_hop2": "tierflow_localssd"},
        "retention": ["localssd", "lustre", "s3main"],
        "restore_target": "localssd",
    }


def test_the_deadline_alert_is_on_the_dags_and_its_reference_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed as the DAG processor does, both DAGs carry the alert; Airflow finds its reference through the plugin."""
    import importlib.util

    from airflow.serialization.helpers import find_registered_custom_deadline_reference
    from airflow.serialization.serialized_objects import DagSerialization

    from pipelines.operators.deadlines import ALERT, RunDeadlineParam

    monkeypatch.setenv("TIERFLOW_DEADLINE_ALERTS", "1")
    for name in ("dataset_staging", "checkpoint_lifecycle"):
        spec = importlib.util.spec_from_file_location(f"deadline_check_{name}", REPO / "dags" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        assert dag.deadline == ALERT or dag.deadline == [ALERT]
        assert "deadline" in dag.params
        (encoded,) = DagSerialization.serialize_dag(dag)["deadline"]
        path = encoded["reference"]["__class_path"]
        assert find_registered_custom_deadline_reference(path) is RunDeadlineParam
