"""Fixtures of the fault suite: the CLI on a test's tiers, the checker's view of them, a server of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from checker import S3Store
from harness import TALLY, Cli, Tally, cli_env


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Report what the fault suite injected and verified."""
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


@pytest.fixture
def cli(tiers, tmp_path: Path, s3_credentials) -> Cli:
    """`tierflow` on this test's tiers (the ``tiers`` fixture writes their config to ``tmp_path/tiers.toml``)."""
    c = s3_credentials[0]
    return Cli(cli_env(str(tmp_path / "tiers.toml"), c.access_key, c.secret_key, c.endpoint_url, c.region))


@pytest.fixture
def object_store(tiers, s3_credentials) -> S3Store:
    """The test's object tier, seen through the checker's own client."""
    creds = s3_credentials[0]
    bucket, _, root = tiers["object"].root.partition("/")
    return S3Store(creds.endpoint_url, creds.access_key, creds.secret_key, creds.region, bucket, root)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[object]:
    """A SeaweedFS server for this test alone, free to stop, restart and re-key; stopped by its PID at the end."""
    from pipelines.devtools.s3server import EmbeddedS3, free_port

    server = EmbeddedS3(tmp_path / "own-s3", free_port(), buckets=("faults",))
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=2)


@pytest.fixture
def own_cli(tiers, tmp_path: Path, own_server) -> Cli:
    """`tierflow` on this test's tiers with the object tier moved to ``own_server`` (bucket ``faults``)."""
    import re

    text = (tmp_path / "tiers.toml").read_text()
    text = re.sub(r'url = "s3://[^"]*"', 'url = "s3://faults/root"', text, count=1)
    (tmp_path / "own-tiers.toml").write_text(text)
    c = own_server.credentials()
    return Cli(cli_env(str(tmp_path / "own-tiers.toml"), c.access_key, c.secret_key, c.endpoint_url, c.region))
