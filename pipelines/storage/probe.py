"""A tier health probe: write, stat, list, read back, verify and delete one object, timing each step.

It answers "can this tier be used right now, and roughly how fast?" before a long job depends
on it, and it exercises exactly the operations every hop uses (atomic write, listing, checksum).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.core.checksum import checksum_bytes
from pipelines.storage.tier import Tier

__all__ = ["ProbeError", "ProbeResult", "probe_tier"]

#: Where probe objects are written, relative to the tier root.
PROBE_PREFIX = "_tierflow/probe"


class ProbeError(RuntimeError):
    """The tier answered, but what it returned is wrong (size, checksum or listing)."""


@dataclass(frozen=True)
class ProbeResult:
    """What one probe measured. Throughputs are bytes per second of the one probe object."""

    tier: str
    kind: str
    url: str
    bytes: int
    write_s: float
    read_s: float
    list_s: float
    delete_s: float

    @property
    def write_bps(self) -> float:
        """Write throughput of the probe object."""
        return self.bytes / self.write_s if self.write_s > 0 else 0.0

    @property
    def read_bps(self) -> float:
        """Read throughput of the probe object."""
        return self.bytes / self.read_s if self.read_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """A small, JSON-safe summary (for XCom and logs)."""
        data = asdict(self)
        data["write_MBps"] = round(self.write_bps / 1e6, 1)
        data["read_MBps"] = round(self.read_bps / 1e6, 1)
        return data


def probe_tier(tier: Tier, size: int) -> ProbeResult:
    """Probe a tier with one object of ``size`` bytes; the object is removed even when a step fails.

    Raises:
        ProbeError: The tier returned the wrong size, checksum or listing.
        OSError: The tier could not be reached or refused an operation (e.g. ``PermissionError``).
    """
    key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}.bin"
    data = os.urandom(size)
    expected = checksum_bytes(data)
    try:
        t0 = time.perf_counter()
        with tier.writer(key) as fh:
            fh.write(data)
        t1 = time.perf_counter()
        listed = {o.key: o.size for o in tier.list(PROBE_PREFIX)}
        t2 = time.perf_counter()
        if listed.get(key) != size:
            raise ProbeError(f"{tier.url(key)}: listed with size {listed.get(key)}, wrote {size}")
        digest, got = tier.checksum(key)
        t3 = time.perf_counter()
        if (digest, got) != (expected, size):
            raise ProbeError(f"{tier.url(key)}: read back {got} bytes with checksum {digest}, wrote {size} {expected}")
    finally:
        t4 = time.perf_counter()
        if tier.exists(key):
            tier.delete([key])
        t5 = time.perf_counter()
    return ProbeResult(
        tier=tier.name,
        kind=tier.config.kind,
        url=tier.url(),
        bytes=size,
        write_s=t1 - t0,
        read_s=t3 - t2,
        list_s=t2 - t1,
        delete_s=t5 - t4,
    )
