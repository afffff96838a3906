"""`tierflow demo` end to end in a subprocess: what `make demo` runs, on its own port and state directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.config import DEFAULT_CONFIG, load_config
from pipelines.devtools.s3server import free_port
from pipelines.storage.tier import open_tier

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

#: The same tiers under other names: DAGs, pools, retention and the planner find tiers by role.
RENAMED = {"object": "s3main", "pfs": "lustre", "nvme": "localssd"}


def renamed(text: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        text = text.replace(f'name = "{old}"', f'name = "{new}"')
    return text


@pytest.mark.parametrize("names", [pytest.param({}, id="default-names"), pytest.param(RENAMED, id="renamed-tiers")])
def test_demo_runs_every_dag_green(tmp_path: Path, names: dict[str, str]) -> None:
    name = {kind: names.get(kind, kind) for kind in ("object", "pfs", "nvme")}
    config = tmp_path / "tiers.toml"
    config.write_text(renamed(DEFAULT_CONFIG.read_text(), names).replace("port = 8533", f"port = {free_port()}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env |= {"TIERFLOW_CONFIG": str(config), "TIERFLOW_HOME": str(tmp_path / "state")}
    tierflow = [sys.executable, "-m", "pipelines.cli"]
    result = subprocess.run(
        [*tierflow, "demo", "--keep-server"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        dags = sorted(p.stem for p in (REPO / "dags").glob("*.py"))
        green = re.search(r"(\d+)/(\d+) DAGs green", result.stdout)
        assert green and green.group(1) == green.group(2) == str(len(dags)), result.stdout
        for dag_id in dags:
            assert re.search(rf"DAG {dag_id}\s+success", result.stdout), result.stdout
        # What the DAGs did, as the summary reports it: a validated prepared version, checkpoints
        # promoted everywhere and pruned on NVMe to the default two latest.
        assert re.search(r"prepared: synthetic/v2 prepared from raw/synthetic/: \d+ shards?, 18600 rows", result.stdout)
        assert "quarantined 0" in result.stdout
        assert re.search(rf"on {name['object']}\s*: steps \[100, 200, 300\]", result.stdout), result.stdout
        assert re.search(rf"on {name['nvme']}\s*: steps \[200, 300\]", result.stdout), result.stdout
        # The corpus is on the object tier, as the summary says.
        os.environ["TIERFLOW_HOME"], saved = str(tmp_path / "state"), os.environ["TIERFLOW_HOME"]
        try:
            cfg = load_config(config)
            listed = open_tier(cfg, name["object"]).list("raw/synthetic")
        finally:
            os.environ["TIERFLOW_HOME"] = saved
        assert len(listed) == 208 and {o.key.split("/")[2] for o in listed} == {"jsonl", "parquet"}
    finally:
        subprocess.run([*tierflow, "s3", "stop"], env=env, check=False, capture_output=True)
