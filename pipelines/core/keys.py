"""Object keys: normalised relative paths that can never escape a tier's root."""

from __future__ import annotations

__all__ = ["safe_key"]


def safe_key(key: str) -> str:
    """Normalise a relative key and refuse one that could escape the root.

    Raises:
        ValueError: The key is empty, absolute, or has a ``..`` segment; the message names it.
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}: must be a non-empty relative path")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"invalid object key {key!r}: names no object (only '.' and '/')")
    if any(p == ".." for p in parts):
        raise ValueError(f"invalid object key {key!r}: '..' segments are not allowed")
    return "/".join(parts)
