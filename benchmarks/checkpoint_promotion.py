"""Checkpoint promotion: NVMe → PFS against ``cp -r``, PFS → object storage against ``s5cmd cp``; prune request count.

A 2 GiB DCP-like checkpoint (16 rank shards of 128 MiB, then ``.metadata``) on the NVMe directory.
Ours is :func:`pipelines.checkpoints.promote`, in process as the Airflow task runs it: list,
copy while hashing (xxh3), list again, commit markers on both tiers. The references copy the same
directory with no checksum and no marker. Each run goes to a fresh destination; the order of ours
and the reference alternates run by run. Targets (issue 6): ≥ 0.9x ``cp -r`` and ≥ 1.0x ``s5cmd``.

Pruning: a checkpoint of 10,000 objects on object storage is pruned by retention; DeleteObjects
requests are counted from botocore's events (target ≤ 11: markers first, then 1,000 keys each).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from pipelines.checkpoints import LatestN, discover, promote, promote_through, retain
from pipelines.devtools.bench import BenchContext, Comparison, timed, write_files
from pipelines.storage.tier import Tier

DESCRIPTION = "promote a 2 GiB checkpoint NVMe->PFS vs cp -r, PFS->object vs s5cmd, MB/s; prune 10,000 objects"
BUCKET = "tierflow-bench"
SHARDS, SHARD_BYTES = 16, 128 * 2**20
PRUNE_OBJECTS = 10_000


def _tiers(ctx: BenchContext, name: str) -> dict[str, Tier]:
    creds = ctx.s3(BUCKET)
    out = {}
    for kind in ("nvme", "pfs", "object"):
        cfg = ctx.config.of_kind(kind)[0]
        if kind == "object":
            cfg = replace(cfg, url=f"s3://{BUCKET}/{name}/", conn_id=None)
            out[kind] = Tier(cfg, creds.storage_options())
        else:
            cfg = replace(cfg, url=f"file://{ctx.workdir / name / kind}")
            out[kind] = Tier(cfg)
    return out


def _checkpoint(root: Path, step: int) -> Path:
    d = root / "checkpoints" / "bench" / f"step_{step:06d}"
    write_files(d, SHARDS, SHARD_BYTES, name="__{}_0.distcp")
    (d / ".metadata").write_text('{"shards": 16}')
    return d


def run(ctx: BenchContext) -> list[Comparison]:
    size = SHARDS * SHARD_BYTES
    s5cmd = ctx.tool("s5cmd")
    local, upload, local_ref, upload_ref = [], [], [], []
    for i in range(ctx.runs):
        tiers = _tiers(ctx, f"run{i}")
        src = _checkpoint(ctx.workdir / f"run{i}" / "nvme", 100)
        (ckpt,) = discover(tiers["nvme"])
        cp_dst = ctx.workdir / f"run{i}" / "cp"

        def ours_local(c=ckpt, t=tiers) -> None:
            promote(t["nvme"], t["pfs"], c)

        def ref_local(s=src, d=cp_dst) -> None:
            subprocess.run(["cp", "-r", str(s), str(d)], check=True)

        def ours_up(c=ckpt, t=tiers) -> None:
            promote(t["pfs"], t["object"], replace(c, tier="pfs"))

        def ref_up(s=src, n=i) -> None:
            ctx.run_tool([s5cmd, "cp", f"{s}/*", f"s3://{BUCKET}/s5cmd-{n}/"])

        for ours, ref, into_ours, into_ref in (
            (ours_local, ref_local, local, local_ref),
            (ours_up, ref_up, upload, upload_ref),
        ):
            pair = [(ours, into_ours), (ref, into_ref)]
            for fn, into in pair if i % 2 == 0 else reversed(pair):
                subprocess.run(["sync"], check=True)
                into.append(size / timed(fn) / 1e6)
        shutil.rmtree(ctx.workdir / f"run{i}")
    requests, objects, seconds = _prune(ctx)
    return [
        Comparison("promote 2 GiB NVMe -> PFS", "MB/s", local, local_ref, "cp -r"),
        Comparison("promote 2 GiB PFS -> object", "MB/s", upload, upload_ref, "s5cmd"),
        Comparison(
            "prune 10,000 objects",
            "requests",
            [float(requests)],
            [float(PRUNE_OBJECTS // 1000 + 1)],
            "target",
            higher_is_better=False,
            notes={"objects deleted": objects, "seconds": round(seconds, 2)},
        ),
    ]


def _prune(ctx: BenchContext) -> tuple[int, int, float]:
    """Prune one checkpoint of 10,000 objects from object storage; returns DeleteObjects requests, objects, seconds."""
    tiers = _tiers(ctx, "prune")
    chain = [tiers["nvme"], tiers["pfs"], tiers["object"]]
    for step in (1, 2):
        d = ctx.workdir / "prune" / "nvme" / "checkpoints" / "bench" / f"step_{step}"
        n = PRUNE_OBJECTS - 2 if step == 1 else 1  # + .metadata + Tierflow's marker = 10,000 objects
        write_files(d, n, 16, name="{:05d}.bin")
        (d / ".metadata").write_text("{}")
    for c in discover(tiers["nvme"]):
        promote_through(chain, c)
    calls: list[int] = []
    tiers["object"].fs.s3.meta.events.register(
        "before-parameter-build.s3.DeleteObjects", lambda params, **_: calls.append(len(params["Delete"]["Objects"]))
    )
    start = time.perf_counter()
    summary = retain(chain, {"nvme": LatestN(5), "pfs": LatestN(5), "object": LatestN(1)})
    seconds = time.perf_counter() - start
    return len(calls), int(summary["object"]["objects"]), seconds
