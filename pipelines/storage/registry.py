"""Storage backends by URL scheme: ``file`` (local POSIX), ``s3``, ``gs`` and ``az``; others register here.

A backend is a :class:`~pipelines.storage.tier.Tier` subclass; ``Tier(config)`` returns the one
registered for the scheme of ``config.url``. Backends are imported on first use, so opening a
file tier never imports s3fs.
"""

from __future__ import annotations

import importlib

from pipelines.storage.tier import Tier

__all__ = ["backend_for", "register_backend", "schemes"]

_BACKENDS: dict[str, str | type[Tier]] = {
    "file": "pipelines.storage.local:LocalTier",
    "s3": "pipelines.storage.s3:S3Tier",
    "gs": "pipelines.storage.gcs:GcsTier",
    "gcs": "pipelines.storage.gcs:GcsTier",
    "az": "pipelines.storage.azure:AzureTier",
    "abfs": "pipelines.storage.azure:AzureTier",
}


def register_backend(scheme: str, backend: str | type[Tier]) -> None:
    """Serve ``scheme://`` tiers with ``backend`` (a Tier subclass, or ``"module:Class"`` imported on first use)."""
    _BACKENDS[scheme] = backend


def schemes() -> tuple[str, ...]:
    """The URL schemes a tier may use."""
    return tuple(sorted(_BACKENDS))


def backend_for(url: str) -> type[Tier]:
    """The backend class for a tier URL.

    Raises:
        ValueError: No backend serves the URL's scheme (named, with the ones that exist).
    """
    scheme = url.partition("://")[0] if "://" in url else "file"
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(f"{url}: no storage backend for '{scheme}://' (known: {', '.join(schemes())})")
    if isinstance(backend, str):
        module, _, name = backend.partition(":")
        backend = getattr(importlib.import_module(module), name)
        assert isinstance(backend, type) and issubclass(backend, Tier)
        _BACKENDS[scheme] = backend
    return backend
