"""``tierflow copy``: everything under SRC to DST with the transfer engine, sized by the planner."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.cli.common import UsageError, config_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
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


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy everything under SRC to DST with the transfer engine; print one summary line."""
    import logging

    from pipelines.core.units import UnitError, parse_size
    from pipelines.storage.credentials import storage_options_for
    from pipelines.storage.tier import Tier, tier_for_url
    from pipelines.transfer import TransferError, copy_prefix

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = config_from_args(args)
    try:
        part_size = parse_size(args.part_size) if args.part_size else None
    except UnitError as exc:
        raise UsageError(f"--part-size: {exc} (got {args.part_size!r})") from None
    if "://" not in args.src.removeprefix("file://") and not Path(args.src.removeprefix("file://")).is_dir():
        raise UsageError(f"{args.src}: no such directory to copy from")  # checked before any tier creates it
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
    if report.objects == 0:
        raise UsageError(f"{args.src}: nothing to copy (no objects there)")
    print(
        f"copied {report.line()}; predicted {plan.predicted_s:.2f} s ({plan.predicted.bottleneck}), "
        f"concurrency {report.concurrency}, part size {report.part_size >> 20} MiB"
    )
    return 0
