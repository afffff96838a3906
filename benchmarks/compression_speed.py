"""``tierflow compress`` against the ``zstd`` CLI: same JSONL file, same levels and threads, checksums on in both.

Whole commands are timed (process start included), interleaved, the order rotating run by run.
The library call alone (no process start) is reported in the notes as ``in-process MB/s``, and
the compressed sizes of both as ``ratio`` / ``cli ratio`` (the target is equal ratio within 1 %).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.datasets.compression import compress_file
from pipelines.devtools.bench import BenchContext, Comparison, timed
from pipelines.devtools.corpus import write_jsonl

DESCRIPTION = "tierflow compress vs zstd CLI on 128 MiB JSONL, levels 1/3/9/19, 2 threads, MB/s"
SIZE = 128 * 2**20
LEVELS = (1, 3, 9, 19)
THREADS = 2


def run(ctx: BenchContext) -> list[Comparison]:
    src = ctx.workdir / "corpus.jsonl"
    size = write_jsonl(src, SIZE, seed=23)
    tierflow = str(Path(sys.executable).with_name("tierflow"))
    zstd = ctx.tool("zstd")
    out = []
    for level in LEVELS:
        ours, ref, lib = [], [], []
        ours_out, ref_out = ctx.workdir / "ours.zst", ctx.workdir / "ref.zst"
        ours_cmd = [tierflow, "compress", str(src), str(ours_out), "--level", str(level), "--threads", str(THREADS)]
        ref_cmd = [zstd, "-q", "-f", f"-T{THREADS}", f"-{level}", "--check", str(src), "-o", str(ref_out)]
        for i in range(ctx.runs):
            order = [(ours_cmd, ours), (ref_cmd, ref)]
            for cmd, into in order if i % 2 == 0 else reversed(order):
                seconds = timed(lambda c=cmd: subprocess.run(c, check=True, capture_output=True))
                into.append(size / seconds / 1e6)
            lib.append(size / compress_file(str(src), str(ctx.workdir / "lib.zst"), level, THREADS).seconds / 1e6)
        ours_ratio = size / os.path.getsize(ours_out)
        ref_ratio = size / os.path.getsize(ref_out)
        out.append(
            Comparison(
                f"compress level {level}",
                "MB/s",
                ours,
                ref,
                "zstd",
                notes={
                    "ratio": round(ours_ratio, 3),
                    "cli ratio": round(ref_ratio, 3),
                    "ratio diff %": round(100 * (ours_ratio / ref_ratio - 1), 2),
                    "in-process MB/s": round(sorted(lib)[len(lib) // 2], 1),
                },
            )
        )
    return out
