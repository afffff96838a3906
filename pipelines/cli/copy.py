"""``tierflow copy``: everything under SRC (a directory, a prefix or one file) to DST, sized by the planner."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from pipelines.cli.common import UsageError, config_from_args, emit, positive_int, quiet_logging, size_arg

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig
    from pipelines.core.manifest import Entry
    from pipelines.storage.tier import Tier
    from pipelines.transfer.report import TransferReport

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    copy = sub.add_parser(
        "copy",
        help="copy everything under SRC to DST (s3://, gs://, az://bucket/prefix or local paths)",
        description="Copy everything under SRC (a directory or prefix; a single file lands as DST/its name) "
        "to DST. Objects already at DST with the same size and checksum are skipped.",
    )
    copy.add_argument("src")
    copy.add_argument("dst")
    copy.add_argument("--concurrency", type=positive_int, help="streams (default: from the bandwidth planner)")
    copy.add_argument(
        "--part-size", type=size_arg, help="multipart part size with its unit, e.g. '16 MiB' (default: planner)"
    )
    copy.add_argument("--endpoint-url", help="S3 endpoint for s3:// URLs (default: config / AWS_ENDPOINT_URL)")
    copy.add_argument("--verify", action="store_true", help="read every destination object back and compare")
    copy.add_argument("--fsync", action="store_true", help="fsync local files before they are renamed into place")
    copy.add_argument("-v", "--verbose", action="store_true", help="log the plan and progress")
    copy.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy SRC to DST with the transfer engine; print one summary line (or JSON)."""
    from pipelines.core.units import format_prediction, parse_size
    from pipelines.transfer import TransferError, copy_prefix, source_entries

    quiet_logging(args.verbose)
    cfg = config_from_args(args)
    src_url, only = _single_file(args.src)
    created = _missing_dirs(args.dst)  # removed again when nothing lands in them
    try:
        (src, src_prefix), (dst, dst_prefix) = _open(cfg, src_url, args), _open(cfg, args.dst, args)
        src_prefix, one = _one(src, src_prefix, only)
        _refuse_overlap(src, src_prefix, dst, dst_prefix, one)
        entries = [one] if one is not None else source_entries(src, src_prefix)
        if not entries:
            raise FileNotFoundError(f"{args.src}: nothing there to copy (no objects under it)")
        report, plan = copy_prefix(
            src,
            src_prefix,
            dst,
            dst_prefix,
            concurrency=args.concurrency,
            part_size=parse_size(args.part_size) if args.part_size else None,
            verify=args.verify,
            fsync=args.fsync,
            entries=entries,
        )
    except TransferError as exc:
        _remove_if_empty(created)
        if args.json:
            emit(args, _summary(exc.report, None, args) | {"failures": [str(f) for f in exc.report.failures]}, "")
        for failure in exc.report.failures:
            print(f"tierflow copy: failed: {failure}", file=sys.stderr)
        print(f"tierflow copy: {exc.report.line()}; {len(exc.report.failures)} failed", file=sys.stderr)
        return 1
    except BaseException:
        _remove_if_empty(created)
        raise
    part = args.part_size or f"{report.part_size >> 20} MiB"
    emit(
        args,
        _summary(report, plan, args),
        f"copied {report.line()}; predicted {format_prediction(plan.predicted_s, plan.predicted.binding.uncertainty)} "
        f"({plan.predicted.bottleneck}), "
        f"concurrency {report.concurrency}, part size {part}",
    )
    return 0


def _single_file(src: str) -> tuple[str, str | None]:
    """A local SRC that is one file: its directory and its name (it lands as DST/name)."""
    path = src.removeprefix("file://")
    if "://" not in path and os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if "://" not in path and not os.path.isdir(path):
        raise FileNotFoundError(f"{src}: no such file or directory")  # checked before any tier creates it
    return src, None


def _open(cfg: TierflowConfig, url: str, args: argparse.Namespace) -> tuple[Tier, str]:
    """The tier a URL lies in (with its credentials and ``--endpoint-url``) and the prefix within it."""
    from pipelines.storage.credentials import storage_options_for
    from pipelines.storage.tier import Tier, tier_for_url

    try:
        tier_cfg, prefix = tier_for_url(cfg, url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = None
    if tier_cfg.is_object:
        options = storage_options_for(cfg, tier_cfg)
        if args.endpoint_url and tier_cfg.scheme == "s3":
            options = {**options, "endpoint_url": args.endpoint_url}
    return Tier(tier_cfg, options), prefix


def _refuse_overlap(src: Tier, src_prefix: str, dst: Tier, dst_prefix: str, one: Entry | None) -> None:
    """A copy onto itself is refused: SRC and DST the same place, DST inside SRC, one file to its own directory."""
    if src.config.is_object != dst.config.is_object or type(src) is not type(dst):  # other stores
        return
    if src.config.is_object and src.storage_options.get("endpoint_url") != dst.storage_options.get("endpoint_url"):
        return
    a = (src.path(src_prefix) if src_prefix else src.root).rstrip("/")
    b = (dst.path(dst_prefix) if dst_prefix else dst.root).rstrip("/")
    if not src.config.is_object:
        a, b = os.path.realpath(a), os.path.realpath(b)
    if a == b:
        what = src.url(f"{src_prefix}/{one.key}" if src_prefix else one.key) if one else dst.url(dst_prefix)
        raise UsageError(f"{what}: source and destination are the same place")
    if one is None and b.startswith(a + "/"):
        raise UsageError(f"{dst.url(dst_prefix)}: the destination is inside the source {src.url(src_prefix)}")


def _one(src: Tier, prefix: str, only: str | None) -> tuple[str, Entry | None]:
    """The one file or object SRC names, and the prefix it lies under; None when SRC is a directory or prefix."""
    from pipelines.core.manifest import Entry

    if only is not None:  # a local file
        # The file's directory may lie inside a configured tier, at a prefix of it.
        return prefix, Entry(only, os.path.getsize(src.path(f"{prefix}/{only}" if prefix else only)))
    if src.config.is_object and prefix:  # one object, named by its key? (one HEAD)
        try:
            info = src.stat(prefix)
        except FileNotFoundError:
            return prefix, None  # a prefix: listed
        parent, _, name = prefix.rpartition("/")
        return parent, Entry(name, info.size)
    return prefix, None


def _missing_dirs(dst: str) -> list[str]:
    """The local directories a copy to DST will create, deepest first (removed again if nothing lands)."""
    path = dst.removeprefix("file://")
    if "://" in path:
        return []
    path = os.path.abspath(path)
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_if_empty(dirs: list[str]) -> None:
    """Remove the directories this copy created, where nothing landed in them."""
    for path in dirs:
        try:
            os.rmdir(path)
        except OSError:
            return  # something landed there (or it is not ours to remove): it stays, and so do its parents


def _summary(report: TransferReport, plan: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The copy's result for ``--json`` (field names documented in the README)."""
    data = report.to_json() | {"source": args.src, "destination": args.dst}
    if plan is not None:
        data |= {"predicted_s": round(plan.predicted_s, 3), "bottleneck": str(plan.predicted.bottleneck)}
    return data
