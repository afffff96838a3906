"""``tierflow copy`` against a real S3 server, as a user runs it from a terminal or a script.

Each connection failure a user meets (an endpoint that refuses, a host that does not resolve, one
that never answers, no credentials at all) must end in one line naming the endpoint and what to
check, with no traceback; a missing remote source is an error naming it; a rerun skips what is there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def user_env(tiers, tmp_path: Path, s3_credentials) -> dict[str, str]:
    """A user's environment: the test tiers' config, and the server's keys in AWS_* as botocore reads them."""
    creds = s3_credentials[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "TIERFLOW_CONFIG": str(tmp_path / "tiers.toml"),
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_ENDPOINT_URL": creds.endpoint_url,
        "AWS_REGION": creds.region,
    }


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that never completes a connection: a listening socket whose accept queue is full.

    The kernel drops further SYNs, so a client's connect times out, as behind a firewall that drops.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the queue of one; never accepted
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        filler.close()
        server.close()


def test_connection_failures_end_in_one_line_naming_the_endpoint(
    user_env: dict[str, str], tmp_path: Path, silent_endpoint: str
) -> None:
    from pipelines.devtools.s3server import free_port

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 1000)
    refused = f"http://127.0.0.1:{free_port()}"
    for endpoint, why in (
        (refused, "connection refused"),
        ("http://no-such-host.invalid:9000", "host not found"),
        (silent_endpoint, "connection timed out"),
    ):
        for args in (("copy", str(src), "s3://bucket/p"), ("copy", "s3://bucket/p", str(tmp_path / "down"))):
            result = run(user_env | {"AWS_ENDPOINT_URL": endpoint}, *args)
            assert result.returncode == 1, result.stderr
            assert one_line(result.stderr) == (
                f"tierflow copy: cannot reach {endpoint} ({why}): check the endpoint (AWS_ENDPOINT_URL, the tier's "
                "connection, or copy's --endpoint-url) and that it is up (the embedded one: tierflow s3 serve)"
            )
            assert not (tmp_path / "down").exists()
    # No credentials anywhere (no keys, no profile files, no instance metadata): exit 2, what to set.
    bare = {k: v for k, v in user_env.items() if not k.startswith("AWS_")} | {
        "AWS_ENDPOINT_URL": refused,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = run(bare, "copy", str(src), "s3://bucket/p")
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(
        "tierflow copy: no credentials for the object store: set AWS_ACCESS_KEY_ID"
    )
    result = run(bare, "--json", "copy", str(src), "s3://bucket/p")
    assert result.returncode == 2 and json.loads(result.stderr)["error"].startswith("no credentials")


def test_a_missing_remote_source_is_an_error_and_a_rerun_skips_what_is_there(
    user_env: dict[str, str], tiers, tmp_path: Path
) -> None:
    base = tiers["object"].url("cli")
    result = run(user_env, "copy", f"{base}/nothing-here", str(tmp_path / "down"))
    assert result.returncode == 1
    assert one_line(result.stderr) == f"tierflow copy: {base}/nothing-here: nothing there to copy (no objects under it)"
    assert not (tmp_path / "down").exists()
    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"{i:02d}.bin").write_bytes(os.urandom(100 + 37 * i))
    first = json.loads(run(user_env, "copy", str(src), f"{base}/up", "--json").stdout)
    assert (first["copied_objects"], first["skipped_objects"]) == (30, 0)
    again = run(user_env, "copy", str(src), f"{base}/up", "--json")
    assert json.loads(again.stdout)["copied_objects"] == 0 and json.loads(again.stdout)["skipped_objects"] == 30
    human = run(user_env, "copy", str(src), f"{base}/up")
    assert human.stdout.startswith("copied 30 objects, ") and "(0 copied, 30 already there)" in human.stdout
    # One object named by its key: it lands under its own name, and a second run skips it.
    one = run(user_env, "copy", f"{base}/up/d1/04.bin", str(tmp_path / "one"))
    assert one.returncode == 0 and one.stdout.startswith("copied 1 object"), one.stderr
    assert (tmp_path / "one" / "04.bin").read_bytes() == (src / "d1" / "04.bin").read_bytes()
    assert "(0 copied, 1 already there)" in run(user_env, "copy", f"{base}/up/d1/04.bin", str(tmp_path / "one")).stdout
    # The same prefix on the same store, or a prefix inside the source, is refused.
    same = run(user_env, "copy", f"{base}/up", f"{base}/up/")
    assert same.returncode == 2 and "source and destination are the same place" in one_line(same.stderr)


def test_a_url_outside_every_tier_copies_one_object_by_key_or_a_prefix(
    user_env: dict[str, str], s3_credentials, tmp_path: Path
) -> None:
    """An s3:// URL no tier is configured for: the bucket is its root, the rest a prefix or one object's key."""
    base = f"s3://{s3_credentials[1]}/adhoc-{tmp_path.name}"
    work = tmp_path / "work"
    (work / "dir").mkdir(parents=True)
    (work / "a.bin").write_bytes(os.urandom(1000))
    (work / "dir" / "b.bin").write_bytes(os.urandom(2000))
    for args in ((str(work / "a.bin"), f"{base}/up"), (str(work / "dir"), f"{base}/dir")):
        assert run(user_env, "copy", *args).returncode == 0
    for src, dst, lands, original in (
        (f"{base}/up/a.bin", work / "one", work / "one" / "a.bin", work / "a.bin"),  # one object, by its key
        (f"{base}/dir/b.bin", work / "two/", work / "two" / "b.bin", work / "dir" / "b.bin"),
        (f"{base}/dir", work / "tree", work / "tree" / "b.bin", work / "dir" / "b.bin"),  # a prefix
        (str(work / "a.bin"), work / "beside", work / "beside" / "a.bin", work / "a.bin"),  # a file, to its dir's child
    ):
        done = run(user_env, "copy", src, str(dst), "--json")
        assert done.returncode == 0, (src, done.stderr)
        assert json.loads(done.stdout)["copied_objects"] == 1
        assert lands.read_bytes() == original.read_bytes()
    # Onto itself: one object to the prefix it lies under, one file to its own directory.
    for src, dst, named in (
        (f"{base}/dir/b.bin", f"{base}/dir", f"{base}/dir/b.bin"),
        (str(work / "a.bin"), str(work), f"file://{work / 'a.bin'}"),
    ):
        same = run(user_env, "copy", src, dst)
        assert same.returncode == 2
        assert one_line(same.stderr) == f"tierflow copy: {named}: source and destination are the same place"


#: What a copy between a local file and S3 must not import: s3fs and its stack (~0.5 s here), fsspec (~35 ms).
HEAVY = ("s3fs", "aiobotocore", "botocore", "boto3", "aiohttp", "fsspec")


def test_a_one_object_copy_either_way_needs_neither_s3fs_nor_botocore(
    user_env: dict[str, str], tiers, tmp_path: Path
) -> None:
    """HEAD, listing and cleanup before the bytes go through the native client that moves them (#12 item 1)."""
    probe = (
        "import json, sys\n"
        "from pipelines.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    base = tiers["object"].url(f"lean-{tmp_path.name}")
    (tmp_path / "one.bin").write_bytes(os.urandom(300_000))
    for args in (
        (str(tmp_path / "one.bin"), f"{base}/"),  # upload: listing and unfinished uploads of the prefix
        (f"{base}/one.bin", str(tmp_path / "back")),  # download: one HEAD names the object
        (str(tmp_path / "one.bin"), f"{base}/"),  # a rerun: the stored checksum by HEAD
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, "copy", *args, "--json"], env=user_env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stderr.splitlines()[-1]) == [], (args, done.stderr)
    assert (tmp_path / "back" / "one.bin").read_bytes() == (tmp_path / "one.bin").read_bytes()
    assert json.loads(done.stdout)["skipped_objects"] == 1
