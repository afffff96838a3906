"""DAG file parse time: each Tierflow DAG file against a minimal DAG file, in fresh interpreters.

The DAG processor pays Airflow's own import once; what a DAG file adds beyond it is what this
measures: each run starts a fresh interpreter that imports ``airflow.sdk`` first, then times the
execution of the file. The reference is a DAG with one task and no Tierflow import, timed the same
way in the same run (rotated order).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison

DESCRIPTION = "DAG file parse time beyond Airflow's import, vs a one-task DAG file, seconds"
REPO = Path(__file__).resolve().parents[1]
MINIMAL = """
from airflow.sdk import dag, task

@dag(schedule=None)
def minimal():
    @task
    def one():
        return 1
    one()

minimal()
"""
PROBE = """
import importlib.util, sys, time
import airflow.sdk
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("parse_probe", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(time.perf_counter() - start)
"""


def _parse_seconds(path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(ctx: BenchContext) -> list[Comparison]:
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp) / "minimal.py"
        minimal.write_text(MINIMAL)
        results = []
        for path in sorted((REPO / "dags").glob("*.py")):
            ours, ref = [], []
            for i in range(ctx.runs):
                pair = [(ours, path), (ref, minimal)]
                for bucket, file in pair if i % 2 == 0 else reversed(pair):
                    bucket.append(_parse_seconds(file))
            results.append(Comparison(f"parse {path.name}", "s", ours, ref, "one-task DAG", higher_is_better=False))
        return results
