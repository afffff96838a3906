"""``tierflow datasets publish|stage|prepare|ls``: dataset versions on the tiers."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipelines.cli.common import UsageError, config_from_args, count, emit, open_named, print_table, role, size_arg
from pipelines.core.units import format_bytes

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig
    from pipelines.datasets.cache import CacheEntry

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    ds = sub.add_parser("datasets", help="publish, stage and list dataset versions").add_subparsers(
        dest="action", required=True
    )
    publish = ds.add_parser("publish", help="publish a local directory as a committed dataset version")
    publish.add_argument("dir")
    publish.add_argument("--name", required=True)
    publish.add_argument("--version", required=True)
    publish.add_argument("--to", "--tier", dest="tier", help="tier to publish on (default: the object tier)")
    publish.add_argument(
        "--replace",
        action="store_true",
        help="replace a version already committed with other content (its objects the new one lacks are removed)",
    )
    publish.add_argument("-v", "--verbose", action="store_true")
    publish.set_defaults(func=cmd_datasets)
    stage = ds.add_parser("stage", help="stage a committed dataset version to another tier (plan, copy, commit)")
    stage.add_argument("name")
    stage.add_argument("version")
    stage.add_argument("--from", dest="source", help="source tier (default: the object tier)")
    stage.add_argument("--to", dest="target", required=True)
    stage.add_argument("--verify", action="store_true", help="read every copied object back")
    stage.add_argument("-v", "--verbose", action="store_true")
    stage.set_defaults(func=cmd_datasets)
    prep = ds.add_parser(
        "prepare", help="shard, zstd-compress and validate raw JSONL/Parquet, then publish the version"
    )
    prep.add_argument("name")
    prep.add_argument("version")
    prep.add_argument("--prefix", dest="source_prefix", required=True, help="raw input prefix on the source tier")
    prep.add_argument("--from", "--source", dest="source", help="tier holding the raw input (default: the object tier)")
    prep.add_argument("--to", "--target", dest="target", help="tier to publish on (default: the object tier)")
    prep.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    prep.add_argument("--level", type=_level, help="zstd level 1-19 (default: the planner's choice)")
    prep.add_argument("--shard-size", type=size_arg, help='e.g. "128 MiB" (default: the planner\'s)')
    prep.add_argument("--threads", type=int, default=0, help="zstd threads (0 = one per CPU)")
    prep.add_argument("--dictionary", action="store_true", help="train a zstd dictionary (JSONL)")
    prep.add_argument("--policy", choices=("fail", "quarantine"), default="fail")
    prep.add_argument("--max-failed-fraction", type=float, default=0.1)
    prep.add_argument("--suite", help="the suite file to validate with (default: <name>.json, looked up as documented)")
    prep.add_argument("--suites", help="where <name>.json is looked for first (default: $TIERFLOW_SUITES)")
    prep.add_argument("-v", "--verbose", action="store_true")
    prep.set_defaults(func=cmd_datasets)
    ls = ds.add_parser("ls", help="dataset versions on each tier")
    ls.add_argument("--tier", help="only this tier")
    ls.set_defaults(func=cmd_datasets)


def _level(text: str) -> int:
    """An argparse type: a zstd level, 1 to 19."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 19:
        raise argparse.ArgumentTypeError(f"zstd levels run from 1 to 19 (got {value})")
    return value


def cmd_datasets(args: argparse.Namespace) -> int:
    """Publish, stage, prepare and list dataset versions."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if getattr(args, "verbose", False):
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = config_from_args(args)
    action = {"publish": _publish, "stage": _stage, "ls": _ls, "prepare": _prepare}[args.action]
    try:
        return action(cfg, args)
    except (FileNotFoundError, PermissionError) as exc:  # a source or tier the user named; the rest: main's map
        raise UsageError(str(exc)) from None


def _publish(cfg: TierflowConfig, args: argparse.Namespace) -> int:
    from pipelines.datasets.staging import publish_directory

    args.tier = role(cfg, args.tier, "object")
    report, record = publish_directory(
        args.dir, open_named(cfg, args.tier), args.name, args.version, replace=args.replace
    )
    emit(
        args,
        {"dataset": args.name, "version": args.version, "tier": args.tier, "manifest": record.manifest.checksum()}
        | report.to_json(),
        f"published {args.name}/{args.version} on {args.tier}: {report.line()}; manifest {record.manifest.checksum()}",
    )
    return 0


def _stage(cfg: TierflowConfig, args: argparse.Namespace) -> int:
    from pipelines.datasets.staging import stage_dataset

    args.source = role(cfg, args.source, "object")
    plan, staged, _ = stage_dataset(
        open_named(cfg, args.source), open_named(cfg, args.target), args.name, args.version, verify=args.verify
    )
    data = {
        "dataset": args.name,
        "version": args.version,
        "source": args.source,
        "target": args.target,
        "already_committed": staged is None,
        "predicted_s": round(plan.hop.predicted_s, 3),
        "bottleneck": str(plan.hop.predicted.bottleneck),
    }
    if staged is None:
        emit(args, data, f"{args.name}/{args.version} already committed on {args.target}")
    else:
        emit(
            args,
            data | staged.to_json(),
            f"staged {args.name}/{args.version} {args.source} -> {args.target}: {staged.line()}; "
            f"predicted {plan.hop.predicted_s:.2f} s ({plan.hop.predicted.bottleneck})",
        )
    return 0


def _ls(cfg: TierflowConfig, args: argparse.Namespace) -> int:
    """Every tier's versions; a tier that cannot be listed is named on stderr and the others still listed."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.core.config import ConfigError
    from pipelines.core.errors import one_line
    from pipelines.datasets.cache import cache_entries

    if args.tier:
        cfg.tier(args.tier)  # an unknown name is refused, naming the tiers there are
    names = [t.name for t in cfg.tiers if not args.tier or t.name == args.tier]
    found: list[tuple[str, CacheEntry]] = []
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            found += [(name, e) for e in cache_entries(open_named(cfg, name))]
        except (ConfigError, OSError, BotoCoreError, ClientError) as exc:  # not there or not reachable
            if args.tier:
                raise
            # Named, and the other tiers still listed (an NVMe root lives on another node).
            unavailable[name] = one_line(exc)
    if args.json:
        versions = [
            {
                "tier": name,
                "dataset": e.dataset,
                "version": e.version,
                "committed": e.committed,
                "bytes": e.bytes,
                "last_used": e.last_used or None,
                "pinned_by": list(e.pinned_by),
            }
            for name, e in found
        ]
        unreachable = [{"tier": name, "error": error} for name, error in unavailable.items()]
        emit(args, {"versions": versions, "unavailable": unreachable}, "")
        return 1 if unavailable else 0
    for name, error in unavailable.items():
        print(f"tierflow datasets ls: {name}: {error}", file=sys.stderr)
    if found:
        rows = [("tier", "dataset", "version", "state", "size", "pinned by")]
        for name, e in found:
            state = "committed" if e.committed else "uncommitted"
            rows.append((name, e.dataset, e.version, state, format_bytes(e.bytes), ", ".join(e.pinned_by) or "-"))
        print_table(rows)
    elif len(unavailable) < len(names):
        print(f"no dataset versions on {', '.join(n for n in names if n not in unavailable)}")
    return 1 if unavailable else 0


def _prepare(cfg: TierflowConfig, args: argparse.Namespace) -> int:
    from pipelines.core.units import parse_size
    from pipelines.datasets.preparation import prepare
    from pipelines.datasets.preparation.suites import resolve_suite

    args.target = role(cfg, args.target, "object")
    source = open_named(cfg, role(cfg, args.source, "object"))
    suite = resolve_suite(
        args.name, source, args.source_prefix, suite_file=args.suite, directory=args.suites, state_dir=cfg.state_dir
    )
    prepared, published, summary = prepare(
        source,
        open_named(cfg, args.target),
        args.source_prefix,
        args.name,
        args.version,
        suite,
        fmt=args.format,
        level=args.level,
        shard_bytes=parse_size(args.shard_size) if args.shard_size else None,  # checked by argparse
        threads=args.threads,
        dictionary=args.dictionary,
        policy=args.policy,
        max_failed_fraction=args.max_failed_fraction,
    )
    data = {
        "dataset": args.name,
        "version": args.version,
        "target": args.target,
        "already_published": published is None,
    }
    if published is None:
        emit(args, data, f"{args.name}/{args.version} is already published on {args.target}")
    else:
        quarantined = f"; quarantined {', '.join(summary['quarantined'])}" if summary["quarantined"] else ""
        emit(
            args,
            data | {"level": prepared.level} | dict(summary),
            f"published {args.name}/{args.version} on {args.target}: {count(summary['shards'], 'shard')}, "
            f"{count(summary['rows'], 'row')}, {format_bytes(summary['bytes'])} (ratio {summary['ratio']:.2f}, "
            f"zstd level {prepared.level}){quarantined}",
        )
    return 0
