"""Credentials for object tiers outside Airflow, and the embedded server's credentials file.

The embedded S3 server (a development tool) writes its generated key pair to
``<state_dir>/s3/credentials.json``; tiers that go through its connection id read it here, so
the library never imports the development tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.core.config import TierConfig, TierflowConfig

__all__ = ["CREDENTIALS_FILE", "CRT_CREDENTIALS", "S3Credentials", "read_embedded_credentials", "storage_options_for"]

#: The embedded server's key pair, under its directory ``<state_dir>/s3``.
CREDENTIALS_FILE = "credentials.json"

#: Storage option (Tierflow's own; never passed to s3fs) holding a callable that returns the current
#: credentials, ``.access_key``, ``.secret_key`` and ``.token`` (botocore's
#: ``Credentials.get_frozen_credentials``, which refreshes temporary credentials before they expire).
#: The CRT path asks it for credentials whenever it signs, so assumed roles are refreshed, not
#: copied once. It comes with a ``session`` option (the same credentials for s3fs).
CRT_CREDENTIALS = "tierflow_credentials"


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair and the endpoint it is valid for."""

    access_key: str
    secret_key: str
    endpoint_url: str
    region: str = "us-east-1"

    def storage_options(self) -> dict[str, Any]:
        """Options for ``s3fs.S3FileSystem`` (and so for fsspec URLs) that reach this endpoint."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
        }

    def airflow_connection(self) -> str:
        """The Airflow connection (``aws`` type, ``endpoint_url`` in extra) as JSON for ``AIRFLOW_CONN_*``."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )

    def env(self, conn_id: str | None = None) -> dict[str, str]:
        """Environment variables for other S3 clients and, given ``conn_id``, for Airflow.

        ``AWS_*`` serve boto3, the aws CLI and s3fs; ``S3_ENDPOINT_URL`` serves s5cmd; the
        ``RCLONE_CONFIG_TIERFLOW_*`` variables define an rclone remote ``tierflow:``.
        """
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            # s5cmd reads its endpoint from S3_ENDPOINT_URL, not AWS_ENDPOINT_URL.
            "S3_ENDPOINT_URL": self.endpoint_url,
            # An rclone remote named "tierflow:" defined entirely by environment variables.
            "RCLONE_CONFIG_TIERFLOW_TYPE": "s3",
            "RCLONE_CONFIG_TIERFLOW_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_TIERFLOW_ENDPOINT": self.endpoint_url,
            "RCLONE_CONFIG_TIERFLOW_ACCESS_KEY_ID": self.access_key,
            "RCLONE_CONFIG_TIERFLOW_SECRET_ACCESS_KEY": self.secret_key,
            "RCLONE_CONFIG_TIERFLOW_REGION": self.region,
        }
        if conn_id:
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = self.airflow_connection()
        return env


def storage_options_for(config: TierflowConfig, tier: TierConfig) -> dict[str, Any]:
    """Storage options for an object tier outside Airflow.

    The embedded server's credentials are used when the tier goes through the embedded server's
    connection id and the server has been started once; otherwise the options are empty and
    botocore reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL`` itself.
    """
    server = config.s3_server
    if tier.is_object and server is not None and tier.conn_id == server.conn_id:
        found = read_embedded_credentials(config)
        if found is not None:
            return found.storage_options()
    return {}


def read_embedded_credentials(config: TierflowConfig) -> S3Credentials | None:
    """The embedded server's credentials, or None when it was never started (or is not configured)."""
    server = config.s3_server
    if server is None:
        return None
    path = config.state_dir / "s3" / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return S3Credentials(data["access_key"], data["secret_key"], f"http://{server.host}:{server.port}", server.region)
