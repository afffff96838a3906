"""The benchmark runner: lists the benchmarks and writes medians and ratios as JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.unit


def test_list_and_run_one(tmp_path: Path) -> None:
    env = os.environ | {"TIERFLOW_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "pipelines.cli", "bench"]
    listed = subprocess.run([*cli, "--list"], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    assert {line.split()[0] for line in listed.splitlines()} == {
        "checkpoint_promotion",
        "checksum_speed",
        "compression_speed",
        "dag_parse",
        "model_fidelity",
        "s3_transfer",
        "scale",
        "soak",
        "staging_copy",
        "validation_memory",
        "validation_speed",
    }
    assert "(only when named)" in next(line for line in listed.splitlines() if line.startswith("soak "))
    ran = subprocess.run(
        [*cli, "checksum_speed", "--runs", "1"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "ratio" in ran.stdout
    (result,) = (tmp_path / "bench-results").glob("bench-*.json")
    data = json.loads(result.read_text())["benchmarks"]["checksum_speed"][0]
    assert data["reference_tool"] == "md5" and len(data["ours"]) == len(data["reference"]) == 1
    # The numbers are measurements and the ratio is theirs: MB/s of each side, higher is better.
    ours, ref = statistics.median(data["ours"]), statistics.median(data["reference"])
    assert 0 < ours < 1e6 and 0 < ref < 1e6
    assert data["ratio"] == pytest.approx(ours / ref, rel=1e-3)
    assert f"{data['ratio']:.2f}" in ran.stdout
    unknown = subprocess.run([*cli, "nope"], cwd=REPO, env=env, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown benchmark" in unknown.stderr
