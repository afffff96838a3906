"""The bandwidth model and planner: each regime, each choice, the edges, and properties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.core.config import BandwidthProfile, TierConfig
from pipelines.model.bandwidth import (
    BUFFERS_PER_STREAM,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    HopSizing,
    Workload,
    buffers_per_stream,
    part_size_for,
    plan_hop,
    predict_hop,
    predict_staging,
)
from pipelines.model.codecs import CodecSample, choose_compression

pytestmark = pytest.mark.unit

MB = 10**6
MiB = 2**20
GiB = 2**30


def tier(
    name: str, kind: str, read: float, write: float, stream: float, latency: float, meta: float, streams: int = 64
) -> TierConfig:
    url = "s3://bucket/x/" if kind == "object" else f"file:///{name}"
    return TierConfig(
        name=name,
        kind=kind,
        url=url,
        conn_id="c" if kind == "object" else None,  # type: ignore[arg-type]
        capacity_bytes=10**15,
        bandwidth=BandwidthProfile(read, write, min(stream, read), min(stream, write), latency, meta, streams),
    )


OBJ = tier("object", "object", 1000 * MB, 500 * MB, 50 * MB, 0.010, 5000, streams=64)
PFS = tier("pfs", "pfs", 2000 * MB, 1500 * MB, 500 * MB, 0.001, 20000, streams=32)
NVME = tier("nvme", "nvme", 3000 * MB, 2000 * MB, 3000 * MB, 0.0001, 100000, streams=8)


@pytest.mark.parametrize(
    ("src", "dst", "work", "c", "bound"),
    [
        pytest.param(
            OBJ,
            PFS,
            Workload.uniform(100, 100 * MiB),
            64,
            "bandwidth-bound on object read",
            id="big-objects-saturate-the-store",
        ),
        pytest.param(
            OBJ, PFS, Workload.uniform(1, 1000 * MiB), 1, "stream-bound on object read", id="one-stream-is-stream-bound"
        ),
        pytest.param(
            OBJ,
            PFS,
            Workload.uniform(100_000, 4096),
            8,
            "latency-bound on object read",
            id="tiny-objects-are-latency-bound",
        ),
        pytest.param(
            PFS,
            NVME,
            Workload.uniform(1_000_000, 1024),
            8,
            "metadata-bound on pfs read",
            id="tiny-files-are-metadata-bound",
        ),
        pytest.param(
            NVME, PFS, Workload.uniform(10, 10 * 2**30), 8, "bandwidth-bound on pfs write", id="pfs-write-bound"
        ),
    ],
)
def test_regimes(src: TierConfig, dst: TierConfig, work: Workload, c: int, bound: str) -> None:
    assert str(predict_hop(src, dst, work, c).bottleneck) == bound


def test_bandwidth_bound_prediction_is_exact() -> None:
    work = Workload.uniform(100, 100 * MiB)
    assert predict_hop(OBJ, PFS, work, 64).seconds == pytest.approx(work.bytes / (1000 * MB))


def test_latency_term_counts_parts_and_multipart_overhead() -> None:
    one = Workload.uniform(1, 64 * MiB)
    assert one.requests(16 * MiB) == 4 + 2
    assert Workload.uniform(10, 1 * MiB).requests(16 * MiB) == 10
    end = predict_hop(OBJ, PFS, one, 1, 16 * MiB).source
    assert end.stream_s == pytest.approx(6 * 0.010 + one.bytes / (50 * MB))


def test_more_concurrency_never_slower_and_saturates() -> None:
    work = Workload.uniform(1000, 8 * MiB)
    times = [predict_hop(OBJ, PFS, work, c).seconds for c in (1, 2, 4, 8, 16, 32, 64)]
    assert times == sorted(times, reverse=True)
    assert times[-1] == pytest.approx(work.bytes / (1000 * MB))


@pytest.mark.parametrize(
    ("dst", "work", "budget", "expected_c", "reason"),
    [
        pytest.param(
            PFS,
            Workload.uniform(100, 100 * MiB),
            GiB,
            21,
            "smallest reaching 95%",
            id="saturate-with-fewest-streams",
        ),
        pytest.param(
            PFS,
            Workload.uniform(100, 100 * MiB),
            DEFAULT_MEMORY_BUDGET,
            15,
            "memory budget 232 MiB holds 15 streams of 3 parts of 5 MiB, the smallest its largest object allows",
            id="the-memory-budget-caps-the-streams-once-parts-are-5-MiB",
        ),
        pytest.param(
            PFS,
            Workload.uniform(4, 100 * GiB),
            DEFAULT_MEMORY_BUDGET,
            7,
            "holds 7 streams of 3 parts of 11 MiB",
            id="an-object-past-10000-minimum-parts-holds-bigger-ones",
        ),
        pytest.param(PFS, Workload.uniform(1, 4 * MiB), GiB, 1, "only 1 request", id="one-small-object"),
        pytest.param(
            PFS,
            Workload.uniform(100_000, 4096),
            DEFAULT_MEMORY_BUDGET,
            31,
            "smallest reaching 95%",
            id="tiny-objects-need-many-streams",
        ),
        pytest.param(
            NVME,
            Workload.uniform(100_000, 4096),
            DEFAULT_MEMORY_BUDGET,
            8,
            "stream limit of object/nvme is 8",
            id="tiny-objects-hit-the-stream-limit",
        ),
    ],
)
def test_concurrency_choice(dst: TierConfig, work: Workload, budget: int, expected_c: int, reason: str) -> None:
    plan = plan_hop(OBJ, dst, work, memory_budget=budget)
    assert plan.concurrency == expected_c
    assert reason in plan.reasons["concurrency"]
    assert plan.concurrency <= min(OBJ.bandwidth.max_streams, dst.bandwidth.max_streams)
    assert plan.pool == dst.pool and plan.pool_slots == min(plan.concurrency, dst.bandwidth.max_streams)
    assert buffers_per_stream(OBJ, dst) * plan.concurrency * min(work.largest, plan.part_size) <= budget


def test_a_download_holds_more_parts_per_stream_than_an_upload() -> None:
    """Parts received ahead wait to be handed over in order: a download's streams get a bigger share of the budget."""
    assert (buffers_per_stream(OBJ, PFS), buffers_per_stream(PFS, OBJ)) == (3.0, 2.5)
    # 13 streams of 1 GiB objects: 232 MiB / (3 x 13) down, / (2.5 x 13) up.
    assert part_size_for(GiB, 13, DEFAULT_MEMORY_BUDGET, buffers_per_stream(OBJ, PFS)) == (
        5 * MiB,
        "memory budget 232 MiB / (3 buffers x 13 streams)",
    )
    assert part_size_for(GiB, 13, DEFAULT_MEMORY_BUDGET, buffers_per_stream(PFS, OBJ))[0] == 7 * MiB
    down = plan_hop(OBJ, PFS, Workload.uniform(100, 100 * MiB))
    assert "holds 15 streams of 3 parts of 5 MiB" in down.reasons["concurrency"]
    # Between file tiers nothing is held in parts: no budget caps the streams.
    assert plan_hop(PFS, NVME, Workload.uniform(100, 100 * MiB), memory_budget=MiB).concurrency > 1


def test_concurrency_reaches_95_percent_of_the_asymptote_and_no_less() -> None:
    work = Workload.uniform(100, 100 * MiB)
    plan = plan_hop(OBJ, PFS, work, memory_budget=GiB)
    best = predict_hop(OBJ, PFS, work, 32, plan.part_size).seconds
    assert predict_hop(OBJ, PFS, work, plan.concurrency, plan.part_size).seconds * 0.95 <= best
    assert predict_hop(OBJ, PFS, work, plan.concurrency - 1, plan.part_size).seconds * 0.95 > best


@pytest.mark.parametrize(
    ("largest", "concurrency", "budget", "expected"),
    [
        pytest.param(1 * MiB, 8, 512 * MiB, DEFAULT_PART_SIZE, id="default"),
        pytest.param(1 * 2**40, 4, 512 * MiB, 105 * MiB, id="one-tib-object-needs-big-parts"),
        pytest.param(10 * 2**30, 64, 256 * MiB, MIN_PART_SIZE, id="memory-budget-shrinks-parts-to-the-s3-minimum"),
        pytest.param(10 * 2**30, 16, 320 * MiB, 8 * MiB, id="memory-budget-of-2.5-parts-per-stream"),
        pytest.param(2**30, 13, DEFAULT_MEMORY_BUDGET, 7 * MiB, id="default-budget-at-13-streams"),
        pytest.param(2**30, 13, 227 * MiB, 6 * MiB, id="rounded-down-to-whole-mib"),
    ],
)
def test_part_size(largest: int, concurrency: int, budget: int, expected: int) -> None:
    size, reason = part_size_for(largest, concurrency, budget)
    assert size == expected, reason
    assert math.ceil(largest / size) <= MAX_PARTS


@pytest.mark.parametrize("concurrency", [1, 2, 4, 8, 13, 16, 17, 32])
@pytest.mark.parametrize("budget", [64 * MiB, 200 * MiB, DEFAULT_MEMORY_BUDGET, 512 * MiB])
def test_part_buffers_stay_within_the_memory_budget_down_to_the_s3_minimum(concurrency: int, budget: int) -> None:
    """The native client's buffers (BUFFERS_PER_STREAM per stream) fit the budget, unless parts are already 5 MiB."""
    size, _ = part_size_for(2**30, concurrency, budget)
    assert size == MIN_PART_SIZE or BUFFERS_PER_STREAM * concurrency * size <= budget
    assert size <= DEFAULT_PART_SIZE


def test_one_huge_object_is_one_shard_with_a_long_timeout() -> None:
    plan = plan_hop(OBJ, PFS, Workload.uniform(1, 4 * 2**40))
    assert plan.shards == 1 and "not split across tasks" in plan.reasons["shards"]
    assert plan.execution_timeout_s >= plan.predicted_s * 3


def test_an_object_too_large_for_multipart_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds what S3 multipart can hold"):
        plan_hop(OBJ, PFS, Workload.uniform(1, 60 * 10**12))


def test_million_tiny_objects_shard_by_task_duration_and_cap_at_max_map_length() -> None:
    work = Workload.uniform(10**6, 4096)
    plan = plan_hop(OBJ, PFS, work, target_task_s=60)
    assert plan.shards == math.ceil(plan.predicted_s / 60)
    capped = plan_hop(OBJ, PFS, Workload.uniform(10**8, 4096), target_task_s=10, max_map_length=1024)
    assert capped.shards == 1024 and "max_map_length" in capped.reasons["shards"]


def test_timeout_has_a_floor() -> None:
    assert plan_hop(PFS, NVME, Workload.uniform(1, 1024)).execution_timeout_s == 300


def test_every_choice_has_a_one_line_reason() -> None:
    plan = plan_hop(OBJ, PFS, Workload.uniform(500, 3 * MiB))
    assert set(plan.reasons) == {"concurrency", "part_size", "shards", "pool", "execution_timeout"}
    assert all(r and "\n" not in r for r in plan.reasons.values())
    assert plan.summary().bottleneck == plan.predicted.bottleneck
    assert HopSizing.from_json(plan.summary().to_json()) == plan.summary()  # the XCom form reads back the same


def test_a_tier_at_capacity_still_plans_but_the_planner_does_not_hide_it() -> None:
    """Capacity is the cache's business (eviction), not the planner's: a full tier plans like any other."""
    full = replace(NVME, capacity_bytes=1)
    work = Workload.uniform(10, MiB)
    planned, normal = plan_hop(PFS, full, work), plan_hop(PFS, NVME, work)
    assert (planned.concurrency, planned.part_size, planned.shards, planned.predicted_s) == (
        normal.concurrency,
        normal.part_size,
        normal.shards,
        normal.predicted_s,
    )


def test_staging_sequential_and_pipelined() -> None:
    work = Workload.uniform(1000, 64 * MiB)
    seq = predict_staging([OBJ, PFS, NVME], work, 16, pipelined=False)
    pipe = predict_staging([OBJ, PFS, NVME], work, 16, pipelined=True, shards=10)
    hops = [h.seconds for h in seq.hops]
    assert seq.seconds == pytest.approx(sum(hops))
    assert pipe.seconds == pytest.approx(max(hops) + min(hops) / 10)
    assert max(hops) <= pipe.seconds < seq.seconds
    assert (seq.bottleneck.tier, seq.bottleneck.direction) == ("object", "read")


@pytest.mark.parametrize(
    ("samples", "level"),
    [
        pytest.param([CodecSample(3, 400 * MB, 3.0)], 3, id="slow-link-compress"),
        pytest.param([CodecSample(19, 5 * MB, 3.5)], None, id="codec-too-slow"),
        pytest.param([CodecSample(1, 400 * MB, 1.05)], None, id="incompressible"),
        pytest.param([CodecSample(1, 600 * MB, 2.8), CodecSample(9, 40 * MB, 3.4)], 1, id="pick-best-level"),
        pytest.param([], None, id="no-samples"),
    ],
)
def test_compression_choice(samples: list[CodecSample], level: int | None) -> None:
    slow_link = tier("wan", "object", 100 * MB, 100 * MB, 100 * MB, 0.02, 1000)
    choice = choose_compression(PFS, slow_link, Workload.uniform(100, 64 * MiB), 8, samples)
    assert choice.level == level, choice.reason
    assert choice.reason and "\n" not in choice.reason
    if level is not None:
        assert choice.compressed_s < choice.raw_s


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        predict_hop(OBJ, PFS, Workload.uniform(1, 1), 0)
    with pytest.raises(ValueError, match="negative"):
        Workload(-1, 1, 0)
    with pytest.raises(ValueError, match="positive speed"):
        choose_compression(OBJ, PFS, Workload.uniform(1, MiB), 1, [CodecSample(1, 0, 2.0)])


sizes = st.lists(st.integers(min_value=0, max_value=2 * 2**30), min_size=1, max_size=50)


@settings(max_examples=200, deadline=None)
@given(sizes=sizes, extra=st.integers(min_value=1, max_value=2**30), c=st.integers(min_value=1, max_value=64))
def test_prediction_is_monotonic_in_bytes(sizes: list[int], extra: int, c: int) -> None:
    base = predict_hop(OBJ, PFS, Workload.from_sizes(sizes), c).seconds
    grown = predict_hop(OBJ, PFS, Workload.from_sizes([*sizes[:-1], sizes[-1] + extra]), c).seconds
    assert grown >= base


@settings(max_examples=200, deadline=None)
@given(sizes=sizes, c=st.integers(min_value=1, max_value=64))
def test_prediction_never_beats_the_physical_minimum(sizes: list[int], c: int) -> None:
    work = Workload.from_sizes(sizes)
    fastest_end = min(OBJ.bandwidth.read_bps, PFS.bandwidth.write_bps)
    assert predict_hop(OBJ, PFS, work, c).seconds >= work.bytes / fastest_end * (1 - 1e-12)
    plan = plan_hop(OBJ, PFS, work)
    assert 1 <= plan.concurrency <= 32 and 1 <= plan.shards <= 1024
    assert plan.part_size >= MIN_PART_SIZE and plan.execution_timeout_s >= plan.predicted_s


@settings(max_examples=300, deadline=None)
@given(
    objects=st.integers(min_value=1, max_value=10**9),
    mean=st.integers(min_value=0, max_value=2**33),
    limit=st.integers(min_value=1, max_value=4096),
    task_s=st.floats(min_value=1.0, max_value=7200.0),
    ratio=st.floats(min_value=1.0, max_value=20.0),
)
def test_mapped_tasks_never_exceed_max_map_length(
    objects: int, mean: int, limit: int, task_s: float, ratio: float
) -> None:
    """Whatever the dataset, no plan asks Airflow to map more tasks than ``max_map_length``."""
    from pipelines.datasets.preparation.plan import _groups, within_map_length

    work = Workload.uniform(objects, mean)
    # Staging: one copy task per shard of the manifest.
    assert 1 <= plan_hop(OBJ, PFS, work, max_map_length=limit, target_task_s=task_s).shards <= limit
    # Preparation: one validation task per output shard, however small the chosen shard size.
    estimated = int(work.bytes / ratio)
    size, _ = within_map_length(estimated, 1, limit, {})
    assert math.ceil(estimated / size) <= limit
    # ... and one build task per group.
    inputs = [(f"k{i:04d}", mean) for i in range(min(objects, 2000))]
    assert 1 <= len(_groups(inputs, min(limit, 1024))) <= limit
