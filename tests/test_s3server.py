"""The embedded S3 server through the CLI: serve, status, env (used by another client), stop."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.devtools.s3server import free_port

pytestmark = pytest.mark.integration

CONFIG = """
[s3_server]
port = {port}
conn_id = "embedded_s3"

[[tier]]
name = "object"
kind = "object"
url = "s3://demo-bucket/data"
conn_id = "embedded_s3"
capacity = "1 GB"
[tier.bandwidth]
read = "100 MB/s"
write = "100 MB/s"
latency = "2 ms"
metadata_ops = "1000/s"
"""


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def parse_exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        key, _, value = line[len("export ") :].partition("=")
        out[key] = shlex.split(value)[0]
    return out


def test_serve_status_env_stop(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "tiers.toml"
    config.write_text(CONFIG.format(port=port))
    env = os.environ | {"TIERFLOW_CONFIG": str(config), "TIERFLOW_HOME": str(tmp_path / "state")}
    served = run("s3", "serve", env=env)
    try:
        assert served.returncode == 0, served.stderr
        assert f"http://127.0.0.1:{port}" in served.stdout

        creds = tmp_path / "state" / "s3" / "credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        status = run("s3", "status", "--json", env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["ready"] is True
        human = run("s3", "status", env=env)
        assert human.returncode == 0 and human.stdout.startswith(
            f"SeaweedFS S3 at http://127.0.0.1:{port}: running (pid "
        )
        again = run("s3", "serve", env=env)
        assert again.returncode == 0 and "already running" in again.stdout

        exports = parse_exports(run("s3", "env", env=env).stdout)
        secret = json.loads(creds.read_text())["secret_key"]
        assert exports["AWS_SECRET_ACCESS_KEY"] == secret
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        assert exports["AWS_REGION"] == "us-east-1"
        conn = json.loads(exports["AIRFLOW_CONN_EMBEDDED_S3"])
        assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == exports["AWS_ENDPOINT_URL"]

        # Another client (s5cmd, from the dev group) reaches the same server with the exported variables,
        # and finds the configured bucket created.
        s5cmd = shutil.which("s5cmd", path=str(Path(sys.executable).parent)) or shutil.which("s5cmd")
        assert s5cmd, "s5cmd is installed by the dev dependency group"
        sample = tmp_path / "hello.txt"
        sample.write_text("hello")
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | exports
        put = subprocess.run(
            [s5cmd, "cp", str(sample), "s3://demo-bucket/data/hello.txt"],
            capture_output=True,
            text=True,
            env=client_env,
            check=False,
        )
        assert put.returncode == 0, put.stderr
        listed = subprocess.run(
            [s5cmd, "ls", "s3://demo-bucket/data/"], capture_output=True, text=True, env=client_env, check=False
        )
        assert "hello.txt" in listed.stdout
        rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
        assert rclone, "rclone is installed by the dev dependency group"
        via_rclone = subprocess.run(
            [rclone, "cat", "tierflow:demo-bucket/data/hello.txt"],
            capture_output=True,
            text=True,
            env=client_env,
            check=False,
        )
        assert via_rclone.stdout == "hello", via_rclone.stderr
        anonymous = subprocess.run(
            [s5cmd, "--no-sign-request", "ls", "s3://demo-bucket/"],
            capture_output=True,
            text=True,
            env=client_env,
            check=False,
        )
        assert anonymous.returncode != 0
    finally:
        stopped = run("s3", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    down = run("s3", "status", env=env)
    assert down.returncode == 1 and "not running (start it: tierflow s3 serve)" in down.stdout
    grpc = json.loads((tmp_path / "state" / "s3" / "ports.json").read_text())["grpc"]
    assert not [p for name, p in grpc.items() if Path(f"/tmp/seaweedfs-{name}-grpc-{p}.sock").exists()]


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = tmp_path / "tiers.toml"
        config.write_text(CONFIG.format(port=busy.getsockname()[1]))
        env = os.environ | {"TIERFLOW_CONFIG": str(config), "TIERFLOW_HOME": str(tmp_path / "state")}
        result = run("s3", "serve", env=env)
    assert result.returncode == 2
    assert "already in use" in result.stderr and result.stderr.count("\n") == 1
