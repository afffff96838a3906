"""The profile store under concurrency: eight processes fold observations at once, a reader watches.

Each fold multiplies the bottleneck tier's write bandwidths by ``1 - alpha + alpha * ratio``; the
factors commute, so whatever the interleaving, the final profile must equal the configured one
times every factor. A lost update (two folds reading the same old profile) makes it differ; a
half-written file makes the reader fail.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path

import pytest

from pipelines.core.config import load_config
from pipelines.model.bandwidth import Bottleneck
from pipelines.model.calibration import load_profile
from pipelines.model.observations import ALPHA, MAX_STEP, MIN_BYTES, Observation, fold

pytestmark = pytest.mark.unit

WORKERS = 8
FOLDS = 25


def ratios(worker: int) -> list[float]:
    """predicted ÷ achieved of each of a worker's observations (all inside the one-step clamp)."""
    return [0.7 + 0.6 * ((worker * FOLDS + i) % 17) / 16 for i in range(FOLDS)]


def fold_many(config_path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    config = load_config(config_path)
    start.wait()
    for i, ratio in enumerate(ratios(worker)):
        obs = Observation(
            at=float(i),
            dag_id="d",
            task_id=f"t{worker}",
            source="object",
            target="pfs",
            bytes=MIN_BYTES,
            objects=1,
            predicted_s=ratio,
            achieved_s=1.0,
            bottleneck=Bottleneck("pfs", "write", "bandwidth"),
        )
        assert fold(config, obs)


def read_until(config_path: str, stop: multiprocessing.synchronize.Event, seen: multiprocessing.Queue) -> None:
    config = load_config(config_path)
    reads = errors = 0
    while not stop.is_set():
        try:
            load_profile(config, "pfs")
            reads += 1
        except ValueError:
            errors += 1
    seen.put((reads, errors))


def test_eight_processes_folding_at_once_lose_no_update_and_never_expose_a_partial_profile(
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
    configured = load_config(str(config_path)).tier("pfs").bandwidth
    ctx = multiprocessing.get_context("spawn")
    start, stop, seen = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=read_until, args=(str(config_path), stop, seen))
    reader.start()
    workers = [ctx.Process(target=fold_many, args=(str(config_path), w, start)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(120)
    stop.set()
    reads, errors = seen.get(timeout=60)
    reader.join(30)
    assert [p.exitcode for p in workers] == [0] * WORKERS
    assert errors == 0 and reads > 0, f"{errors} unreadable profiles in {reads} reads"
    expected = configured.write_bps * math.prod(
        1 - ALPHA + ALPHA * min(MAX_STEP, max(1 / MAX_STEP, r)) for w in range(WORKERS) for r in ratios(w)
    )
    stored = load_profile(load_config(str(config_path)), "pfs")
    assert stored is not None
    assert stored[0].write_bps == pytest.approx(expected, rel=1e-9), "an update was lost"
    assert stored[0].read_bps == configured.read_bps  # only the bottleneck's direction moves
    profiles = tmp_path / "state" / "profiles"
    assert not [n for n in os.listdir(profiles) if "tierflow-tmp" in n or n.endswith(".tmp")]
