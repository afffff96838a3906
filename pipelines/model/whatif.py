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
    predict_hop,
)
from pipelines.model.codecs import CodecSample, choose_compression

__all__ = ["Cluster", "Costs", "feed", "parse_demand", "plan_cluster"]


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
    """Prices and energy.

    Dollars per GB moved out of object storage and per 1,000 requests; joules per GB read or
    written on each tier; the power the compute nodes draw while they wait for the data (for a GPU
    node this term usually dominates), and the power of a node's CPU while it compresses.
    """

    price_per_gb: float = 0.0
    price_per_1000_requests: float = 0.0004
    joules_per_gb: tuple[tuple[str, float], ...] = (("object", 10.0), ("pfs", 4.0), ("nvme", 1.0))
    idle_watts_per_node: float = 0.0
    compress_watts_per_node: float = 100.0


def _scaled(tier: TierConfig, aggregate: float | None, streams_factor: int) -> TierConfig:
    bw = tier.bandwidth
    if aggregate is not None:
        stream_read = min(bw.stream_read_bps, aggregate)
        stream_write = min(bw.stream_write_bps, aggregate)
        bw = replace(
            bw, read_bps=aggregate, write_bps=aggregate, stream_read_bps=stream_read, stream_write_bps=stream_write
        )
    per_node = streams_factor if tier.kind == "nvme" else 1  # node-local tiers add their operations up
    bw = replace(
        bw,
        max_streams=bw.max_streams * streams_factor,
        metadata_ops=bw.metadata_ops * per_node,
        write_ops=bw.write_ops * per_node if bw.write_ops is not None else None,
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
                "rate": bw.ops(direction),
                "unit": "op/s",
                "seconds": ops / bw.ops(direction),
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
    deadline_s: float | None = None,
    optimize: str | None = None,
) -> dict[str, Any]:
    """Plan staging ``dataset_bytes`` in ``objects`` equal objects through the cluster; JSON-safe result.

    With ``deadline_s`` each hop is sized to finish in time (the fewest streams that do), and the
    result says whether the staging meets it and, if not, which hop to widen and what would do it.
    With ``optimize`` (``cost`` or ``energy``) and measured ``codecs``, the alternatives (raw or
    each zstd level) are listed and the cheapest that meets the deadline is chosen.
    """
    if dataset_bytes <= 0 or objects <= 0 or cluster.nodes <= 0:
        raise ValueError("dataset size, object count and node count must be positive")
    if optimize not in (None, "cost", "energy"):
        raise ValueError(f"optimize must be 'cost' or 'energy' (got {optimize!r})")
    if deadline_s is not None and deadline_s <= 0:
        raise ValueError(f"the deadline must be in the future (got {deadline_s} s)")
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
            tiers[src],
            tiers[dst],
            work,
            max_map_length=max_map_length,
            memory_budget=DEFAULT_MEMORY_BUDGET * nodes,
            deadline_s=deadline_s,
        )
        requests = _requests(tiers[src], tiers[dst], work, plan.part_size)
        per_node_bps = cluster.nvme_bps_per_node or base["nvme"][0].bandwidth.write_bps
        limits = _limits(tiers[src], tiers[dst], work, nodes, per_node_bps)
        gb = work.bytes / 1e9
        cost = _cost(tiers[src], tiers[dst], work, plan.part_size, costs)
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
                "meets_deadline": plan.meets_deadline,
                "advice": list(plan.advice),
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
    pipelined = max(times) + (sum(times) - max(times)) / shards
    idle_kWh = nodes * costs.idle_watts_per_node * pipelined / 3.6e6
    extra: dict[str, Any] = {}
    if deadline_s is not None:
        late = [h for h in hops if not h["meets_deadline"]]
        extra["deadline"] = {
            "seconds": deadline_s,
            "meets": pipelined <= deadline_s,
            "spare_s": deadline_s - pipelined,
            "widen": [h["hop"] for h in late],
            "advice": {h["hop"]: h["advice"] for h in late},
        }
    if optimize is not None:
        extra["optimize"] = _alternatives(tiers, first, second, hops, costs, codecs, nodes, deadline_s, optimize)
    return extra | {
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
        "pipelined_s": pipelined,
        "bottleneck": max(hops, key=lambda h: h["predicted_s"])["bottleneck"],
        "cost": round(sum(h["cost"] for h in hops), 4),
        "energy_kWh": round(sum(h["energy_kWh"] for h in hops) + idle_kWh, 6),
        "idle_energy_kWh": round(idle_kWh, 6),
        "energy_J_per_GB": dict(joules),
        "idle_watts_per_node": costs.idle_watts_per_node,
    }


def _alternatives(
    tiers: dict[str, TierConfig],
    first: Workload,
    second: Workload,
    hops: list[dict[str, Any]],
    costs: Costs,
    codecs: Sequence[CodecSample],
    nodes: int,
    deadline_s: float | None,
    optimize: str,
) -> dict[str, Any]:
    """Raw and each measured zstd level: time, dollars and kWh; the cheapest that meets the deadline is chosen.

    Compressed shards stay compressed on every tier (they are what training reads), so both hops
    move ``1 / ratio`` of the bytes; compressing takes the nodes' CPUs first, at the measured speed.
    """
    joules = dict(costs.joules_per_gb)
    options: list[dict[str, Any]] = []
    for codec in (None, *codecs):
        ratio = codec.ratio if codec else 1.0
        compress_s = first.bytes / (codec.compress_bps * nodes) if codec else 0.0
        times, cost, kwh = [], 0.0, 0.0
        for (src, dst), work, hop in ((("object", "pfs"), first, hops[0]), (("pfs", "nvme"), second, hops[1])):
            smaller = work.compressed(ratio)
            seconds = predict_hop(tiers[src], tiers[dst], smaller, hop["concurrency"], hop["part_size"]).seconds
            times.append(seconds)
            cost += _cost(tiers[src], tiers[dst], smaller, hop["part_size"], costs)
            kwh += smaller.bytes / 1e9 * (joules.get(src, 0.0) + joules.get(dst, 0.0)) / 3.6e6
        shards = max(h["shards"] for h in hops)
        total = compress_s + max(times) + (sum(times) - max(times)) / shards
        kwh += (nodes * costs.compress_watts_per_node * compress_s + nodes * costs.idle_watts_per_node * total) / 3.6e6
        options.append(
            {
                "compression": f"zstd level {codec.level} (ratio {codec.ratio:.2f})" if codec else "raw",
                "level": codec.level if codec else None,
                "seconds": total,
                "cost": round(cost, 4),
                "energy_kWh": round(kwh, 6),
                "meets_deadline": None if deadline_s is None else total <= deadline_s,
            }
        )
    key = "cost" if optimize == "cost" else "energy_kWh"
    eligible = [o for o in options if o["meets_deadline"] is not False]
    chosen = min(eligible, key=lambda o: (o[key], o["seconds"])) if eligible else None
    return {
        "by": optimize,
        "chosen": chosen,
        "alternatives": options,
        "reason": (
            f"{chosen['compression']}: the {'cheapest' if optimize == 'cost' else 'least energy'} of "
            f"{len(eligible)} plan(s){' that meet the deadline' if deadline_s is not None else ''}"
            if chosen
            else "no alternative meets the deadline"
        )
        + ("" if codecs else " (no zstd level measured: give a sample of the data to weigh compression)"),
    }


def _requests(src: TierConfig, dst: TierConfig, work: Workload, part_size: int) -> int:
    """Requests a hop makes: parts to or from an object store, else one per object."""
    return work.requests(part_size) if src.is_object or dst.is_object else work.objects


def _cost(src: TierConfig, dst: TierConfig, work: Workload, part_size: int, costs: Costs) -> float:
    """Dollars of a hop: the GB read out of object storage and its requests."""
    gb_out = work.bytes / 1e9 if src.is_object else 0.0
    return gb_out * costs.price_per_gb + _requests(src, dst, work, part_size) / 1000 * costs.price_per_1000_requests


def _deliverable(tier: TierConfig, object_size: int) -> tuple[float, str]:
    """Bytes/s a tier can read out to readers of ``object_size``-byte objects, and the resource that binds.

    At the streams it would run with (its ``max_streams``): the aggregate bandwidth, the streams
    (each pays the request latency per object), or the request/metadata rate, whichever is lowest.
    """
    bw = tier.bandwidth
    learnt = bw.read_correction
    per_stream = object_size / (bw.latency("read") + object_size / bw.stream_read_bps)
    limits = {
        "bandwidth": bw.read_bps,
        "streams": bw.max_streams * per_stream,
        "requests" if tier.is_object else "metadata": bw.metadata_ops
        / META_OPS_PER_OBJECT.get(tier.kind, 1.0)
        * object_size,
    }
    binds = min(limits, key=lambda k: limits[k])
    return limits[binds] * learnt, binds


def feed(config: TierflowConfig, cluster: Cluster, demand_bps_per_node: float, object_size: int) -> dict[str, Any]:
    """Whether each tier can feed ``cluster.nodes`` readers of ``demand_bps_per_node`` each (JSON-safe).

    Shared tiers (object store, PFS) serve every node from one aggregate; a node-local tier
    (NVMe) serves its own node. Per tier: what it can deliver, what is needed, the headroom
    (deliverable ÷ needed) and the resource that binds.
    """
    if demand_bps_per_node <= 0 or object_size <= 0 or cluster.nodes <= 0:
        raise ValueError("the demand, the object size and the node count must be positive")
    base = {kind: config.of_kind(kind) for kind in ("object", "pfs", "nvme")}
    missing = [k for k, v in base.items() if not v]
    if missing:
        raise ValueError(f"{config.source}: the config declares no {', '.join(missing)} tier to take a profile from")
    scaled = _cluster_tiers({k: v[0] for k, v in base.items()}, cluster)
    rows = []
    for kind in ("object", "pfs", "nvme"):
        per_node = kind == "nvme"
        tier = base[kind][0] if per_node else scaled[kind]
        if per_node and cluster.nvme_bps_per_node:
            tier = _scaled(tier, cluster.nvme_bps_per_node, 1)
        deliver, binds = _deliverable(tier, object_size)
        need = demand_bps_per_node if per_node else demand_bps_per_node * cluster.nodes
        rows.append(
            {
                "tier": tier.name,
                "scope": "per node" if per_node else "shared",
                "deliver_Bps": deliver,
                "need_Bps": need,
                "headroom": deliver / need,
                "binds": binds,
                "feeds": deliver >= need,
            }
        )
    short = [r for r in rows if not r["feeds"]]
    return {
        "nodes": cluster.nodes,
        "demand_Bps_per_node": demand_bps_per_node,
        "object_size": object_size,
        "tiers": rows,
        "feeds_from": [r["tier"] for r in rows if r["feeds"]],
        "verdict": (
            "every tier can feed it"
            if not short
            else "; ".join(f"{r['tier']} falls short ({r['headroom']:.3g}x, bound by {r['binds']})" for r in short)
        ),
    }


def parse_demand(text: str) -> tuple[float, int | None]:
    """What a node reads: ``'2 GB/s'``, or ``'3000/s x 1 MiB'`` (samples/s x sample size).

    Returns bytes per second and the sample size when one is given.

    Raises:
        UnitError: Not a bandwidth nor a rate times a size.
    """
    from pipelines.core.units import parse_bandwidth, parse_rate, parse_size

    lowered = text.replace("X", "x").replace("×", "x")
    if "x" in lowered:
        rate, size = (part.strip() for part in lowered.split("x", 1))
        sample = parse_size(size)
        return parse_rate(rate) * sample, sample
    return parse_bandwidth(text), None
