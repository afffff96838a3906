"""Calibration against SeaweedFS and a local directory, the fit on plain data, and a failing tier."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.core.config import load_config
from pipelines.model.calibration import (
    SIZES,
    Sample,
    calibrate_tier,
    calibrated,
    fit_profile,
    load_profile,
    save_profile,
)
from pipelines.storage.tier import Tier


@pytest.mark.unit
def test_fit_recovers_latency_and_stream_bandwidth() -> None:
    latency, stream = 0.002, 100e6

    def t(size: int, n: int, c: int) -> float:
        return n * (latency + size / stream) / c

    samples = [
        Sample(d, size, 10, c, t(size, 10, c)) for d in ("read", "write") for size in (2**16, 2**24) for c in (1, 4)
    ]
    samples += [Sample("write", 2**16, 10, 4, t(2**16, 10, 4) * 2)]  # writes of small objects at half the rate
    profile = fit_profile(samples, max_streams=8)
    assert profile.latency_s == pytest.approx(latency, rel=1e-6)
    assert profile.latency("write") == pytest.approx(latency, rel=1e-6)
    assert profile.ops("read") == pytest.approx(10 / t(2**16, 10, 4))
    assert profile.ops("write") == pytest.approx(10 / t(2**16, 10, 4))  # the best of the write samples
    assert profile.stream_read_bps == pytest.approx(stream, rel=1e-6)
    assert profile.read_bps == pytest.approx(max(s.throughput_bps for s in samples))
    with pytest.raises(ValueError, match="single-stream"):
        fit_profile(samples[:1], 1)


def _valid(profile) -> None:
    for value in (
        profile.read_bps,
        profile.write_bps,
        profile.stream_read_bps,
        profile.stream_write_bps,
        profile.latency_s,
        profile.metadata_ops,
    ):
        assert math.isfinite(value) and value > 0
    assert profile.stream_read_bps <= profile.read_bps and profile.stream_write_bps <= profile.write_bps


@pytest.mark.integration
@pytest.mark.parametrize("name", ["object", "pfs"])
def test_calibration_produces_a_valid_profile_and_leaves_nothing(
    name: str,
    test_config,
    s3_credentials,
    tmp_path: Path,
) -> None:
    cfg = test_config.tier(name)
    if cfg.is_object:
        tier = Tier(
            replace(cfg, url=f"{cfg.url.rstrip('/')}/cal-{uuid.uuid4().hex[:6]}/"), s3_credentials[0].storage_options()
        )
    else:
        tier = Tier(replace(cfg, url=f"file://{tmp_path / 'pfs'}"))
    profile, samples = calibrate_tier(tier, budget_bytes=128 * 2**20, budget_s=60)
    _valid(profile)
    # Steps of the largest objects move more on an object store (its steps' start weighs), within the budget.
    largest = {s.objects * s.size for s in samples if s.size == SIZES[-1] and s.direction in ("read", "write")}
    assert largest == ({128 * 2**20} if cfg.is_object else {64 * 2**20, 128 * 2**20}), largest
    # A file tier is read twice: off the disk (dropped from the page cache) and from memory, and
    # written once more with every file fsynced (the pace of writes past what the page cache takes).
    file_only = {"cached_read", "synced_write"} if not cfg.is_object else set()
    assert {s.direction for s in samples} == {"read", "write"} | file_only and len(samples) >= 4
    assert bool(profile.cached_read_curve) == (not cfg.is_object) and len(profile.curve("read")) == len(SIZES)
    assert (profile.synced_write_bps > 0) == (not cfg.is_object)
    assert tier.list() == []


@pytest.mark.integration
def test_unreachable_tier_fails_clearly_and_keeps_the_old_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_config
) -> None:
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    cfg = load_config(test_config.source)
    old = replace(cfg.tier("object").bandwidth, read_bps=123e6)
    save_profile(cfg, "object", old, [])
    dead = Tier(
        cfg.tier("object"),
        {
            "key": "k",
            "secret": "s",
            "endpoint_url": "http://127.0.0.1:9",
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        },
    )
    with pytest.raises(OSError):
        calibrate_tier(dead, budget_bytes=4 * 2**20, budget_s=10)
    assert load_profile(cfg, "object")[0] == replace(old, uncertainty=0.0)  # a profile file keeps what was measured
    assert calibrated(cfg).tier("object").bandwidth.read_bps == 123e6
    assert calibrated(cfg).tier("pfs").bandwidth == cfg.tier("pfs").bandwidth


def _fit(scale: float, spread: float = 0.05) -> object:
    from pipelines.model.calibration import TERMS, Fit

    base = load_config(None).tier("object").bandwidth
    profile = replace(
        base,
        read_bps=base.read_bps * scale,
        write_bps=base.write_bps * scale,
        stream_read_bps=base.stream_read_bps * scale,
        stream_write_bps=base.stream_write_bps * scale,
    )
    return Fit(profile, dict.fromkeys(TERMS, spread), 3, [])


@pytest.mark.unit
def test_a_fit_that_disagrees_is_kept_as_a_candidate_and_plans_keep_the_old_numbers(tmp_path, monkeypatch) -> None:
    """A busy minute's fit (10x slower) never replaces a profile silently; one that agrees does; --apply takes it."""
    from pipelines.model.calibration import load_candidate, store_fit

    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    cfg = load_config(None)
    configured = cfg.tier("object").bandwidth.read_bps
    # Against the configured numbers (no calibration yet): a noisy fit ten times off is held back.
    status, agreed, path = store_fit(cfg, "object", _fit(0.1, spread=0.6))
    assert status == "candidate" and not agreed.agrees and agreed.against == "configured profile"
    assert path.name == "object.candidate.json"
    assert "read" in agreed.line() and "beyond ±100%" in agreed.line()
    assert load_profile(cfg, "object") is None and calibrated(cfg).tier("object").bandwidth.read_bps == configured
    candidate = load_candidate(cfg, "object")
    assert candidate is not None and candidate["profile"]["read_bps"] == pytest.approx(configured * 0.1)
    # Within a factor of two of the configured numbers: stored, and the candidate is gone.
    status, agreed, _ = store_fit(cfg, "object", _fit(0.7))
    assert status == "applied" and agreed.agrees and load_candidate(cfg, "object") is None
    assert calibrated(cfg).tier("object").bandwidth.read_bps == pytest.approx(configured * 0.7)
    # Against a stored calibration: within the larger of its spread and 25 % agrees, beyond does not.
    assert store_fit(cfg, "object", _fit(0.7 * 1.2))[0] == "applied"
    status, agreed, _ = store_fit(cfg, "object", _fit(0.7 * 1.2 * 1.4))
    assert status == "candidate" and agreed.against.startswith("calibration of ")
    assert calibrated(cfg).tier("object").bandwidth.read_bps == pytest.approx(configured * 0.7 * 1.2)
    wide = _fit(0.7 * 1.2 * 1.4, spread=0.5)  # a noisy fit's own spread widens the tolerance
    assert store_fit(cfg, "object", wide)[0] == "applied"
    # --apply takes a disagreeing fit on purpose.
    status, agreed, _ = store_fit(cfg, "object", _fit(0.1), apply=True)
    assert status == "applied" and not agreed.agrees and "taken on purpose" in agreed.line()
    assert calibrated(cfg).tier("object").bandwidth.read_bps == pytest.approx(configured * 0.1)
    # A first fit steady over its sweeps replaces configured guesses, however far off they were.
    status, agreed, _ = store_fit(cfg, "pfs", _fit(3.0, spread=0.1))
    assert status == "applied" and not agreed.agrees and "steady over 3 sweeps" in agreed.line()


@pytest.mark.integration
def test_a_repeated_calibration_keeps_each_terms_median_spread_and_sample_count(tmp_path, monkeypatch) -> None:
    import json

    from pipelines.model.calibration import SIZES, TERMS, calibrate_repeated, store_fit

    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path / "state"))
    (tmp_path / "pfs").mkdir()
    cfg = load_config(None)
    tier = Tier(replace(cfg.tier("pfs"), url=f"file://{tmp_path}/pfs"))
    fit = calibrate_repeated(tier, budget_bytes=16 * 2**20, budget_s=30, repeats=3)
    assert fit.repeats == 3 and set(fit.spread) == set(TERMS) and all(v >= 0 for v in fit.spread.values())
    singles = [s for s in fit.samples if s.direction == "read" and s.concurrency == 1]
    assert len(singles) == 3 * len(SIZES)  # every size single-stream in each sweep, three sweeps
    status, _, path = store_fit(cfg, "pfs", fit, apply=True)
    stored = json.loads(path.read_text())
    assert status == "applied" and stored["repeats"] == 3
    assert stored["terms"]["read_bps"]["value"] == fit.profile.read_bps
    assert stored["terms"]["read_bps"]["samples"] == len(fit.samples) // 3
    assert [p for p in (tmp_path / "pfs").rglob("*") if p.is_file()] == []  # the sweeps removed what they wrote
