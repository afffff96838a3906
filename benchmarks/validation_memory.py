"""Streaming validation of a 128 MiB ``.jsonl.zst`` shard: peak memory and speed, against reading it whole.

Ours is :func:`pipelines.datasets.validation.validate_local_shard` (integrity + the ``synthetic``
suite's 8 expectations), which parses the shard in batches while it decodes it. The reference is
what validation did before: decode the whole shard and read it as one table with
``pyarrow.json.read_json`` (no expectations at all). Each runs in a fresh process that imports
what it needs first; the memory compared is the peak RSS above that process's RSS after its
imports (Great Expectations alone brings ~270 MiB, reported in the notes with the total peak).
Target (#12): ≤ 256 MiB for the shard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison
from pipelines.devtools.corpus import jsonl, records

DESCRIPTION = "validate a 128 MiB .jsonl.zst shard in batches vs decode + pyarrow read_json whole: MiB RSS, MB/s"
SHARD_MIB = 128

_CHILD = r"""
import json, logging, os, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
from pipelines.datasets import validation
suite = validation.load_suite("synthetic")
import pandas, pyarrow, pyarrow.json
if mode == "ours":
    import great_expectations
    validation._quiet_gx()
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak()
start = time.perf_counter()
if mode == "ours":
    report = validation.validate_local_shard(path, "shard.jsonl.zst", suite)
    rows, passed = report.rows, report.passed
else:
    from pipelines.datasets.compression import iter_decompressed
    with open(path, "rb") as fh:
        data = b"".join(iter_decompressed(fh, "shard", None, compressed_size=os.path.getsize(path)))
    table = pyarrow.json.read_json(
        pyarrow.py_buffer(data), parse_options=pyarrow.json.ParseOptions(explicit_schema=suite.arrow_schema())
    )
    rows, passed = table.num_rows, True
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "base": base, "peak": peak(), "rows": rows, "passed": passed}))
"""


def _shard(path: Path) -> int:
    """Write a shard of ~128 MiB of zstd frames (level 3, checksums, one per 20,000 records); its raw bytes."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    written = raw = start = 0
    with open(path, "wb") as out:
        while written < SHARD_MIB * 2**20:
            data = jsonl(list(records(5, start, 20_000)))
            start, raw = start + 20_000, raw + len(data)
            written += out.write(cctx.compress(data))
    return raw


def _measure(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["passed"]:
        raise RuntimeError(f"{mode}: the shard did not pass validation")
    return result


def run(ctx: BenchContext) -> list[Comparison]:
    path = ctx.workdir / "shard.jsonl.zst"
    raw = _shard(path)
    size = path.stat().st_size
    ours: list[dict[str, float]] = []
    ref: list[dict[str, float]] = []
    for i in range(ctx.runs):
        for mode in ("ours", "ref") if i % 2 == 0 else ("ref", "ours"):
            (ours if mode == "ours" else ref).append(_measure(mode, path))

    def median(rows: list[dict[str, float]], key: str) -> float:
        values = sorted(r[key] for r in rows)
        return values[len(values) // 2]

    notes = {
        "shard MiB": round(size / 2**20, 1),
        "raw MB": round(raw / 1e6, 1),
        "rows": int(ours[0]["rows"]),
        "ours total peak RSS MiB": round(median(ours, "peak")),
        "ours RSS after imports (GX) MiB": round(median(ours, "base")),
        "reference total peak RSS MiB": round(median(ref, "peak")),
    }
    return [
        Comparison(
            "validate 1 .jsonl.zst shard: peak RSS above imports",
            "MiB",
            [r["peak"] - r["base"] for r in ours],
            [r["peak"] - r["base"] for r in ref],
            "decode + pyarrow read_json whole",
            higher_is_better=False,
            notes=notes,
        ),
        Comparison(
            "validate 1 .jsonl.zst shard",
            "MB/s",
            [size / r["seconds"] / 1e6 for r in ours],
            [size / r["seconds"] / 1e6 for r in ref],
            "decode + pyarrow read_json whole (no expectations)",
        ),
    ]
