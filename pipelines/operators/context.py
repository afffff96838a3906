"""What every operator does first: load the tier config and open tiers with credentials from Airflow connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig
    from pipelines.storage.tier import Tier

__all__ = [
    "fatal_errors",
    "load_config_in_task",
    "open_tier_in_task",
    "open_tiers_in_task",
    "options_from_connection",
    "s3_storage_options",
    "select_tiers",
]


def s3_storage_options(conn_id: str) -> dict[str, Any]:
    """Storage options for s3fs from an ``aws`` connection: login/password, ``endpoint_url`` and region in extra.

    ``config_kwargs`` in the extra (e.g. ``{"max_pool_connections": 64}``) pass through to botocore.

    Raises:
        airflow.sdk.exceptions.AirflowRuntimeError: The connection does not exist (its message names it).
    """
    from airflow.sdk import BaseHook

    return options_from_connection(BaseHook.get_connection(conn_id))


def options_from_connection(conn: Any) -> dict[str, Any]:
    """Storage options for s3fs from a connection object (task SDK or core model)."""
    extra = conn.extra_dejson
    options: dict[str, Any] = {}
    if conn.login:
        options["key"] = conn.login
        options["secret"] = conn.password
    endpoint = extra.get("endpoint_url") or extra.get("service_config", {}).get("s3", {}).get("endpoint_url")
    if endpoint:
        options["endpoint_url"] = endpoint
    if extra.get("region_name"):
        options["client_kwargs"] = {"region_name": extra["region_name"]}
    if extra.get("config_kwargs"):
        options["config_kwargs"] = dict(extra["config_kwargs"])
    return options


def load_config_in_task(path: str | None = None) -> TierflowConfig:
    """Load the tier config with calibrated profiles; a bad config fails the task at once (retrying cannot fix it)."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.core.config import ConfigError, load_config
    from pipelines.model.calibration import calibrated

    try:
        return calibrated(load_config(path))
    except (ConfigError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from None


def open_tier_in_task(config: TierflowConfig, name: str) -> Tier:
    """Open a tier inside a task; an object tier's credentials come from its Airflow connection."""
    from pipelines.storage.tier import open_tier

    tier = config.tier(name)
    options = s3_storage_options(tier.conn_id) if tier.is_object and tier.conn_id else None
    return open_tier(config, name, options)


def open_tiers_in_task(config_path: str | None, *names: str | tuple[str | None, str]) -> list[Tier]:
    """Load the config once and open the tiers (credentials from their Airflow connections).

    Each of ``names`` is a tier name, or ``(name, kind)``: the name when given, else the config's
    tier of that kind (:meth:`~pipelines.core.config.TierflowConfig.primary`), so operators never
    spell a tier name.
    """
    config = load_config_in_task(config_path)
    resolved = [n if isinstance(n, str) else (n[0] or config.primary(n[1]).name) for n in names]  # type: ignore[arg-type]
    return [open_tier_in_task(config, name) for name in resolved]


def select_tiers(asked: list[str] | None, config_path: str | None = None) -> list[str]:
    """The tier names a DAG's ``tiers`` param asks for (each checked against the config), else every tier."""
    from airflow.sdk.exceptions import AirflowFailException

    config = load_config_in_task(config_path)
    known = [t.name for t in config.tiers]
    unknown = [name for name in asked or [] if name not in known]
    if unknown:
        raise AirflowFailException(f"params.tiers: no such tier {unknown} in {config.source} (tiers: {known})")
    return list(asked or []) or known


@contextlib.contextmanager
def fatal_errors(*final: type[BaseException]) -> Iterator[None]:
    """Turn failures into what Airflow should do with them, by the one classification.

    A failure :func:`pipelines.core.errors.classify` calls fatal (bad input or config, checksum
    mismatch, missing source, permission, full disk, a transfer with an object failed for good)
    fails the task for good with one line (``AirflowFailException``); one it calls done skips the
    task; a transient one propagates for Airflow to retry. ``final`` adds exception types the caller
    knows to be final in its own context.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from pipelines.core.errors import Outcome, classify, one_line

    try:
        yield
    except (AirflowFailException, AirflowSkipException):
        raise
    except Exception as exc:  # classified once, below
        outcome = Outcome.FATAL if final and isinstance(exc, final) else classify(exc)
        if outcome is Outcome.FATAL:
            raise AirflowFailException(one_line(exc)) from None
        if outcome is Outcome.DONE:
            raise AirflowSkipException(one_line(exc)) from None
        raise
