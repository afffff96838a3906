"""Whether zstd pays on a hop: compress time plus moving fewer bytes, against moving the raw bytes.

The codec's speed and ratio come from a measurement on a sample of the real data
(:func:`pipelines.datasets.compression.measure_levels`); the hop's time from the bandwidth model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.core.config import TierConfig
from pipelines.model.bandwidth import Workload, predict_hop

__all__ = ["CodecSample", "CompressionChoice", "choose_compression"]


@dataclass(frozen=True)
class CodecSample:
    """A zstd level measured on a sample: compression speed (input bytes/s, all threads) and ratio."""

    level: int
    compress_bps: float
    ratio: float


@dataclass(frozen=True)
class CompressionChoice:
    """Whether to compress, at which level, the predicted seconds both ways, and why."""

    level: int | None
    raw_s: float
    compressed_s: float
    reason: str


def choose_compression(
    source: TierConfig, destination: TierConfig, work: Workload, concurrency: int, samples: Sequence[CodecSample]
) -> CompressionChoice:
    """Compress only when compress time + moving the smaller bytes beats moving the raw bytes."""
    raw = predict_hop(source, destination, work, concurrency).seconds
    best: tuple[float, CodecSample] | None = None
    for s in samples:
        if s.ratio <= 0 or s.compress_bps <= 0:
            raise ValueError(f"codec sample for level {s.level} must have positive speed and ratio")
        smaller = work.compressed(s.ratio)
        t = work.bytes / s.compress_bps + predict_hop(source, destination, smaller, concurrency).seconds
        if best is None or t < best[0]:
            best = (t, s)
    if best is None:
        return CompressionChoice(None, raw, raw, "no codec measurements")
    t, s = best
    if t < raw:
        return CompressionChoice(
            s.level, raw, t, f"zstd level {s.level} (ratio {s.ratio:.2f}): {t:.1f} s compressed vs {raw:.1f} s raw"
        )
    return CompressionChoice(
        None, raw, t, f"raw: {raw:.1f} s beats the best compressed option (level {s.level}) at {t:.1f} s"
    )
