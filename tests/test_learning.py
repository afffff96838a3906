"""Learning from observed transfers: kept as data, applied as a visible correction, never compounding.

Plans use calibration × a correction learnt per tier and direction from the observation log
(:func:`pipelines.model.observations.corrections`); the stored profiles stay as calibrated.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.core.config import load_config
from pipelines.model.bandwidth import Bottleneck, Workload, plan_hop, predict_hop
from pipelines.model.calibration import TERMS, Fit, calibrated, learnt, load_profile, store_fit
from pipelines.model.observations import MAX_CORRECTION, MIN_BYTES, MIN_SAMPLES, WINDOW, Observation, record

pytestmark = pytest.mark.unit

GiB = 2**30


def seen(ratio: float, *, at: float = 1e9, correction: float = 1.0, **fields: object) -> Observation:
    """A finished 1 GiB object -> pfs copy, read-bound on the object tier, ``ratio`` = predicted / achieved."""
    values: dict = {
        "at": at,
        "dag_id": "dataset_staging",
        "task_id": "stage_hop1",
        "source": "object",
        "target": "pfs",
        "bytes": GiB,
        "objects": 8,
        "predicted_s": 10.0 * ratio,
        "achieved_s": 10.0,
        "bottleneck": Bottleneck("object", "read", "bandwidth"),
        "correction": correction,
    }
    return Observation(**(values | fields))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    return load_config(None)


def factor(config, observed, tier: str = "object", direction: str = "read") -> float:
    return learnt(config, observed)[(tier, direction)].factor


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param([], 1.0, id="nothing-observed"),
        pytest.param([seen(0.5)] * (MIN_SAMPLES - 1), 1.0, id="too-few-to-learn"),
        pytest.param([seen(0.5)] * MIN_SAMPLES, 0.5, id="slower-than-calibrated"),
        pytest.param([seen(1.2), seen(1.5), seen(9.0)], 1.5, id="median-not-mean"),
        pytest.param([seen(0.5)] * WINDOW + [seen(2.0)] * WINDOW, 2.0, id="latest-window-only"),
        pytest.param([seen(100.0)] * MIN_SAMPLES, MAX_CORRECTION, id="bounded"),
        # A prediction made with a learnt 2x was half the calibrated one: undone, it is 2 x 0.5.
        pytest.param([seen(0.5, correction=2.0)] * MIN_SAMPLES, 1.0, id="no-compounding"),
        pytest.param([seen(0.5, bytes=MIN_BYTES - 1)] * MIN_SAMPLES, 1.0, id="small-transfers-ignored"),
        pytest.param([seen(0.5, error="refused", achieved_s=0.0)] * MIN_SAMPLES, 1.0, id="failures-ignored"),
        pytest.param(
            [seen(0.5, bottleneck=Bottleneck("elsewhere", "read", "bandwidth"))] * MIN_SAMPLES, 1.0, id="unknown-tier"
        ),
    ],
)
def test_correction_from_observations(config, observed: list[Observation], expected: float) -> None:
    assert factor(config, observed) == pytest.approx(expected)
    assert factor(config, observed, direction="write") == 1.0  # only the bottleneck's direction learns


def test_a_correction_divides_every_term_of_its_end_and_the_plan_says_what_it_used(config) -> None:
    work = Workload.uniform(64, 16 * 2**20)
    before = calibrated(config, [])
    after = calibrated(config, [seen(0.5)] * MIN_SAMPLES)
    source, target = before.tier("object"), before.tier("pfs")
    plain = predict_hop(source, target, work, 4)
    slow = predict_hop(after.tier("object"), after.tier("pfs"), work, 4)
    assert slow.source.bandwidth_s == pytest.approx(plain.source.bandwidth_s * 2)
    assert slow.source.stream_s == pytest.approx(plain.source.stream_s * 2)
    assert slow.source.metadata_s == pytest.approx(plain.source.metadata_s * 2)
    assert slow.destination == plain.destination
    plan = plan_hop(after.tier("object"), after.tier("pfs"), work)
    if plan.predicted.bottleneck.tier == "object":
        assert plan.summary().correction == 0.5


def test_learning_starts_afresh_after_a_calibration_and_never_writes_the_profile(config) -> None:
    old = [seen(0.5, at=time.time() - 3600)] * MIN_SAMPLES
    for o in old:
        record(config, o)
    assert calibrated(config).tier("object").bandwidth.read_correction == 0.5
    assert load_profile(config, "object") is None  # learnt from the log, nothing stored
    base = config.tier("object").bandwidth
    store_fit(config, "object", Fit(base, dict.fromkeys(TERMS, 0.1), 3, []), apply=True)
    taught = learnt(config)[("object", "read")]
    assert taught.factor == 1.0 and taught.samples == () and taught.since is not None
    assert calibrated(config).tier("object").bandwidth.read_correction == 1.0
    newer = seen(0.8, at=time.time() + 1)
    for _ in range(MIN_SAMPLES):
        record(config, newer)
    taught = learnt(config)[("object", "read")]
    assert taught.factor == pytest.approx(0.8) and len(taught.samples) == MIN_SAMPLES
    assert {s.task_id for s in taught.samples} == {"stage_hop1"} and "median of 3 observations" in taught.line()


@pytest.mark.parametrize(
    ("spread", "observed", "expected"),
    [
        pytest.param(None, [], 1.0, id="configured-numbers-a-factor-of-two"),
        pytest.param(0.3, [], 0.15, id="half-the-calibration-spread"),
        pytest.param(
            0.1, [seen(1.0), seen(1.5), seen(2.0)], (2.0 - 1.0) / 1.5 / 2, id="a-scattered-correction-widens-it"
        ),
    ],
)
def test_uncertainty_of_a_prediction(config, spread: float | None, observed: list, expected: float) -> None:
    if spread is not None:
        base = config.tier("object").bandwidth
        store_fit(config, "object", Fit(base, dict.fromkeys(TERMS, spread), 3, []), apply=True)
        observed = [replace(o, at=time.time() + 10) for o in observed]
    profile = calibrated(config, observed).tier("object").bandwidth
    assert profile.uncertainty == pytest.approx(expected, abs=1e-4)
    work = Workload.uniform(8, GiB)
    plan = plan_hop(calibrated(config, observed).tier("object"), config.tier("pfs"), work)
    assert plan.summary().uncertainty == pytest.approx(plan.predicted.binding.uncertainty, abs=1e-3)


def test_the_page_shows_what_each_profile_learnt_from_and_the_error_over_time(config) -> None:
    from pipelines.operators.plugin import _error_chart, _tiers

    now = time.time()
    for i, ratio in enumerate((0.5, 0.6, 0.7)):
        record(config, seen(ratio, at=now + i, task_id=f"stage_hop1_{i}"))
    (obj,) = [t for t in _tiers() if t["name"] == "object"]
    read = obj["learnt"][0]
    assert read["direction"] == "read" and read["factor"] == pytest.approx(0.6)
    assert [s["task_id"] for s in read["samples"]] == ["stage_hop1_0", "stage_hop1_1", "stage_hop1_2"]
    assert obj["read_correction"] == pytest.approx(0.6) and obj["write_correction"] == 1.0
    chart = _error_chart([seen(0.5, at=now), seen(1.0, at=now + 1, bottleneck=Bottleneck("pfs", "write", "bandwidth"))])
    assert chart.count("class='error-point'") == 2 and "object read (1)" in chart and "pfs write (1)" in chart
    assert "+100%" in chart  # achieved twice the predicted time
    assert "error-chart-empty" in _error_chart([])
