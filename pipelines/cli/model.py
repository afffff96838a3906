"""``tierflow plan``, ``calibrate`` and ``pools``: the bandwidth model from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipelines.cli.common import UsageError, config_from_args, emit, open_named, positive_int, print_table
from pipelines.core.units import format_bandwidth, format_bytes, format_duration

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    plan = sub.add_parser("plan", help="offline what-if: stage a dataset through a cluster of these tiers")
    plan.add_argument("--dataset-size", help="e.g. '200 TB' (required unless --demand is given)")
    plan.add_argument(
        "--demand",
        help="what each node reads while training, e.g. '2 GB/s' or '3000/s x 1 MiB' (samples/s x sample size): "
        "can each tier feed the nodes, and with what headroom",
    )
    plan.add_argument(
        "--accelerators", type=positive_int, help="--demand is per accelerator, this many of them per node"
    )
    plan.add_argument("--objects", type=int, help="object count (default: size / --object-size)")
    plan.add_argument("--object-size", default="256 MiB", help="mean object size if --objects is not given")
    plan.add_argument("--nodes", type=int, default=1, help="compute nodes, each with its own NVMe")
    plan.add_argument("--object-bw", help="object store aggregate bandwidth, e.g. '100 GB/s'")
    plan.add_argument("--pfs-bw", help="PFS aggregate bandwidth, e.g. '1 TB/s'")
    plan.add_argument("--nvme-bw", help="NVMe write bandwidth per node, e.g. '7 GB/s'")
    plan.add_argument("--replicate", action="store_true", help="every node gets the whole dataset (default: shards)")
    plan.add_argument("--price-per-gb", type=float, default=0.0, help="price per GB read from object storage")
    plan.add_argument("--price-per-1000-requests", type=float, default=0.0004, help="price per 1,000 requests")
    plan.add_argument("--joules-per-gb", default="object=10,pfs=4,nvme=1", help="energy per GB per tier")
    plan.add_argument("--sample", help="a local file of the data: zstd levels are measured on it to decide compression")
    plan.add_argument(
        "--deadline", help="finish within this long, e.g. '6h': the fewest streams that do; else what would"
    )
    plan.add_argument(
        "--optimize",
        choices=["cost", "energy"],
        help="among plans that meet the deadline (raw, or each zstd level of --sample), pick the cheapest",
    )
    plan.add_argument(
        "--idle-watts-per-node",
        type=float,
        default=0.0,
        help="power a compute node draws while it waits for the data (e.g. 6000 for an 8-GPU node); counts in energy",
    )
    plan.add_argument(
        "--compress-watts-per-node", type=float, default=100.0, help="power of a node's CPU while it compresses"
    )
    plan.set_defaults(func=cmd_plan)

    cal = sub.add_parser("calibrate", help="measure each tier and store its fitted bandwidth profile")
    cal.add_argument("--tier", action="append", help="tier to calibrate (repeatable; default: all)")
    cal.add_argument("--budget", default="256 MiB", help="bytes to move per tier (default '256 MiB')")
    cal.add_argument("--seconds", type=float, default=60.0, help="time budget per tier (default 60)")
    cal.add_argument(
        "--repeats", type=positive_int, default=3, help="sweeps per tier; each term is their median (default 3)"
    )
    mode = cal.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="measure and say whether the fit agrees with the stored profile; store nothing (exit 1 if not)",
    )
    mode.add_argument(
        "--apply", action="store_true", help="store the fit even where it disagrees (else it is kept as a candidate)"
    )
    cal.set_defaults(func=cmd_calibrate)

    pools = sub.add_parser("pools", help="Airflow pools per tier")
    pools.add_argument("action", choices=["sync"])
    pools.set_defaults(func=cmd_pools)


def cmd_plan(args: argparse.Namespace) -> int:
    """Offline what-if: plan staging a dataset through a cluster of the configured tiers."""
    from pipelines.core.units import UnitError, parse_bandwidth, parse_duration, parse_size
    from pipelines.model.whatif import Cluster, Costs, plan_cluster

    cfg = config_from_args(args)
    if args.demand:
        return _cmd_feed(cfg, args)
    if not args.dataset_size:
        raise UsageError("give --dataset-size (what to stage) or --demand (what the nodes read)")
    try:
        size = parse_size(args.dataset_size)
        objects = args.objects or max(1, round(size / parse_size(args.object_size)))
        cluster = Cluster(
            nodes=args.nodes,
            object_bps=parse_bandwidth(args.object_bw) if args.object_bw else None,
            pfs_bps=parse_bandwidth(args.pfs_bw) if args.pfs_bw else None,
            nvme_bps_per_node=parse_bandwidth(args.nvme_bw) if args.nvme_bw else None,
            replicate=args.replicate,
        )
        energy = tuple((k, float(v)) for k, v in (item.split("=", 1) for item in args.joules_per_gb.split(",")))
        codecs = []
        if args.sample:
            from pipelines.datasets.compression import measure_levels, read_sample

            codecs = measure_levels(read_sample(args.sample))
        costs = Costs(
            args.price_per_gb,
            args.price_per_1000_requests,
            energy,
            idle_watts_per_node=args.idle_watts_per_node,
            compress_watts_per_node=args.compress_watts_per_node,
        )
        deadline = _option(args.deadline, "--deadline", parse_duration)
        result = plan_cluster(
            cfg, size, objects, cluster, costs, codecs=codecs, deadline_s=deadline, optimize=args.optimize
        )
    except (UnitError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--sample: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_plan(result, size, objects, args)
    return 0


def _cmd_feed(cfg: Any, args: argparse.Namespace) -> int:
    """Can each tier feed the nodes' reads? One row per tier with its headroom and what binds."""
    from pipelines.core.units import UnitError, parse_bandwidth, parse_size
    from pipelines.model.whatif import Cluster, feed, parse_demand

    try:
        per_node, sample = parse_demand(args.demand)
        per_node *= args.accelerators or 1
        object_size = sample or parse_size(args.object_size)
        cluster = Cluster(
            nodes=args.nodes,
            object_bps=parse_bandwidth(args.object_bw) if args.object_bw else None,
            pfs_bps=parse_bandwidth(args.pfs_bw) if args.pfs_bw else None,
            nvme_bps_per_node=parse_bandwidth(args.nvme_bw) if args.nvme_bw else None,
        )
        result = feed(cfg, cluster, per_node, object_size)
    except UnitError as exc:
        raise UsageError(f"--demand: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.nodes} node(s) reading {format_bandwidth(per_node)} each"
        f"{f' ({args.accelerators} accelerators)' if args.accelerators else ''} in objects of "
        f"{format_bytes(object_size)}"
    )
    rows: list[tuple[str, ...]] = [("tier", "scope", "can deliver", "needed", "headroom", "binds", "feeds")]
    for r in result["tiers"]:
        rows.append(
            (
                r["tier"],
                r["scope"],
                format_bandwidth(r["deliver_Bps"]),
                format_bandwidth(r["need_Bps"]),
                f"{r['headroom']:.3g}x",
                r["binds"],
                "yes" if r["feeds"] else "no",
            )
        )
    print_table(rows)
    print(result["verdict"])
    return 0


def _option(value: str | None, name: str, parse: Any) -> Any:
    """An option's value parsed, or None when not given; a bad value names the option."""
    from pipelines.core.units import UnitError

    if value is None:
        return None
    try:
        return parse(value)
    except UnitError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _print_plan(result: dict[str, Any], size: int, objects: int, args: argparse.Namespace) -> None:
    """The what-if as a table, one row per hop, then the totals."""
    print(
        f"{format_bytes(size)} in {objects} objects to {args.nodes} node(s)"
        f"{' (a full copy on every node)' if args.replicate else ''}"
    )
    header = (
        "hop",
        "bytes",
        "requests",
        "streams",
        "part",
        "shards",
        "time",
        "throughput",
        "bottleneck",
        "cost",
        "energy",
    )
    rows = [header]
    for h in result["hops"]:
        rows.append(
            (
                h["hop"],
                format_bytes(h["bytes"]),
                f"{h['requests']:,}",
                str(h["concurrency"]),
                f"{h['part_size'] >> 20} MiB",
                str(h["shards"]),
                format_duration(h["predicted_s"]),
                format_bandwidth(h["throughput_Bps"]),
                h["bottleneck"],
                f"${h['cost']:,.2f}",
                f"{h['energy_kWh']:,.3f} kWh",
            )
        )
    print_table(rows)
    print("limits per hop (the slowest binds; a shared tier serves every node from one aggregate):")
    for h in result["hops"]:
        parts = []
        for lim in sorted(h["limits"], key=lambda lim: -lim["seconds"]):
            rate = format_bandwidth(lim["rate"]) if lim["unit"] == "B/s" else f"{lim['rate']:,.0f} op/s"
            parts.append(f"{lim['scope']} {lim['tier']} {lim['what']} {rate}: {format_duration(lim['seconds'])}")
        print(f"  {h['hop']}: " + "; ".join(parts))
        node = h["per_node"]
        if node:
            print(
                f"  each of {args.nodes} node(s): {format_bytes(round(node['bytes']))} in {node['objects']:,.0f} "
                f"objects at {format_bandwidth(node['Bps'])}; its own NVMe alone would take "
                f"{format_duration(node['own_tier_s'])}; bound by {node['limited_by']}"
            )
    if "compression" in result["hops"][0]:
        print(f"compression before {result['hops'][0]['hop']}: {result['hops'][0]['compression']['reason']}")
    print(
        f"total: {format_duration(result['sequential_s'])} sequential, "
        f"{format_duration(result['pipelined_s'])} pipelined; "
        f"bottleneck {result['bottleneck']}; ${result['cost']:,.2f}; {result['energy_kWh']:,.3f} kWh"
    )
    coefficients = ", ".join(f"{tier} {j:g} J/GB" for tier, j in result["energy_J_per_GB"].items())
    idle = (
        f"; {result['idle_watts_per_node']:g} W per waiting node: {result['idle_energy_kWh']:,.3f} kWh"
        if result["idle_watts_per_node"]
        else ""
    )
    print(f"energy from {coefficients} (read at the source plus written at the destination; --joules-per-gb){idle}")
    if "deadline" in result:
        d = result["deadline"]
        if d["meets"]:
            print(
                f"deadline {format_duration(d['seconds'])}: met, {format_duration(d['spare_s'])} to spare "
                "(each hop at the fewest streams that finish in time)"
            )
        else:
            print(f"deadline {format_duration(d['seconds'])}: missed by {format_duration(-d['spare_s'])}")
            for hop, advice in d["advice"].items():
                print(f"  widen {hop}: " + "; ".join(advice))
    if "optimize" in result:
        o = result["optimize"]
        options: list[tuple[str, ...]] = [("compression", "time", "cost", "energy", "meets deadline", "")]
        for alt in o["alternatives"]:
            meets = {None: "—", True: "yes", False: "no"}[alt["meets_deadline"]]
            chosen = "<- chosen" if o["chosen"] == alt else ""
            options.append(
                (
                    alt["compression"],
                    format_duration(alt["seconds"]),
                    f"${alt['cost']:,.2f}",
                    f"{alt['energy_kWh']:,.3f} kWh",
                    meets,
                    chosen,
                )
            )
        print(f"optimized for {o['by']}: {o['reason']}")
        print_table(options)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure tiers, fit their profiles; store a fit that agrees (or ``--apply``), keep others as candidates."""
    from pipelines.core.errors import one_line
    from pipelines.core.units import UnitError, parse_size
    from pipelines.model.calibration import agreement, calibrate_repeated, current_profile, store_fit

    cfg = config_from_args(args)
    try:
        budget = parse_size(args.budget)
    except UnitError as exc:
        raise UsageError(f"--budget: {exc}") from None
    for name in args.tier or []:
        cfg.tier(name)  # an unknown name is refused, naming the tiers there are
    failed: dict[str, str] = {}
    profiles: dict[str, dict[str, Any]] = {}
    lines = []
    for tier_cfg in cfg.tiers:
        if args.tier and tier_cfg.name not in args.tier:
            continue
        tier = open_named(cfg, tier_cfg.name)
        try:
            fit = calibrate_repeated(tier, budget_bytes=budget, budget_s=args.seconds, repeats=args.repeats)
        except Exception as exc:  # reported per tier; the stored profile is kept
            failed[tier_cfg.name] = one_line(exc)
            if not args.json:
                print(f"{tier_cfg.name}: calibration failed, old profile kept: {one_line(exc)}", file=sys.stderr)
            continue
        if args.check:
            agreed, status, path = agreement(fit, *current_profile(cfg, tier_cfg.name)), "checked", None
        else:
            status, agreed, written = store_fit(cfg, tier_cfg.name, fit, apply=args.apply)
            path = str(written)
        p = fit.profile
        profiles[tier_cfg.name] = {
            "status": status,
            "read_bps": p.read_bps,
            "write_bps": p.write_bps,
            "stream_read_bps": p.stream_read_bps,
            "stream_write_bps": p.stream_write_bps,
            "latency_s": p.latency_s,
            "metadata_ops": p.metadata_ops,
            "write_latency_s": p.latency("write"),
            "write_ops": p.ops("write"),
            "spread": {t: round(v, 4) for t, v in fit.spread.items()},
            "repeats": fit.repeats,
            "samples": len(fit.samples),
            "path": path,
            **agreed.to_json(),
        }
        read = f"read {format_bandwidth(p.read_bps)} (stream {format_bandwidth(p.stream_read_bps)})"
        write = f"write {format_bandwidth(p.write_bps)} (stream {format_bandwidth(p.stream_write_bps)})"
        rest = (
            f"latency {p.latency_s * 1000:.2f} ms read / {p.latency('write') * 1000:.2f} ms write, "
            f"{p.metadata_ops:.0f}/s read / {p.ops('write'):.0f}/s write operations"
        )
        worst = max(fit.spread.values(), default=0.0)
        lines.append(f"{tier_cfg.name}: {read}, {write}, {rest}; spread up to {worst:.0%} over {fit.repeats} sweeps")
        if status == "candidate":
            lines.append(
                f"  kept the old profile: the fit {agreed.line()}; it is kept as a candidate ({path}); "
                f"take it with: tierflow calibrate --tier {tier_cfg.name} --apply"
            )
        else:
            lines.append(f"  {'stored' if status == 'applied' else 'not stored'}: the fit {agreed.line()}")
    emit(args, {"profiles": profiles, "failed": failed}, lines)
    disagrees = args.check and any(not v["agrees"] for v in profiles.values())
    return 1 if failed or disagrees else 0


def cmd_pools(args: argparse.Namespace) -> int:
    """Create or update one Airflow pool per tier, sized from the (calibrated) profiles."""
    import os
    import subprocess

    from pipelines.devtools.airflow_env import airflow_env

    cfg = config_from_args(args)
    # Inside an Airflow deployment AIRFLOW_HOME says where; otherwise the local stack's.
    env = dict(os.environ) if os.environ.get("AIRFLOW_HOME") else airflow_env(cfg, None)
    result = subprocess.run([sys.executable, "-m", "pipelines.operators.pools", "sync"], env=env, check=False)
    return result.returncode
