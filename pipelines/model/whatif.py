"""Offline what-if planning at cluster scale: ``tierflow plan``.

Takes the configured tiers' profiles as the per-stream behaviour, scales the aggregate numbers to
a cluster (an object store of X GB/s, a PFS of Y TB/s, N nodes each with its own NVMe), and plans
staging a dataset object → PFS → NVMe: per hop the planner's choices, predicted time, bottleneck,
request count, cost and energy; and the whole staging, sequential and pipelined.

Each hop also names its limits by scope: a *shared* tier (the object store, the PFS) serves every
node at once from one aggregate, while a *per-node* tier (each node's NVMe) scales with the nodes;
the slowest limit binds, and the per-node share says what each node receives of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipelines.core.config import TierConfig, TierflowConfig
from pipelines.model.bandwidth import (
    DEFAULT_MEMORY_BUDGET,
    META_OPS_PER_OBJECT,
    HopPlan,
    Workload,
    plan_hop,
)
from pipelines.model.codecs import CodecSample, choose_compression

__all__ = ["Cluster", "Costs", "plan_cluster"]


@dataclass(frozen=True)
class Cluster:
    """The cluster to plan for. Bandwidths in bytes/s; ``None`` keeps the configured tier's value."""

    nodes: int = 1
    object_bps: float | None = None
    pfs_bps: float | None = None
    nvme_bps_per_node: float | None = None
    replicate: bool = False


@dataclass(frozen=True)
class Costs:
    """Prices and energy: per GB moved out of object storage, per 1,000 requests, joules per GB per tier."""

    price_per_gb: float = 0.0
    price_per_1000_requests: float = 0.0004
    joules_per_gb: tuple[tuple[str, float], ...] = (("object", 10.0), ("pfs", 4.0), ("nvme", 1.0))


def _scaled(tier: TierConfig, aggregate: float | None, streams_factor: int) -> TierConfig:
    bw = tier.bandwidth
    if aggregate is not None:
        stream_read = min(bw.stream_read_bps, aggregate)
        stream_write = min(bw.stream_write_bps, aggregate)
        bw = replace(
            bw, read_bps=aggregate, write_bps=aggregate, stream_read_bps=stream_read, stream_write_bps=stream_write
        )
    bw = replace(
        bw,
        max_streams=bw.max_streams * streams_factor,
        metadata_ops=bw.metadata_ops * (streams_factor if tier.kind == "nvme" else 1),
    )
    return replace(tier, bandwidth=bw)


def _cluster_tiers(base: dict[str, TierConfig], cluster: Cluster) -> dict[str, TierConfig]:
    """The configured tiers scaled to the cluster: aggregates given, else the profile's × nodes for NVMe."""
    nodes = cluster.nodes
    nvme = cluster.nvme_bps_per_node * nodes if cluster.nvme_bps_per_node else base["nvme"].bandwidth.write_bps * nodes
    return {
        "object": _scaled(base["object"], cluster.object_bps, nodes),
        "pfs": _scaled(base["pfs"], cluster.pfs_bps, nodes),
        "nvme": _scaled(base["nvme"], nvme, nodes),
    }


def _limits(src: TierConfig, dst: TierConfig, work: Workload, nodes: int, per_node_bps: float) -> list[dict[str, Any]]:
    """What bounds one hop, by scope: shared tiers by their aggregate, node-local ones per node."""
    out: list[dict[str, Any]] = []
    for tier, direction in ((src, "read"), (dst, "write")):
        if tier.kind == "nvme":  # one NVMe per node, each taking its share of the bytes
            share = work.bytes / nodes
            out.append(
                {
                    "scope": "per node",
                    "tier": tier.name,
                    "what": direction,
                    "rate": per_node_bps,
                    "unit": "B/s",
                    "seconds": share / per_node_bps,
                }
            )
            continue
        bw = tier.bandwidth
        rate = bw.read_bps if direction == "read" else bw.write_bps
        out.append(
            {
                "scope": "shared",
                "tier": tier.name,
                "what": direction,
                "rate": rate,
                "unit": "B/s",
                "seconds": work.bytes / rate,
            }
        )
        ops = work.objects * META_OPS_PER_OBJECT.get(tier.kind, 1.0)
        out.append(
            {
                "scope": "shared",
                "tier": tier.name,
                "what": "requests" if tier.is_object else "metadata",
                "rate": bw.metadata_ops,
                "unit": "op/s",
                "seconds": ops / bw.metadata_ops,
            }
        )
    return out


def _per_node(work: Workload, nodes: int, hop_s: float, limits: list[dict[str, Any]]) -> dict[str, Any]:
    """What each node receives of a hop: its bytes and objects, its share of the rate, alone vs shared."""
    binding = max(limits, key=lambda lim: lim["seconds"])
    own = [lim for lim in limits if lim["scope"] == "per node"]
    alone_s = max((lim["seconds"] for lim in own), default=0.0)
    return {
        "bytes": work.bytes / nodes,
        "objects": work.objects / nodes,
        "Bps": work.bytes / nodes / hop_s if hop_s > 0 else 0.0,
        "own_tier_s": alone_s,
        "limited_by": f"{binding['scope']} {binding['tier']} {binding['what']}",
    }


def plan_cluster(
    config: TierflowConfig,
    dataset_bytes: int,
    objects: int,
    cluster: Cluster,
    costs: Costs = Costs(),
    max_map_length: int = 1024,
    codecs: Sequence[CodecSample] = (),
) -> dict[str, Any]:
    """Plan staging ``dataset_bytes`` in ``objects`` equal objects through the cluster; JSON-safe result."""
    if dataset_bytes <= 0 or objects <= 0 or cluster.nodes <= 0:
        raise ValueError("dataset size, object count and node count must be positive")
    base = {kind: config.of_kind(kind) for kind in ("object", "pfs", "nvme")}
    missing = [k for k, v in base.items() if not v]
    if missing:
        raise ValueError(f"{config.source}: the config declares no {', '.join(missing)} tier to take a profile from")
    nodes = cluster.nodes
    tiers = _cluster_tiers({k: v[0] for k, v in base.items()}, cluster)
    size = max(1, math.ceil(dataset_bytes / objects))
    first = Workload.uniform(objects, size)
    second = Workload.uniform(objects * nodes, size) if cluster.replicate else first
    joules = dict(costs.joules_per_gb)
    hops: list[dict[str, Any]] = []
    for (src, dst), work in ((("object", "pfs"), first), (("pfs", "nvme"), second)):
        # Streams span every node, and so does the memory their parts use.
        plan: HopPlan = plan_hop(
            tiers[src], tiers[dst], work, max_map_length=max_map_length, memory_budget=DEFAULT_MEMORY_BUDGET * nodes
        )
        requests = work.requests(plan.part_size) if tiers[src].is_object or tiers[dst].is_object else work.objects
        per_node_bps = cluster.nvme_bps_per_node or base["nvme"][0].bandwidth.write_bps
        limits = _limits(tiers[src], tiers[dst], work, nodes, per_node_bps)
        gb = work.bytes / 1e9
        cost = (gb * costs.price_per_gb if src == "object" else 0.0) + requests / 1000 * costs.price_per_1000_requests
        hops.append(
            {
                "hop": f"{tiers[src].name} -> {tiers[dst].name}",
                "bytes": work.bytes,
                "objects": work.objects,
                "requests": requests,
                "concurrency": plan.concurrency,
                "part_size": plan.part_size,
                "shards": plan.shards,
                "predicted_s": plan.predicted_s,
                "throughput_Bps": plan.predicted.throughput_bps,
                "bottleneck": str(plan.predicted.bottleneck),
                "cost": round(cost, 4),
                # J/GB read at the source plus J/GB written at the destination, × GB, in kWh (3.6 MJ).
                "energy_kWh": round(gb * (joules.get(src, 0.0) + joules.get(dst, 0.0)) / 3.6e6, 6),
                "reasons": plan.reasons,
                "limits": limits,
                "per_node": _per_node(work, nodes, plan.predicted_s, limits) if dst == "nvme" else None,
            }
        )
    if codecs:  # compress before the first hop? (codec speed scales with the nodes doing it)
        scaled = [replace(c, compress_bps=c.compress_bps * nodes) for c in codecs]
        choice = choose_compression(tiers["object"], tiers["pfs"], first, hops[0]["concurrency"], scaled)
        hops[0]["compression"] = {
            "level": choice.level,
            "reason": choice.reason,
            "raw_s": choice.raw_s,
            "compressed_s": choice.compressed_s,
        }
    times = [h["predicted_s"] for h in hops]
    shards = max(h["shards"] for h in hops)
    return {
        "dataset_bytes": dataset_bytes,
        "objects": objects,
        "nodes": nodes,
        "replicate": cluster.replicate,
        "tiers": {
            k: {
                "read_Bps": t.bandwidth.read_bps,
                "write_Bps": t.bandwidth.write_bps,
                "max_streams": t.bandwidth.max_streams,
            }
            for k, t in tiers.items()
        },
        "hops": hops,
        "sequential_s": sum(times),
        "pipelined_s": max(times) + (sum(times) - max(times)) / shards,
        "bottleneck": max(hops, key=lambda h: h["predicted_s"])["bottleneck"],
        "cost": round(sum(h["cost"] for h in hops), 4),
        "energy_kWh": round(sum(h["energy_kWh"] for h in hops), 6),
        "energy_J_per_GB": dict(joules),
    }
