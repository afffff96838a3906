"""``tierflow compress`` / ``tierflow decompress``: safe zstd for files."""

from __future__ import annotations

import argparse

from pipelines.cli.common import UsageError, emit
from pipelines.core.units import format_bandwidth, format_bytes

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
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
    data = {
        "source": args.src,
        "destination": args.dst,
        "raw_bytes": stats.raw_bytes,
        "compressed_bytes": stats.compressed_bytes,
        "ratio": round(stats.ratio, 4),
        "seconds": round(stats.seconds, 3),
        "raw_bps": round(stats.raw_bps),
    }
    emit(
        args,
        data,
        f"{args.command}ed {args.src} -> {args.dst}: {format_bytes(stats.raw_bytes)} raw, "
        f"{format_bytes(stats.compressed_bytes)} zstd (ratio {stats.ratio:.2f}), "
        f"{format_bandwidth(stats.raw_bps)} in {stats.seconds:.2f} s",
    )
    return 0
