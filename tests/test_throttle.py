"""A store that throttles (``503 SlowDown`` past its request rate): the engine backs off and finishes.

The throttling store is a proxy in front of the test's SeaweedFS (:mod:`tests.throttle`) that
forwards at most ``RATE`` requests per second and refuses the rest as S3 does.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.core.manifest import Entry
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries
from tests.throttle import ThrottlingProxy

pytestmark = pytest.mark.integration

RATE = 60.0  # requests per second the store serves
OBJECTS = 240


@pytest.fixture
def throttled(s3_credentials, test_config):
    creds, _ = s3_credentials
    proxy = ThrottlingProxy(creds.endpoint_url, RATE)
    endpoint = proxy.start()
    try:
        options = replace(creds, endpoint_url=endpoint).storage_options()
        config = test_config.tier("object")
        yield proxy, Tier(replace(config, url=f"{config.url.rstrip('/')}/throttle-{uuid.uuid4().hex[:6]}/"), options)
    finally:
        proxy.stop()


def test_a_throttled_copy_backs_off_and_finishes_both_ways(throttled, tmp_path: Path, test_config) -> None:
    proxy, obj = throttled
    src = tmp_path / "src"
    src.mkdir()
    entries = []
    for i in range(OBJECTS):
        data = os.urandom(16 * 1024)
        (src / f"{i:04d}.bin").write_bytes(data)
        entries.append(Entry(f"{i:04d}.bin", len(data)))
    local = Tier(replace(test_config.tier("pfs"), name="src", url=f"file://{src}"))
    settings = TransferSettings(concurrency=16, progress_interval_s=3600)
    up = copy_entries(local, "", obj, "data", entries, settings)
    assert up.failures == [] and up.copied_objects == OBJECTS
    refused_up = proxy.refused
    assert refused_up > 0, "the store never throttled: the test proves nothing"
    sink = Tier(replace(test_config.tier("pfs"), name="sink", url=f"file://{tmp_path / 'sink'}", create=True))
    full = [Entry(e.key, e.size, up.checksums[e.key]) for e in entries]
    down = copy_entries(obj, "data", sink, "", full, settings)
    assert down.failures == [] and down.copied_objects == OBJECTS
    for e in entries:
        assert (tmp_path / "sink" / e.key).read_bytes() == (src / e.key).read_bytes()
    # Backing off: refused requests stay a fraction of the work. A client that kept its 16 streams
    # going at full speed would be refused several times for every request served.
    print(f"served {proxy.forwarded}, refused {proxy.refused} (upload refused {refused_up})")
    assert proxy.refused < proxy.forwarded, (proxy.forwarded, proxy.refused)
