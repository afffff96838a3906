"""Calibration: measure each tier with the transfer engine, fit its bandwidth profile, store it.

A sweep writes and reads objects of a few sizes at a few concurrencies, within a budget of bytes
and seconds, through the same engine the DAGs use — so the fitted numbers describe what Tierflow
achieves on that tier. The fit:

* **latency** and **per-stream bandwidth** from single-stream runs (small and large objects):
  ``time per object = latency + size / stream bandwidth``, solved from the two sizes;
* **aggregate bandwidth**: the best throughput seen at any concurrency;
* **metadata rate**: the best small-object rate (objects per second, the slower of reading and
  writing), in the model's units (one operation per object on object stores, three per file).

A calibration repeats the sweep (:func:`calibrate_repeated`, three times by default) and keeps
each term's median with its spread (``(max - min) / median``) and sample count. A new fit is
compared with what plans use now (:func:`agreement`): the stored calibration, within the larger of
the two spreads and :data:`MIN_TOLERANCE`; or, before any calibration, the configured numbers,
within a factor of two. A fit that agrees is stored, and so is a first fit that is steady over its
sweeps (every term's spread within :data:`MIN_TOLERANCE`: a stable measurement of the real tier
beats a hand-written guess). Any other is kept beside the profile as a *candidate*
(``<tier>.candidate.json``) and reported, and plans keep the old numbers until it is taken on
purpose (``tierflow calibrate --apply``, the DAG's ``apply`` param): one calibration in a busy
minute cannot move every later plan.

Profiles are stored as JSON with a timestamp under ``<state_dir>/profiles/<tier>.json``;
:func:`calibrated` lays them over the tier config (only the numbers; names, URLs and capacities
stay as configured) together with what observed transfers taught since
(:mod:`pipelines.model.observations`). A failed calibration raises and leaves the stored profile untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.core.config import BandwidthProfile, TierflowConfig
from pipelines.core.manifest import Entry
from pipelines.core.state import locked, write_atomically
from pipelines.model.bandwidth import DEFAULT_PART_SIZE, META_OPS_PER_OBJECT
from pipelines.storage.pagecache import drop
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries

__all__ = [
    "MIN_TOLERANCE",
    "SIZES",
    "TERMS",
    "Agreement",
    "Fit",
    "Sample",
    "agreement",
    "calibrate_repeated",
    "calibrate_tier",
    "calibrated",
    "current_profile",
    "describe",
    "fit_profile",
    "learnt",
    "load_candidate",
    "load_profile",
    "object_rate",
    "save_profile",
    "store_fit",
]

log = logging.getLogger(__name__)

KiB, MiB = 2**10, 2**20
#: Object sizes and concurrencies of the sweep (small: latency; large: bandwidth; the middle one,
#: the geometric mean, shows how the two add up for objects in between).
SIZES = (64 * KiB, 2 * MiB, 64 * MiB)
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
    """Enough objects that per-object costs dominate, within the step's byte budget.

    Large objects move with their parts in parallel: there are at least enough parts for every
    stream to have one (a 64 MiB object holds 8 parts of 8 MiB: two of them fill 16 streams).
    """
    fill = math.ceil(concurrency * DEFAULT_PART_SIZE / max(size, 1))
    return max(1, fill, min(32 * concurrency, budget_bytes // max(size, 1)))


def _overhead(src: Tier, dst: Tier, settings: TransferSettings) -> float:
    """Fixed cost of one copy call (clients, destination listing, reaping), to subtract from each sample."""
    return copy_entries(src, "", dst, "_tierflow/calibration-empty", [], settings).seconds


#: Bytes each step of the largest objects moves on an object store, at least (within the byte
#: budget). One or two objects of 64 MiB take 0.1-0.2 s to and from the embedded server, short
#: enough for the start of the step to weigh: its 1 GiB uploads ran 0.70-0.97 of their prediction,
#: 0.90-0.94 and 0.80-1.02 with steps of 256 MiB (three benchmark runs each). A file tier has no
#: such start (and writes of 256 MiB per step doubled the demo's calibration): it keeps the common step.
LARGEST_OBJECT_STEP_BYTES = 256 * MiB

#: Synced writes: four 64 MiB files at four streams, flushed to the disk once all are written.
SYNCED = (4, 64 * MiB, 4)


def _synced_write(local: Tier, tier: Tier, prefix: str, tmp: str) -> Sample:
    """Write files to a file tier and time until their bytes are on its disk (the pace writers are held to).

    The files are written as a copy writes them, then flushed once all are written (not one by
    one: a flush per file adds a journal commit per file that bulk writeback does not pay).
    """
    n, size, c = SYNCED
    step = "synced"
    Path(tmp, "src", step).mkdir(parents=True)
    entries = [Entry(f"o{i:04d}", size) for i in range(n)]
    for e in entries:
        Path(tmp, "src", step, e.key).write_bytes(os.urandom(size))
    settings = TransferSettings(concurrency=c, retries=0, progress_interval_s=3600)
    fixed = _overhead(local, tier, settings)
    started = time.monotonic()
    copy_entries(local, step, tier, f"{prefix}/{step}", entries, settings)
    for e in entries:
        fd = os.open(tier.path(f"{prefix}/{step}/{e.key}"), os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    seconds = time.monotonic() - started
    return Sample("synced_write", size, n, c, max(seconds - fixed, seconds / 10))


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
    prefix = f"{PROBE_PREFIX}/{os.urandom(4).hex()}"
    per_step = max(MIN_STEP_BYTES, budget_bytes // (len(SIZES) * len(CONCURRENCIES)))
    step_bytes = dict.fromkeys(SIZES, per_step)
    if tier.config.is_object:
        step_bytes[SIZES[-1]] = max(per_step, min(LARGEST_OBJECT_STEP_BYTES, budget_bytes))
    with tempfile.TemporaryDirectory(prefix="tierflow-calibrate-") as tmp:
        local = Tier(replace(tier.config, name="local", kind="pfs", url=f"file://{tmp}/src", conn_id=None, create=True))
        sink = Tier(replace(tier.config, name="local", kind="pfs", url=f"file://{tmp}/dst", conn_id=None, create=True))
        try:
            # Single streams of both sizes first (the fit needs them), then the wider steps as time allows.
            steps = [(size, 1) for size in SIZES] + [(size, c) for size in SIZES for c in CONCURRENCIES if c != 1]
            for size, c in steps:
                if c != 1 and time.monotonic() - started > budget_s:
                    break
                n = _objects_for(size, c, step_bytes[size])
                # Each step writes under a prefix of its own, as a copy of a new dataset does: the
                # destination listing every copy starts with finds it empty, not the earlier steps' objects.
                step = f"s{size}-c{c}"
                entries = [Entry(f"o{i:04d}", size) for i in range(n)]
                Path(tmp, "src", step).mkdir(parents=True)
                for e in entries:
                    Path(tmp, "src", step, e.key).write_bytes(os.urandom(size))
                settings = TransferSettings(concurrency=c, retries=0, progress_interval_s=3600)
                fixed = _overhead(local, tier, settings)
                up = copy_entries(local, step, tier, f"{prefix}/{step}", entries, settings)
                samples.append(Sample("write", size, n, c, max(up.seconds - fixed, up.seconds / 10)))
                full = [Entry(e.key, e.size, up.checksums[e.key]) for e in entries]
                if not tier.config.is_object:  # a file tier: the first read comes off the disk, the second from memory
                    for e in entries:
                        drop(tier.path(f"{prefix}/{step}/{e.key}"))
                fixed = _overhead(tier, sink, settings)
                down = copy_entries(tier, f"{prefix}/{step}", sink, f"c{c}-{size}", full, settings)
                samples.append(Sample("read", size, n, c, max(down.seconds - fixed, down.seconds / 10)))
                if not tier.config.is_object:
                    again = copy_entries(tier, f"{prefix}/{step}", sink, f"c{c}-{size}-cached", full, settings)
                    samples.append(Sample("cached_read", size, n, c, max(again.seconds - fixed, again.seconds / 10)))
            if not tier.config.is_object:  # the pace of writes that reach the disk (once the page cache is full)
                samples.append(_synced_write(local, tier, prefix, tmp))
        finally:
            try:
                tier.delete_prefix(prefix)
            except Exception as exc:  # never hide the measurement's own error behind the cleanup's
                log.warning("could not remove calibration objects under %s: %s", tier.url(prefix), exc)
    per_object = META_OPS_PER_OBJECT[tier.config.kind]
    return fit_profile(samples, tier.config.bandwidth.max_streams, per_object), samples


#: The fitted terms of a profile, compared between calibrations.
TERMS = tuple(
    name
    for name in BandwidthProfile.MEASURED
    if name
    not in (
        "max_streams",
        *(f"{d}_{kind}" for d in ("read", "write", "cached_read") for kind in ("curve", "by_streams")),
    )
)


def term(profile: BandwidthProfile, name: str) -> float:
    """A fitted term's value (the write latency and rate are the read ones where a profile has none of its own)."""
    if name == "write_latency_s":
        return profile.latency("write")
    if name == "write_ops":
        return profile.ops("write")
    return float(getattr(profile, name))


#: Smallest relative distance that counts as a disagreement with a stored calibration (shared machines are noisy).
MIN_TOLERANCE = 0.25
#: Against configured numbers (a first calibration): within a factor of two either way.
CONFIGURED_TOLERANCE = 1.0


@dataclass(frozen=True)
class Fit:
    """A repeated calibration: each term's median, its spread over the repeats, and what was measured."""

    profile: BandwidthProfile
    spread: dict[str, float]  #: term → (max - min) / median over the repeats (0 for one repeat)
    repeats: int
    samples: list[Sample]

    def terms(self) -> dict[str, dict[str, float]]:
        """Each term with its value, spread and sample count (what the profile file keeps)."""
        per_repeat = len(self.samples) // max(self.repeats, 1)
        return {
            t: {"value": term(self.profile, t), "spread": round(self.spread[t], 4), "samples": per_repeat}
            for t in TERMS
        }


def calibrate_repeated(tier: Tier, budget_bytes: int = 256 * MiB, budget_s: float = 60.0, repeats: int = 3) -> Fit:
    """Run the sweep ``repeats`` times (the time budget shared) and keep each term's median and spread."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    import statistics  # calibration's own: not imported where plans only read profiles

    fits: list[BandwidthProfile] = []
    samples: list[Sample] = []
    for _ in range(repeats):
        profile, found = calibrate_tier(tier, budget_bytes=budget_bytes, budget_s=budget_s / repeats)
        fits.append(profile)
        samples += found
    median: dict[str, float] = {}
    spread: dict[str, float] = {}
    for name in TERMS:
        values = sorted(term(f, name) for f in fits)
        mid = statistics.median(values)
        median[name] = mid
        spread[name] = (values[-1] - values[0]) / mid if mid > 0 else 0.0
    profile = BandwidthProfile(
        read_bps=median["read_bps"],
        write_bps=median["write_bps"],
        stream_read_bps=median["stream_read_bps"],
        stream_write_bps=median["stream_write_bps"],
        latency_s=median["latency_s"],
        metadata_ops=median["metadata_ops"],
        max_streams=fits[0].max_streams,
        write_latency_s=median["write_latency_s"],
        write_ops=median["write_ops"],
        read_curve=_median_points([f.read_curve for f in fits]),
        write_curve=_median_points([f.write_curve for f in fits]),
        cached_read_curve=_median_points([f.cached_read_curve for f in fits]),
        read_by_streams=_median_points([f.read_by_streams for f in fits]),
        write_by_streams=_median_points([f.write_by_streams for f in fits]),
        cached_read_by_streams=_median_points([f.cached_read_by_streams for f in fits]),
        synced_write_bps=median["synced_write_bps"],
    )
    return Fit(profile, spread, repeats, samples)


def _median_points(tables: Sequence[Sequence[tuple[Any, ...]]]) -> tuple[tuple[Any, ...], ...]:
    """Each point's median throughput over the repeats' tables.

    A point is its leading fields (object size; or size and streams), its throughput the last.
    """
    import statistics

    at: dict[tuple[int, ...], list[float]] = {}
    for table in tables:
        for *key, bps in table:
            at.setdefault(tuple(key), []).append(bps)
    return tuple((*key, statistics.median(values)) for key, values in sorted(at.items()))


@dataclass(frozen=True)
class Agreement:
    """Whether a new fit agrees with what plans use now, and where it does not."""

    agrees: bool
    against: str  #: ``calibration of <when>``, ``configured profile`` or ``nothing``
    #: term → (new value, current value, tolerance) for each term beyond its tolerance.
    differences: dict[str, tuple[float, float, float]]
    note: str = ""  #: why a fit that disagrees was stored all the same

    def line(self) -> str:
        """One line for logs and the CLI."""
        if self.agrees:
            return f"agrees with the {self.against}"
        parts = [
            f"{_term_text(t, new)} against {_term_text(t, old)} (beyond ±{tol:.0%})"
            for t, (new, old, tol) in self.differences.items()
        ]
        return f"disagrees with the {self.against}: " + "; ".join(parts) + (f"; {self.note}" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "agrees": self.agrees,
            "against": self.against,
            "differences": {
                t: {"new": n, "current": o, "tolerance": tol} for t, (n, o, tol) in self.differences.items()
            },
        }


def _term_text(name: str, value: float) -> str:
    if name in ("latency_s", "write_latency_s"):
        return f"{'write ' if name.startswith('write') else ''}latency {value * 1000:.2f} ms"
    if name in ("metadata_ops", "write_ops"):
        return f"{'write ' if name.startswith('write') else ''}metadata {value:,.0f}/s"
    return f"{name.removesuffix('_bps').replace('_', ' ')} {value / 1e6:,.1f} MB/s"


def agreement(fit: Fit, current: BandwidthProfile, current_spread: dict[str, float] | None, against: str) -> Agreement:
    """Compare a fit with the profile plans use now; ``current_spread`` None means configured numbers."""
    differences = {}
    for name in TERMS:
        new, old = term(fit.profile, name), term(current, name)
        if current_spread is None:
            tolerance = CONFIGURED_TOLERANCE
        else:
            tolerance = max(MIN_TOLERANCE, current_spread.get(name, 0.0), fit.spread.get(name, 0.0))
        if old > 0 and new > 0 and max(new / old, old / new) - 1 > tolerance:
            differences[name] = (new, old, tolerance)
    return Agreement(not differences, against, differences)


def current_profile(config: TierflowConfig, tier: str) -> tuple[BandwidthProfile, dict[str, float] | None, str]:
    """What plans use now for ``tier``: the stored calibration (with its spread) or the configured profile."""
    path = _profile_path(config, tier)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return config.tier(tier).bandwidth, None, "configured profile"
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable calibrated profile ({exc})") from None
    terms = data.get("terms") or {}
    spread = {t: float(v.get("spread", 0.0)) for t, v in terms.items()}
    return _profile(data), spread, f"calibration of {data.get('calibrated_at', '?')}"


def store_fit(config: TierflowConfig, tier: str, fit: Fit, apply: bool = False) -> tuple[str, Agreement, Path]:
    """Store ``fit`` as the tier's profile when it agrees (or ``apply``), else keep it as the candidate.

    Returns ``("applied" | "candidate", the agreement, the file written)``. Taking a fit removes
    any candidate left by an earlier one.
    """
    path = _profile_path(config, tier)
    with locked(path):
        current, spread, against = current_profile(config, tier)
        agreed = agreement(fit, current, spread, against)
        candidate = _candidate_path(config, tier)
        # Configured numbers are a guess: a first fit that is steady over its sweeps replaces them.
        steady = spread is None and fit.repeats > 1 and max(fit.spread.values(), default=1.0) <= MIN_TOLERANCE
        if agreed.agrees or apply or steady:
            if not agreed.agrees:
                why = (
                    "taken on purpose (apply)"
                    if apply
                    else (
                        f"taken: steady over {fit.repeats} sweeps (spread at most {MIN_TOLERANCE:.0%}), "
                        "it replaces the configured numbers"
                    )
                )
                agreed = replace(agreed, note=why)
            written = _write_profile(config, tier, fit.profile, fit.samples, fit)
            candidate.unlink(missing_ok=True)
            return "applied", agreed, written
        data = _profile_document(tier, fit.profile, fit.samples, fit)
        data["agreement"] = agreed.to_json() | {"line": agreed.line()}
        write_atomically(candidate, json.dumps(data, indent=2).encode())
        return "candidate", agreed, candidate


def load_candidate(config: TierflowConfig, tier: str) -> dict[str, Any] | None:
    """The candidate fit kept for ``tier`` (calibrated_at, profile, agreement), or None."""
    try:
        data: dict[str, Any] = json.loads(_candidate_path(config, tier).read_text())
        return data
    except (FileNotFoundError, ValueError):
        return None


def object_rate(samples: list[Sample], direction: str) -> float:
    """Objects per second the tier sustains through the engine in ``direction``: the best small-object rate."""
    smallest = min(s.size for s in samples)
    runs = [s.objects / s.seconds for s in samples if s.direction == direction and s.size == smallest and s.seconds]
    return max(runs) if runs else 1.0


#: Smallest byte budget per sweep step (so a step moves at least a few objects).
MIN_STEP_BYTES = 64 * MiB


def fit_profile(samples: list[Sample], max_streams: int, ops_per_object: float = 1.0) -> BandwidthProfile:
    """Fit a profile from a sweep, per direction (an object store's GET and PUT differ).

    Latency and stream bandwidth from single streams of two sizes; aggregate bandwidth from the
    best throughput seen; the operation rate from the best small-object rate, times
    ``ops_per_object`` (the model's operations per object on this kind of tier).
    """
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
        latency_s=fitted["read"][2],
        metadata_ops=max(object_rate(samples, "read") * ops_per_object, 1.0),
        max_streams=max_streams,
        read_curve=_curve(samples, "read"),
        write_curve=_curve(samples, "write"),
        cached_read_curve=_curve(samples, "cached_read"),
        read_by_streams=_by_streams(samples, "read"),
        write_by_streams=_by_streams(samples, "write"),
        cached_read_by_streams=_by_streams(samples, "cached_read"),
        synced_write_bps=max((s.throughput_bps for s in samples if s.direction == "synced_write"), default=0.0),
        write_latency_s=fitted["write"][2],
        write_ops=max(object_rate(samples, "write") * ops_per_object, 1.0),
    )


def _curve(samples: list[Sample], direction: str) -> tuple[tuple[int, float], ...]:
    """The best aggregate throughput measured at each object size in ``direction``, smallest size first."""
    best: dict[int, float] = {}
    for s in samples:
        if s.direction == direction and s.seconds > 0:
            best[s.size] = max(best.get(s.size, 0.0), s.throughput_bps)
    return tuple(sorted(best.items()))


def _by_streams(samples: list[Sample], direction: str) -> tuple[tuple[int, int, float], ...]:
    """The aggregate throughput measured at each (object size, streams) in ``direction``, in order."""
    best: dict[tuple[int, int], float] = {}
    for s in samples:
        if s.direction == direction and s.seconds > 0:
            key = (s.size, s.concurrency)
            best[key] = max(best.get(key, 0.0), s.throughput_bps)
    return tuple((size, streams, bps) for (size, streams), bps in sorted(best.items()))


def describe(profile: BandwidthProfile) -> dict[str, Any]:
    """A profile in human units (MB/s, ms), JSON-safe: for logs, XCom and the plugin."""
    return {
        "read_MBps": round(profile.read_bps / 1e6, 1),
        "write_MBps": round(profile.write_bps / 1e6, 1),
        "stream_read_MBps": round(profile.stream_read_bps / 1e6, 1),
        "stream_write_MBps": round(profile.stream_write_bps / 1e6, 1),
        "latency_ms": round(profile.latency_s * 1000, 3),
        "write_latency_ms": round(profile.latency("write") * 1000, 3),
        "metadata_ops": round(profile.metadata_ops, 1),
        "write_ops": round(profile.ops("write"), 1),
        "max_streams": profile.max_streams,
        "read_correction": round(profile.read_correction, 3),
        "write_correction": round(profile.write_correction, 3),
        "uncertainty": round(profile.uncertainty, 3),
    }


def _profile_path(config: TierflowConfig, tier: str) -> Path:
    return config.state_dir / "profiles" / f"{tier}.json"


def _candidate_path(config: TierflowConfig, tier: str) -> Path:
    return config.state_dir / "profiles" / f"{tier}.candidate.json"


def save_profile(config: TierflowConfig, tier: str, profile: BandwidthProfile, samples: list[Sample]) -> Path:
    """Store a fitted profile with its samples and a timestamp (whole, under the profile's lock)."""
    with locked(_profile_path(config, tier)):
        return _write_profile(config, tier, profile, samples)


def _profile_document(
    tier: str, profile: BandwidthProfile, samples: list[Sample], fit: Fit | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tier": tier,
        "calibrated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": _measured(profile),
        "samples": [asdict(s) | {"MBps": round(s.throughput_bps / 1e6, 1)} for s in samples],
    }
    if fit is not None:
        data |= {"repeats": fit.repeats, "terms": fit.terms()}
    return data


def _write_profile(
    config: TierflowConfig, tier: str, profile: BandwidthProfile, samples: list[Sample], fit: Fit | None = None
) -> Path:
    path = _profile_path(config, tier)
    write_atomically(path, json.dumps(_profile_document(tier, profile, samples, fit), indent=2).encode())
    return path


def load_profile(config: TierflowConfig, tier: str) -> tuple[BandwidthProfile, str] | None:
    """The stored profile of a tier and when it was calibrated, or None."""
    path = _profile_path(config, tier)
    try:
        data = json.loads(path.read_text())
        return _profile(data), str(data["calibrated_at"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable calibrated profile ({exc})") from None


def _measured(profile: BandwidthProfile) -> dict[str, Any]:
    """The fields of a profile that calibration measures (what a profile file stores)."""
    return {k: v for k, v in asdict(profile).items() if k in BandwidthProfile.MEASURED}


def _profile(data: dict[str, Any]) -> BandwidthProfile:
    """The profile a profile file stores (learnt fields, if an older file has them, are ignored)."""
    fields = {k: v for k, v in data["profile"].items() if k in BandwidthProfile.MEASURED}
    for name in ("read_curve", "write_curve", "cached_read_curve"):  # JSON lists back to the profile's tuples
        fields[name] = tuple((int(size), float(bps)) for size, bps in fields.get(name) or ())
    for name in ("read_by_streams", "write_by_streams", "cached_read_by_streams"):  # absent from older files
        fields[name] = tuple((int(size), int(streams), float(bps)) for size, streams, bps in fields.get(name) or ())
    return BandwidthProfile(**fields)


def _epoch(iso: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _stored(config: TierflowConfig) -> dict[str, tuple[BandwidthProfile, dict[str, float], float | None]]:
    """Each calibrated tier's stored profile, its terms' spreads and when it was calibrated (epoch s)."""
    stored = {}
    for tier in config.tiers:
        path = _profile_path(config, tier.name)
        try:
            data = json.loads(path.read_text())
            spread = {t: float(v.get("spread", 0.0)) for t, v in (data.get("terms") or {}).items()}
            stored[tier.name] = (_profile(data), spread, _epoch(str(data["calibrated_at"])))
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable calibrated profile ({exc})") from None
    return stored


def learnt(config: TierflowConfig, observed: list[Any] | None = None) -> dict[tuple[str, str], Any]:
    """What observed transfers taught per (tier, direction) since each tier's last calibration, with the samples.

    ``observed`` defaults to the end of the observation log.
    """
    from pipelines.model.observations import corrections

    return corrections(config, {name: found[2] for name, found in _stored(config).items()}, observed)


def calibrated(config: TierflowConfig, observed: list[Any] | None = None) -> TierflowConfig:
    """The config plans use: calibration (else configured numbers) and the correction learnt since.

    Each tier's stored calibration, else its configured numbers, with the correction learnt from
    the transfers observed since (:func:`learnt`).
    Each profile also carries its uncertainty: half the largest spread of its calibration's
    terms, or of the samples of a correction in force, whichever is larger.
    """
    from pipelines.model.observations import corrections

    stored = _stored(config)
    taught = corrections(config, {name: found[2] for name, found in stored.items()}, observed)
    tiers = []
    for tier in config.tiers:
        profile, spread, _ = stored.get(tier.name, (tier.bandwidth, None, None))
        uncertainty = profile.uncertainty if spread is None else max(spread.values(), default=0.0) / 2
        read, write = taught[(tier.name, "read")], taught[(tier.name, "write")]
        for c in (read, write):
            if c.factor != 1.0:
                uncertainty = max(uncertainty, c.spread / 2)
        profile = replace(
            profile,
            read_correction=read.factor,
            write_correction=write.factor,
            uncertainty=round(uncertainty, 4),
            # The store's throttling limits are configured, not measured: they stay over a calibration.
            request_limit=tier.bandwidth.request_limit,
            write_request_limit=tier.bandwidth.write_request_limit,
        )
        tiers.append(replace(tier, bandwidth=profile))
    return replace(config, tiers=tuple(tiers))
