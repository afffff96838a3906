"""Pins: a holder (a job, a restore) keeps whatever lives under a prefix from being deleted until its pin expires.

A pin is ``<prefix>/_tierflow_pins/<holder>.json`` holding its expiry; the cache and the
checkpoint lifecycle share them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from pipelines.core.manifest import validate_name
from pipelines.storage.tier import Tier

__all__ = ["PINS", "live_pins", "pin_expiries", "remove_pin", "write_pin"]

PINS = "_tierflow_pins"


def write_pin(tier: Tier, prefix: str, holder: str, ttl_s: float, now: float | None = None) -> None:
    """Pin whatever lives under ``prefix`` for ``ttl_s`` seconds on behalf of ``holder``; renew by pinning again."""
    validate_name(holder, "pin holder")
    if ttl_s <= 0:
        raise ValueError(f"pin ttl must be positive (got {ttl_s})")
    start = now if now is not None else time.time()
    tier.write_bytes(
        f"{prefix}/{PINS}/{holder}.json", json.dumps({"holder": holder, "expires": start + ttl_s}).encode()
    )


def remove_pin(tier: Tier, prefix: str, holder: str) -> None:
    """Remove ``holder``'s pin under ``prefix`` (no error if there is none)."""
    key = f"{prefix}/{PINS}/{validate_name(holder, 'pin holder')}.json"
    if tier.exists(key):
        tier.delete([key])


def pin_expiries(tier: Tier, prefix: str, names: Iterable[str], now: float) -> tuple[tuple[str, float], ...]:
    """``(holder, expires)`` of each unexpired pin among ``names`` (keys relative to ``prefix``, listed already)."""
    pins = []
    for rel in sorted(names):
        if rel.startswith(f"{PINS}/"):
            try:
                data = json.loads(tier.read_bytes(f"{prefix}/{rel}"))
            except (ValueError, FileNotFoundError):
                continue
            expires = float(data.get("expires", 0))
            if expires > now:
                pins.append((str(data.get("holder")), expires))
    return tuple(sorted(pins))


def live_pins(tier: Tier, prefix: str, names: Iterable[str], now: float) -> tuple[str, ...]:
    """Holders of unexpired pins among ``names`` (keys relative to ``prefix``, from a listing already made)."""
    return tuple(holder for holder, _ in pin_expiries(tier, prefix, names, now))
