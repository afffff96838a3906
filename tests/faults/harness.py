"""The fault suite's harness: run `tierflow` as a user does, SIGKILL it at a seeded moment, tally the faults.

Every fault is real: a process killed with SIGKILL, a disk filled by another writer, an S3 server
stopped and restarted (with other credentials, to revoke them), two writers at once. The counts
(faults injected, reruns, bytes verified by the independent checker) are printed at the end of the
session by this directory's conftest.
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

from checker import S3Store, Store, Verified, check_copy, tree_digests

MiB = 2**20
#: The S3 minimum part size: the corpus's 24 MiB files go as multipart uploads.
PART = ["--part-size", "5 MiB"]
#: The checker's view of a tree: key -> (size, xxh3-128).
Digests = dict[str, tuple[int, str]]
#: Every hop a copy can take.
HOPS = ["local->s3", "s3->local", "local->local", "s3->s3"]


@dataclass
class Tally:
    """What the fault suite did, for the session's summary."""

    faults: int = 0
    killed_mid_run: int = 0
    reruns: int = 0
    markers: int = 0
    bytes_verified: int = 0
    by_case: dict[str, int] = field(default_factory=dict)

    def fault(self, case: str, killed: bool = False) -> None:
        self.faults += 1
        self.killed_mid_run += killed
        self.by_case[case] = self.by_case.get(case, 0) + 1

    def verified(self, result: Verified) -> None:
        assert not result.problems, "\n".join(result.problems)
        self.markers += result.markers
        self.bytes_verified += result.bytes


TALLY = Tally()


@dataclass
class Cli:
    """`tierflow` as a user runs it, in a subprocess, on one test's tier config and credentials."""

    env: dict[str, str]
    last_killed_output: str = ""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

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


def cli_env(config: str, access_key: str, secret_key: str, endpoint: str, region: str) -> dict[str, str]:
    """The environment a user's shell gives `tierflow`: a config file and AWS_* credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "TIERFLOW_CONFIG": config,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
    }


def seeds(case: str, count: int = 10) -> list[tuple[int, random.Random]]:
    """``count`` seeded generators for ``case`` (``TIERFLOW_FAULT_SEED`` moves the base); seeds are in messages."""
    base = int(os.environ.get("TIERFLOW_FAULT_SEED", "20261202"))
    return [(base + i, random.Random(f"{case}:{base + i}")) for i in range(count)]


def one_line(stderr: str) -> str:
    """A failed command's last line: its own summary (``tierflow ...: ``), never a traceback.

    Before it a copy may log its retries, and prints one line per object that failed (as s5cmd does).
    """
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("tierflow "), stderr
    return lines[-1]


def corpus(root: Path) -> dict[str, tuple[int, str]]:
    """Small files, two multipart-sized ones and an empty one; returns the checker's digests."""
    sizes = {f"small/{i:03d}.bin": 96 * 1024 + i for i in range(40)} | {"big/a.bin": 24 * MiB, "big/b.bin": 24 * MiB}
    sizes |= {"empty": 0}
    for key, size in sizes.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return tree_digests(str(root))


def own_store(server) -> S3Store:  # type: ignore[no-untyped-def]
    """The checker's view of ``s3://faults/root`` on a test's own server, with its current credentials."""
    c = server.credentials()
    return S3Store(c.endpoint_url, c.access_key, c.secret_key, c.region, "faults", "root")


def copy_source(hop: str, cli: Cli, object_url: str, root: Path) -> tuple[Digests, str]:
    """The corpus under ``root`` and the URL a ``hop`` copies it from (uploaded to ``object_url`` for S3 sources)."""
    source = corpus(root)
    if hop.startswith("s3"):
        assert cli.run("copy", str(root), object_url, *PART).returncode == 0
        return source, object_url
    return source, str(root)


def rerun_whole(
    cli: Cli,
    src: str,
    dst: str,
    store: Store,
    prefix: str,
    source: dict[str, tuple[int, str]],
    tally: Tally,
    where: str,
) -> subprocess.CompletedProcess[str]:
    """Rerun the copy after a fault: it must finish, and the checker must find the destination whole."""
    done = cli.run("copy", src, dst, *PART, "--verbose")
    tally.reruns += 1
    assert done.returncode == 0, f"{where}: the rerun failed: {done.stderr}"
    whole = check_copy(store, prefix, source)
    assert not whole.problems and whole.objects == len(source), f"{where}: {whole.problems or whole.objects}"
    tally.verified(whole)
    return done
