"""What every operator does first: load the tier config and open tiers with credentials from Airflow connections."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig
    from pipelines.storage.tier import Tier

__all__ = [
    "fatal_errors",
    "load_config_in_task",
    "open_tier_in_task",
    "open_tiers",
    "open_tiers_in_task",
    "options_from_connection",
    "placement",
    "s3_storage_options",
    "select_tiers",
]

log = logging.getLogger(__name__)


def s3_storage_options(conn_id: str) -> dict[str, Any]:
    """Storage options for an object tier from its Airflow connection (see :func:`options_from_connection`).

    Raises:
        airflow.sdk.exceptions.AirflowRuntimeError: The connection does not exist (its message names it);
            the provider alone would fall back to the default credential chain without a word.
    """
    from airflow.sdk import BaseHook

    return options_from_connection(BaseHook.get_connection(conn_id))


def options_from_connection(conn: Any) -> dict[str, Any]:
    """Storage options for an object tier from its Airflow connection (task SDK or core model), by connection type.

    ``aws`` (the default) goes through the amazon provider (:func:`aws_options`);
    ``google_cloud_platform`` gives gcsfs options (:func:`gcs_options`); ``wasb`` gives adlfs
    options (:func:`azure_options`).
    """
    kind = getattr(conn, "conn_type", None) or "aws"
    if kind == "google_cloud_platform":
        return gcs_options(conn)
    if kind == "wasb":
        return azure_options(conn)
    return aws_options(conn)


def _extra(conn: Any, prefix: str) -> dict[str, Any]:
    """The connection's extra, with the provider's old ``extra__<type>__`` prefixes removed."""
    extra = dict(conn.extra_dejson or {})
    return {k.removeprefix(prefix): v for k, v in extra.items()}


def gcs_options(conn: Any) -> dict[str, Any]:
    """Storage options for gcsfs from a ``google_cloud_platform`` connection, its fields as the provider has them.

    ``keyfile_dict`` (the service account's JSON) or ``key_path`` (a file holding it) become the
    token; neither means Application Default Credentials (``google_default``). ``project`` is the
    billing project; ``endpoint_url`` in extra (Tierflow's own) points at an emulator, where
    ``anon: true`` skips credentials.
    """
    import json

    extra = _extra(conn, "extra__google_cloud_platform__")
    options: dict[str, Any] = {}
    keyfile = extra.get("keyfile_dict")
    if keyfile:
        options["token"] = json.loads(keyfile) if isinstance(keyfile, str) else dict(keyfile)
    elif extra.get("key_path"):
        options["token"] = str(extra["key_path"])
    elif extra.get("anon"):
        options["token"] = "anon"
    else:
        options["token"] = "google_default"
    if extra.get("project"):
        options["project"] = str(extra["project"])
    if extra.get("endpoint_url"):
        options["endpoint_url"] = str(extra["endpoint_url"])
    return options


def azure_options(conn: Any) -> dict[str, Any]:
    """Storage options for adlfs from a ``wasb`` connection, read as the azure provider defines its fields.

    ``connection_string`` in extra wins; else the account is the login (or the host's account
    name) with the password as its key, or ``sas_token``, or a service principal
    (``tenant_id`` in extra, the login as client id and the password as its secret); with none
    of them, adlfs uses Azure's default credential.

    Raises:
        PermissionError: The connection names no storage account (named).
    """
    extra = _extra(conn, "extra__wasb__")
    if extra.get("connection_string"):
        return {"connection_string": str(extra["connection_string"])}
    options: dict[str, Any] = {}
    if extra.get("tenant_id") and conn.login and conn.password:
        options |= {"tenant_id": extra["tenant_id"], "client_id": conn.login, "client_secret": conn.password}
        account = extra.get("account_name") or (conn.host or "").split(".", 1)[0].removeprefix("https://")
    else:
        account = conn.login or extra.get("account_name")
        if conn.password:
            options["account_key"] = conn.password
    if not account:
        raise PermissionError(f"connection {conn.conn_id!r}: no storage account (login, account_name or a host)")
    options["account_name"] = account
    if extra.get("sas_token"):
        options["sas_token"] = str(extra["sas_token"])
    return options


def aws_options(conn: Any) -> dict[str, Any]:
    """Storage options for an object tier from an ``aws`` connection (task SDK or core model), via the amazon provider.

    The provider resolves the credentials as it does for its own operators: keys (login/password or
    ``aws_access_key_id``/``aws_secret_access_key`` in extra) with an optional session token,
    ``role_arn`` (assumed, and refreshed before it expires), ``profile_name``, or the default
    chain; the endpoint from ``endpoint_url`` or ``service_config.s3.endpoint_url`` and
    ``region_name``, in extra. ``config_kwargs`` in extra (e.g. ``{"max_pool_connections": 64}``)
    pass through to botocore.

    Static keys are handed over as they are. Anything else becomes the provider's session (for
    s3fs) and its refreshing credentials (for the CRT path,
    :data:`~pipelines.storage.credentials.CRT_CREDENTIALS`): both ask again when a temporary
    credential expires.

    Raises:
        PermissionError: The connection resolves to no credentials at all (named).
    """
    from airflow.providers.amazon.aws.hooks.base_aws import BaseSessionFactory
    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper

    from pipelines.storage.credentials import CRT_CREDENTIALS

    wrapper = AwsConnectionWrapper(conn=conn)
    options: dict[str, Any] = {}
    endpoint = wrapper.get_service_endpoint_url("s3")
    if endpoint:
        options["endpoint_url"] = endpoint
    if wrapper.region_name:
        options["client_kwargs"] = {"region_name": wrapper.region_name}
    if wrapper.extra_config.get("config_kwargs"):
        options["config_kwargs"] = dict(wrapper.extra_config["config_kwargs"])
    if wrapper.aws_access_key_id and wrapper.aws_secret_access_key and not wrapper.role_arn:
        options["key"], options["secret"] = wrapper.aws_access_key_id, wrapper.aws_secret_access_key
        if wrapper.aws_session_token:
            options["token"] = wrapper.aws_session_token
        return options
    factory = BaseSessionFactory(conn=wrapper, region_name=wrapper.region_name)
    refreshing = factory.create_session().get_credentials()
    if refreshing is None:
        raise PermissionError(
            f"connection {conn.conn_id!r}: no AWS credentials (no keys, role, profile or default chain)"
        )
    options["session"] = BaseSessionFactory(conn=wrapper, region_name=wrapper.region_name).create_session(
        deferrable=True
    )
    options[CRT_CREDENTIALS] = refreshing.get_frozen_credentials
    return options


def load_config_in_task(path: str | None = None, node: str | None = None) -> TierflowConfig:
    """Load the tier config with calibrated profiles; a bad config fails the task at once (retrying cannot fix it).

    ``node`` is the ``[[node]]`` a per-node task belongs to (its queue routed it there). The
    worker says which node it is with ``$TIERFLOW_NODE``; a task of another node's fails at once,
    since filling this node's NVMe would not fill the one the task is for. A worker that does not
    say (one machine, no ``TIERFLOW_NODE``) takes the task's node's tier values, with a warning.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.core.config import NODE_ENV, ConfigError, load_config
    from pipelines.model.calibration import calibrated

    try:
        config = calibrated(load_config(path))
        if not node:
            return config
        if config.node is None:
            log.warning(
                "%s is not set on this worker: taking node %r's tier values from %s as they are",
                NODE_ENV,
                node,
                config.source,
            )
            return config.for_node(node)
    except (ConfigError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from None
    if config.node != node:
        queue = next((n.queue for n in config.nodes if n.name == node), node)
        raise AirflowFailException(
            f"task for node {node!r} ran on a worker of node {config.node!r} ({NODE_ENV}): "
            f"only node {node!r}'s worker may consume queue {queue!r}"
        )
    return config


def placement(config: TierflowConfig) -> dict[str, str | None]:
    """Where a task runs: its node (``None`` off the node fan-out) and worker (``<node>@<host>``)."""
    from pipelines.core.config import NODE_ENV

    host = socket.gethostname()
    here = os.environ.get(NODE_ENV, "").strip()
    return {"node": config.node, "worker": f"{here}@{host}" if here else host}


def open_tier_in_task(
    config: TierflowConfig, name: str, by_connection: dict[str, dict[str, Any]] | None = None
) -> Tier:
    """Open a tier inside a task; an object tier's credentials come from its Airflow connection.

    ``by_connection`` caches the options per connection id across calls (one session per connection).
    """
    from pipelines.storage.tier import open_tier

    tier = config.tier(name)
    options = None
    if tier.is_object and tier.conn_id:
        cache = {} if by_connection is None else by_connection
        if tier.conn_id not in cache:
            cache[tier.conn_id] = s3_storage_options(tier.conn_id)
        options = cache[tier.conn_id]
    return open_tier(config, name, options)


def open_tiers_in_task(
    config_path: str | None, *names: str | tuple[str | None, str], node: str | None = None
) -> list[Tier]:
    """Load the config once (as node ``node`` sees it, when given) and open the tiers (:func:`open_tiers`)."""
    return open_tiers(load_config_in_task(config_path, node), *names)


def open_tiers(config: TierflowConfig, *names: str | tuple[str | None, str]) -> list[Tier]:
    """Open tiers of a loaded config; those of one connection share a session (server-side copies).

    Each of ``names`` is a tier name, or ``(name, kind)``: the name when given, else the config's
    tier of that kind (:meth:`~pipelines.core.config.TierflowConfig.primary`), so operators never
    spell a tier name. Object tiers' credentials come from their Airflow connections.
    """
    resolved = [n if isinstance(n, str) else (n[0] or config.primary(n[1]).name) for n in names]  # type: ignore[arg-type]
    by_connection: dict[str, dict[str, Any]] = {}
    return [open_tier_in_task(config, name, by_connection) for name in resolved]


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
