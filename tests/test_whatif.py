"""Offline cluster what-if (`tierflow plan`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.core.config import load_config
from pipelines.model.whatif import Cluster, Costs, plan_cluster

pytestmark = pytest.mark.unit


def test_cluster_plan_scales_and_names_the_bottleneck() -> None:
    cfg = load_config()
    small = plan_cluster(
        cfg, 200 * 10**12, 800_000, Cluster(nodes=512, object_bps=100e9, pfs_bps=1e12, nvme_bps_per_node=7e9)
    )
    assert [h["hop"] for h in small["hops"]] == ["object -> pfs", "pfs -> nvme"]
    first = small["hops"][0]
    # 200 TB through a 100 GB/s object store cannot take less than 2,000 s.
    assert first["predicted_s"] >= 200e12 / 100e9
    assert first["bottleneck"].endswith("object read")
    assert small["sequential_s"] >= small["pipelined_s"] >= max(h["predicted_s"] for h in small["hops"])
    assert first["requests"] >= 800_000 and first["concurrency"] > 1
    # A faster object store moves the bottleneck on or shortens the plan.
    fast = plan_cluster(
        cfg, 200 * 10**12, 800_000, Cluster(nodes=512, object_bps=1e12, pfs_bps=1e12, nvme_bps_per_node=7e9)
    )
    assert fast["sequential_s"] < small["sequential_s"]


def test_replication_multiplies_the_second_hop_and_costs_follow() -> None:
    cfg = load_config()
    costs = Costs(price_per_gb=0.01, price_per_1000_requests=0.0004)
    sharded = plan_cluster(cfg, 10**12, 1000, Cluster(nodes=8), costs)
    replicated = plan_cluster(cfg, 10**12, 1000, Cluster(nodes=8, replicate=True), costs)
    assert replicated["hops"][1]["bytes"] == 8 * sharded["hops"][1]["bytes"]
    assert sharded["hops"][0]["cost"] == pytest.approx(1000 * 0.01 + sharded["hops"][0]["requests"] / 1000 * 0.0004)
    assert replicated["energy_kWh"] > sharded["energy_kWh"] > 0


def test_energy_is_reported_in_kilowatt_hours_with_its_coefficients() -> None:
    """1 TB object → PFS at 10 + 4 J/GB is 14,000 J: 0.0039 kWh (it was once reported as 14,000 "kJ")."""
    plan = plan_cluster(load_config(), 10**12, 1000, Cluster(nodes=1))
    assert plan["hops"][0]["energy_kWh"] == pytest.approx(1000 * (10.0 + 4.0) / 3.6e6, abs=1e-6)
    assert plan["energy_J_per_GB"] == {"object": 10.0, "pfs": 4.0, "nvme": 1.0}


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        plan_cluster(load_config(), 0, 1, Cluster())


def test_cli_table_and_json() -> None:
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "plan",
        "--dataset-size",
        "200 TB",
        "--nodes",
        "512",
        "--pfs-bw",
        "1 TB/s",
        "--object-bw",
        "100 GB/s",
    ]
    table = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "object -> pfs" in table and "bottleneck" in table and "kWh" in table
    data = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True).stdout)
    assert data["nodes"] == 512 and len(data["hops"]) == 2
    bad = subprocess.run([*cmd[:4], "--dataset-size", "10 GBps"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown size unit 'GBps'" in bad.stderr


def test_compression_is_measured_on_a_sample_and_chosen_only_when_it_pays() -> None:
    import os

    from pipelines.datasets.compression import measure_levels

    text = b"".join(b'{"id": %d, "text": "the model reads tokens from the cache tier"}\n' % i for i in range(50_000))
    measured = measure_levels(text, levels=(1, 3))
    assert [m.level for m in measured] == [1, 3] and all(m.ratio > 3 and m.compress_bps > 0 for m in measured)
    noise = measure_levels(os.urandom(2**20), levels=(1,))[0]
    assert noise.ratio < 1.01
    cfg = load_config()
    slow = plan_cluster(cfg, 10**13, 40_000, Cluster(nodes=64, object_bps=5e9, pfs_bps=1e11), codecs=measured)
    assert slow["hops"][0]["compression"]["level"] in (1, 3)
    fast = plan_cluster(cfg, 10**13, 40_000, Cluster(nodes=64, object_bps=5e11, pfs_bps=1e11), codecs=[noise])
    assert fast["hops"][0]["compression"]["level"] is None
    assert fast["hops"][0]["compression"]["reason"].startswith("raw:")
    with pytest.raises(ValueError, match="empty sample"):
        measure_levels(b"")


def test_at_512_nodes_each_hop_names_its_shared_and_per_node_limits() -> None:
    cfg = load_config()
    nvme_per_node = cfg.primary("nvme").bandwidth.write_bps
    slow_pfs = plan_cluster(cfg, 200 * 10**12, 10**8, Cluster(nodes=512, pfs_bps=1e9))
    hop2 = slow_pfs["hops"][1]
    scopes = {(lim["scope"], lim["tier"], lim["what"]) for lim in hop2["limits"]}
    assert scopes == {("shared", "pfs", "read"), ("shared", "pfs", "metadata"), ("per node", "nvme", "write")}
    node = hop2["per_node"]
    assert node["bytes"] == pytest.approx(200e12 / 512) and node["objects"] == pytest.approx(10**8 / 512)
    # One PFS of 1 GB/s shared by 512 nodes: each gets ~2 MB/s, far below what its own NVMe takes.
    assert node["limited_by"] == "shared pfs read"
    assert node["Bps"] == pytest.approx(200e12 / 512 / hop2["predicted_s"]) and node["Bps"] < 3e6
    own = next(lim for lim in hop2["limits"] if lim["scope"] == "per node")
    assert own["rate"] == nvme_per_node and own["seconds"] == pytest.approx(200e12 / 512 / nvme_per_node)
    assert hop2["predicted_s"] >= max(lim["seconds"] for lim in hop2["limits"] if lim["what"] == "read")
    assert slow_pfs["hops"][0]["per_node"] is None  # object → PFS touches no node-local tier
    # A PFS a thousand times faster and slow NVMe: the nodes' own disks bind.
    slow_nvme = plan_cluster(cfg, 200 * 10**12, 10**6, Cluster(nodes=512, pfs_bps=1e13, nvme_bps_per_node=1e8))
    assert slow_nvme["hops"][1]["per_node"]["limited_by"] == "per node nvme write"
