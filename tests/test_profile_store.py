"""The observation log under concurrency: eight processes record transfers at once, a reader plans.

Learning reads the log, never rewrites a profile: whatever the interleaving, every recorded
observation must be in the log whole (a torn line would be lost to learning), the stored profile
must be untouched, and the learnt correction must be the median of the window of the last lines
in the order they landed. A reader computing plans meanwhile must never fail.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
from pathlib import Path

import pytest

from pipelines.core.config import load_config
from pipelines.model.bandwidth import Bottleneck
from pipelines.model.calibration import calibrated, load_profile
from pipelines.model.observations import MIN_BYTES, WINDOW, Observation, record

pytestmark = pytest.mark.unit

WORKERS = 8
RECORDS = 25


def ratios(worker: int) -> list[float]:
    """predicted ÷ achieved of each of a worker's observations."""
    return [0.7 + 0.6 * ((worker * RECORDS + i) % 17) / 16 for i in range(RECORDS)]


def record_many(config_path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    config = load_config(config_path)
    start.wait()
    for i, ratio in enumerate(ratios(worker)):
        record(
            config,
            Observation(
                at=1e9 + i,
                dag_id="d",
                task_id=f"t{worker}-{i}",
                source="object",
                target="pfs",
                bytes=MIN_BYTES,
                objects=1,
                predicted_s=ratio,
                achieved_s=1.0,
                bottleneck=Bottleneck("pfs", "write", "bandwidth"),
            ),
        )


def plan_until(config_path: str, stop: multiprocessing.synchronize.Event, seen: multiprocessing.Queue) -> None:
    config = load_config(config_path)
    reads = errors = 0
    while not stop.is_set():
        try:
            calibrated(config)
            reads += 1
        except ValueError:
            errors += 1
    seen.put((reads, errors))


def test_eight_processes_recording_at_once_lose_no_observation_and_learning_takes_the_latest_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path / "state"))  # this test's state only (children inherit it)
    config_path = tmp_path / "tiers.toml"
    config_path.write_text(
        f"""
[tierflow]
state_dir = "{tmp_path / "state"}"

[[tier]]
name = "pfs"
kind = "pfs"
url = "file://{tmp_path / "pfs"}"
capacity = "1 GB"
[tier.bandwidth]
read = "800 MB/s"
write = "500 MB/s"
latency = "1 ms"
metadata_ops = "1000/s"
max_streams = 8
"""
    )
    configured = load_config(str(config_path))
    ctx = multiprocessing.get_context("spawn")
    start, stop, seen = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=plan_until, args=(str(config_path), stop, seen))
    reader.start()
    workers = [ctx.Process(target=record_many, args=(str(config_path), w, start)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(120)
    stop.set()
    reads, errors = seen.get(timeout=60)
    reader.join(30)
    assert [p.exitcode for p in workers] == [0] * WORKERS
    assert errors == 0 and reads > 0, f"{errors} failed plans in {reads}"
    lines = (tmp_path / "state" / "observations.jsonl").read_text().splitlines()
    landed = [json.loads(line) for line in lines]  # a torn line fails here
    assert sorted(o["task_id"] for o in landed) == sorted(f"t{w}-{i}" for w in range(WORKERS) for i in range(RECORDS))
    expected = statistics.median(o["predicted_s"] / o["achieved_s"] for o in landed[-WINDOW:])
    learnt = calibrated(configured).tier("pfs").bandwidth
    assert learnt.write_correction == pytest.approx(expected)
    assert learnt.read_correction == 1.0  # only the bottleneck's direction learns
    assert load_profile(configured, "pfs") is None, "learning must not write a profile"
