"""The planner's newer terms: deadlines, demand, tasks sharing a tier, a store's request-rate limit."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.core.config import load_config
from pipelines.model.bandwidth import Workload, plan_hop
from pipelines.model.codecs import CodecSample
from pipelines.model.whatif import Cluster, Costs, plan_cluster

pytestmark = pytest.mark.unit

CONFIG = load_config(None)
MiB = 2**20


@settings(max_examples=200, deadline=None)
@given(
    objects=st.integers(1, 200_000),
    size=st.integers(1, 2**31),
    deadline_s=st.floats(0.01, 1e6),
    hop=st.sampled_from([("object", "pfs"), ("pfs", "nvme"), ("nvme", "object"), ("pfs", "pfs")]),
)
def test_a_plan_that_says_it_meets_its_deadline_never_predicts_past_it(
    objects: int, size: int, deadline_s: float, hop: tuple[str, str]
) -> None:
    work = Workload.uniform(objects, size)
    src, dst = CONFIG.tier(hop[0]), CONFIG.tier(hop[1])
    plan = plan_hop(src, dst, work, deadline_s=deadline_s)
    if plan.meets_deadline:
        assert plan.predicted_s <= deadline_s and not plan.advice
        # and it is the fewest streams that do: one fewer would be late
        if plan.concurrency > 1:
            slower = plan_hop(src, dst, work, max_concurrency=plan.concurrency - 1)
            assert slower.predicted_s > deadline_s or slower.concurrency < plan.concurrency - 1
    else:
        assert plan.predicted_s > deadline_s and plan.advice
        assert plan.predicted_s == pytest.approx(plan_hop(src, dst, work).predicted.seconds, rel=0.06)
        assert "cannot meet the deadline" in plan.reasons["deadline"]


@pytest.mark.parametrize(
    ("hop", "work", "deadline_s", "says"),
    [
        pytest.param(("object", "pfs"), Workload.uniform(4000, 256 * MiB), 600, "object read of at least", id="bw"),
        pytest.param(("object", "pfs"), Workload.uniform(200_000, 64 * 1024), 5, "object requests at", id="requests"),
        pytest.param(("pfs", "nvme"), Workload.uniform(200_000, 4096), 1, "metadata operations at", id="metadata"),
        pytest.param(("object", "pfs"), Workload.uniform(8, MiB), 0.01, "16 streams instead of 8", id="streams"),
    ],
)
def test_a_missed_deadline_names_what_would_meet_it(hop, work: Workload, deadline_s: float, says: str) -> None:
    plan = plan_hop(CONFIG.tier(hop[0]), CONFIG.tier(hop[1]), work, deadline_s=deadline_s)
    assert plan.meets_deadline is False
    assert says in plan.advice[0], plan.advice
    assert plan.advice[-1].startswith("or a deadline of")
    assert plan.summary().meets_deadline is False and plan.summary().advice == list(plan.advice)


def test_a_loose_deadline_takes_fewer_streams_than_the_fastest_plan() -> None:
    work = Workload.uniform(4000, 256 * MiB)
    fastest = plan_hop(CONFIG.tier("object"), CONFIG.tier("pfs"), work)
    loose = plan_hop(CONFIG.tier("object"), CONFIG.tier("pfs"), work, deadline_s=fastest.predicted_s * 4)
    assert loose.meets_deadline and loose.concurrency < fastest.concurrency
    assert loose.predicted_s > fastest.predicted_s
    assert "fewest that finish within the deadline" in loose.reasons["concurrency"]
    with pytest.raises(ValueError, match="deadline has passed"):
        plan_hop(CONFIG.tier("object"), CONFIG.tier("pfs"), work, deadline_s=0)


def test_the_cluster_plan_says_which_hop_to_widen() -> None:
    cluster = Cluster(nodes=64)
    met = plan_cluster(CONFIG, 10**12, 4000, cluster, deadline_s=30 * 24 * 3600)
    assert met["deadline"]["meets"] and met["deadline"]["spare_s"] > 0 and met["deadline"]["widen"] == []
    missed = plan_cluster(CONFIG, 200 * 10**12, 800_000, cluster, deadline_s=6 * 3600)
    d = missed["deadline"]
    assert not d["meets"] and d["spare_s"] < 0 and d["widen"]
    assert all(d["advice"][hop] for hop in d["widen"])


def test_optimize_picks_the_cheapest_plan_that_meets_the_deadline_and_counts_waiting_nodes() -> None:
    codecs = [CodecSample(1, 2e9, 3.0), CodecSample(19, 5e6, 4.5)]  # fast and modest, slow and small
    costs = Costs(price_per_gb=0.02, idle_watts_per_node=6000)
    result = plan_cluster(
        CONFIG, 10**13, 40_000, Cluster(nodes=16), costs, codecs=codecs, deadline_s=24 * 3600, optimize="energy"
    )
    options = {o["level"]: o for o in result["optimize"]["alternatives"]}
    assert set(options) == {None, 1, 19}
    assert options[19]["meets_deadline"] is False  # 10 TB at 5 MB/s x 16 nodes: ~35 h of compressing alone
    chosen = result["optimize"]["chosen"]
    assert chosen["meets_deadline"] is not False
    assert chosen["energy_kWh"] == min(o["energy_kWh"] for o in options.values() if o["meets_deadline"] is not False)
    # Idle power of 16 nodes x 6 kW over the staging: the energy is at least that.
    assert result["idle_energy_kWh"] == pytest.approx(16 * 6000 * result["pipelined_s"] / 3.6e6, rel=1e-3)
    by_cost = plan_cluster(
        CONFIG, 10**13, 40_000, Cluster(nodes=16), costs, codecs=codecs, deadline_s=24 * 3600, optimize="cost"
    )
    cheapest = by_cost["optimize"]["chosen"]
    assert cheapest["cost"] == min(o["cost"] for o in by_cost["optimize"]["alternatives"] if o["meets_deadline"])


def tierflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_plan_deadline_from_the_command_line() -> None:
    done = tierflow("plan", "--dataset-size", "200 TB", "--nodes", "64", "--deadline", "6h")
    assert done.returncode == 0, done.stderr
    assert "deadline 6.0 h: missed by" in done.stdout and "widen object -> pfs:" in done.stdout
    as_json = json.loads(tierflow("plan", "--dataset-size", "2 TB", "--deadline", "700 h", "--json").stdout)
    assert as_json["deadline"]["meets"] and as_json["deadline"]["seconds"] == 700 * 3600
    bad = tierflow("plan", "--dataset-size", "2 TB", "--deadline", "6x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--deadline: unknown duration unit" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("expected_s", "late"),
    [
        pytest.param(0.04, True, id="heading-far-past-its-plan"),
        pytest.param(60.0, False, id="on-plan"),
        pytest.param(None, False, id="no-plan"),
    ],
)
def test_a_copy_behind_its_plan_says_how_late_it_will_be_once(
    expected_s: float | None, late: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from pipelines.transfer.progress import Progress

    progress = Progress(1000, "object -> pfs", interval=0.0, objects=10, expected_s=expected_s)
    with caplog.at_level("INFO", logger="pipelines.transfer.progress"):
        for _ in range(3):
            time.sleep(0.02)
            progress.add(10)  # 10 bytes per 20 ms: 1,000 bytes take about 2 s
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if late:
        (line,) = warnings  # once, not at every progress line
        assert "object -> pfs: behind plan:" in line and "later than the 40 ms planned" in line and "% late" in line
    else:
        assert warnings == []


@pytest.mark.parametrize(
    ("cluster", "demand", "size", "short", "binds"),
    [
        pytest.param(Cluster(nodes=4), 100e6, 256 * MiB, set(), {}, id="every-tier-feeds-a-small-job"),
        pytest.param(Cluster(nodes=64), 2e9, 256 * MiB, {"object", "pfs", "nvme"}, {"object": "bandwidth"}, id="big"),
        pytest.param(
            Cluster(nodes=64, object_bps=4e11, pfs_bps=1e12, nvme_bps_per_node=7e9),
            3000 * MiB,
            MiB,
            {"object", "pfs"},
            {"object": "requests", "pfs": "metadata"},
            id="small-samples-bound-by-request-rates",
        ),
    ],
)
def test_can_each_tier_feed_the_nodes(cluster, demand: float, size: int, short: set, binds: dict) -> None:
    from pipelines.model.whatif import feed

    result = feed(CONFIG, cluster, demand, size)
    rows = {r["tier"]: r for r in result["tiers"]}
    assert {t for t, r in rows.items() if not r["feeds"]} == short
    for tier, resource in binds.items():
        assert rows[tier]["binds"] == resource
    for r in rows.values():
        assert r["headroom"] == pytest.approx(r["deliver_Bps"] / r["need_Bps"])
        assert r["need_Bps"] == pytest.approx(demand * (1 if r["scope"] == "per node" else cluster.nodes))
    assert (result["verdict"] == "every tier can feed it") == (not short)


def test_more_nodes_never_leave_more_headroom_on_a_shared_tier() -> None:
    from pipelines.model.whatif import feed

    headroom = [
        {r["tier"]: r["headroom"] for r in feed(CONFIG, Cluster(nodes=n), 1e8, 64 * MiB)["tiers"]} for n in (1, 8, 64)
    ]
    for a, b in itertools.pairwise(headroom):
        assert b["object"] <= a["object"] and b["pfs"] <= a["pfs"]


def test_plan_demand_from_the_command_line() -> None:
    done = tierflow("plan", "--demand", "3000/s x 1 MiB", "--nodes", "8", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["object_size"] == MiB and result["demand_Bps_per_node"] == pytest.approx(3000 * MiB)
    per_accelerator = json.loads(tierflow("plan", "--demand", "250 MB/s", "--accelerators", "8", "--json").stdout)
    assert per_accelerator["demand_Bps_per_node"] == pytest.approx(2e9)
    bad = tierflow("plan", "--demand", "fast")
    assert bad.returncode == 2 and bad.stderr.startswith("tierflow plan: --demand:") and "Traceback" not in bad.stderr
    neither = tierflow("plan")
    assert neither.returncode == 2 and "--dataset-size" in neither.stderr and "--demand" in neither.stderr


@settings(max_examples=150, deadline=None)
@given(
    objects=st.integers(1, 100_000),
    size=st.integers(1, 2**30),
    concurrency=st.integers(1, 64),
    tasks=st.integers(1, 32),
    hop=st.sampled_from([("object", "pfs"), ("pfs", "nvme"), ("nvme", "object")]),
)
def test_more_concurrent_tasks_are_never_faster_per_task(
    objects: int, size: int, concurrency: int, tasks: int, hop: tuple[str, str]
) -> None:
    from pipelines.model.bandwidth import predict_hop

    work = Workload.uniform(objects, size)
    src, dst = CONFIG.tier(hop[0]), CONFIG.tier(hop[1])
    alone = predict_hop(src, dst, work, concurrency, tasks=tasks).seconds
    crowded = predict_hop(src, dst, work, concurrency, tasks=tasks + 1).seconds
    assert crowded >= alone * (1 - 1e-12)


def test_a_shared_tier_plan_says_so_and_takes_its_share() -> None:
    work = Workload.uniform(4000, 256 * MiB)
    alone = plan_hop(CONFIG.tier("object"), CONFIG.tier("pfs"), work)
    shared = plan_hop(CONFIG.tier("object"), CONFIG.tier("pfs"), work, tasks=4)
    assert "4 tasks on object and pfs at once" in shared.reasons["sharing"] and "sharing" not in alone.reasons
    # bandwidth-bound alone: four tasks sharing the aggregate take four times as long each
    assert shared.predicted_s == pytest.approx(alone.predicted.source.bandwidth_s * 4, rel=0.06)


def _limited(read_limit: float | None, write_limit: float | None):
    from dataclasses import replace

    obj = CONFIG.tier("object")
    return replace(obj, bandwidth=replace(obj.bandwidth, request_limit=read_limit, write_request_limit=write_limit))


@pytest.mark.parametrize(
    ("read_limit", "write_limit", "hop", "cap"),
    [
        pytest.param(None, None, "down", None, id="no-limit"),
        pytest.param(1000.0, None, "down", "limit of 1,000 GET/s", id="get-limit-caps-downloads"),
        pytest.param(None, 1500.0, "up", "limit of 1,500 PUT/s", id="put-limit-caps-uploads"),
        pytest.param(1000.0, None, "up", None, id="a-get-limit-leaves-uploads-alone"),
    ],
)
def test_a_request_rate_limit_caps_streams_before_the_store_throttles(read_limit, write_limit, hop, cap) -> None:
    obj, pfs = _limited(read_limit, write_limit), CONFIG.tier("pfs")
    src, dst = (obj, pfs) if hop == "down" else (pfs, obj)
    work = Workload.uniform(20_000, 16 * 1024)
    plan = plan_hop(src, dst, work)
    end = plan.predicted.source if hop == "down" else plan.predicted.destination
    per_request = obj.bandwidth.latency(end.direction) + 16 * 1024 / (
        obj.bandwidth.stream_read_bps if hop == "down" else obj.bandwidth.stream_write_bps
    )
    limit = read_limit if hop == "down" else write_limit
    if cap is None:
        assert "per prefix" not in plan.reasons["concurrency"]
    else:
        assert cap in plan.reasons["concurrency"]
        # the plan's streams issue at most the limit's requests per second
        assert plan.concurrency / per_request <= limit * (1 + 1e-9)
        # and the time counts the requests at the limit's rate
        assert end.metadata_s >= work.objects / limit * (1 - 1e-9)


def test_a_configured_request_limit_survives_calibration(tmp_path, monkeypatch) -> None:
    from pipelines.model.calibration import TERMS, Fit, calibrated, store_fit

    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    config = load_config(None)
    limited = _limited(5500.0, 3500.0)
    from dataclasses import replace

    config = replace(config, tiers=tuple(limited if t.name == "object" else t for t in config.tiers))
    store_fit(config, "object", Fit(config.tier("object").bandwidth, dict.fromkeys(TERMS, 0.1), 3, []), apply=True)
    profile = calibrated(config).tier("object").bandwidth
    assert (profile.limit("read"), profile.limit("write")) == (5500.0, 3500.0)


CURVE = ((64 * 1024, 80e6), (2 * MiB, 240e6), (64 * MiB, 300e6))


def _curved(curve=CURVE):
    from dataclasses import replace

    obj = CONFIG.tier("object")
    return replace(obj, bandwidth=replace(obj.bandwidth, read_curve=curve, write_curve=curve))


@pytest.mark.parametrize(
    ("size", "expected_bps"),
    [
        pytest.param(64 * 1024, 80e6, id="at-a-measured-point"),
        pytest.param(32 * 1024, 40e6, id="below-the-smallest-an-object-costs-what-the-smallest-did"),
        pytest.param(2**30, "amortized", id="above-the-largest-the-per-object-cost-amortizes"),
        # between 64 KiB and 2 MiB the time per object is linear in the size (a fixed cost plus bytes
        # at a bandwidth): at 256 KiB, 0.819 ms + (256 - 64) KiB of the 8.738 - 0.819 ms between them
        pytest.param(
            256 * 1024,
            256 * 1024 / (64 * 1024 / 80e6 + (192 / 1984) * (2 * MiB / 240e6 - 64 * 1024 / 80e6)),
            id="a-fixed-cost-per-object-plus-bytes-at-a-bandwidth",
        ),
    ],
)
def test_capacity_off_the_calibrated_curve(size: int, expected_bps: float | str) -> None:
    from pipelines.model.bandwidth import predict_hop

    if expected_bps == "amortized":  # above 64 MiB: time = a + size / B through the two largest points
        (s1, b1), (s2, b2) = CURVE[-2:]
        bandwidth = (s2 - s1) / (s2 / b2 - s1 / b1)  # ~302 MB/s
        fixed = s2 / b2 - s2 / bandwidth  # ~1.8 ms per object
        expected_bps = size / (fixed + size / bandwidth)
        assert 300e6 < expected_bps < bandwidth

    work = Workload.uniform(100, size)
    end = predict_hop(_curved(), CONFIG.tier("pfs"), work, 64).source
    assert end.capacity_s == pytest.approx(work.bytes / expected_bps, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(objects=st.integers(1, 50_000), size=st.integers(1, 2**31), more=st.integers(1, 2**20))
def test_on_the_curve_more_bytes_or_more_objects_are_never_faster(objects: int, size: int, more: int) -> None:
    from pipelines.model.bandwidth import predict_hop

    src, dst = _curved(), CONFIG.tier("pfs")
    base = predict_hop(src, dst, Workload.uniform(objects, size), 8).seconds
    assert predict_hop(src, dst, Workload.uniform(objects, size + more), 8).seconds >= base * (1 - 1e-9)
    assert predict_hop(src, dst, Workload.uniform(objects + 1, size), 8).seconds >= base * (1 - 1e-9)


def test_calibration_keeps_the_curve_it_measured() -> None:
    from pipelines.model.calibration import Sample, fit_profile

    samples = [
        Sample(d, size, n, c, n * size / bps / (c / 16))
        for d in ("read", "write")
        for size, bps in CURVE
        for n in (8,)
        for c in (1, 16)
    ]
    profile = fit_profile(samples, max_streams=16)
    assert profile.curve("read") == tuple((s, pytest.approx(b)) for s, b in CURVE)
    assert profile.curve("write") == profile.curve("read")


def test_the_page_cache_share_of_files_is_measured_and_dropped(tmp_path) -> None:
    import os

    from pipelines.storage.pagecache import drop, resident_share

    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(os.urandom(4 * MiB))
        paths.append(str(path))
    assert resident_share(paths) == pytest.approx(1.0)  # just written
    for p in paths[:2]:
        drop(p)
    assert resident_share(paths) == pytest.approx(0.5, abs=0.01)
    assert resident_share([]) == 0.0 and resident_share([str(tmp_path / "missing")]) == 0.0


@pytest.mark.parametrize(
    ("resident", "faster"),
    [
        pytest.param(0.0, False, id="cold-reads-off-the-disk"),
        pytest.param(1.0, True, id="cached-reads-at-memory-speed"),
    ],
)
def test_a_file_tier_reads_what_the_page_cache_holds_at_its_cached_speed(resident: float, faster: bool) -> None:
    from dataclasses import replace

    from pipelines.model.bandwidth import predict_hop

    pfs = CONFIG.tier("pfs")
    cold = ((64 * 1024, 200e6), (64 * MiB, 800e6))
    warm = ((64 * 1024, 600e6), (64 * MiB, 3000e6))
    tier = replace(pfs, bandwidth=replace(pfs.bandwidth, read_curve=cold, write_curve=cold, cached_read_curve=warm))
    work = replace(Workload.uniform(64, 16 * MiB), resident=resident)
    plain = predict_hop(tier, CONFIG.tier("nvme"), replace(work, resident=0.0), 16).source.capacity_s
    seen = predict_hop(tier, CONFIG.tier("nvme"), work, 16).source.capacity_s
    assert plain is not None and seen is not None
    assert (seen < plain) == faster and seen <= plain


def test_one_stream_reads_cached_data_at_the_cached_speed_too() -> None:
    from dataclasses import replace

    from pipelines.model.bandwidth import predict_hop

    pfs = CONFIG.tier("pfs")
    cold = ((64 * 1024, 200e6), (64 * MiB, 800e6))
    warm = ((64 * 1024, 600e6), (64 * MiB, 3000e6))
    profile = replace(pfs.bandwidth, stream_read_bps=800e6, read_curve=cold, write_curve=cold, cached_read_curve=warm)
    tier = replace(pfs, bandwidth=profile)
    one = Workload.uniform(1, 2**30)  # one file: one stream
    cold_s = predict_hop(tier, CONFIG.tier("nvme"), one, 1).source.stream_s
    warm_s = predict_hop(tier, CONFIG.tier("nvme"), replace(one, resident=1.0), 1).source.stream_s
    assert warm_s == pytest.approx(cold_s * 800e6 / 3000e6, rel=0.01)


#: What calibration measured of writes to the embedded server on a busy day: objects/s at 1, 4 and
#: 16 streams, of 64 KiB and of 2 MiB objects.
WIDTHS = ((1, 225.0), (4, 419.0), (16, 468.0))
TABLE = tuple((64 * 1024, streams, rate * 64 * 1024) for streams, rate in WIDTHS) + tuple(
    (2 * MiB, streams, rate * 2 * MiB) for streams, rate in ((1, 42.0), (4, 66.0), (16, 81.0))
)


@pytest.mark.parametrize(
    ("table", "streams", "rate"),
    [
        pytest.param(TABLE, 4, 419.0, id="at-a-measured-width"),
        # log-log between 4 and 16 streams: 8 is halfway, the geometric mean of 419 and 468
        pytest.param(TABLE, 8, (419.0 * 468.0) ** 0.5, id="interpolated-log-log"),
        pytest.param(TABLE, 64, 468.0, id="above-the-widest-it-stays"),
        pytest.param(TABLE[1:], 2, 419.0 / 2, id="below-the-narrowest-it-scales-with-the-streams"),
        pytest.param(((1, 1, 100.0), (1, 4, 900.0)), 4, 400.0, id="faster-than-linear-is-noise"),
        pytest.param(((1, 1, 100.0), (1, 4, 300.0), (1, 16, 200.0)), 16, 300.0, id="never-falls-with-more-streams"),
    ],
)
def test_the_aggregate_at_a_plans_streams_comes_off_the_widths_measured(table, streams: int, rate: float) -> None:
    from pipelines.model.bandwidth import at_streams

    size, bps = at_streams(table, streams)[0]
    assert bps / size == pytest.approx(rate, rel=1e-9)


def _widths(table=TABLE):
    """The object tier with a calibration of 64 KiB objects at several widths (its best on the curve)."""
    from dataclasses import replace

    from pipelines.model.bandwidth import at_streams

    obj = CONFIG.tier("object")
    best = at_streams(table, 10**6)
    profile = replace(obj.bandwidth, write_curve=best, read_curve=best, write_by_streams=table, read_by_streams=table)
    return replace(obj, bandwidth=profile)


def test_a_store_whose_rate_grows_slowly_with_streams_is_planned_with_more_of_them() -> None:
    """Where more streams add little each, the straight line up to the best undersells them: the table does not."""
    from dataclasses import replace

    measured, pfs = _widths(), CONFIG.tier("pfs")
    line = replace(measured, bandwidth=replace(measured.bandwidth, write_by_streams=(), read_by_streams=()))
    work = Workload.uniform(2000, 64 * 1024)
    by_table, by_line = plan_hop(pfs, measured, work), plan_hop(pfs, line, work)
    assert by_table.concurrency > by_line.concurrency
    # at the plan's streams the rate is what the table says there, and within 5 % of the best
    rate = work.objects / by_table.predicted.destination.capacity_s
    assert 0.95 * 468.0 <= rate <= 468.0 * (1 + 1e-9)


@settings(max_examples=150, deadline=None)
@given(
    rates=st.lists(st.floats(1.0, 1e4), min_size=3, max_size=3),
    objects=st.integers(1, 50_000),
    concurrency=st.integers(1, 48),
    tasks=st.integers(1, 16),
)
def test_off_the_widths_more_streams_are_never_slower_and_more_tasks_never_faster_each(
    rates: list[float], objects: int, concurrency: int, tasks: int
) -> None:
    from pipelines.model.bandwidth import predict_hop

    table = tuple((64 * 1024, streams, rate * 64 * 1024) for streams, rate in zip((1, 4, 16), rates, strict=True))
    table += tuple((2 * MiB, streams, bps * 8) for _, streams, bps in table)  # a second size: the curve needs two
    obj, pfs, work = _widths(table), CONFIG.tier("pfs"), Workload.uniform(objects, 64 * 1024)
    seconds = predict_hop(pfs, obj, work, concurrency, tasks=tasks).seconds
    assert predict_hop(pfs, obj, work, concurrency + 1, tasks=tasks).seconds <= seconds * (1 + 1e-9)
    assert predict_hop(pfs, obj, work, concurrency, tasks=tasks + 1).seconds >= seconds * (1 - 1e-9)


def test_calibration_keeps_every_width_it_measured_and_the_profile_file_too(tmp_path, monkeypatch) -> None:
    from pipelines.model.calibration import TERMS, Fit, Sample, calibrated, fit_profile, store_fit

    samples = [
        Sample(d, size, 8, c, 8 * size / (bps * min(c, 4) / 4))
        for d in ("read", "write")
        for size, bps in CURVE
        for c in (1, 4, 16)
    ]
    profile = fit_profile(samples, max_streams=16)
    expected = tuple((size, c, pytest.approx(bps * min(c, 4) / 4)) for size, bps in CURVE for c in (1, 4, 16))
    assert profile.write_by_streams == profile.read_by_streams == expected
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    config = load_config(None)
    store_fit(config, "object", Fit(profile, dict.fromkeys(TERMS, 0.0), 1, samples), apply=True)
    assert calibrated(config).tier("object").bandwidth.write_by_streams == expected


@pytest.mark.parametrize(
    ("calibrated", "work", "deadline_s", "at_limit"),
    [
        pytest.param(False, Workload.uniform(2000, 16 * 1024), None, True, id="small-objects-configured-numbers"),
        pytest.param(True, Workload.uniform(2000, 16 * 1024), None, False, id="small-objects-calibrated"),
        pytest.param(False, Workload.uniform(2000, 16 * 1024), 3600.0, False, id="a-deadline-takes-the-fewest"),
        pytest.param(False, Workload.uniform(1, 2**30), None, False, id="one-large-object"),
    ],
)
def test_small_objects_run_at_the_stream_limit_until_the_store_is_calibrated(
    calibrated: bool, work: Workload, deadline_s: float | None, at_limit: bool
) -> None:
    """Configured numbers cannot say how a store's request rate grows with streams; too few cost the most."""
    obj, pfs = (_widths() if calibrated else CONFIG.tier("object")), CONFIG.tier("pfs")
    assert CONFIG.tier("object").bandwidth.uncertainty == 1.0  # configured, not calibrated
    plan = plan_hop(pfs, obj, work, deadline_s=deadline_s)
    limit = min(obj.bandwidth.max_streams, pfs.bandwidth.max_streams)
    assert (plan.concurrency == limit and "configured, not calibrated" in plan.reasons["concurrency"]) == at_limit
    if not at_limit:
        assert "configured, not calibrated" not in plan.reasons["concurrency"]


GiB = 2**30


@pytest.mark.parametrize(
    ("tier", "headroom", "expected"),
    [
        pytest.param("pfs", None, "unchanged", id="headroom-unknown"),
        pytest.param("pfs", 2 * GiB, "unchanged", id="the-page-cache-takes-it-all"),
        pytest.param("pfs", 0, GiB / 500e6, id="none-left-all-at-the-disks-pace"),
        pytest.param("pfs", GiB // 2, "half", id="half-in-the-page-cache-half-at-the-disks-pace"),
        pytest.param("object", 0, "unchanged", id="an-object-store-has-no-page-cache-here"),
    ],
)
def test_writes_past_what_the_page_cache_takes_go_at_the_disks_synced_pace(tier, headroom, expected) -> None:
    from dataclasses import replace

    from pipelines.model.bandwidth import predict_hop

    dst = CONFIG.tier(tier)
    dst = replace(dst, bandwidth=replace(dst.bandwidth, synced_write_bps=500e6))
    src = CONFIG.tier("nvme")
    work = Workload.uniform(64, 16 * MiB)
    base = predict_hop(src, dst, work, 4).destination
    end = predict_hop(src, dst, replace(work, write_headroom=headroom), 4).destination
    if expected == "unchanged":
        assert end.seconds == base.seconds and end.writeback_s is None
        return
    if expected == "half":
        expected = base.seconds / 2 + (GiB / 2) / 500e6
    assert end.writeback_s == pytest.approx(expected) and end.seconds == pytest.approx(max(base.seconds, expected))
    assert end.bound == "bandwidth"


@settings(max_examples=100, deadline=None)
@given(headroom=st.integers(0, 4 * GiB), less=st.integers(1, GiB), objects=st.integers(1, 5000))
def test_less_room_in_the_page_cache_is_never_faster(headroom: int, less: int, objects: int) -> None:
    from dataclasses import replace

    from pipelines.model.bandwidth import predict_hop

    pfs = CONFIG.tier("pfs")
    pfs = replace(pfs, bandwidth=replace(pfs.bandwidth, synced_write_bps=400e6))
    work = Workload.uniform(objects, 4 * MiB)
    roomy = predict_hop(CONFIG.tier("nvme"), pfs, replace(work, write_headroom=headroom), 4).seconds
    tight = predict_hop(CONFIG.tier("nvme"), pfs, replace(work, write_headroom=max(0, headroom - less)), 4).seconds
    assert tight >= roomy * (1 - 1e-9)


def test_the_page_cache_headroom_is_read_from_the_kernel(tmp_path) -> None:
    """On Linux, what the page cache still takes before writers are held: within memory, less once data is dirty."""
    import os

    from pipelines.storage.pagecache import write_headroom

    headroom = write_headroom()
    if not os.path.exists("/proc/vmstat"):
        assert headroom is None
        return
    assert headroom is not None and 0 <= headroom <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # 384 MiB written, not flushed: the room shrinks by a third of it at least (others may be written back meanwhile).
    with open(tmp_path / "dirty.bin", "wb") as fh:
        for _ in range(384):
            fh.write(os.urandom(2**20))
        after = write_headroom()
        os.fsync(fh.fileno())
    assert after is not None and (headroom == 0 or after <= headroom - 128 * 2**20)
