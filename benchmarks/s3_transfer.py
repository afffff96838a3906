"""Tier access to S3 (one object at a time through s3fs) against s5cmd, on the same SeaweedFS server.

This is the baseline the transfer engine (bounded concurrency over objects, ranged parts) has to
beat: a sequential loop is expected to lose badly on many small files.
"""

from __future__ import annotations

import os
import uuid
from functools import partial
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison, timed
from pipelines.storage.tier import Tier

DESCRIPTION = "Tier.put_file/get_file vs s5cmd cp: 256 MiB object and 300 x 64 KiB files, MB/s"
BIG = 256 * 2**20
SMALL, N_SMALL = 64 * 2**10, 300
BUCKET = "tierflow-bench"


def _tier(ctx: BenchContext) -> Tier:
    from dataclasses import replace

    base = ctx.config.of_kind("object")[0]
    cfg = replace(base, url=f"s3://{BUCKET}/", conn_id="bench")
    return Tier(cfg, ctx.s3(BUCKET).storage_options())


def _put_each(tier: Tier, paths: list[Path], prefix: str) -> None:
    for path in paths:
        tier.put_file(path, f"{prefix}/{path.name}")


def run(ctx: BenchContext) -> list[Comparison]:
    s5cmd = ctx.tool("s5cmd")
    tier = _tier(ctx)
    big = ctx.workdir / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(BIG // 2**24):
            fh.write(os.urandom(2**24))
    small_dir = ctx.workdir / "small"
    small_dir.mkdir()
    for i in range(N_SMALL):
        (small_dir / f"f{i:04d}.bin").write_bytes(os.urandom(SMALL))
    small_bytes = SMALL * N_SMALL

    up: tuple[list[float], list[float]] = ([], [])
    down: tuple[list[float], list[float]] = ([], [])
    many: tuple[list[float], list[float]] = ([], [])
    out = ctx.workdir / "out"
    for _ in range(ctx.runs):
        run = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        key = run.removeprefix(f"s3://{BUCKET}/")
        up[0].append(BIG / timed(partial(tier.put_file, big, f"{key}/ours/big.bin")) / 1e6)
        up[1].append(BIG / timed(partial(ctx.run_tool, [s5cmd, "cp", str(big), f"{run}/ref/big.bin"])) / 1e6)
        down[0].append(BIG / timed(partial(tier.get_file, f"{key}/ours/big.bin", out / "ours.bin")) / 1e6)
        down[1].append(
            BIG / timed(partial(ctx.run_tool, [s5cmd, "cp", f"{run}/ref/big.bin", str(out / "ref.bin")])) / 1e6
        )
        paths = sorted(small_dir.iterdir())
        many[0].append(small_bytes / timed(partial(_put_each, tier, paths, f"{key}/ours-many")) / 1e6)
        many[1].append(
            small_bytes / timed(partial(ctx.run_tool, [s5cmd, "cp", f"{small_dir}/*", f"{run}/ref-many/"])) / 1e6
        )
        for f in out.iterdir():
            f.unlink()
    return [
        Comparison("upload 256 MiB", "MB/s", *up, "s5cmd"),
        Comparison("download 256 MiB", "MB/s", *down, "s5cmd"),
        Comparison(f"upload {N_SMALL} x 64 KiB", "MB/s", *many, "s5cmd"),
    ]
