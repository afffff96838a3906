"""Real emulators of the other clouds' object stores, started on loopback for the session.

* Google Cloud Storage: ``gcp-storage-emulator`` (PyPI, in the dev group), its JSON API;
* Azure Blob Storage: Azurite (npm ``azurite``), installed with npm into the test tools directory
  when it is missing (Node is needed; the suite fails with one line saying so when it is not).

Each yields the storage options a tier of that store takes, for a bucket (container) made here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Azurite's version, pinned as the other test servers are.
AZURITE_VERSION = "3.37.0"
#: Azurite's well-known development account (public: the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
READY_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"emulator exited during start (exit {proc.returncode}); see {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"emulator not listening on 127.0.0.1:{port} after {READY_TIMEOUT_S} s; see {log}")


@contextlib.contextmanager
def _running(cmd: list[str], port: int, log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        _wait_listening(port, proc, log)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def gcs_emulator(workdir: Path, bucket: str) -> Iterator[dict[str, Any]]:
    """``gcp-storage-emulator`` on a free loopback port, with ``bucket``; yields gcsfs storage options."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    binary = Path(sys.executable).with_name("gcp-storage-emulator")
    cmd = [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--default-bucket", bucket, "-M"]
    with _running(cmd, port, workdir / "gcs-emulator.log", workdir):
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "token": "anon", "project": "tierflow-test"}


def azurite_binary(tools: Path) -> Path:
    """Azurite's blob server, installed with npm under ``tools`` when it is not there yet."""
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    binary = tools / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("Azurite needs Node.js and npm (apt-get install nodejs npm); neither was found")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(tools / "azurite"), f"azurite@{AZURITE_VERSION}"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    assert binary.exists(), f"npm installed azurite@{AZURITE_VERSION} but {binary} is missing"
    return binary


@contextlib.contextmanager
def azurite(workdir: Path, tools: Path, container: str) -> Iterator[dict[str, Any]]:
    """Azurite's blob service on a free loopback port, with ``container``; yields adlfs storage options."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        str(azurite_binary(tools)),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(workdir / "data"),
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    with _running(cmd, port, workdir / "azurite.log", workdir):
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(connection_string).create_container(container)
        yield {"connection_string": connection_string}
