"""Calibration against SeaweedFS and a local directory, the fit on plain data, and a failing tier."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.core.config import load_config
from pipelines.model.calibration import Sample, calibrate_tier, calibrated, fit_profile, load_profile, save_profile
from pipelines.storage.tier import Tier


@pytest.mark.unit
def test_fit_recovers_latency_and_stream_bandwidth() -> None:
    latency, stream = 0.002, 100e6

    def t(size: int, n: int, c: int) -> float:
        return n * (latency + size / stream) / c

    samples = [
        Sample(d, size, 10, c, t(size, 10, c)) for d in ("read", "write") for size in (2**16, 2**24) for c in (1, 4)
    ]
    profile = fit_profile(samples, metadata_ops=1000, max_streams=8)
    assert profile.latency_s == pytest.approx(latency, rel=1e-6)
    assert profile.stream_read_bps == pytest.approx(stream, rel=1e-6)
    assert profile.read_bps == pytest.approx(max(s.throughput_bps for s in samples))
    with pytest.raises(ValueError, match="single-stream"):
        fit_profile(samples[:1], 1, 1)


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
    profile, samples = calibrate_tier(tier, budget_bytes=48 * 2**20, budget_s=60)
    _valid(profile)
    assert {s.direction for s in samples} == {"read", "write"} and len(samples) >= 4
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
    assert load_profile(cfg, "object")[0] == old
    assert calibrated(cfg).tier("object").bandwidth.read_bps == 123e6
    assert calibrated(cfg).tier("pfs").bandwidth == cfg.tier("pfs").bandwidth
