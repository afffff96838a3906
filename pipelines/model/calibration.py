"""Calibration: measure each tier with the transfer engine, fit its bandwidth profile, store it.

A sweep writes and reads objects of a few sizes at a few concurrencies, within a budget of bytes
and seconds, through the same engine the DAGs use — so the fitted numbers describe what Tierflow
achieves on that tier. The fit:

* **latency** and **per-stream bandwidth** from single-stream runs (small and large objects):
  ``time per object = latency + size / stream bandwidth``, solved from the two sizes;
* **aggregate bandwidth**: the best throughput seen at any concurrency;
* **metadata rate**: the best small-object rate (objects per second, the slower of reading and
  writing), in the model's units (one operation per object on object stores, three per file).

Profiles are stored as JSON with a timestamp under ``<state_dir>/profiles/<tier>.json``;
:func:`calibrated` lays them over the tier config (only the numbers; names, URLs and capacities
stay as configured). A failed calibration raises and leaves the stored profile untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.core.config import BandwidthProfile, TierflowConfig
from pipelines.core.manifest import Entry
from pipelines.core.state import locked, write_atomically
from pipelines.model.bandwidth import META_OPS_PER_OBJECT
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries

__all__ = [
    "Sample",
    "calibrate_tier",
    "calibrated",
    "describe",
    "fit_profile",
    "load_profile",
    "object_rate",
    "save_profile",
]

log = logging.getLogger(__name__)

KiB, MiB = 2**10, 2**20
#: Object sizes and concurrencies of the sweep (small: latency; large: bandwidth).
SIZES = (64 * KiB, 64 * MiB)
CONCURRENCIES = (1, 4, 16)
PROBE_PREFIX = "_tierflow/calibration"


@dataclass(frozen=True)
class Sample:
    """One measurement: ``objects`` objects of ``size`` bytes moved with ``concurrency`` streams."""

    direction: str
    size: int
    objects: int
    concurrency: int
    seconds: float

    @property
    def throughput_bps(self) -> float:
        """Bytes per second."""
        return self.size * self.objects / self.seconds if self.seconds > 0 else 0.0


def _objects_for(size: int, concurrency: int, budget_bytes: int) -> int:
    """Enough objects that per-object costs dominate, within the step's byte budget (at least one).

    Large objects move one at a time with their parts in parallel, so one of them already
    exercises ``concurrency`` streams.
    """
    return max(1, min(32 * concurrency, budget_bytes // max(size, 1)))


def _overhead(src: Tier, dst: Tier, settings: TransferSettings) -> float:
    """Fixed cost of one copy call (clients, destination listing, reaping), to subtract from each sample."""
    return copy_entries(src, "", dst, "_tierflow/calibration-empty", [], settings).seconds


def calibrate_tier(
    tier: Tier, budget_bytes: int = 256 * MiB, budget_s: float = 60.0
) -> tuple[BandwidthProfile, list[Sample]]:
    """Run the sweep on ``tier`` and fit its profile; everything written is removed again.

    Raises:
        OSError: The tier is unreachable or refuses writes (e.g. ``PermissionError``).
    """
    samples: list[Sample] = []
    try:  # fail fast and clearly on a tier that cannot be reached at all
        tier.list(PROBE_PREFIX)
    except OSError:
        raise
    except Exception as exc:  # botocore's connection errors are not OSErrors
        raise ConnectionError(f"tier {tier.name} ({tier.url()}) is unreachable: {exc}") from exc
    started = time.monotonic()
    prefix = f"{PROBE_PREFIX}/{uuid.uuid4().hex[:8]}"
    per_step = max(MIN_STEP_BYTES, budget_bytes // (len(SIZES) * len(CONCURRENCIES)))
    with tempfile.TemporaryDirectory(prefix="tierflow-calibrate-") as tmp:
        local = Tier(replace(tier.config, name="local", kind="pfs", url=f"file://{tmp}/src", conn_id=None, create=True))
        sink = Tier(replace(tier.config, name="local", kind="pfs", url=f"file://{tmp}/dst", conn_id=None, create=True))
        try:
            for size in SIZES:
                for c in CONCURRENCIES:
                    if time.monotonic() - started > budget_s:
                        break
                    n = _objects_for(size, c, per_step)
                    entries = [Entry(f"s{size}-c{c}/o{i:04d}", size) for i in range(n)]
                    for e in entries:
                        path = Path(tmp, "src", e.key)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(os.urandom(size))
                    settings = TransferSettings(concurrency=c, retries=0, progress_interval_s=3600)
                    fixed = _overhead(local, tier, settings)
                    up = copy_entries(local, "", tier, prefix, entries, settings)
                    samples.append(Sample("write", size, n, c, max(up.seconds - fixed, up.seconds / 10)))
                    full = [Entry(e.key, e.size, up.checksums[e.key]) for e in entries]
                    fixed = _overhead(tier, sink, settings)
                    down = copy_entries(tier, prefix, sink, f"c{c}-{size}", full, settings)
                    samples.append(Sample("read", size, n, c, max(down.seconds - fixed, down.seconds / 10)))
        finally:
            try:
                tier.delete_prefix(prefix)
            except Exception as exc:  # never hide the measurement's own error behind the cleanup's
                log.warning("could not remove calibration objects under %s: %s", tier.url(prefix), exc)
    per_object = META_OPS_PER_OBJECT[tier.config.kind]
    return fit_profile(samples, object_rate(samples) * per_object, tier.config.bandwidth.max_streams), samples


def object_rate(samples: list[Sample]) -> float:
    """Objects per second the tier sustains through the engine: the best small-object rate, slower direction."""
    smallest = min(s.size for s in samples)
    rates = []
    for direction in ("read", "write"):
        runs = [s.objects / s.seconds for s in samples if s.direction == direction and s.size == smallest and s.seconds]
        if runs:
            rates.append(max(runs))
    return min(rates) if rates else 1.0


#: Smallest byte budget per sweep step (so a step moves at least a few objects).
MIN_STEP_BYTES = 64 * MiB


def fit_profile(samples: list[Sample], metadata_ops: float, max_streams: int) -> BandwidthProfile:
    """Fit a profile from a sweep: latency and stream bandwidth from single streams, aggregate from the best."""
    fitted: dict[str, tuple[float, float, float]] = {}
    for direction in ("read", "write"):
        ones = sorted((s for s in samples if s.direction == direction and s.concurrency == 1), key=lambda s: s.size)
        if len(ones) < 2:
            raise ValueError(f"calibration needs single-stream {direction}s of two sizes")
        small, large = ones[0], ones[-1]
        t_small, t_large = small.seconds / small.objects, large.seconds / large.objects
        per_byte = max((t_large - t_small) / (large.size - small.size), 1e-12)
        latency = max(t_small - small.size * per_byte, 1e-5)
        best = max(s.throughput_bps for s in samples if s.direction == direction)
        stream = min(1 / per_byte, best)
        fitted[direction] = (best, stream, latency)
    return BandwidthProfile(
        read_bps=fitted["read"][0],
        write_bps=fitted["write"][0],
        stream_read_bps=fitted["read"][1],
        stream_write_bps=fitted["write"][1],
        latency_s=(fitted["read"][2] + fitted["write"][2]) / 2,
        metadata_ops=max(metadata_ops, 1.0),
        max_streams=max_streams,
    )


def describe(profile: BandwidthProfile) -> dict[str, Any]:
    """A profile in human units (MB/s, ms), JSON-safe: for logs, XCom and the plugin."""
    return {
        "read_MBps": round(profile.read_bps / 1e6, 1),
        "write_MBps": round(profile.write_bps / 1e6, 1),
        "stream_read_MBps": round(profile.stream_read_bps / 1e6, 1),
        "stream_write_MBps": round(profile.stream_write_bps / 1e6, 1),
        "latency_ms": round(profile.latency_s * 1000, 3),
        "metadata_ops": round(profile.metadata_ops, 1),
        "max_streams": profile.max_streams,
    }


def _profile_path(config: TierflowConfig, tier: str) -> Path:
    return config.state_dir / "profiles" / f"{tier}.json"


def save_profile(config: TierflowConfig, tier: str, profile: BandwidthProfile, samples: list[Sample]) -> Path:
    """Store a fitted profile with its samples and a timestamp (whole, under the profile's lock)."""
    with locked(_profile_path(config, tier)):
        return _write_profile(config, tier, profile, samples)


def update_profile(
    config: TierflowConfig, tier: str, change: Callable[[BandwidthProfile], BandwidthProfile | None]
) -> BandwidthProfile | None:
    """Read, change and store a tier's profile as one step under its lock (so concurrent updates all count).

    ``change`` receives the stored profile (the configured one when none is stored) and returns the
    new one, or None to leave it as it is. Returns what was stored, or None.
    """
    path = _profile_path(config, tier)
    with locked(path):
        found = load_profile(config, tier)
        current = found[0] if found else config.tier(tier).bandwidth
        new = change(current)
        if new is not None:
            _write_profile(config, tier, new, [])
        return new


def _write_profile(config: TierflowConfig, tier: str, profile: BandwidthProfile, samples: list[Sample]) -> Path:
    path = _profile_path(config, tier)
    data: dict[str, Any] = {
        "tier": tier,
        "calibrated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": asdict(profile),
        "samples": [asdict(s) | {"MBps": round(s.throughput_bps / 1e6, 1)} for s in samples],
    }
    write_atomically(path, json.dumps(data, indent=2).encode())
    return path


def load_profile(config: TierflowConfig, tier: str) -> tuple[BandwidthProfile, str] | None:
    """The stored profile of a tier and when it was calibrated, or None."""
    path = _profile_path(config, tier)
    try:
        data = json.loads(path.read_text())
        return BandwidthProfile(**data["profile"]), str(data["calibrated_at"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable calibrated profile ({exc})") from None


def calibrated(config: TierflowConfig) -> TierflowConfig:
    """The config with every calibrated tier's bandwidth profile replaced by its stored measurement."""
    tiers = []
    for tier in config.tiers:
        found = load_profile(config, tier.name)
        tiers.append(replace(tier, bandwidth=found[0]) if found else tier)
    return replace(config, tiers=tuple(tiers))
