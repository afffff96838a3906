"""``tierflow config check``: validate a tier config and print its tiers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.cli.common import emit, print_table
from pipelines.core.units import format_bandwidth, format_bytes

if TYPE_CHECKING:  # imported by the command that reads a config: the others start ~20 ms sooner
    from pipelines.core.config import TierflowConfig

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    config = sub.add_parser("config", help="tier configuration").add_subparsers(dest="action", required=True)
    check = config.add_parser("check", help="validate a tier config and print its tiers")
    check.add_argument("file", nargs="?", help="config file (default: $TIERFLOW_CONFIG, else the packaged default)")
    check.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a tier config and print the tiers it declares."""
    from pipelines.core.config import load_config

    cfg = load_config(args.file or args.config)
    data = {
        "source": str(cfg.source),
        "state_dir": str(cfg.state_dir),
        "tiers": [
            {
                "name": t.name,
                "kind": t.kind,
                "url": t.url,
                "conn_id": t.conn_id,
                "capacity_bytes": t.capacity_bytes,
                "read_bps": t.bandwidth.read_bps,
                "write_bps": t.bandwidth.write_bps,
                "latency_s": t.bandwidth.latency_s,
                "metadata_ops": t.bandwidth.metadata_ops,
                "max_streams": t.bandwidth.max_streams,
            }
            for t in cfg.tiers
        ],
        "s3_server": cfg.s3_server.endpoint_url if cfg.s3_server else None,
        "nodes": [{"name": n.name, "queue": n.queue, **_node_tiers(cfg, n.name)} for n in cfg.nodes],
        "this_node": cfg.node,
    }
    if args.json:
        emit(args, data, "")
        return 0
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
    print_table(rows)
    if cfg.s3_server:
        print(f"embedded S3 server: {cfg.s3_server.endpoint_url} (connection {cfg.s3_server.conn_id})")
    for node in cfg.nodes:
        own = ", ".join(f"{tier} at {url}" for tier, url in _node_tiers(cfg, node.name)["nvme"].items())
        here = " (this process: TIERFLOW_NODE)" if node.name == cfg.node else ""
        print(f"node {node.name}: queue {node.queue}; {own}{here}")
    return 0


def _node_tiers(cfg: TierflowConfig, node: str) -> dict[str, dict[str, str]]:
    """Where node ``node`` has its node-local tiers."""
    local = cfg.for_node(node)
    return {"nvme": {t.name: t.url for t in local.of_kind("nvme")}}
