"""zstd measurements for the planner: how fast each level compresses a sample, and how much.

The planner decides whether compression pays from these numbers (see
:func:`pipelines.bandwidth.choose_compression`); measuring on a sample of the real data matters,
because text compresses ~3x while already-compressed Parquet gains ~1.2x.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from pipelines.bandwidth import CodecSample

__all__ = ["DEFAULT_LEVELS", "measure_levels", "read_sample"]

DEFAULT_LEVELS = (1, 3, 9, 19)
#: Largest sample measured; enough for stable speed, small enough to measure in about a second.
SAMPLE_BYTES = 16 * 2**20


def read_sample(path: str, size: int = SAMPLE_BYTES) -> bytes:
    """Up to ``size`` bytes from the start of a local file."""
    with open(path, "rb") as fh:
        return fh.read(size)


def measure_levels(sample: bytes, levels: Sequence[int] = DEFAULT_LEVELS, threads: int = 0) -> list[CodecSample]:
    """Compress ``sample`` at each level (frames with checksum and content size) and measure speed and ratio.

    ``threads`` is zstd's worker count (0 = one per CPU, as the compressor would run).
    """
    import zstandard

    if not sample:
        raise ValueError("cannot measure compression on an empty sample")
    workers = threads or (os.cpu_count() or 1)
    out = []
    for level in levels:
        compressor = zstandard.ZstdCompressor(
            level=level, threads=workers, write_checksum=True, write_content_size=True
        )
        start = time.perf_counter()
        compressed = compressor.compress(sample)
        seconds = max(time.perf_counter() - start, 1e-9)
        out.append(CodecSample(level=level, compress_bps=len(sample) / seconds, ratio=len(sample) / len(compressed)))
    return out
