"""Object-tier credentials from Airflow connections, resolved by the amazon provider, against SeaweedFS.

Static keys, a shared-credentials profile and the default chain all go through the provider's
connection handling; the CRT path and s3fs both move bytes with what it resolved. Assumed roles
need STS, which SeaweedFS does not serve: the refresh test stands a local refresh function in for
STS (botocore's own refreshable credentials around it), and checks that the CRT asks again when
the credentials it was given expire.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.core.manifest import list_local_source
from pipelines.operators.context import options_from_connection
from pipelines.storage.credentials import CRT_CREDENTIALS
from pipelines.storage.s3crt import CrtMover, crt_available
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries

pytestmark = pytest.mark.integration

MiB = 2**20


def connection(conn_id: str, login: str | None = None, password: str | None = None, **extra):
    from airflow.models.connection import Connection

    return Connection(conn_id=conn_id, conn_type="aws", login=login, password=password, extra=extra)


def round_trip(tier: Tier, tmp_path: Path, use_crt: bool) -> None:
    """Upload a small and a multipart file and download them again, through the chosen path."""
    src = tmp_path / f"src-{use_crt}"
    src.mkdir()
    (src / "small.bin").write_bytes(b"s" * 4096)
    (src / "big.bin").write_bytes(bytes(range(256)) * (11 * MiB // 256))
    local = Tier(replace(tier.config, kind="pfs", url=f"file://{src}", conn_id=None))
    back_dir = tmp_path / f"back-{use_crt}"
    back_dir.mkdir()
    back = Tier(replace(tier.config, kind="pfs", url=f"file://{back_dir}", conn_id=None))
    settings = TransferSettings(concurrency=2, part_size=5 * MiB, use_crt=use_crt)
    prefix = f"conn-{uuid.uuid4().hex[:6]}"
    up = copy_entries(local, "", tier, prefix, list_local_source(str(src)), settings)
    assert up.copied_objects == 2 and not up.failures
    down = copy_entries(tier, prefix, back, "", list_local_source(str(src)), settings)
    assert down.copied_objects == 2 and not down.failures
    for name in ("small.bin", "big.bin"):
        assert (back_dir / name).read_bytes() == (src / name).read_bytes()


@pytest.fixture
def object_config(tiers):
    return tiers["object"].config


@pytest.mark.parametrize("use_crt", [True, False], ids=["crt", "s3fs"])
def test_static_keys_with_the_endpoint_in_extra(s3_credentials, object_config, tmp_path: Path, use_crt: bool) -> None:
    creds = s3_credentials[0]
    conn = connection(
        "static", creds.access_key, creds.secret_key, endpoint_url=creds.endpoint_url, region_name=creds.region
    )
    options = options_from_connection(conn)
    assert options["key"] == creds.access_key and options["endpoint_url"] == creds.endpoint_url
    assert options["client_kwargs"] == {"region_name": creds.region}
    assert crt_available(options)
    round_trip(Tier(object_config, options), tmp_path, use_crt)


@pytest.mark.parametrize("use_crt", [True, False], ids=["crt", "s3fs"])
def test_a_profile_resolved_by_the_provider_reaches_both_paths(
    s3_credentials, object_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_crt: bool
) -> None:
    """No keys in the connection: the provider's session reads the profile; s3fs and the CRT both use it."""
    creds = s3_credentials[0]
    shared = tmp_path / "aws-credentials"
    shared.write_text(
        f"[tierflow-test]\naws_access_key_id = {creds.access_key}\naws_secret_access_key = {creds.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    conn = connection(
        "profiled",
        profile_name="tierflow-test",
        service_config={"s3": {"endpoint_url": creds.endpoint_url}},
        region_name=creds.region,
    )
    options = options_from_connection(conn)
    assert "key" not in options and options["endpoint_url"] == creds.endpoint_url
    assert options["session"] is not None and callable(options[CRT_CREDENTIALS])
    assert options[CRT_CREDENTIALS]().access_key == creds.access_key
    assert crt_available(options)
    round_trip(Tier(object_config, options), tmp_path, use_crt)


def test_a_connection_that_resolves_to_no_credentials_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PermissionError, match="connection 'bare': no AWS credentials"):
        options_from_connection(connection("bare", endpoint_url="http://127.0.0.1:9"))


def test_the_crt_asks_again_for_credentials_that_expire(s3_credentials, tmp_path: Path) -> None:
    """Temporary credentials are refreshed while a client lives, not copied once when it starts."""
    from botocore.credentials import RefreshableCredentials

    creds, bucket = s3_credentials
    refreshed: list[float] = []

    def refresh() -> dict[str, str]:  # stands in for STS AssumeRole (SeaweedFS has no STS)
        refreshed.append(time.time())
        expiry = datetime.now(UTC) + timedelta(minutes=1)  # inside botocore's 15-minute refresh window
        return {
            "access_key": creds.access_key,
            "secret_key": creds.secret_key,
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    rotating = RefreshableCredentials.create_from_metadata(refresh(), refresh, "tierflow-test")
    options = {"endpoint_url": creds.endpoint_url, CRT_CREDENTIALS: rotating.get_frozen_credentials}
    mover = CrtMover(options, concurrency=1, part_size=5 * MiB)
    before = len(refreshed)
    local = tmp_path / "one.bin"
    local.write_bytes(b"x" * 1000)
    key = f"{bucket}/refresh-{uuid.uuid4().hex[:6]}"
    mover.upload(str(local), f"{key}/a")
    mover.upload(str(local), f"{key}/b")
    found = mover.download(f"{key}/a", str(tmp_path / "back.bin"))
    assert found is not None and (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert len(refreshed) - before >= 3, "the CRT signed with credentials it never asked for again"
