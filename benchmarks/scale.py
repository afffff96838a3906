"""Scale: a manifest of 10^6 objects, an S3 listing of 100,000, and the cluster what-if at 512 nodes.

- **Manifest of 10^6 objects**: build (validated, sorted), checksum, shard and plan, in a fresh
  interpreter, time and peak RSS. The reference is the floor any Python tool pays for the same
  list: the (key, size, checksum) tuples built, sorted and written as JSON once, in its own fresh
  interpreter. Targets (issue 14): ≤ 30 s and ≤ 1 GiB.
- **Listing 100,000 objects** through Tierflow (``Tier.list`` on the object tier, as a copy or a
  manifest build lists) against ``s5cmd ls`` of the same prefix, whole commands both (target ≥ 1.0x).
- **Checkpoint discovery over 500 committed checkpoints** on the object tier: a pass with the
  commit-marker cache warm against the same pass without it (every marker read), marker GETs and
  seconds per pass.
- **``tierflow plan`` at 512 nodes** (200 TB, 10^8 objects), whole command, against
  ``tierflow --version`` (the command's own start-up). Target: under 1 s.

Runs alternate the order of ours and the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison

DESCRIPTION = (
    "10^6-object manifest build/shard/plan (s, RSS) vs a sort+JSON floor; S3 ls of 100k vs s5cmd; plan at 512 nodes"
)
BUCKET = "tierflow-bench"
MANIFEST_OBJECTS = 1_000_000
LIST_OBJECTS = 100_000

OURS = """
import json, random, resource, sys, time
start = time.perf_counter()
from pipelines.core.config import load_config
from pipelines.core.manifest import Entry, Manifest
from pipelines.model.bandwidth import Workload, plan_hop
rng = random.Random(7)
entries = tuple(Entry(f"shard-{i % 1000:03d}/part-{i:07d}.bin", rng.randint(2**16, 2**22), f"{i:032x}")
                for i in range(int(sys.argv[1])))
manifest = Manifest("scale", "v1", entries)
checksum = manifest.checksum()
cfg = load_config()
hop = plan_hop(cfg.primary("pfs"), cfg.primary("nvme"), Workload.from_sizes(e.size for e in manifest.entries))
shards = manifest.shards(hop.shards)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"s": time.perf_counter() - start, "rss": rss, "shards": len(shards)}))
"""
FLOOR = """
import json, random, resource, sys, time
start = time.perf_counter()
rng = random.Random(7)
rows = [(f"shard-{i % 1000:03d}/part-{i:07d}.bin", rng.randint(2**16, 2**22), f"{i:032x}")
        for i in range(int(sys.argv[1]))]
rows.sort()
text = json.dumps(rows)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"s": time.perf_counter() - start, "rss": rss}))
"""
LIST = """
import sys, time
from dataclasses import replace
from pipelines.core.config import load_config
from pipelines.storage.tier import Tier
start = time.perf_counter()
cfg = replace(load_config().primary("object"), url=sys.argv[1], conn_id=None)
from pipelines.storage.credentials import S3Credentials
found = Tier(cfg, S3Credentials(sys.argv[2], sys.argv[3], sys.argv[4]).storage_options()).list("")
print(len(found), time.perf_counter() - start)
"""


def _child(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _manifest(ctx: BenchContext) -> list[Comparison]:
    ours: list[dict[str, float]] = []
    floor: list[dict[str, float]] = []
    for i in range(ctx.runs):
        pair = [(ours, OURS), (floor, FLOOR)]
        for bucket, code in pair if i % 2 == 0 else reversed(pair):
            bucket.append(_child(code, str(MANIFEST_OBJECTS)))
    return [
        Comparison(
            "manifest 10^6: build+checksum+shard+plan",
            "s",
            [r["s"] for r in ours],
            [r["s"] for r in floor],
            "sort+JSON floor",
            higher_is_better=False,
        ),
        Comparison(
            "manifest 10^6: peak RSS",
            "MiB",
            [r["rss"] / 2**20 for r in ours],
            [r["rss"] / 2**20 for r in floor],
            "sort+JSON floor",
            higher_is_better=False,
        ),
    ]


def _seed_listing(ctx: BenchContext, prefix: str) -> None:
    """100,000 one-byte objects under ``prefix``, uploaded by s5cmd (the fastest way here)."""
    src = ctx.workdir / "listing"
    for i in range(LIST_OBJECTS):
        path = src / f"d{i % 100:02d}" / f"o{i:06d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    creds = ctx.s3(BUCKET)
    ctx.run_tool(
        [
            ctx.tool("s5cmd"),
            "--endpoint-url",
            creds.endpoint_url,
            "--numworkers",
            "64",
            "cp",
            f"{src}/",
            f"s3://{BUCKET}/{prefix}/",
        ]
    )


def _listing(ctx: BenchContext) -> Comparison:
    prefix = "listing-100k"
    _seed_listing(ctx, prefix)
    creds = ctx.s3(BUCKET)
    s5cmd = [ctx.tool("s5cmd"), "--endpoint-url", creds.endpoint_url, "ls", f"s3://{BUCKET}/{prefix}/*"]
    ours_cmd = [
        sys.executable,
        "-c",
        LIST,
        f"s3://{BUCKET}/{prefix}/",
        creds.access_key,
        creds.secret_key,
        creds.endpoint_url,
    ]
    ours, ref = [], []
    for i in range(ctx.runs):
        pair = [(ours, ours_cmd, True), (ref, s5cmd, False)]
        for bucket, cmd, is_ours in pair if i % 2 == 0 else reversed(pair):
            start = time.perf_counter()
            done = subprocess.run(cmd, env=ctx.s3_env(), capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
            count = int(done.stdout.split()[0]) if is_ours else len(done.stdout.splitlines())
            if count != LIST_OBJECTS:
                raise RuntimeError(f"{'tierflow' if is_ours else 's5cmd'} listed {count} of {LIST_OBJECTS}")
            bucket.append(LIST_OBJECTS / seconds)
    return Comparison("S3 listing of 100,000 objects", "objects/s", ours, ref, "s5cmd ls")


def _plan(ctx: BenchContext) -> Comparison:
    plan = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "plan",
        "--dataset-size",
        "200 TB",
        "--objects",
        "100000000",
        "--nodes",
        "512",
    ]
    version = [sys.executable, "-m", "pipelines.cli", "--version"]
    ours, ref = [], []
    for i in range(ctx.runs):
        pair = [(ours, plan), (ref, version)]
        for bucket, cmd in pair if i % 2 == 0 else reversed(pair):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, cwd=Path(__file__).resolve().parents[1])
            bucket.append(time.perf_counter() - start)
    return Comparison(
        "tierflow plan, 512 nodes, 10^8 objects", "s", ours, ref, "tierflow --version", higher_is_better=False
    )


def _discovery(ctx: BenchContext) -> list[Comparison]:
    from dataclasses import replace

    from pipelines.checkpoints import discover
    from pipelines.checkpoints.markers import MarkerCache
    from pipelines.core.checksum import checksum_bytes
    from pipelines.core.manifest import Entry, Manifest
    from pipelines.storage.commit import commit
    from pipelines.storage.tier import Tier

    creds = ctx.s3(BUCKET)
    cfg = replace(ctx.config.primary("object"), url=f"s3://{BUCKET}/discovery/", conn_id=None)
    tier = Tier(cfg, creds.storage_options())
    for step in range(500):
        name, data = f"step_{step:06d}", b"x" * 64
        tier.write_bytes(f"checkpoints/bench/{name}/.metadata", data)
        commit(tier, Manifest("bench", name, (Entry(".metadata", 64, checksum_bytes(data)),), namespace="checkpoints"))
    cache_file = ctx.workdir / "markers.json"
    discover(tier, markers=MarkerCache(cache_file))  # warms the cache
    gets: dict[str, list[float]] = {"warm": [], "cold": []}
    secs: dict[str, list[float]] = {"warm": [], "cold": []}
    for i in range(ctx.runs):
        for which in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
            cache = MarkerCache(cache_file if which == "warm" else None)
            start = time.perf_counter()
            found = discover(tier, markers=cache)
            secs[which].append(time.perf_counter() - start)
            gets[which].append(cache.reads)
            if len(found) != 500:
                raise RuntimeError(f"discovered {len(found)} of 500 checkpoints")
    return [
        Comparison(
            "discovery of 500 committed: marker GETs per pass",
            "GETs",
            gets["warm"],
            gets["cold"],
            "no cache",
            higher_is_better=False,
        ),
        Comparison(
            "discovery of 500 committed: one pass", "s", secs["warm"], secs["cold"], "no cache", higher_is_better=False
        ),
    ]


def run(ctx: BenchContext) -> list[Comparison]:
    return [*_manifest(ctx), _plan(ctx), *_discovery(ctx), _listing(ctx)]
