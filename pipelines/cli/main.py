"""The ``tierflow`` command: tier config checks, the embedded S3 server, the demo, the local UI and benchmarks.

Errors a user can fix (a bad config, a server that will not start) print one line to stderr and
exit with status 2; nothing else is printed for them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipelines.core.config import ConfigError, TierflowConfig, load_config
from pipelines.core.units import format_bandwidth, format_bytes

if TYPE_CHECKING:
    from pipelines.devtools.s3server import EmbeddedS3
    from pipelines.storage.tier import Tier

__all__ = ["main"]


class UsageError(Exception):
    """A problem the user can fix; reported in one line, exit status 2."""


def _config(args: argparse.Namespace) -> TierflowConfig:
    """The tier config with calibrated profiles laid over it (``tierflow calibrate`` stores them)."""
    from pipelines.model.calibration import calibrated

    return calibrated(load_config(getattr(args, "config", None)))


def _embedded(cfg: TierflowConfig) -> EmbeddedS3:
    """The embedded S3 server the config declares; a config without one is a usage error."""
    from pipelines.devtools.s3server import EmbeddedS3, S3ServerError

    try:
        return EmbeddedS3.from_config(cfg)
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a tier config and print the tiers it declares."""
    cfg = load_config(args.file)
    print(f"{cfg.source}: OK, {len(cfg.tiers)} tiers (state directory {cfg.state_dir})")
    header = ("tier", "kind", "url", "connection", "capacity", "read", "write", "latency", "metadata", "streams")
    rows = [header]
    for t in cfg.tiers:
        bw = t.bandwidth
        rows.append(
            (
                t.name,
                t.kind,
                t.url,
                t.conn_id or "-",
                format_bytes(t.capacity_bytes),
                format_bandwidth(bw.read_bps),
                format_bandwidth(bw.write_bps),
                f"{bw.latency_s * 1000:g} ms",
                f"{bw.metadata_ops:g}/s",
                str(bw.max_streams),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if cfg.s3_server:
        print(f"embedded S3 server: {cfg.s3_server.endpoint_url} (connection {cfg.s3_server.conn_id})")
    return 0


def cmd_s3(args: argparse.Namespace) -> int:
    """Serve, stop, inspect or export the embedded S3 server."""
    from pipelines.devtools.s3server import S3ServerError

    cfg = _config(args)
    server = _embedded(cfg)
    assert cfg.s3_server is not None
    try:
        if args.action == "serve":
            was_running = server.pid() is not None
            creds = server.start()
            state = "already running" if was_running else "started"
            print(f"SeaweedFS S3 {state} at {creds.endpoint_url} (pid {server.pid()}, data in {server.root})")
            print(f'buckets: {", ".join(server.buckets) or "-"}; credentials: eval "$(tierflow s3 env)"')
        elif args.action == "stop":
            print("stopped" if server.stop() else "not running")
        elif args.action == "status":
            status = server.status()
            print(json.dumps(status, indent=2))
            return 0 if status["ready"] else 1
        elif args.action == "env":
            if not (server.root / "credentials.json").exists():
                raise UsageError(f"no embedded S3 server has been started under {server.root}: run 'tierflow s3 serve'")
            for key, value in server.credentials().env(cfg.s3_server.conn_id).items():
                print(f"export {key}={shlex.quote(value)}")
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy everything under SRC to DST with the transfer engine; print one summary line."""
    import logging

    from pipelines.core.units import UnitError, parse_size
    from pipelines.storage.credentials import storage_options_for
    from pipelines.storage.tier import Tier, tier_for_url
    from pipelines.transfer.engine import TransferError, copy_prefix

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = _config(args)
    try:
        part_size = parse_size(args.part_size) if args.part_size else None
    except UnitError as exc:
        raise UsageError(f"--part-size: {exc} (got {args.part_size!r})") from None
    tiers = []
    for url in (args.src, args.dst):
        try:
            tier_cfg, prefix = tier_for_url(cfg, url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        options = None
        if tier_cfg.is_object:
            options = storage_options_for(cfg, tier_cfg)
            if args.endpoint_url:
                options = {**options, "endpoint_url": args.endpoint_url}
        tiers.append((Tier(tier_cfg, options), prefix))
    (src, src_prefix), (dst, dst_prefix) = tiers
    try:
        report, plan = copy_prefix(
            src,
            src_prefix,
            dst,
            dst_prefix,
            concurrency=args.concurrency,
            part_size=part_size,
            verify=args.verify,
            fsync=args.fsync,
        )
    except TransferError as exc:
        for failure in exc.report.failures:
            print(f"tierflow copy: failed: {failure}", file=sys.stderr)
        print(f"tierflow copy: {exc.report.line()}; {len(exc.report.failures)} failed", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, ValueError) as exc:
        raise UsageError(f"copy {args.src} -> {args.dst}: {exc}") from None
    print(
        f"copied {report.line()}; predicted {plan.predicted_s:.2f} s ({plan.predicted.bottleneck}), "
        f"concurrency {report.concurrency}, part size {report.part_size >> 20} MiB"
    )
    return 0


def _open(cfg: TierflowConfig, name: str) -> Tier:
    from pipelines.storage.tier import open_tier

    try:
        return open_tier(cfg, name)
    except KeyError as exc:
        raise UsageError(str(exc).strip("'\"")) from None


def cmd_datasets(args: argparse.Namespace) -> int:
    """Publish, stage and list dataset versions."""
    import logging

    from pipelines.core.manifest import ManifestError
    from pipelines.transfer.engine import TransferError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if getattr(args, "verbose", False):
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = _config(args)
    try:
        if args.action == "publish":
            from pipelines.datasets.staging import publish_directory

            report, record = publish_directory(args.dir, _open(cfg, args.tier), args.name, args.version)
            print(
                f"published {args.name}/{args.version} on {args.tier}: {report.line()}; "
                f"manifest {record.manifest.checksum()}"
            )
        elif args.action == "stage":
            from pipelines.datasets.staging import stage_dataset

            plan, staged, _ = stage_dataset(
                _open(cfg, args.source), _open(cfg, args.target), args.name, args.version, verify=args.verify
            )
            if staged is None:
                print(f"{args.name}/{args.version} already committed on {args.target}")
            else:
                print(
                    f"staged {args.name}/{args.version} {args.source} -> {args.target}: {staged.line()}; "
                    f"predicted {plan.hop.predicted_s:.2f} s ({plan.hop.predicted.bottleneck})"
                )
        elif args.action == "ls":
            from pipelines.datasets.cache import cache_entries

            for tier_cfg in cfg.tiers:
                if args.tier and tier_cfg.name != args.tier:
                    continue
                for e in cache_entries(_open(cfg, tier_cfg.name)):
                    state = "committed" if e.committed else "uncommitted"
                    pins = f" pinned by {', '.join(e.pinned_by)}" if e.pinned_by else ""
                    print(
                        f"{tier_cfg.name:<8} {e.dataset}/{e.version:<12} {state:<11} {format_bytes(e.bytes):>10}{pins}"
                    )
        elif args.action == "prepare":
            from pipelines.core.units import parse_size
            from pipelines.datasets.preparation import prepare
            from pipelines.datasets.validation import load_suite

            prepared, published, summary = prepare(
                _open(cfg, args.source),
                _open(cfg, args.target),
                args.source_prefix,
                args.name,
                args.version,
                load_suite(args.name, args.suites),
                fmt=args.format,
                level=args.level,
                shard_bytes=parse_size(args.shard_size) if args.shard_size else None,
                threads=args.threads,
                dictionary=args.dictionary,
                policy=args.policy,
                max_failed_fraction=args.max_failed_fraction,
            )
            if published is None:
                print(f"{args.name}/{args.version} is already published on {args.target}")
            else:
                quarantined = f"; quarantined {summary['quarantined']}" if summary["quarantined"] else ""
                print(
                    f"published {args.name}/{args.version} on {args.target}: {summary['shards']} shards, "
                    f"{summary['rows']} rows, {format_bytes(summary['bytes'])} (ratio {summary['ratio']:.2f}, "
                    f"zstd level {prepared.level}){quarantined}"
                )
    except TransferError as exc:
        print(f"tierflow datasets {args.action}: {exc}", file=sys.stderr)
        return 1
    except (ManifestError, FileNotFoundError, PermissionError) as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # bad input, a failed validation, a bad suite: named in one line
        print(f"tierflow datasets {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List, promote, prune and restore checkpoints outside Airflow."""
    import logging

    import pipelines.checkpoints as ck
    from pipelines.core.manifest import ManifestError
    from pipelines.transfer.engine import TransferError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if getattr(args, "verbose", False) or getattr(args, "dry_run", False):
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = _config(args)
    try:
        rules = ck.Rules.with_extras(args.pattern, args.marker, args.grace)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tiers = [_open(cfg, name) for name in ck.chain(cfg)]
    try:
        if args.action == "ls":
            for tier in tiers:
                if args.tier and tier.name != args.tier:
                    continue
                for c in ck.discover(tier, rules, args.run):
                    state = c.status
                    pins = f" pinned by {', '.join(c.pinned_by)}" if c.pinned_by else ""
                    metrics = " ".join(f"{k}={v:g}" for k, v in sorted(c.metrics.items())[:3])
                    print(
                        f"{tier.name:<8} {c.run}/{c.name:<20} step {c.step:<8} {state:<11} "
                        f"{format_bytes(c.bytes):>10} {metrics}{pins}"
                    )
        elif args.action == "promote":
            for c in ck.to_promote(tiers, rules, args.run):
                if args.dry_run:
                    print(f"would promote {c.run}/{c.name} (step {c.step}, {format_bytes(c.bytes)})")
                    continue
                for r in ck.promote_through(tiers, c, rules):
                    what = "already committed" if r.already else f"{format_bytes(r.copied_bytes)} in {r.seconds:.1f} s"
                    print(f"promoted {r.run}/{r.name} (step {r.step}) {r.source} -> {r.target}: {what}")
        elif args.action == "prune":
            policies = {}
            for tier in tiers:
                text = getattr(args, f"keep_{tier.config.kind}")
                spec = ck.parse_retention(text) if text else ck.DEFAULT_RETENTION[tier.config.kind]
                policies[tier.name] = ck.policy_from_spec(spec)
            summary = ck.retain(tiers, policies, rules, args.run, args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            for name, entry in summary.items():
                print(
                    f"{name}: {verb} {len(entry['deleted'])} checkpoint(s) ({entry['objects']} objects) "
                    f"{entry['deleted']}"
                )
            if args.partial:
                gone = ck.cleanup_partial(tiers[0], ck.discover(tiers[0], rules, args.run), args.dry_run)
                print(f"{tiers[0].name}: {'would remove' if args.dry_run else 'removed'} partial {gone}")
        elif args.action == "restore":
            target = _open(cfg, args.target)
            result = ck.restore(tiers, target, args.run, args.step, rules, holder=args.holder)
            for why in result.fallbacks:
                print(f"fallback: {why}", file=sys.stderr)
            print(f"restored {result.run}/{result.name} (step {result.step}) from {result.source} to {result.path}")
    except (ck.CheckpointError, TransferError) as exc:
        print(f"tierflow checkpoints {args.action}: {exc}", file=sys.stderr)
        return 1
    except (ManifestError, ValueError, PermissionError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_codec(args: argparse.Namespace) -> int:
    """``tierflow compress`` / ``tierflow decompress``: safe zstd for files outside Airflow."""
    from pathlib import Path

    from pipelines.datasets.compression import compress_file, decompress_file

    try:
        dictionary = Path(args.dictionary).read_bytes() if args.dictionary else None
        if args.command == "compress":
            stats = compress_file(args.src, args.dst, args.level, args.threads, dictionary)
        else:
            stats = decompress_file(args.src, args.dst, dictionary, args.limit)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename}: no such file") from None
    except ValueError as exc:  # corrupt or truncated frames, a bomb, a bad level
        print(f"tierflow {args.command}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.command}ed {args.src} -> {args.dst}: {format_bytes(stats.raw_bytes)} raw, "
        f"{format_bytes(stats.compressed_bytes)} zstd (ratio {stats.ratio:.2f}), "
        f"{format_bandwidth(stats.raw_bps)} in {stats.seconds:.2f} s"
    )
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """Evict from, pin and unpin on a cache tier."""
    from pipelines.core.units import UnitError, parse_duration, parse_size
    from pipelines.datasets.cache import CacheFullError, ensure_space, pin, unpin

    cfg = _config(args)
    tier = _open(cfg, args.tier)
    try:
        if args.action == "evict":
            need = parse_size(args.need) if args.need != "0" else 0
            durable = [_open(cfg, t.name) for t in cfg.tiers if t.name != args.tier]
            report = ensure_space(tier, need, durable, dry_run=args.dry_run)
            for item in report.evicted:
                verb = "would evict" if args.dry_run else "evicted"
                print(f"{verb} {item['dataset']}/{item['version']} ({format_bytes(item['bytes'])}): {item['why']}")
            for item in report.kept:
                print(f"kept {item['dataset']}/{item['version']} ({format_bytes(item['bytes'])}): {item['why']}")
            print(f"{args.tier}: {format_bytes(report.free_after)} free (needed {format_bytes(report.needed_bytes)})")
        elif args.action == "pin":
            pin(tier, args.name, args.version, args.holder, parse_duration(args.ttl))
            print(f"pinned {args.name}/{args.version} on {args.tier} for {args.holder} ({args.ttl})")
        elif args.action == "unpin":
            unpin(tier, args.name, args.version, args.holder)
            print(f"unpinned {args.name}/{args.version} on {args.tier} for {args.holder}")
    except (UnitError, CacheFullError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_plan(args: argparse.Namespace) -> int:
    """Offline what-if: plan staging a dataset through a cluster of the configured tiers."""
    from pipelines.core.units import UnitError, parse_bandwidth, parse_size
    from pipelines.model.whatif import Cluster, Costs, plan_cluster

    cfg = _config(args)
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
        costs = Costs(args.price_per_gb, args.price_per_1000_requests, energy)
        result = plan_cluster(cfg, size, objects, cluster, costs, codecs=codecs)
    except (UnitError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--sample: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
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
                _duration(h["predicted_s"]),
                format_bandwidth(h["throughput_Bps"]),
                h["bottleneck"],
                f"${h['cost']:,.2f}",
                f"{h['energy_kJ'] / 3600:,.1f} kWh",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if "compression" in result["hops"][0]:
        print(f"compression before {result['hops'][0]['hop']}: {result['hops'][0]['compression']['reason']}")
    print(
        f"total: {_duration(result['sequential_s'])} sequential, {_duration(result['pipelined_s'])} pipelined; "
        f"bottleneck {result['bottleneck']}; ${result['cost']:,.2f}; {result['energy_kJ'] / 3600:,.1f} kWh"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure tiers, fit and store their profiles; a tier that fails keeps its old profile."""
    from pipelines.core.units import UnitError, parse_size
    from pipelines.model.calibration import calibrate_tier, save_profile

    cfg = _config(args)
    try:
        budget = parse_size(args.budget)
    except UnitError as exc:
        raise UsageError(f"--budget: {exc}") from None
    failed = 0
    for tier_cfg in cfg.tiers:
        if args.tier and tier_cfg.name not in args.tier:
            continue
        tier = _open(cfg, tier_cfg.name)
        try:
            profile, samples = calibrate_tier(tier, budget_bytes=budget, budget_s=args.seconds)
        except Exception as exc:  # reported per tier; the stored profile is kept
            print(
                f"{tier_cfg.name}: calibration failed, old profile kept: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            failed += 1
            continue
        path = save_profile(cfg, tier_cfg.name, profile, samples)
        read = f"read {format_bandwidth(profile.read_bps)} (stream {format_bandwidth(profile.stream_read_bps)})"
        write = f"write {format_bandwidth(profile.write_bps)} (stream {format_bandwidth(profile.stream_write_bps)})"
        rest = f"latency {profile.latency_s * 1000:.2f} ms, metadata {profile.metadata_ops:.0f}/s"
        print(f"{tier_cfg.name}: {read}, {write}, {rest} -> {path}")
    return 1 if failed else 0


def cmd_pools(args: argparse.Namespace) -> int:
    """Create or update one Airflow pool per tier, sized from the (calibrated) profiles."""
    import os
    import subprocess

    from pipelines.devtools.airflow_env import airflow_env

    cfg = _config(args)
    # Inside an Airflow deployment AIRFLOW_HOME says where; otherwise the local stack's.
    env = dict(os.environ) if os.environ.get("AIRFLOW_HOME") else airflow_env(cfg, None)
    result = subprocess.run([sys.executable, "-m", "pipelines.operators.pools", "sync"], env=env, check=False)
    return result.returncode


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo: embedded S3, synthetic corpus, every DAG end to end, summary."""
    from pipelines.devtools.demo import run_demo
    from pipelines.devtools.s3server import S3ServerError

    try:
        return run_demo(_config(args), keep_server=args.keep_server)
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None


def cmd_airflow(args: argparse.Namespace) -> int:
    """Start or stop the local Airflow UI with the embedded S3 server."""
    from pipelines.devtools import localstack

    cfg = _config(args)
    if args.action == "up":
        return localstack.up(cfg, port=args.port)
    return localstack.down(cfg)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run named benchmarks from benchmarks/."""
    from pipelines.devtools.bench import run_benchmarks

    return run_benchmarks(_config(args), args.names, runs=args.runs, list_only=args.list)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tierflow`` command."""
    parser = argparse.ArgumentParser(prog="tierflow", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="tier config file (default: $TIERFLOW_CONFIG, else the packaged default)")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="tier configuration").add_subparsers(dest="action", required=True)
    check = config.add_parser("check", help="validate a tier config and print its tiers")
    check.add_argument("file", nargs="?", help="config file (default: $TIERFLOW_CONFIG, else the packaged default)")
    check.set_defaults(func=cmd_config_check)

    s3 = sub.add_parser("s3", help="the embedded S3 server (SeaweedFS on 127.0.0.1)")
    s3.add_argument("action", choices=["serve", "stop", "status", "env"])
    s3.set_defaults(func=cmd_s3)

    copy = sub.add_parser("copy", help="copy everything under SRC to DST (s3://bucket/prefix or local paths)")
    copy.add_argument("src")
    copy.add_argument("dst")
    copy.add_argument("--concurrency", type=int, help="streams (default: from the bandwidth planner)")
    copy.add_argument("--part-size", help="multipart part size with its unit, e.g. '16 MiB' (default: planner)")
    copy.add_argument("--endpoint-url", help="S3 endpoint for s3:// URLs (default: config / AWS_ENDPOINT_URL)")
    copy.add_argument("--verify", action="store_true", help="read every destination object back and compare")
    copy.add_argument("--fsync", action="store_true", help="fsync local files before they are renamed into place")
    copy.add_argument("-v", "--verbose", action="store_true", help="log the plan and progress")
    copy.set_defaults(func=cmd_copy)

    ds = sub.add_parser("datasets", help="publish, stage and list dataset versions").add_subparsers(
        dest="action", required=True
    )
    publish = ds.add_parser("publish", help="publish a local directory as a committed dataset version")
    publish.add_argument("dir")
    publish.add_argument("--name", required=True)
    publish.add_argument("--version", required=True)
    publish.add_argument("--tier", default="object", help="tier to publish on (default: object)")
    publish.add_argument("-v", "--verbose", action="store_true")
    publish.set_defaults(func=cmd_datasets)
    stage = ds.add_parser("stage", help="stage a committed dataset version to another tier (plan, copy, commit)")
    stage.add_argument("name")
    stage.add_argument("version")
    stage.add_argument("--from", dest="source", default="object")
    stage.add_argument("--to", dest="target", required=True)
    stage.add_argument("--verify", action="store_true", help="read every copied object back")
    stage.add_argument("-v", "--verbose", action="store_true")
    stage.set_defaults(func=cmd_datasets)
    prep = ds.add_parser(
        "prepare", help="shard, zstd-compress and validate raw JSONL/Parquet, then publish the version"
    )
    prep.add_argument("name")
    prep.add_argument("version")
    prep.add_argument("--from", dest="source_prefix", required=True, help="raw input prefix on the source tier")
    prep.add_argument("--source", default="object")
    prep.add_argument("--target", default="object")
    prep.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    prep.add_argument("--level", type=int, help="zstd level 1-19 (default: the planner's choice)")
    prep.add_argument("--shard-size", help='e.g. "128 MiB" (default: the planner\'s)')
    prep.add_argument("--threads", type=int, default=0, help="zstd threads (0 = one per CPU)")
    prep.add_argument("--dictionary", action="store_true", help="train a zstd dictionary (JSONL)")
    prep.add_argument("--policy", choices=("fail", "quarantine"), default="fail")
    prep.add_argument("--max-failed-fraction", type=float, default=0.1)
    prep.add_argument("--suites", help="suites directory (default: $TIERFLOW_SUITES, else the packaged suites)")
    prep.add_argument("-v", "--verbose", action="store_true")
    prep.set_defaults(func=cmd_datasets)
    ls = ds.add_parser("ls", help="dataset versions on each tier")
    ls.add_argument("--tier")
    ls.set_defaults(func=cmd_datasets)

    ckp = sub.add_parser("checkpoints", help="checkpoint lifecycle: ls, promote, prune, restore")
    ckp_sub = ckp.add_subparsers(dest="action", required=True)
    ck_common = argparse.ArgumentParser(add_help=False)
    ck_common.add_argument("--run", help="only this training run")
    ck_common.add_argument("--pattern", help="an extra checkpoint name pattern with one group for the step")
    ck_common.add_argument("--marker", help="an extra completion marker file")
    ck_common.add_argument("--grace", type=float, help="seconds before an unmarked checkpoint counts as partial")
    ck_common.add_argument("-v", "--verbose", action="store_true")
    ck_ls = ckp_sub.add_parser("ls", parents=[ck_common], help="checkpoints on every tier")
    ck_ls.add_argument("--tier")
    ck_promote = ckp_sub.add_parser(
        "promote", parents=[ck_common], help="promote complete checkpoints NVMe -> PFS -> object"
    )
    ck_promote.add_argument("--dry-run", action="store_true")
    ck_prune = ckp_sub.add_parser("prune", parents=[ck_common], help="apply retention on every tier")
    ck_prune.add_argument("--dry-run", action="store_true")
    for kind, default in (("nvme", "latest=2"), ("pfs", "latest=4"), ("object", "latest=8,every=10000")):
        ck_prune.add_argument(
            f"--keep-{kind}", help=f"e.g. latest=2,every=1000,best=eval_loss:3:min (default {default})"
        )
    ck_prune.add_argument(
        "--partial", action="store_true", help="also remove partial checkpoints past the grace period"
    )
    ck_restore = ckp_sub.add_parser("restore", parents=[ck_common], help="restore a step (or the latest) onto NVMe")
    ck_restore.add_argument("run")
    ck_restore.add_argument("--step", type=int, help="default: the latest committed step")
    ck_restore.add_argument("--to", dest="target", default="nvme")
    ck_restore.add_argument("--holder", default="restore", help="pin holder name")
    ckp.set_defaults(func=cmd_checkpoints)

    comp = sub.add_parser("compress", help="zstd-compress a file (checksummed frame with its size)")
    comp.add_argument("src")
    comp.add_argument("dst")
    comp.add_argument("--level", type=int, default=3, help="1-19 (default 3)")
    comp.add_argument("--threads", type=int, default=0, help="zstd worker threads (0 = one per CPU)")
    comp.add_argument("--dictionary", help="a dictionary file (e.g. a dataset's dictionary.zdict)")
    comp.set_defaults(func=cmd_codec)
    decomp = sub.add_parser("decompress", help="decode every zstd frame of a file, checked (truncation, bombs)")
    decomp.add_argument("src")
    decomp.add_argument("dst")
    decomp.add_argument("--dictionary", help="the dictionary the file was compressed with")
    decomp.add_argument("--limit", type=int, help="largest output in bytes (default: 1000x the input, >= 256 MiB)")
    decomp.set_defaults(func=cmd_codec)

    cache = sub.add_parser("cache", help="the NVMe cache: evict, pin, unpin").add_subparsers(
        dest="action", required=True
    )
    evict = cache.add_parser("evict", help="make room: evict LRU versions committed on a more durable tier")
    evict.add_argument("--tier", default="nvme")
    evict.add_argument("--need", default="0", help="bytes that must be free, with unit (e.g. '5 GB')")
    evict.add_argument("--dry-run", action="store_true")
    evict.set_defaults(func=cmd_cache)
    for action in ("pin", "unpin"):
        p = cache.add_parser(action, help=f"{action} a dataset version on a cache tier")
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--holder", required=True, help="who holds the pin (e.g. a job id)")
        p.add_argument("--tier", default="nvme")
        if action == "pin":
            p.add_argument("--ttl", default="1 h", help="pin lifetime with unit (default '1 h')")
        p.set_defaults(func=cmd_cache)

    plan = sub.add_parser("plan", help="offline what-if: stage a dataset through a cluster of these tiers")
    plan.add_argument("--dataset-size", required=True, help="e.g. '200 TB'")
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
    plan.add_argument("--json", action="store_true", help="JSON for machines")
    plan.set_defaults(func=cmd_plan)

    cal = sub.add_parser("calibrate", help="measure each tier and store its fitted bandwidth profile")
    cal.add_argument("--tier", action="append", help="tier to calibrate (repeatable; default: all)")
    cal.add_argument("--budget", default="256 MiB", help="bytes to move per tier (default '256 MiB')")
    cal.add_argument("--seconds", type=float, default=60.0, help="time budget per tier (default 60)")
    cal.set_defaults(func=cmd_calibrate)

    pools = sub.add_parser("pools", help="Airflow pools per tier")
    pools.add_argument("action", choices=["sync"])
    pools.set_defaults(func=cmd_pools)

    demo = sub.add_parser("demo", help="run every DAG end to end on the embedded defaults")
    demo.add_argument("--keep-server", action="store_true", help="leave the embedded S3 server running")
    demo.set_defaults(func=cmd_demo)

    af = sub.add_parser("airflow", help="the local Airflow UI (api-server, scheduler, dag-processor, triggerer)")
    af.add_argument("action", choices=["up", "down"])
    af.add_argument("--port", type=int, default=8791, help="api-server port on 127.0.0.1 (default 8791)")
    af.set_defaults(func=cmd_airflow)

    bench = sub.add_parser("bench", help="run benchmarks from benchmarks/ against reference tools")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    bench.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierflow`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as exc:
        print(f"tierflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
