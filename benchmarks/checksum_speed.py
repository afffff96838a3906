"""Manifest checksum speed: xxh3-128 (Tierflow's choice) against MD5, the algorithm of S3 ETags.

Measured on 256 MiB of random data in memory, so the number is the hash, not the disk.
"""

from __future__ import annotations

import hashlib
import os

from pipelines.core.checksum import checksum_bytes
from pipelines.devtools.bench import BenchContext, Comparison, timed

DESCRIPTION = "xxh3-128 vs MD5 (S3 ETag) on 256 MiB in memory, MB/s"
SIZE = 256 * 2**20


def run(ctx: BenchContext) -> list[Comparison]:
    data = os.urandom(SIZE)
    ours, ref = [], []
    for _ in range(ctx.runs):
        ours.append(SIZE / timed(lambda: checksum_bytes(data)) / 1e6)
        ref.append(SIZE / timed(lambda: hashlib.md5(data).hexdigest()) / 1e6)
    return [Comparison("checksum 256 MiB", "MB/s", ours, ref, "md5")]
