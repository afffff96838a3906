"""Quantities with explicit units."""

from __future__ import annotations

import pytest

from pipelines.core.units import (
    UnitError,
    format_bandwidth,
    format_duration,
    parse_bandwidth,
    parse_duration,
    parse_rate,
    parse_size,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("3.5 TB", 3_500_000_000_000, id="decimal-tb"),
        pytest.param("128 MiB", 128 * 2**20, id="binary-mib"),
        pytest.param("1B", 1, id="bytes-no-space"),
        pytest.param("2 GiB", 2 * 2**30, id="binary-gib"),
        pytest.param("1e3 kB", 1_000_000, id="exponent"),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("800 MB/s", 800e6, id="decimal"),
        pytest.param("1.5 GiB/s", 1.5 * 2**30, id="binary"),
        pytest.param("100 kB/s", 1e5, id="kilo"),
    ],
)
def test_parse_bandwidth(text: str, expected: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2 ms", 0.002, id="ms"),
        pytest.param("10 min", 600.0, id="min"),
        pytest.param("250 us", 0.00025, id="us"),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


def test_parse_rate() -> None:
    assert parse_rate("5000/s") == 5000
    assert parse_rate("20 ops/s") == 20


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        pytest.param(parse_size, "0 GB", "greater than zero", id="zero"),
        pytest.param(parse_size, "-3 GB", "greater than zero", id="negative"),
        pytest.param(parse_size, "nan GB", "finite", id="nan"),
        pytest.param(parse_size, "inf TB", "finite", id="inf"),
        pytest.param(parse_size, "3 gigabytes", "unknown size unit", id="bad-unit"),
        pytest.param(parse_size, "3", "unknown size unit", id="no-unit"),
        pytest.param(parse_size, 3, "expected a string", id="not-a-string"),
        pytest.param(parse_bandwidth, "800 MB", "per-second", id="bandwidth-without-per-second"),
        pytest.param(parse_bandwidth, "800 Mb/s", "unknown bandwidth unit", id="bits"),
        pytest.param(parse_bandwidth, "10 GBps", "per-second unit", id="GBps"),
        pytest.param(parse_bandwidth, "10 mib/s", "unknown bandwidth unit", id="lowercase-mib"),
        pytest.param(parse_duration, "2 fortnights", "unknown duration unit", id="bad-duration"),
        pytest.param(parse_rate, "5000/min", "unknown rate unit", id="bad-rate"),
        pytest.param(parse_size, "fast", "not a size", id="no-number"),
    ],
)
def test_bad_quantities_are_refused(parser, text: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parser(text)


def test_format_bandwidth() -> None:
    assert format_bandwidth(812e6) == "812.00 MB/s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0000042, "4 µs"), (0.023, "23 ms"), (0.9994, "999 ms"), (4.24, "4.2 s"), (600, "10.0 min"), (27000, "7.5 h")],
)
def test_durations_keep_their_digits_meaningful(seconds: float, text: str) -> None:
    """A plan's 23 ms is not printed as "0.0 s"."""
    assert format_duration(seconds) == text
