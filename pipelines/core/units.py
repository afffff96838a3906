"""Parse quantities with explicit units: sizes, bandwidths, durations and rates.

Every quantity in a tier config carries its unit, so "800 MB/s" and "800 MiB/s" can never be
confused. Decimal prefixes (kB, MB, GB, TB, PB) are powers of 1000; binary prefixes (KiB, MiB,
GiB, TiB, PiB) are powers of 1024. Bandwidths are bytes per second; bits are not accepted.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "UnitError",
    "format_bandwidth",
    "format_bytes",
    "format_duration",
    "format_prediction",
    "parse_bandwidth",
    "parse_duration",
    "parse_rate",
    "parse_size",
]

_SIZE_FACTORS: dict[str, int] = {
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
}

_DURATION_FACTORS: dict[str, float] = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)\s*(\S*)\s*$", re.I)


class UnitError(ValueError):
    """A quantity that cannot be parsed, or whose value is not finite and positive."""


def _split(text: object, kind: str, example: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise UnitError(f"expected a string with a unit for a {kind}, such as {example!r}")
    match = _QUANTITY.match(text)
    if not match:
        raise UnitError(f"not a {kind} (expected a number and a unit, such as {example!r})")
    value = float(match.group(1))
    if math.isnan(value) or math.isinf(value):
        raise UnitError(f"{kind} must be a finite number")
    if value <= 0:
        raise UnitError(f"{kind} must be greater than zero")
    return value, match.group(2)


def _size_factor(unit: str, kind: str, example: str) -> int:
    try:
        return _SIZE_FACTORS[unit]
    except KeyError:
        known = ", ".join(_SIZE_FACTORS)
        raise UnitError(f"unknown {kind} unit {unit!r} (known: {known}; e.g. {example!r})") from None


def parse_size(text: object) -> int:
    """Parse a size such as ``"3.5 TB"`` or ``"128 MiB"`` into bytes."""
    value, unit = _split(text, "size", "3.5 TB")
    return round(value * _size_factor(unit or "?", "size", "3.5 TB"))


def parse_bandwidth(text: object) -> float:
    """Parse a bandwidth such as ``"800 MB/s"`` or ``"1.5 GiB/s"`` into bytes per second."""
    value, unit = _split(text, "bandwidth", "800 MB/s")
    if not unit.endswith("/s"):
        raise UnitError("bandwidth needs a per-second unit such as 'MB/s' or 'GiB/s'")
    return value * _size_factor(unit[:-2], "bandwidth", "800 MB/s")


def parse_duration(text: object) -> float:
    """Parse a duration such as ``"2 ms"`` or ``"10 min"`` into seconds."""
    value, unit = _split(text, "duration", "2 ms")
    try:
        return value * _DURATION_FACTORS[unit]
    except KeyError:
        known = ", ".join(_DURATION_FACTORS)
        raise UnitError(f"unknown duration unit {unit!r} (known: {known}; e.g. '2 ms')") from None


def parse_rate(text: object) -> float:
    """Parse an operation rate such as ``"5000/s"`` or ``"5000 ops/s"`` into operations per second."""
    value, unit = _split(text, "rate", "5000/s")
    if unit not in ("/s", "ops/s", "op/s"):
        raise UnitError(f"unknown rate unit {unit!r} (use '/s' or 'ops/s', e.g. '5000/s')")
    return value


def format_bytes(n: float) -> str:
    """Format a byte count with a decimal prefix, e.g. ``"1.50 GB"``."""
    for unit, factor in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{n:.0f} B"


def format_bandwidth(bytes_per_second: float) -> str:
    """Format a bandwidth with a decimal prefix, e.g. ``"812.00 MB/s"``."""
    return format_bytes(bytes_per_second) + "/s"


def format_duration(seconds: float) -> str:
    """Format a duration with a unit that keeps its digits meaningful: ``"23 ms"``, ``"4.2 s"``, ``"7.5 h"``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_prediction(seconds: float, uncertainty: float) -> str:
    """A predicted duration with its relative uncertainty: ``"4.2 s ± 15 %"`` (no ± when it is unknown)."""
    return f"{format_duration(seconds)} ± {uncertainty:.0%}" if uncertainty > 0 else format_duration(seconds)
