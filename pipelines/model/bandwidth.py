"""The storage-bandwidth model and the planner that sizes every Tierflow task from it.

Pure functions over :class:`~pipelines.core.config.BandwidthProfile` numbers: no I/O, no Airflow.

**Model.** Moving a workload from a source tier to a destination tier at concurrency ``c`` takes,
at each end, the slowest of three limits (a roofline):

* *bandwidth-bound*: ``bytes / aggregate bandwidth`` — the tier is saturated;
* *stream-bound*: ``(requests × latency + bytes / per-stream bandwidth) / c`` — each of the ``c``
  streams pays the request latency and moves at one stream's speed (called *latency-bound* when
  the latency part dominates, as with many small objects);
* *metadata-bound*: ``metadata operations / metadata rate`` — creating, listing, renaming.

A hop takes the slower of its two ends. Multi-hop staging is either sequential (the sum) or
pipelined (the slowest hop plus the time for the first shard to get through the others).

**Planner.** :func:`plan_hop` picks concurrency, part size, number of mapped shards, pool and
pool slots, and the execution timeout; :func:`pipelines.model.codecs.choose_compression` decides
whether zstd pays.
Every choice comes with a one-line reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from pipelines.core.config import CONFIGURED_UNCERTAINTY, BandwidthProfile, TierConfig
from pipelines.core.payloads import Payload
from pipelines.core.units import format_bandwidth, format_bytes, format_duration

__all__ = [
    "BUFFERS_PER_STREAM",
    "DEFAULT_MEMORY_BUDGET",
    "DOWNLOAD_BUFFERS_PER_STREAM",
    "MAX_MAP_LENGTH",
    "Bottleneck",
    "EndPrediction",
    "HopPlan",
    "HopPrediction",
    "HopSizing",
    "StagingPrediction",
    "Workload",
    "at_streams",
    "buffers_per_stream",
    "deadline_advice",
    "part_size_for",
    "plan_hop",
    "predict_hop",
    "predict_staging",
    "smallest_part",
]

MiB = 2**20
#: S3 multipart limits.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 2**30
MAX_PARTS = 10_000
#: Part size when nothing pushes it elsewhere: large enough that latency is a small share of a part.
DEFAULT_PART_SIZE = 8 * MiB
#: Part buffers the native client holds per stream of a ranged copy: the part each connection
#: receives, parts received ahead of the one being handed over (it hands them over in order) and
#: the one being written. Measured on downloads of 1 GiB, peak RSS less the process's own, per
#: stream and part size: 1.6-2.0 at 13 streams on a quiet machine, 2.1-3.0 at 4-13 streams on a
#: busy one (its disk slower to take them); uploads 2.1. (1 GiB at 13 streams, quiet: 6 MiB parts
#: 157 MiB and 1.54 s, 7 MiB 185 MiB and 1.57 s, 8 MiB 186-241 MiB and 1.50 s, medians of 3.)
BUFFERS_PER_STREAM = 2.5
#: A download holds more: on a busy machine the parts received ahead wait longer to be handed over
#: (peak RSS of 1 GiB at 13 streams of 7 MiB: 195-267 MiB from the command line with the test suite
#: running beside it, 2.1-3.0 parts per stream; 13 streams of 5 MiB took as long and stayed within
#: 150-192 MiB in the process).
DOWNLOAD_BUFFERS_PER_STREAM = 3.0
#: Memory the part buffers of one task may use (:data:`BUFFERS_PER_STREAM` × concurrency × part size):
#: with the process's own ~24-30 MiB, a copy stays within 256 MiB.
DEFAULT_MEMORY_BUDGET = 232 * MiB
#: Concurrency is the smallest that reaches this share of the best achievable throughput.
ASYMPTOTE_SHARE = 0.95
#: How long one mapped task should run.
DEFAULT_TARGET_TASK_S = 600.0
#: Airflow's default ``[core] max_map_length``.
MAX_MAP_LENGTH = 1024
#: execution_timeout = prediction × this, but at least MIN_TIMEOUT_S.
TIMEOUT_SAFETY = 3.0
MIN_TIMEOUT_S = 300.0
#: Metadata operations per object on each kind of end: an object store counts the request that
#: creates or fetches each object (its request-rate limit); a file tier creates, renames and stats
#: every file. Calibration measures the rate through Tierflow's engine in these units.
META_OPS_PER_OBJECT = {"object": 1.0, "pfs": 3.0, "nvme": 3.0}
#: Extra requests per multipart object (create + complete).
MULTIPART_OVERHEAD_REQUESTS = 2


@dataclass(frozen=True)
class Workload:
    """What is to be moved: total bytes, object count, and a histogram of object sizes.

    ``histogram`` maps a size (the upper bound of a power-of-two bucket) to the number of objects
    in it; ``largest`` is the largest object. Build one with :meth:`from_sizes`.
    """

    bytes: int
    objects: int
    largest: int
    histogram: tuple[tuple[int, int], ...] = ()
    #: The share of the bytes already in the source machine's page cache (just written or read):
    #: a file tier reads those at its cached speed.
    resident: float = 0.0
    #: Bytes the destination machine's page cache takes before writes go at the disk's pace (None:
    #: not known, or not a file tier): a file tier writes the rest at its synced write speed.
    write_headroom: int | None = None

    def __post_init__(self) -> None:
        if self.bytes < 0 or self.objects < 0 or self.largest < 0:
            raise ValueError(f"workload sizes cannot be negative: {self}")
        if self.largest > self.bytes:
            raise ValueError(f"largest object ({self.largest}) exceeds the total ({self.bytes})")

    @classmethod
    def from_sizes(cls, sizes: Iterable[int]) -> Workload:
        """The workload of objects with these sizes."""
        buckets: dict[int, int] = {}
        total = count = largest = 0
        for size in sizes:
            total += size
            count += 1
            largest = max(largest, size)
            bucket = 1 << max(0, (size - 1).bit_length()) if size > 0 else 0
            buckets[bucket] = buckets.get(bucket, 0) + 1
        return cls(total, count, largest, tuple(sorted(buckets.items())))

    @classmethod
    def uniform(cls, objects: int, size: int) -> Workload:
        """``objects`` objects of ``size`` bytes each."""
        bucket = 1 << max(0, (size - 1).bit_length()) if size > 0 else 0
        return cls(objects * size, objects, size if objects else 0, ((bucket, objects),) if objects else ())

    def compressed(self, ratio: float) -> Workload:
        """The same objects at ``1 / ratio`` of their bytes (after compression at ``ratio``)."""
        if ratio == 1.0:
            return self
        return Workload(
            bytes=math.ceil(self.bytes / ratio),
            objects=self.objects,
            largest=math.ceil(self.largest / ratio),
            histogram=tuple((max(1, math.ceil(b / ratio)), n) for b, n in self.histogram),
        )

    def requests(self, part_size: int) -> int:
        """Data requests to move every object in parts of ``part_size`` (one per small object)."""
        if not self.histogram:
            return self.objects
        total = 0
        for bucket, count in self.histogram:
            parts = max(1, math.ceil(bucket / part_size))
            total += count * (parts + (MULTIPART_OVERHEAD_REQUESTS if parts > 1 else 0))
        return total


@dataclass(frozen=True)
class EndPrediction:
    """One end of a hop: the three terms of the roofline, in seconds, and which one binds."""

    tier: str
    direction: str
    bandwidth_s: float
    stream_s: float
    metadata_s: float
    latency_share: float
    #: Time off the calibrated throughput curve (object size → aggregate bytes/s at full width),
    #: which replaces the larger of ``bandwidth_s`` and ``metadata_s`` where the profile has one.
    capacity_s: float | None = None
    #: The learnt speed-up every term was divided by (1: none learnt; see the profile's corrections).
    correction: float = 1.0
    #: Relative uncertainty of this end's prediction (from its profile).
    uncertainty: float = 0.0
    #: A file tier's writes beyond what the page cache takes, at the pace they reach its disk
    #: (its synced write bandwidth): the time when that is slower than the other terms.
    writeback_s: float | None = None

    @property
    def seconds(self) -> float:
        """The end's predicted duration: its slowest term."""
        if self.capacity_s is not None:
            return max(self.stream_s, self.capacity_s, self.writeback_s or 0.0)
        return max(self.bandwidth_s, self.stream_s, self.metadata_s, self.writeback_s or 0.0)

    @property
    def bound(self) -> str:
        """Which limit binds: ``bandwidth`` (a disk's, past the page cache), ``latency``, ``stream`` or ``metadata``."""
        # Writes past the page cache go at the disk's bandwidth: one term with the rest of the bytes.
        bandwidth = max(self.bandwidth_s, self.writeback_s or 0.0)
        terms = {"bandwidth": bandwidth, "stream": self.stream_s, "metadata": self.metadata_s}
        if self.capacity_s is not None:  # the curve binds: by bytes or by objects, whichever weighs more
            terms["stream"] = self.stream_s if self.stream_s >= self.capacity_s else 0.0
        name = max(terms, key=lambda k: terms[k])
        if name == "stream" and self.latency_share > 0.5:
            return "latency"
        return name


@dataclass(frozen=True)
class Bottleneck(Payload):
    """What limits a hop: which tier, which direction, and which resource of it.

    ``resource`` is ``bandwidth``, ``latency``, ``stream`` or ``metadata`` (see the module docstring).
    Learning from an observation reads the fields; :meth:`__str__` is the sentence for people.
    """

    tier: str
    direction: str  #: ``read`` or ``write``
    resource: str

    def __str__(self) -> str:
        return f"{self.resource}-bound on {self.tier} {self.direction}"


@dataclass(frozen=True)
class HopPrediction:
    """A hop's predicted duration at one concurrency and part size."""

    source: EndPrediction
    destination: EndPrediction
    concurrency: int
    part_size: int
    workload: Workload

    @property
    def seconds(self) -> float:
        """Predicted duration: the slower end."""
        return max(self.source.seconds, self.destination.seconds)

    @property
    def throughput_bps(self) -> float:
        """Predicted bytes per second."""
        return self.workload.bytes / self.seconds if self.seconds > 0 else math.inf

    @property
    def binding(self) -> EndPrediction:
        """The slower end: the one whose limit the hop's time is."""
        return self.source if self.source.seconds >= self.destination.seconds else self.destination

    @property
    def bottleneck(self) -> Bottleneck:
        """The slower end's limit, e.g. bandwidth-bound on pfs write."""
        end = self.binding
        return Bottleneck(tier=end.tier, direction=end.direction, resource=end.bound)


def at_streams(table: Sequence[tuple[int, int, float]], streams: int) -> tuple[tuple[int, float], ...]:
    """Each size's aggregate bytes/s with ``streams`` streams, from a profile's ``*_by_streams`` widths.

    Between two measured widths the throughput is interpolated on a log-log scale; below the
    narrowest it scales with the streams, above the widest it stays there; it never falls as
    streams are added (a plan takes the fewest streams that reach nearly the best, so a width past
    the best is never one it picks) and never grows faster than they do.
    """
    widths: dict[int, list[tuple[int, float]]] = {}
    for size, width, bps in table:
        widths.setdefault(size, []).append((width, bps))
    curve = []
    for size, measured in sorted(widths.items()):
        measured.sort()
        # More streams never more than multiply the rate (a faster-than-linear gain is noise): so
        # k tasks sharing a tier never each run faster than one task alone.
        points = [measured[0]]
        for width, bps in measured[1:]:
            points.append((width, min(bps, points[-1][1] * width / points[-1][0])))
        narrowest, first = points[0]
        if streams <= narrowest:
            curve.append((size, first * streams / narrowest))
            continue
        below = [p for p in points if p[0] <= streams]
        reached = max(bps for _, bps in below)  # what fewer streams already reached
        (wa, ta), above = below[-1], [p for p in points if p[0] > streams]
        if above and wa < streams:
            wb, tb = above[0]
            share = (math.log(streams) - math.log(wa)) / (math.log(wb) - math.log(wa))
            reached = max(reached, math.exp(math.log(ta) + share * (math.log(tb) - math.log(ta))))
        curve.append((size, reached))
    return tuple(curve)


def _curve_at(bw: BandwidthProfile, direction: str, streams: int) -> tuple[tuple[int, float], ...]:
    """The (object size, aggregate bytes/s) points in ``direction`` with ``streams`` streams.

    Off the widths calibration measured (:func:`at_streams`); for profiles without them, the best it reached.
    """
    table = bw.by_streams(direction)
    return at_streams(table, streams) if table else bw.curve(direction)


def _end(
    tier: TierConfig, direction: str, work: Workload, concurrency: int, part_size: int, tasks: int = 1
) -> EndPrediction:
    bw: BandwidthProfile = tier.bandwidth
    # ``tasks`` tasks on the tier at once share its aggregate bandwidth and operation rate; each
    # keeps its own streams' speed.
    aggregate = (bw.read_bps if direction == "read" else bw.write_bps) / tasks
    stream = bw.stream_read_bps if direction == "read" else bw.stream_write_bps
    requests = work.requests(part_size) if tier.is_object else work.objects
    latency_total = requests * bw.latency(direction)
    cached = bw.cached_read_curve if direction == "read" and work.resident > 0 else ()
    if len(cached) >= 2:  # one stream reads what the page cache holds at memory speed, the rest off the disk
        warm_stream = max(stream, cached[-1][1])
        stream_total = latency_total + work.bytes * ((1 - work.resident) / stream + work.resident / warm_stream)
    else:
        stream_total = latency_total + work.bytes / stream
    # What observed transfers taught on top of calibration: a tier that ran 1.3x faster than its
    # calibrated numbers say takes 1/1.3 of every term.
    learnt = bw.read_correction if direction == "read" else bw.write_correction
    # The tier's aggregate at the streams all ``tasks`` run together, where calibration measured
    # several widths (else the best it reached); each task gets its share of it.
    curve = _curve_at(bw, direction, concurrency * tasks)
    capacity = _capacity_s(curve, work, bw.limit(direction)) * tasks / learnt if len(curve) >= 2 else None
    if capacity is not None and len(cached) >= 2:
        # What is in the page cache reads at memory speed, the rest off the disk.
        warm = _capacity_s(_curve_at(bw, "cached_read", concurrency * tasks), work, None) * tasks / learnt
        capacity = (1 - work.resident) * capacity + work.resident * warm
    end = EndPrediction(
        tier=tier.name,
        direction=direction,
        bandwidth_s=work.bytes / aggregate / learnt,
        stream_s=stream_total / concurrency / learnt,
        metadata_s=work.objects * META_OPS_PER_OBJECT[tier.kind] / (bw.ops(direction) / tasks) / learnt,
        latency_share=latency_total / stream_total if stream_total > 0 else 0.0,
        capacity_s=capacity,
        correction=learnt,
        uncertainty=bw.uncertainty,
    )
    headroom = work.write_headroom
    beyond = direction == "write" and not tier.is_object and headroom is not None and work.bytes > headroom
    if beyond and headroom is not None and bw.synced_write_bps > 0:
        # What the page cache takes goes at the tier's usual pace, the rest as fast as its disk writes.
        taken = end.seconds * headroom / work.bytes
        end = replace(end, writeback_s=taken + (work.bytes - headroom) / (bw.synced_write_bps / tasks) / learnt)
    return end


def _throughput_at(curve: tuple[tuple[int, float], ...], size: float) -> float:
    """Aggregate bytes/s for objects of ``size``, off the measured curve.

    An object costs a fixed time plus its bytes at a bandwidth (``time = a + size / B``): between
    two measured sizes, the line through both (the time per object interpolated linearly in the
    size); above the largest, the line through the two largest, so larger objects amortize the
    per-object cost further, toward ``B``. Below the smallest size measured an object costs what
    the smallest did (per-object bound). (A log-log interpolation of the throughput instead
    predicted 2,000 x 256 KiB to and from the embedded server 25-35 % too slow: between 64 KiB
    and 2 MiB it bends the wrong way.)
    """
    (s0, t0), (s_last, t_last) = curve[0], curve[-1]
    if size <= s0:
        return t0 * size / s0
    if size >= s_last:
        s_prev, t_prev = curve[-2]
        per_object_last, per_object_prev = s_last / t_last, s_prev / t_prev
        if per_object_last <= per_object_prev:  # no cost per byte seen: stay at the largest's rate
            return t_last
        bandwidth = (s_last - s_prev) / (per_object_last - per_object_prev)
        fixed = max(0.0, per_object_last - s_last / bandwidth)
        return size / (fixed + size / bandwidth)
    for (sa, ta), (sb, tb) in itertools.pairwise(curve):
        if sa <= size <= sb:
            w = (size - sa) / (sb - sa)
            return size / ((1 - w) * sa / ta + w * sb / tb)
    return t_last  # not reached: the curve is sorted by size


def _capacity_s(curve: tuple[tuple[int, float], ...], work: Workload, limit: float | None) -> float:
    """Seconds to move ``work`` at the curve's throughput for each object size, and no faster than a request limit."""
    if work.objects == 0:
        return 0.0
    buckets = work.histogram or ((max(1, work.bytes // work.objects), work.objects),)
    nominal = sum(size * count for size, count in buckets) or 1
    scale = work.bytes / nominal  # a histogram holds power-of-two bounds: scale them to the real bytes
    seconds = sum(count * size * scale / _throughput_at(curve, size * scale) for size, count in buckets)
    return max(seconds, work.objects / limit) if limit else seconds


def predict_hop(
    source: TierConfig,
    destination: TierConfig,
    work: Workload,
    concurrency: int,
    part_size: int = DEFAULT_PART_SIZE,
    tasks: int = 1,
) -> HopPrediction:
    """Predict moving ``work`` from ``source`` to ``destination`` with ``concurrency`` streams.

    ``tasks``: how many such tasks run on these tiers at once (a pool's mapped copies): they
    share each tier's aggregate bandwidth and operation rate, so each task's share is smaller.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
    if part_size < 1:
        raise ValueError(f"part size must be positive (got {part_size})")
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1 (got {tasks})")
    return HopPrediction(
        source=_end(source, "read", work, concurrency, part_size, tasks),
        destination=_end(destination, "write", work, concurrency, part_size, tasks),
        concurrency=concurrency,
        part_size=part_size,
        workload=work,
    )


@dataclass(frozen=True)
class StagingPrediction:
    """Multi-hop staging: each hop's prediction, and the total sequential or pipelined."""

    hops: tuple[HopPrediction, ...]
    pipelined: bool
    shards: int

    @property
    def seconds(self) -> float:
        """Total: sum of hops, or (pipelined) the slowest hop plus one shard's time through the others."""
        times = [h.seconds for h in self.hops]
        if not self.pipelined or len(times) == 1:
            return sum(times)
        slowest = max(times)
        return slowest + (sum(times) - slowest) / max(1, self.shards)

    @property
    def bottleneck(self) -> Bottleneck:
        """The bottleneck of the slowest hop."""
        return max(self.hops, key=lambda h: h.seconds).bottleneck


def predict_staging(
    tiers: Sequence[TierConfig], work: Workload, concurrency: int, pipelined: bool = True, shards: int = 1
) -> StagingPrediction:
    """Predict staging ``work`` along a chain of tiers (e.g. object → pfs → nvme)."""
    if len(tiers) < 2:
        raise ValueError("staging needs at least two tiers")
    hops = tuple(
        predict_hop(src, dst, work, min(concurrency, src.bandwidth.max_streams, dst.bandwidth.max_streams))
        for src, dst in itertools.pairwise(tiers)
    )
    return StagingPrediction(hops=hops, pipelined=pipelined, shards=shards)


def smallest_part(largest: int) -> int:
    """The smallest part an object of ``largest`` bytes can be cut in: 5 MiB, or more past 10,000 parts.

    A whole number of MiB, as every part size the planner chooses.
    """
    return max(MIN_PART_SIZE, -(-largest // (MAX_PARTS * MiB)) * MiB)


def buffers_per_stream(source: TierConfig, destination: TierConfig) -> float:
    """Parts the native client holds per stream on this hop (:data:`DOWNLOAD_BUFFERS_PER_STREAM` for a download)."""
    return DOWNLOAD_BUFFERS_PER_STREAM if source.is_object and not destination.is_object else BUFFERS_PER_STREAM


def part_size_for(
    largest: int, concurrency: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, buffers: float = BUFFERS_PER_STREAM
) -> tuple[int, str]:
    """Part size for objects up to ``largest`` bytes: ≤ 10,000 parts, within ``memory_budget`` at ``concurrency``.

    The budget holds ``buffers`` parts per stream (:func:`buffers_per_stream`). Returns the size
    (a whole number of MiB, never below :func:`smallest_part`) and the reason for it.
    """
    floor = smallest_part(largest)
    budget_cap = max(MIN_PART_SIZE, int(memory_budget / (buffers * max(1, concurrency))) // MiB * MiB)
    size, reason = DEFAULT_PART_SIZE, "default part size"
    if floor > size:
        size, reason = (
            floor,
            f"largest object {largest} B needs parts of at least {floor // MiB} MiB for ≤ 10,000 parts",
        )
    if size > budget_cap and floor <= budget_cap:
        size, reason = (
            budget_cap,
            f"memory budget {memory_budget // MiB} MiB / ({buffers:g} buffers x {concurrency} streams)",
        )
    return min(MAX_PART_SIZE, size), reason


@dataclass(frozen=True)
class HopPlan:
    """Everything a hop's tasks are sized by, each with its reason."""

    source: str
    destination: str
    concurrency: int
    part_size: int
    shards: int
    pool: str
    pool_slots: int
    execution_timeout_s: float
    predicted: HopPrediction
    reasons: dict[str, str] = field(default_factory=dict)
    #: The time the hop was given (seconds from planning), None without a deadline.
    deadline_s: float | None = None
    #: What would let a hop that cannot meet its deadline meet it (empty when it meets it).
    advice: tuple[str, ...] = ()

    @property
    def meets_deadline(self) -> bool | None:
        """Whether the prediction finishes within the deadline (None without one)."""
        return None if self.deadline_s is None else self.predicted_s <= self.deadline_s

    @property
    def predicted_s(self) -> float:
        """Predicted duration of the whole hop."""
        return self.predicted.seconds

    def summary(self) -> HopSizing:
        """What the hop's tasks carry of the plan (XCom, logs, asset extras): no workload, no prediction terms."""
        return HopSizing(
            source=self.source,
            destination=self.destination,
            concurrency=self.concurrency,
            part_size=self.part_size,
            shards=self.shards,
            pool=self.pool,
            pool_slots=self.pool_slots,
            execution_timeout_s=round(self.execution_timeout_s, 1),
            predicted_s=round(self.predicted_s, 3),
            predicted_MBps=round(self.predicted.throughput_bps / 1e6, 1),
            bottleneck=self.predicted.bottleneck,
            reasons=dict(self.reasons),
            correction=round(self.predicted.binding.correction, 4),
            uncertainty=round(self.predicted.binding.uncertainty, 3),
            deadline_s=None if self.deadline_s is None else round(self.deadline_s, 1),
            meets_deadline=self.meets_deadline,
            advice=list(self.advice),
        )


@dataclass(frozen=True)
class HopSizing(Payload):
    """A hop plan as tasks exchange it: every choice, its reason, the predicted time and bottleneck."""

    source: str
    destination: str
    concurrency: int
    part_size: int
    shards: int
    pool: str
    pool_slots: int
    execution_timeout_s: float
    predicted_s: float
    predicted_MBps: float
    bottleneck: Bottleneck
    reasons: dict[str, str] = field(default_factory=dict)
    #: The learnt factor the bottleneck end's prediction used (observations record it, so learning
    #: can tell what the calibration alone would have predicted).
    correction: float = 1.0
    #: Relative uncertainty of ``predicted_s``.
    uncertainty: float = 0.0
    deadline_s: float | None = None  #: the time the hop was given, if any
    meets_deadline: bool | None = None
    advice: list[str] = field(default_factory=list)  #: what would meet a deadline this plan misses


def deadline_advice(
    source: TierConfig, destination: TierConfig, prediction: HopPrediction, deadline_s: float, streams_limit: int
) -> tuple[str, ...]:
    """What would let a hop predicted past its deadline finish in time, from the resource that binds it.

    Each line names the tier, the direction and how much more of the binding resource it takes;
    per-node tiers (NVMe) can also be widened by adding nodes.
    """
    factor = prediction.seconds / deadline_s if deadline_s > 0 else math.inf
    end = prediction.binding
    tier = source if end.tier == source.name and end.direction == "read" else destination
    bw = tier.bandwidth
    work = prediction.workload
    out = []
    if end.bound == "bandwidth":
        have = bw.read_bps if end.direction == "read" else bw.write_bps
        nodes = f", or {math.ceil(factor * 10) / 10:g}x the nodes (its bandwidth is per node)"
        out.append(
            f"{tier.name} {end.direction} of at least {format_bandwidth(have * factor)} (it has "
            f"{format_bandwidth(have)}): a faster {tier.name} tier" + (nodes if tier.kind == "nvme" else "")
        )
    elif end.bound in ("stream", "latency"):
        needed = math.ceil(prediction.concurrency * factor)
        if needed <= streams_limit:
            out.append(f"{needed} streams instead of {prediction.concurrency}")
        else:
            out.append(
                f"{needed} streams (the limit of {source.name}/{destination.name} is {streams_limit}: "
                f"raise max_streams, or spread the hop over {math.ceil(needed / streams_limit)} nodes)"
            )
    else:
        ops = bw.ops(end.direction)
        out.append(
            f"{tier.name} {'requests' if tier.is_object else 'metadata operations'} at "
            f"{ops * factor:,.0f}/s (it has {ops:,.0f}/s), or fewer, larger objects "
            f"(at most {max(1, math.floor(work.objects / factor)):,} instead of {work.objects:,})"
        )
    out.append(f"or a deadline of {format_duration(prediction.seconds)} or more")
    return tuple(out)


def _throttle_cap(source: TierConfig, destination: TierConfig, work: Workload) -> tuple[int, str] | None:
    """The most streams that stay under an object store's request-rate limit, and why (None: no limit).

    One stream issues a request every ``latency + object / stream bandwidth`` seconds; ``c``
    streams issue ``c`` times as many. Past the limit the store answers ``503 SlowDown`` and every
    stream waits, so the plan stops short of it.
    """
    caps = []
    for tier, direction in ((source, "read"), (destination, "write")):
        rate = tier.bandwidth.limit(direction)
        if not tier.is_object or rate is None or work.objects == 0:
            continue
        stream = tier.bandwidth.stream_read_bps if direction == "read" else tier.bandwidth.stream_write_bps
        per_request = tier.bandwidth.latency(direction) + min(work.bytes / work.objects, DEFAULT_PART_SIZE) / stream
        streams = max(1, math.floor(rate * per_request))
        caps.append(
            (
                streams,
                f"{streams} streams stay under {tier.name}'s limit of {rate:,.0f} "
                f"{'GET' if direction == 'read' else 'PUT'}/s per prefix (one request every "
                f"{format_duration(per_request)} per stream)",
            )
        )
    return min(caps) if caps else None


def _memory_cap(
    source: TierConfig, destination: TierConfig, work: Workload, memory_budget: int
) -> tuple[int, str] | None:
    """The most streams whose part buffers fit ``memory_budget`` at the smallest part they can take.

    Only a hop to or from an object store holds part buffers (:func:`buffers_per_stream` per
    stream); parts shrink to fit the budget down to the smallest the largest object allows (the
    S3 minimum, or more for an object past 10,000 of them), and past that only fewer streams keep
    it. An object smaller than that part is held whole. None: no buffers, or not even one stream
    fits (the part size's reason says the budget cannot hold).
    """
    if not (source.is_object or destination.is_object):
        return None
    part = smallest_part(work.largest)
    held = min(max(1, work.largest), part)
    buffers = buffers_per_stream(source, destination)
    streams = int(memory_budget // (buffers * held))
    if streams < 1:
        return None
    each = (
        f"parts of {part // MiB} MiB, the smallest its largest object allows"
        if work.largest >= part
        else f"objects of up to {format_bytes(work.largest)}"
    )
    return streams, f"memory budget {memory_budget // MiB} MiB holds {streams} streams of {buffers:g} {each}"


def plan_hop(
    source: TierConfig,
    destination: TierConfig,
    work: Workload,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    target_task_s: float = DEFAULT_TARGET_TASK_S,
    max_map_length: int = MAX_MAP_LENGTH,
    max_concurrency: int | None = None,
    deadline_s: float | None = None,
    tasks: int = 1,
) -> HopPlan:
    """Size a hop: concurrency, part size, shards, pool slots and timeout from the model.

    Without a deadline the concurrency is the smallest that reaches :data:`ASYMPTOTE_SHARE` of the
    best throughput. With ``deadline_s`` (seconds the hop may take) it is the smallest whose
    prediction finishes in time, leaving the rest of the tiers' streams to other work; a hop that
    cannot finish in time runs at its fastest and the plan says what would let it
    (:attr:`HopPlan.advice`). ``tasks``: how many tasks copy on these tiers at once (this one
    included): each plan gets its share of the tiers' aggregates, and says so.
    """
    if deadline_s is not None and deadline_s <= 0:
        raise ValueError(f"the deadline has passed (the hop was given {deadline_s:.0f} s)")
    limit = min(source.bandwidth.max_streams, destination.bandwidth.max_streams)
    if max_concurrency is not None:
        limit = max(1, min(limit, max_concurrency))
    limit_reason = f"stream limit of {source.name}/{destination.name} is {limit}"
    throttled = _throttle_cap(source, destination, work)
    if throttled is not None and throttled[0] < limit:
        limit, limit_reason = throttled
    held = _memory_cap(source, destination, work, memory_budget)
    if held is not None and held[0] < limit:
        limit, limit_reason = held
    if (source.is_object or destination.is_object) and work.largest > MAX_PARTS * MAX_PART_SIZE:
        raise ValueError(
            f"an object of {work.largest} B exceeds what S3 multipart can hold ({MAX_PARTS} parts of 5 GiB)"
        )
    part, part_reason = part_size_for(work.largest, limit, memory_budget, buffers_per_stream(source, destination))
    useful = max(1, work.requests(part) if (source.is_object or destination.is_object) else work.objects)
    c_max = max(1, min(limit, useful))
    widest = predict_hop(source, destination, work, c_max, part, tasks)
    best = widest.seconds
    # Small objects on an object store whose numbers are configured, not measured: how its request rate grows
    # with streams is a guess there, and too few streams cost the most (2,000 x 16 KiB to the
    # embedded server: 7 streams 1.9 s, 32 streams 1.6 s); they run at the limit until calibrated.
    guessed = widest.binding
    end = source if guessed.direction == "read" else destination
    at_limit = (
        deadline_s is None
        and work.objects > 1
        and work.bytes <= work.objects * part
        and end.is_object
        and guessed.uncertainty >= CONFIGURED_UNCERTAINTY
        and not end.bandwidth.curve(guessed.direction)
    )
    concurrency = c_max
    for c in range(1, c_max + 1 if not at_limit else 1):
        seconds = predict_hop(source, destination, work, c, part, tasks).seconds
        if (seconds <= deadline_s) if deadline_s is not None else (seconds * ASYMPTOTE_SHARE <= best):
            concurrency = c
            break
    part, part_reason = part_size_for(work.largest, concurrency, memory_budget, buffers_per_stream(source, destination))
    prediction = predict_hop(source, destination, work, concurrency, part, tasks)
    if deadline_s is not None and best <= deadline_s:
        c_reason = (
            f"{concurrency}: the fewest that finish within the deadline of {format_duration(deadline_s)} "
            f"({format_duration(prediction.seconds)}); {prediction.bottleneck}"
        )
    elif at_limit:
        c_reason = (
            f"{concurrency}: {limit_reason if c_max == limit else f'{useful} requests to run in parallel'}, "
            f"for small objects while {guessed.tier}'s numbers are configured, not calibrated "
            f"(tierflow calibrate --tier {guessed.tier} measures how its rate grows with streams); "
            f"{prediction.bottleneck}"
        )
    elif concurrency == c_max and c_max == limit:
        c_reason = f"{concurrency}: {limit_reason}; {prediction.bottleneck}"
    elif concurrency == c_max:
        requests = f"{useful} request{'' if useful == 1 else 's'}"
        c_reason = f"{concurrency}: only {requests} to run in parallel; {prediction.bottleneck}"
    else:
        c_reason = (
            f"{concurrency}: the smallest reaching {ASYMPTOTE_SHARE:.0%} of the best throughput "
            f"({c_max} streams: {format_duration(best)}); {prediction.bottleneck}"
        )
    advice: tuple[str, ...] = ()
    reasons: dict[str, str] = {}
    if tasks > 1:
        reasons["sharing"] = (
            f"{tasks} tasks on {source.name} and {destination.name} at once: each gets 1/{tasks} of their "
            "aggregate bandwidth and operation rate"
        )
    if deadline_s is not None:
        if prediction.seconds <= deadline_s:
            reasons["deadline"] = (
                f"meets the deadline: {format_duration(prediction.seconds)} of {format_duration(deadline_s)}"
            )
        else:
            advice = deadline_advice(source, destination, prediction, deadline_s, limit)
            reasons["deadline"] = (
                f"cannot meet the deadline: {format_duration(prediction.seconds)} at its fastest against "
                f"{format_duration(deadline_s)}, {prediction.bottleneck}; it would take " + "; ".join(advice)
            )
    total = prediction.seconds
    shards = max(1, min(max_map_length, max(1, work.objects), math.ceil(total / target_task_s)))
    if shards == max_map_length and total / shards > target_task_s:
        s_reason = f"capped at max_map_length {max_map_length}"
    elif shards == max(1, work.objects) and total / shards > target_task_s:
        s_reason = f"one task per object ({work.objects}): an object is not split across tasks"
    elif shards == 1:
        s_reason = f"predicted {total:.1f} s fits one task of {target_task_s:.0f} s"
    else:
        s_reason = f"predicted {total:.0f} s / {target_task_s:.0f} s per task"
    shard_s = total / shards
    timeout = max(MIN_TIMEOUT_S, shard_s * TIMEOUT_SAFETY)
    writes_to = destination
    slots = min(concurrency, writes_to.bandwidth.max_streams)
    return HopPlan(
        source=source.name,
        destination=destination.name,
        concurrency=concurrency,
        part_size=part,
        shards=shards,
        pool=writes_to.pool,
        pool_slots=slots,
        execution_timeout_s=timeout,
        predicted=prediction,
        deadline_s=deadline_s,
        advice=advice,
        reasons=reasons
        | {
            "concurrency": c_reason,
            "part_size": part_reason,
            "shards": s_reason,
            "pool": f"writes to {writes_to.name}; one slot per stream",
            "execution_timeout": f"{shard_s:.1f} s per shard × {TIMEOUT_SAFETY:g}, at least {MIN_TIMEOUT_S:.0f} s",
        },
    )
