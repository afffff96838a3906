"""Shared fixtures: a real S3 server, a tier config over it and two local directories, an Airflow DB.

The environment is set before anything imports Airflow: a temporary ``AIRFLOW_HOME`` and
``TIERFLOW_HOME``, no example DAGs, this repository's ``dags/`` and ``plugins/``, a fixed Fernet key.

Set ``TIERFLOW_TEST_S3_ENDPOINT`` (with ``TIERFLOW_TEST_S3_KEY``, ``TIERFLOW_TEST_S3_SECRET`` and
optionally ``TIERFLOW_TEST_S3_BUCKET``, ``TIERFLOW_TEST_S3_REGION``) to run the same suite against
MinIO or AWS instead of the SeaweedFS server the session otherwise starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tierflow-tests-"))
TEST_CONN_ID = "tierflow_test_s3"

os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["TIERFLOW_HOME"] = str(_SESSION_DIR / "state")
# Airflow 3.3's dag.test() fails on DAGs with deadline alerts (pipelines.operators.deadlines says why).
os.environ["TIERFLOW_DEADLINE_ALERTS"] = "0"
os.environ.pop("TIERFLOW_CONFIG", None)
os.environ |= {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__FERNET_KEY": "wJ8lrC9rB5mSx0hq7qJr2v0j2yVbE3yF2M1lWk3V3h4=",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}",
}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's temporary directory (the S3 server has stopped by then)."""
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """The session's temporary directory."""
    return _SESSION_DIR


@pytest.fixture(scope="session")
def s3_credentials(session_dir: Path) -> Iterator[tuple[object, str]]:
    """Credentials and bucket of a real S3 server: SeaweedFS started here, or ``TIERFLOW_TEST_S3_ENDPOINT``."""
    from pipelines.devtools.s3server import EmbeddedS3, S3Credentials, free_port

    bucket = os.environ.get("TIERFLOW_TEST_S3_BUCKET", "tierflow-test")
    endpoint = os.environ.get("TIERFLOW_TEST_S3_ENDPOINT")
    if endpoint:
        yield (
            S3Credentials(
                os.environ["TIERFLOW_TEST_S3_KEY"],
                os.environ["TIERFLOW_TEST_S3_SECRET"],
                endpoint,
                os.environ.get("TIERFLOW_TEST_S3_REGION", "us-east-1"),
            ),
            bucket,
        )
        return
    server = EmbeddedS3(session_dir / "seaweedfs", free_port(), buckets=(bucket,))
    creds = server.start()
    try:
        yield creds, bucket
    finally:
        server.stop(grace=2)


@pytest.fixture(scope="session")
def dagbag(airflow_db, test_config_path):
    """The DAGs of dags/, parsed once for the session."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"), safe_mode=False)


@pytest.fixture(scope="session")
def gcs_options(session_dir: Path) -> Iterator[dict[str, object]]:
    """Storage options of a real GCS emulator (``gcp-storage-emulator``) with the bucket ``tierflow-test``."""
    from tests.emulators import gcs_emulator

    with gcs_emulator(session_dir / "gcs", "tierflow-test") as options:
        yield options


@pytest.fixture(scope="session")
def azure_options(session_dir: Path) -> Iterator[dict[str, object]]:
    """Storage options of a real Azurite blob service with the container ``tierflow-test``."""
    from tests.emulators import azurite

    with azurite(session_dir / "azurite", REPO / ".tierflow" / "test-tools", "tierflow-test") as options:
        yield options


@pytest.fixture(scope="session")
def test_config_path(session_dir: Path, s3_credentials: tuple[object, str]) -> Path:
    """A tier config file with an object tier on the test server and PFS/NVMe tiers in temporary directories.

    Also exported as ``TIERFLOW_CONFIG`` and the connection ``AIRFLOW_CONN_TIERFLOW_TEST_S3``,
    so DAGs run under ``dag.test()`` read the same tiers.
    """
    creds, bucket = s3_credentials
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    path = session_dir / "tiers.toml"
    path.write_text(
        TIER_CONFIG_TEMPLATE.format(bucket=bucket, prefix=prefix, conn_id=TEST_CONN_ID, root=session_dir / "tiers")
    )
    os.environ["TIERFLOW_CONFIG"] = str(path)
    os.environ[f"AIRFLOW_CONN_{TEST_CONN_ID.upper()}"] = creds.airflow_connection()  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="session")
def test_config(test_config_path: Path):
    """The loaded test tier config."""
    from pipelines.core.config import load_config

    return load_config(test_config_path)


@pytest.fixture
def tiers(test_config, s3_credentials, tmp_path: Path) -> dict[str, object]:
    """Object, PFS and NVMe tiers rooted at fresh locations for this test."""
    sub = f"t-{uuid.uuid4().hex[:8]}"
    from dataclasses import replace

    from pipelines.storage.tier import Tier

    out = {}
    for name in ("object", "pfs", "nvme"):
        cfg = test_config.tier(name)
        if cfg.is_object:
            cfg = replace(cfg, url=f"{cfg.url.rstrip('/')}/{sub}/")
            out[name] = Tier(cfg, s3_credentials[0].storage_options())
        else:
            cfg = replace(cfg, url=f"file://{tmp_path / name}")
            out[name] = Tier(cfg)
    # The same tiers as a config file, for subprocesses (the CLI) that must see them.
    bucket, _, prefix = out["object"].config.url.removeprefix("s3://").strip("/").partition("/")
    (tmp_path / "tiers.toml").write_text(
        TIER_CONFIG_TEMPLATE.format(bucket=bucket, prefix=prefix, conn_id=TEST_CONN_ID, root=tmp_path)
    )
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[object]:
    """Mount real small file systems (tmpfs) to fill: ``tmpfs("6m")`` returns the mount point.

    Mounting needs root: without it the test is skipped. Every mount is unmounted at the end.
    """
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], check=False)


@pytest.fixture
def neighbour() -> Iterator[object]:
    """Another tenant of a disk: ``neighbour(watched, path)`` starts writing ``path`` once a file appears
    under ``watched`` and stops when the disk is full (a real fault: ENOSPC for whoever writes next).
    Returns the writing thread: join it before freeing the space.
    """
    import threading
    import time

    threads: list[threading.Thread] = []

    def start(watched: Path, path: Path) -> threading.Thread:
        def fill() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                watched.exists() and any(p.is_file() for p in watched.rglob("*"))
            ):
                time.sleep(0.001)
            try:
                with open(path, "wb") as fh:  # closing flushes too, and may meet the full disk
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
            except OSError:
                pass  # ENOSPC: the disk is full, as it was meant to be

        threads.append(threading.Thread(target=fill))
        threads[-1].start()
        return threads[-1]

    try:
        yield start
    finally:
        for thread in threads:
            thread.join()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated, empty SQLite Airflow metadata DB in the session's ``AIRFLOW_HOME``."""
    from airflow.utils import db

    db.resetdb()


TIER_CONFIG_TEMPLATE = """
[[tier]]
name = "object"
kind = "object"
url = "s3://{bucket}/{prefix}"
conn_id = "{conn_id}"
capacity = "10 GB"
[tier.bandwidth]
read = "300 MB/s"
write = "100 MB/s"
latency = "2 ms"
metadata_ops = "2000/s"
max_streams = 32

[[tier]]
name = "pfs"
kind = "pfs"
url = "file://{root}/pfs"
create = true
capacity = "5 GB"
[tier.bandwidth]
read = "850 MB/s"
write = "800 MB/s"
latency = "0.2 ms"
metadata_ops = "20000/s"

[[tier]]
name = "nvme"
kind = "nvme"
url = "file://{root}/nvme"
create = true
capacity = "1 GB"
[tier.bandwidth]
read = "850 MB/s"
write = "800 MB/s"
latency = "0.1 ms"
metadata_ops = "50000/s"
"""


_KINDS = {"unit", "integration", "e2e", "faults"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test that is not marked unit, integration or e2e."""
    unmarked = [item.nodeid for item in items if not _KINDS & {m.name for m in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"tests without a unit/integration/e2e/faults marker: {', '.join(unmarked)}")
