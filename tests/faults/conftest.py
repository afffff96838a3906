"""The fault suite's harness: run a `tierflow` command, SIGKILL it at a seeded random moment, rerun, tally.

Every fault is real: a process killed with SIGKILL, a disk filled by another writer, an S3 server
stopped or restarted with other credentials, two writers at once. The counts (faults injected,
reruns, bytes verified by the independent checker) are printed at the end of the session.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from checker import S3Store, Verified


@dataclass
class Tally:
    faults: int = 0
    killed_mid_run: int = 0
    reruns: int = 0
    markers: int = 0
    bytes_verified: int = 0
    by_case: dict[str, int] = field(default_factory=dict)

    def verified(self, result: Verified) -> None:
        assert not result.problems, "\n".join(result.problems)
        self.markers += result.markers
        self.bytes_verified += result.bytes


TALLY = Tally()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not TALLY.faults:
        return
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(
        f"faults injected {TALLY.faults} ({TALLY.killed_mid_run} processes killed mid-run), reruns {TALLY.reruns}, "
        f"commit markers verified {TALLY.markers}, bytes verified {TALLY.bytes_verified:,}"
    )
    for case, n in sorted(TALLY.by_case.items()):
        terminalreporter.write_line(f"  {case}: {n}")


@pytest.fixture
def tally() -> Tally:
    return TALLY


@dataclass
class Cli:
    """`tierflow` as a user runs it, in a subprocess, on one test's tier config and credentials."""

    env: dict[str, str]
    last_killed_output: str = ""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def timed(self, *args: str) -> float:
        started = time.monotonic()
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return time.monotonic() - started

    def killed_at(self, delay: float, *args: str) -> bool:
        """Start the command and SIGKILL it ``delay`` seconds in; returns whether it was still running."""
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(self.command(*args, "--verbose"), env=self.env, stdout=out, stderr=out)
            try:
                proc.wait(timeout=delay)
                killed = False
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
            out.seek(0)
            self.last_killed_output = out.read().decode(errors="replace")[-4000:]
        return killed


@pytest.fixture
def cli(tiers, tmp_path: Path, s3_credentials) -> Cli:
    creds = s3_credentials[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "TIERFLOW_CONFIG": str(tmp_path / "tiers.toml"),
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_ENDPOINT_URL": creds.endpoint_url,
        "AWS_REGION": creds.region,
    }
    return Cli(env)


@pytest.fixture
def object_store(tiers, s3_credentials) -> S3Store:
    """The test's object tier, seen through the checker's own client."""
    creds = s3_credentials[0]
    bucket, _, root = tiers["object"].root.partition("/")
    return S3Store(creds.endpoint_url, creds.access_key, creds.secret_key, creds.region, bucket, root)


def seeds(case: str, count: int = 10) -> list[tuple[int, random.Random]]:
    """``count`` seeded generators for ``case``; the seed is in each test's id and printed on failure."""
    base = int(os.environ.get("TIERFLOW_FAULT_SEED", "20261202"))
    return [(base + i, random.Random(f"{case}:{base + i}")) for i in range(count)]
