"""``tierflow demo``: the main job on the embedded defaults, end to end, with a summary.

1. start the embedded S3 server (SeaweedFS on 127.0.0.1) unless it runs already;
2. seed the tiers (:func:`seed`, which ``tierflow airflow up`` runs too): generate the
   deterministic synthetic corpus, upload it to the object tier under
   ``raw/synthetic/``, and publish it as the committed dataset version ``synthetic/v1``; write
   three checkpoints of a simulated training run (``demo-run``) to the NVMe tier;
3. migrate the Airflow metadata DB (SQLite under the state directory) and run every DAG in
   ``dags/`` with ``airflow dags test``, each run's output going to a log file;
4. print a summary, and stop the server again if the demo started it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.config import TierflowConfig
from pipelines.core.units import format_bytes
from pipelines.devtools.airflow_env import airflow_env, checkout_dir
from pipelines.devtools.s3server import EmbeddedS3
from pipelines.storage.credentials import S3Credentials

__all__ = ["RAW_PREFIX", "Seeded", "run_demo", "seed"]

RAW_PREFIX = "raw/synthetic"
#: The simulated training run whose checkpoints checkpoint_lifecycle promotes and checkpoint_restore restores.
DEMO_RUN = "demo-run"
#: The version dataset_preparation publishes with its default params.
PREPARED_VERSION = "v2"
#: The demo corpus is also published as this dataset version, which dataset_staging stages by default.
DEMO_DATASET, DEMO_VERSION = "synthetic", "v1"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _airflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess[bytes]:
    with open(log, "wb") as out:
        return subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _dag_ids(env: dict[str, str], log: Path) -> list[str]:
    """The DAG ids in dags/, read by a subprocess with Airflow's environment; import errors stop the demo."""
    result = log.with_suffix(".json")
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(safe_mode=False)\n"
        "errors = {k: v.strip().splitlines()[-1] for k, v in bag.import_errors.items()}\n"
        "json.dump({'ids': sorted(bag.dag_ids), 'errors': errors}, open(sys.argv[1], 'w'))\n"
    )
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-c", script, str(result)], env=env, stdout=out, stderr=out, check=True)
    found = json.loads(result.read_text())
    if found["errors"]:
        raise RuntimeError(f"DAG import errors: {found['errors']}")
    return list(found["ids"])


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed` put on the tiers."""

    files: int
    records: int
    bytes: int
    raw_url: str
    manifest: str


def seed(config: TierflowConfig, creds: S3Credentials) -> Seeded:
    """The data every DAG's defaults expect: the raw corpus, ``synthetic/v1`` and three NVMe checkpoints.

    The corpus is deterministic and the copies resume, so seeding again moves nothing new.
    """
    from dataclasses import replace

    from pipelines.datasets.staging import publish_directory
    from pipelines.devtools.corpus import generate_corpus, write_checkpoint
    from pipelines.storage.tier import Tier, open_tier
    from pipelines.transfer import copy_prefix

    corpus_dir = config.state_dir / "corpus"
    files = generate_corpus(corpus_dir)
    total = sum(f.size for f in files)
    _say(f"corpus: {len(files)} files, {sum(f.records for f in files)} records, {format_bytes(total)}")
    obj = open_tier(config, config.primary("object").name, creds.storage_options())
    raw, _ = copy_prefix(
        Tier(replace(obj.config, name="corpus", kind="pfs", url=f"file://{corpus_dir}", conn_id=None)),
        "",
        obj,
        RAW_PREFIX,
    )
    _say(f"raw corpus uploaded to {obj.url(RAW_PREFIX)}: {raw.line()}")
    published, record = publish_directory(str(corpus_dir), obj, DEMO_DATASET, DEMO_VERSION)
    _say(f"published dataset {DEMO_DATASET}/{DEMO_VERSION} on {obj.name}: {published.line()}")
    nvme_root = Path(config.primary("nvme").root)
    if (nvme_root / "checkpoints" / DEMO_RUN).is_dir():  # seeded before: what retention pruned stays pruned
        _say(f"training run {DEMO_RUN}: checkpoints already under {nvme_root}/checkpoints")
    else:
        for i, step in enumerate((100, 200, 300)):
            write_checkpoint(nvme_root, DEMO_RUN, step, metrics={"loss": 2.0 - i * 0.4, "eval_score": 0.6 + i * 0.1})
        _say(f"training run {DEMO_RUN}: checkpoints at steps 100, 200, 300 written to {nvme_root}/checkpoints")
    return Seeded(len(files), sum(f.records for f in files), total, obj.url(RAW_PREFIX), record.manifest.checksum())


def run_demo(config: TierflowConfig, keep_server: bool = False) -> int:
    """Run the demo; returns the exit status (0 when every DAG run succeeded)."""
    from pipelines.storage.tier import open_tier

    started = time.perf_counter()
    server = EmbeddedS3.from_config(config)
    was_running = server.pid() is not None
    creds = server.start()
    _say(f"S3 server {'already running' if was_running else 'started'} at {creds.endpoint_url} (data in {server.root})")
    logs = config.state_dir / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, str, float]] = []
    staged: list[str] = []
    checkpoints: list[str] = []
    prepared_line = ""
    try:
        seeded = seed(config, creds)
        obj = open_tier(config, config.primary("object").name, creds.storage_options())
        env = airflow_env(config, creds)
        migrate = _airflow(["db", "migrate"], env, logs / "db-migrate.log")
        if migrate.returncode != 0:
            _say(f"airflow db migrate failed; see {logs / 'db-migrate.log'}")
            return 1
        results = _run_dags(env, logs)
        staged, checkpoints, prepared_line = _what_is_where(config, creds, obj)
    finally:
        if not (keep_server or was_running):
            server.stop()
            _say("S3 server stopped")
    print()
    print("Tierflow demo summary")
    print(f"  tiers:   {', '.join(f'{t.name} ({t.kind}) {t.url}' for t in config.tiers)}")
    print(f"  corpus:  {seeded.files} files, {format_bytes(seeded.bytes)} uploaded to {seeded.raw_url}")
    print(f"  dataset: {DEMO_DATASET}/{DEMO_VERSION} committed on {obj.name} (manifest {seeded.manifest})")
    for line in staged:
        print(f"           {line}")
    print(f"  prepared: {prepared_line}")
    print(f"  checkpoints of {DEMO_RUN} (committed):")
    for line in checkpoints:
        print(f"           {line}")
    for dag_id, state, seconds in results:
        print(f"  DAG {dag_id:<24} {state:<8} {seconds:6.1f} s")
    failed = [r for r in results if r[1] != "success"]
    print(f"  result:  {len(results) - len(failed)}/{len(results)} DAGs green in {time.perf_counter() - started:.0f} s")
    return 1 if failed or not results else 0


def _run_dags(env: dict[str, str], logs: Path) -> list[tuple[str, str, float]]:
    """``airflow dags test`` every DAG of the checkout in turn: (DAG id, state, seconds) each."""
    results = []
    dag_ids = _dag_ids(env, logs / "dag-list.log")
    _say(f"DAGs in {checkout_dir() / 'dags'}: {', '.join(dag_ids)}")
    for dag_id in dag_ids:
        t0 = time.perf_counter()
        _say(f"airflow dags test {dag_id} ...")
        run = _airflow(["dags", "test", dag_id], env, logs / f"{dag_id}.log")
        state = "success" if run.returncode == 0 and _succeeded(logs / f"{dag_id}.log") else "failed"
        results.append((dag_id, state, time.perf_counter() - t0))
        _say(f"  {dag_id}: {state} in {results[-1][2]:.1f} s (log: {logs / f'{dag_id}.log'})")
    return results


def _what_is_where(config: TierflowConfig, creds: Any, obj: Any) -> tuple[list[str], list[str], str]:
    """Per tier, whether the demo dataset and which checkpoints are committed; and the prepared version."""
    from pipelines.checkpoints import discover
    from pipelines.storage.commit import read_commit
    from pipelines.storage.tier import open_tier

    staged, checkpoints = [], []
    for tier in config.tiers:
        handle = open_tier(config, tier.name, creds.storage_options() if tier.is_object else None)
        found = read_commit(handle, DEMO_DATASET, DEMO_VERSION)
        state = f"committed, {len(found.manifest.entries)} objects" if found else "not committed"
        staged.append(f"on {tier.name:<6}: {state}")
        steps = [c.step for c in discover(handle, run=DEMO_RUN) if c.committed]
        checkpoints.append(f"on {tier.name:<6}: steps {steps or 'none'}")
    prepared = read_commit(obj, DEMO_DATASET, PREPARED_VERSION)
    if prepared is None:
        return staged, checkpoints, f"{DEMO_DATASET}/{PREPARED_VERSION} not prepared"
    info = prepared.extra.get("preparation") or {}
    shards = sum(1 for e in prepared.manifest.entries if e.key.startswith("shards/"))
    return (
        staged,
        checkpoints,
        f"{DEMO_DATASET}/{PREPARED_VERSION} prepared from {RAW_PREFIX}/: {shards} shard{'s' * (shards != 1)}, "
        f"{info.get('rows')} rows, zstd level {info.get('level')}, ratio {info.get('ratio')}, "
        f"quarantined {len(info.get('quarantined') or [])}",
    )


def _succeeded(log: Path) -> bool:
    """Whether ``airflow dags test`` finished the run in state success (it exits 0 on failed runs too)."""
    finished = re.findall(r"DagRun Finished: .*?, state=(\w+)", log.read_text(errors="replace"))
    return finished[-1:] == ["success"]
