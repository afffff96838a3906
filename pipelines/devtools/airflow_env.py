"""The environment of the Airflow processes that ``tierflow demo`` and ``tierflow airflow up`` start.

Everything points at this checkout and the state directory: ``AIRFLOW_HOME`` under the state
directory (SQLite DB, logs, generated UI password), this checkout's ``dags/`` and ``plugins/``, the
same tier config, and the embedded S3 server's connection. No ``airflow`` import here: the
processes are started with this environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.core.config import TierflowConfig
from pipelines.devtools.s3server import S3Credentials

__all__ = ["airflow_env", "checkout_dir"]


def checkout_dir() -> Path:
    """The Tierflow checkout holding ``dags/`` and ``plugins/``: ``$TIERFLOW_CHECKOUT``, else the working directory.

    Raises:
        FileNotFoundError: There is no ``dags/`` folder there.
    """
    root = Path(os.environ.get("TIERFLOW_CHECKOUT") or Path.cwd()).resolve()
    if not (root / "dags").is_dir():
        raise FileNotFoundError(
            f"{root}: no dags/ folder here; run from the Tierflow checkout or set TIERFLOW_CHECKOUT"
        )
    return root


def airflow_env(config: TierflowConfig, creds: S3Credentials | None, api_port: int | None = None) -> dict[str, str]:
    """The environment for ``airflow`` subprocesses, built on the current one."""
    root = checkout_dir()
    home = Path(os.environ.get("AIRFLOW_HOME") or config.state_dir / "airflow")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {
        "AIRFLOW_HOME": str(home),
        "TIERFLOW_HOME": str(config.state_dir),
        "TIERFLOW_CONFIG": str(Path(config.source).resolve()),
        "PYTHONPYCACHEPREFIX": env.get("PYTHONPYCACHEPREFIX") or str(config.state_dir / "pycache"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    if creds is not None and config.s3_server is not None:
        env[f"AIRFLOW_CONN_{config.s3_server.conn_id.upper()}"] = creds.airflow_connection()
    if api_port is not None:
        env |= {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        }
    home.mkdir(parents=True, exist_ok=True)
    return env
