"""``tierflow cache evict|pin|unpin``: the NVMe cache."""

from __future__ import annotations

import argparse

from pipelines.cli.common import UsageError, config_from_args, emit, open_named, role
from pipelines.core.units import format_bytes

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    cache = sub.add_parser("cache", help="the NVMe cache: evict, pin, unpin").add_subparsers(
        dest="action", required=True
    )
    evict = cache.add_parser("evict", help="make room: evict LRU versions committed on a more durable tier")
    evict.add_argument("--tier", help="cache tier (default: the NVMe tier)")
    evict.add_argument("--need", default="0", help="bytes that must be free, with unit (e.g. '5 GB')")
    evict.add_argument("--dry-run", action="store_true")
    evict.set_defaults(func=cmd_cache)
    for action in ("pin", "unpin"):
        p = cache.add_parser(action, help=f"{action} a dataset version on a cache tier")
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--holder", required=True, help="who holds the pin (e.g. a job id)")
        p.add_argument("--tier", help="cache tier (default: the NVMe tier)")
        if action == "pin":
            p.add_argument("--ttl", default="1 h", help="pin lifetime with unit (default '1 h')")
        p.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    """Evict from, pin and unpin on a cache tier."""
    from pipelines.core.units import UnitError, parse_duration, parse_size
    from pipelines.datasets.cache import ensure_space, pin, unpin

    cfg = config_from_args(args)
    args.tier = role(cfg, args.tier, "nvme")
    tier = open_named(cfg, args.tier)
    try:
        if args.action == "evict":
            need = parse_size(args.need) if args.need != "0" else 0
            durable = [open_named(cfg, t.name) for t in cfg.tiers if t.name != args.tier]
            report = ensure_space(tier, need, durable, dry_run=args.dry_run)
            verb = "would evict" if args.dry_run else "evicted"
            lines = [
                f"{verb} {item['dataset']}/{item['version']} ({format_bytes(item['bytes'])}): {item['why']}"
                for item in report.evicted
            ]
            lines += [
                f"kept {item['dataset']}/{item['version']} ({format_bytes(item['bytes'])}): {item['why']}"
                for item in report.kept
            ]
            lines.append(
                f"{args.tier}: {format_bytes(report.free_after)} free (needed {format_bytes(report.needed_bytes)})"
                + ("" if report.evicted else "; nothing evicted")
            )
            emit(args, {"tier": args.tier, "dry_run": args.dry_run} | report.summary(), lines)
        elif args.action == "pin":
            pin(tier, args.name, args.version, args.holder, parse_duration(args.ttl))
            emit(
                args,
                {
                    "dataset": args.name,
                    "version": args.version,
                    "tier": args.tier,
                    "holder": args.holder,
                    "ttl": args.ttl,
                },
                f"pinned {args.name}/{args.version} on {args.tier} for {args.holder} ({args.ttl})",
            )
        elif args.action == "unpin":
            unpin(tier, args.name, args.version, args.holder)
            emit(
                args,
                {"dataset": args.name, "version": args.version, "tier": args.tier, "holder": args.holder},
                f"unpinned {args.name}/{args.version} on {args.tier} for {args.holder}",
            )
    except UnitError as exc:
        raise UsageError(f"--{'need' if args.action == 'evict' else 'ttl'}: {exc}") from None
    return 0
