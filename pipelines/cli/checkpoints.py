"""``tierflow checkpoints ls|promote|prune|restore``: the checkpoint lifecycle outside Airflow."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.cli.common import UsageError, config_from_args, count, emit, open_named, print_table, role
from pipelines.core.units import format_bytes

if TYPE_CHECKING:
    from pipelines.checkpoints import Rules
    from pipelines.core.config import TierflowConfig
    from pipelines.storage.tier import Tier

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
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
    ck_restore.add_argument("--to", dest="target", help="tier to restore onto (default: the NVMe tier)")
    ck_restore.add_argument("--holder", default="restore", help="pin holder name")
    ckp.set_defaults(func=cmd_checkpoints)


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List, promote, prune and restore checkpoints outside Airflow."""
    import logging

    import pipelines.checkpoints as ck

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if getattr(args, "verbose", False) or getattr(args, "dry_run", False):
        logging.getLogger("pipelines").setLevel(logging.INFO)
    cfg = config_from_args(args)
    try:
        rules = ck.Rules.with_extras(args.pattern, args.marker, args.grace)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tiers = [open_named(cfg, name) for name in ck.chain(cfg)]
    try:
        if args.action == "ls":
            _ls(cfg, tiers, rules, args)
        elif args.action == "promote":
            _promote(tiers, rules, args)
        elif args.action == "prune":
            _prune(tiers, rules, args)
        elif args.action == "restore":
            target = open_named(cfg, role(cfg, args.target, "nvme"))
            result = ck.restore(tiers, target, args.run, args.step, rules, holder=args.holder)
            lines = [f"fallback: {why}" for why in result.fallbacks]
            lines.append(
                f"restored {result.run}/{result.name} (step {result.step}) from {result.source} to {result.path}"
            )
            emit(args, result.to_json(), lines)
    except PermissionError as exc:  # credentials the user gave; the rest goes to main's map
        raise UsageError(str(exc)) from None
    return 0


def _ls(cfg: TierflowConfig, tiers: list[Tier], rules: Rules, args: argparse.Namespace) -> None:
    """Every checkpoint on every tier (or one), as a table or JSON; an explicit line when there are none."""
    import pipelines.checkpoints as ck

    if args.tier:
        cfg.tier(args.tier)  # an unknown name is refused, naming the tiers there are
    shown = [t for t in tiers if not args.tier or t.name == args.tier]
    found = [(tier.name, c) for tier in shown for c in ck.discover(tier, rules, args.run)]
    data = {
        "checkpoints": [
            {
                "tier": name,
                "run": c.run,
                "checkpoint": c.name,
                "step": c.step,
                "state": c.status,
                "bytes": c.bytes,
                "metrics": c.metrics,
                "pinned_by": list(c.pinned_by),
            }
            for name, c in found
        ]
    }
    if args.json or not found:
        where = f" of run {args.run}" if args.run else ""
        emit(args, data, f"no checkpoints{where} on {', '.join(t.name for t in shown)}")
        return
    rows = [("tier", "run", "checkpoint", "step", "state", "size", "metrics", "pinned by")]
    for name, c in found:
        metrics = " ".join(f"{k}={v:g}" for k, v in sorted(c.metrics.items())[:3]) or "-"
        pins = ", ".join(c.pinned_by) or "-"
        rows.append((name, c.run, c.name, str(c.step), c.status, format_bytes(c.bytes), metrics, pins))
    print_table(rows)


def _promote(tiers: list[Tier], rules: Rules, args: argparse.Namespace) -> None:
    """Promote what is complete and not yet durable, tier by tier; say what moved (or would)."""
    import pipelines.checkpoints as ck

    lines, promoted, planned = [], [], []
    for c in ck.to_promote(tiers, rules, args.run):
        if args.dry_run:
            planned.append({"run": c.run, "checkpoint": c.name, "step": c.step, "bytes": c.bytes})
            lines.append(f"would promote {c.run}/{c.name} (step {c.step}, {format_bytes(c.bytes)})")
            continue
        for r in ck.promote_through(tiers, c, rules):
            promoted.append(r.to_json())
            what = "already committed" if r.already else f"{format_bytes(r.copied_bytes)} in {r.seconds:.1f} s"
            lines.append(f"promoted {r.run}/{r.name} (step {r.step}) {r.source} -> {r.target}: {what}")
    if not lines:
        lines.append("nothing to promote: every complete checkpoint is already on the most durable tier")
    emit(args, {"promoted": promoted, "would_promote": planned, "dry_run": args.dry_run}, lines)


def _prune(tiers: list[Tier], rules: Rules, args: argparse.Namespace) -> None:
    """Apply each tier's retention (``--keep-<kind>``, else its kind's default) and say what went, per tier."""
    import pipelines.checkpoints as ck

    policies = {}
    for tier in tiers:
        text = getattr(args, f"keep_{tier.config.kind}")
        # An explicit empty policy ('') is refused by parse_retention, never read as the default.
        spec = ck.parse_retention(text) if text is not None else ck.DEFAULT_RETENTION[tier.config.kind]
        policies[tier.name] = ck.policy_from_spec(spec)
    summary = ck.retain(tiers, policies, rules, args.run, args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = []
    for name, entry in summary.items():
        listed = f": {', '.join(entry.deleted)}" if entry.deleted else ""
        note = f" ({entry.note})" if entry.note else ""
        lines.append(
            f"{name}: {verb} {count(len(entry.deleted), 'checkpoint')} ({count(entry.objects, 'object')}){listed}{note}"
        )
    gone: list[str] = []
    if args.partial:
        gone = ck.cleanup_partial(tiers[0], ck.discover(tiers[0], rules, args.run), args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        lines.append(
            f"{tiers[0].name}: {verb} {count(len(gone), 'partial checkpoint')}{': ' + ', '.join(gone) if gone else ''}"
        )
    data = {"tiers": {name: entry.to_json() for name, entry in summary.items()}, "dry_run": args.dry_run}
    emit(args, data | {"partial_removed": gone}, lines)
