"""Tier conformance: the same tests over every tier kind (object on real S3, PFS and NVMe on real directories)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipelines.core.checksum import checksum_bytes
from pipelines.core.keys import safe_key
from pipelines.storage.tier import TMP_MARKER, Tier

pytestmark = pytest.mark.integration


class Boom(RuntimeError):
    pass


@pytest.fixture(params=["object", "pfs", "nvme", "gcs", "azure"])
def tier(request: pytest.FixtureRequest, test_config, s3_credentials) -> Tier:
    """A tier of each kind and store, rooted at a fresh prefix so tests do not see each other's objects.

    ``object`` is S3 (SeaweedFS); ``gcs`` and ``azure`` are object tiers on the GCS emulator and Azurite.
    """
    from dataclasses import replace

    sub = f"t-{uuid.uuid4().hex[:8]}"
    if request.param in ("gcs", "azure"):
        scheme = {"gcs": "gs", "azure": "az"}[request.param]
        cfg = replace(test_config.tier("object"), name=request.param, url=f"{scheme}://tierflow-test/{sub}/")
        return Tier(cfg, request.getfixturevalue(f"{request.param}_options"))
    cfg = test_config.tier(request.param)
    scheme, _, rest = cfg.url.partition("://")
    cfg = replace(cfg, url=f"{scheme}://{rest.rstrip('/')}/{sub}/")
    options = s3_credentials[0].storage_options() if cfg.is_object else None
    return Tier(cfg, options)


def test_write_list_stat_read(tier: Tier) -> None:
    tier.write_bytes("a/one.bin", b"1" * 10)
    tier.write_bytes("a/b/two.bin", b"22")
    tier.write_bytes("three.txt", b"")
    listed = tier.list()
    assert [(o.key, o.size) for o in listed] == [("a/b/two.bin", 2), ("a/one.bin", 10), ("three.txt", 0)]
    assert [o.key for o in tier.list("a/b")] == ["a/b/two.bin"]
    assert tier.list("missing/prefix") == []
    info = tier.stat("a/one.bin")
    assert info.size == 10 and info.mtime is not None and info.mtime > 0
    assert tier.read_bytes("a/b/two.bin") == b"22"
    with tier.open_read("a/one.bin") as fh:
        assert fh.read(3) == b"111"


def test_missing_object_raises_file_not_found(tier: Tier) -> None:
    with pytest.raises(FileNotFoundError):
        tier.stat("no/such/object")
    assert not tier.exists("no/such/object")
    with pytest.raises(FileNotFoundError):
        tier.read_bytes("no/such/object")


def test_checksum_matches_content(tier: Tier) -> None:
    data = uuid.uuid4().bytes * 100_000  # 1.6 MB, more than one read block of s3fs' small reads
    data = data[:-1] + b"x"  # not a final CR, which gcp-storage-emulator drops (see tests/test_clouds.py)
    tier.write_bytes("c.bin", data)
    assert tier.checksum("c.bin") == (checksum_bytes(data), len(data))
    changed = data[:-1] + bytes([data[-1] ^ 0xFF])  # one byte that surely differs
    tier.write_bytes("c.bin", changed)
    assert checksum_bytes(changed) != checksum_bytes(data)
    assert tier.checksum("c.bin") == (checksum_bytes(changed), len(changed))


def test_streamed_write_is_atomic(tier: Tier) -> None:
    with tier.writer("big/part.bin") as fh:
        for i in range(4):
            fh.write(bytes([i]) * 2**20)
    assert tier.stat("big/part.bin").size == 4 * 2**20

    with pytest.raises(Boom), tier.writer("big/failed.bin") as fh:
        fh.write(b"x" * 2**20)
        raise Boom("the producer died half-way")
    assert not tier.exists("big/failed.bin")
    assert [o.key for o in tier.list()] == ["big/part.bin"]


def test_failed_overwrite_keeps_the_old_object(tier: Tier) -> None:
    tier.write_bytes("keep.bin", b"old")
    with pytest.raises(Boom), tier.writer("keep.bin") as fh:
        fh.write(b"new but incomplete")
        raise Boom
    assert tier.read_bytes("keep.bin") == b"old"


def test_put_and_get_file(tier: Tier, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    tier.put_file(src, "files/p.bin", fsync=True)
    dest = tmp_path / "out" / "p.bin"
    tier.get_file("files/p.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert not [p for p in dest.parent.iterdir() if TMP_MARKER in p.name]


def test_delete(tier: Tier) -> None:
    keys = [f"d/{i:04d}" for i in range(25)]
    for key in keys:
        tier.write_bytes(key, b"x")
    assert tier.delete(keys[:20]) == 20
    assert [o.key for o in tier.list()] == keys[20:]
    assert tier.delete([]) == 0


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "", "a/..", "a\\b"])
def test_keys_cannot_escape_the_root(tier: Tier, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        tier.write_bytes(key, b"x")
    assert tier.list() == []


@pytest.mark.unit
def test_safe_key_normalises() -> None:
    assert safe_key("a//b/./c") == "a/b/c"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key", "says"),
    [
        pytest.param("a/../b", "invalid object key 'a/../b': '..' segments are not allowed", id="dotdot"),
        pytest.param(".", "invalid object key '.': names no object (only '.' and '/')", id="dot"),
        pytest.param("./", "invalid object key './': names no object (only '.' and '/')", id="dot-slash"),
        pytest.param("", "invalid object key '': must be a non-empty relative path", id="empty"),
    ],
)
def test_a_refused_key_says_why(key: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        safe_key(key)
    assert str(refused.value) == says


def test_object_tier_refuses_wrong_credentials(test_config, s3_credentials) -> None:
    creds = s3_credentials[0]
    options = creds.storage_options() | {"secret": "not-the-secret"}
    tier = Tier(test_config.tier("object"), options)
    with pytest.raises(PermissionError):
        tier.list()
    anonymous = Tier(test_config.tier("object"), {"anon": True, "endpoint_url": creds.endpoint_url})
    with pytest.raises(PermissionError):
        anonymous.write_bytes("anon.txt", b"x")


@pytest.mark.unit
def test_only_temporaries_of_gone_writers_are_stale(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from pipelines.core.temporaries import STALE_TEMPORARY_S, is_stale_temporary, temporary_name

    mine = temporary_name(str(tmp_path / "a.bin"))
    open(mine, "wb").close()
    assert not is_stale_temporary(mine)  # this process may still be writing it (another thread)
    dead = subprocess.run(
        [sys.executable, "-c", "from pipelines.core.temporaries import temporary_name as t; print(t('x'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    gone = str(tmp_path / os.path.basename(dead))
    open(gone, "wb").close()
    assert is_stale_temporary(gone)  # its writer process has exited
    legacy = tmp_path / ".b.bin.tierflow-tmp-0123456789ab"
    legacy.write_bytes(b"")
    assert not is_stale_temporary(str(legacy))
    old = legacy.stat().st_mtime - STALE_TEMPORARY_S - 1
    os.utime(legacy, (old, old))
    assert is_stale_temporary(str(legacy))  # no owner to ask: only age tells


def test_a_missing_file_tier_root_is_an_error_unless_the_config_creates_it(test_config, tmp_path: Path) -> None:
    """A root that is gone (an unmounted file system) is never created and written into (#17 item 4)."""
    from dataclasses import replace

    from pipelines.core.config import ConfigError

    root = tmp_path / "mnt" / "nvme"
    strict = replace(test_config.tier("nvme"), url=f"file://{root}", create=False)
    with pytest.raises(ConfigError, match=rf"its root {root} does not exist"):
        Tier(strict)
    assert not root.exists()
    tier = Tier(replace(strict, create=True))
    assert root.is_dir()
    opened = Tier(strict)
    root.rmdir()  # unmounted while the tier is open
    with pytest.raises(ConfigError, match="does not exist"):
        opened.write_bytes("a/b.bin", b"x")
    assert not root.exists()
    tier.write_bytes("a/b.bin", b"x")  # a tier that may create its root does so
    assert (root / "a" / "b.bin").read_bytes() == b"x"


def test_the_paged_s3_listing_is_exactly_the_s3fs_listing(test_config, s3_credentials) -> None:
    """Keys that URL encoding could mangle, many pages, nested prefixes: the same objects, sizes, ETags, times."""
    from dataclasses import replace

    from pipelines.storage.s3 import list_pages

    cfg = replace(test_config.tier("object"), url=f"{test_config.tier('object').url}pages-{uuid.uuid4().hex[:6]}/")
    tier = Tier(cfg, s3_credentials[0].storage_options())
    odd = ["a b/c+d.bin", "ünï/cödé.txt", "pct%41/x.bin", "plus+/~tilde", "sp ace.bin", "deep/a/b/c/d/e.bin"]
    for key in odd:
        tier.write_bytes(key, key.encode())
    for i in range(2100):  # three pages of 1,000
        tier.fs.pipe_file(tier.path(f"many/{i:05d}"), b"x" * (i % 7))
    flat = tier.fs.find(tier.root, detail=True)
    assert tier.native is not None
    for way, paged in (
        ("presigned", list_pages(tier.fs, tier.root)),
        ("native", tier._native_find(tier.native, tier.root)),
    ):
        assert set(paged) == set(flat) and len(paged) == 2100 + len(odd), way
        for name, info in flat.items():
            got = paged[name]
            assert got["size"] == info["size"] and got["ETag"] == info["ETag"], (way, name)
            assert got["LastModified"] == info["LastModified"], (way, name)
    assert {o.key for o in tier.list()} == set(odd) | {f"many/{i:05d}" for i in range(2100)}  # Tier.list too
    assert tier.list("nothing-here") == [] and [o.key for o in tier.list("sp ace.bin")] == ["sp ace.bin"]


def test_the_native_metadata_answers_are_s3fs_answers(test_config, s3_credentials) -> None:
    """HEAD, small GETs, exact-object and empty listings, unfinished uploads: the CRT client says what s3fs says."""
    from dataclasses import replace

    from pipelines.storage.s3 import CHECKSUM_METADATA

    cfg = replace(test_config.tier("object"), url=f"{test_config.tier('object').url}meta-{uuid.uuid4().hex[:6]}/")
    tier = Tier(cfg, s3_credentials[0].storage_options())
    assert tier.native is not None
    key = "d ir/ob+ject.bin"
    tier.fs.pipe_file(tier.path(key), b"x" * 1234, Metadata={CHECKSUM_METADATA: "abc123"})
    tier.write_bytes("plain.bin", b"no checksum")
    info = tier.fs.info(tier.path(key))
    stat = tier.stat(key)
    assert (stat.key, stat.size, stat.mtime) == (key, 1234, info["LastModified"].timestamp())
    assert tier.stored_checksum(key) == "abc123" and tier.stored_checksum("plain.bin") is None
    assert tier.read_bytes("plain.bin") == b"no checksum"
    for missing in (tier.stat, tier.stored_checksum, tier.read_bytes):
        with pytest.raises(FileNotFoundError, match="nosuch"):
            missing("nosuch/thing")
    with pytest.raises(FileNotFoundError):
        tier.stat("d ir")  # a prefix is not an object
    exact = tier._native_find(tier.native, tier.path(key))
    assert set(exact) == set(tier.fs.find(tier.path(key), detail=True)) == {tier.path(key)}
    assert tier._native_find(tier.native, tier.path("nothing-here")) == {}
    bucket, full = tier.path("up/big.bin").split("/", 1)
    started = tier.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=full)
    try:
        uploads = list(tier.unfinished_uploads("up"))
        assert [(u["Key"], u["UploadId"]) for u in uploads] == [(full, started["UploadId"])]
        assert uploads[0]["Initiated"].tzinfo is not None  # compared with now by the cleanup
    finally:
        tier.abort_upload({"Key": full, "UploadId": started["UploadId"]})
    assert list(tier.unfinished_uploads("up")) == []


def test_what_the_native_client_cannot_answer_is_asked_through_s3fs(test_config, s3_credentials) -> None:
    """Refused credentials: the native client gives up and s3fs raises the error the error map names."""
    from dataclasses import replace

    good = s3_credentials[0].storage_options()
    tier = Tier(replace(test_config.tier("object")), {**good, "secret": "wrong-secret"})
    assert tier.native is not None
    with pytest.raises(PermissionError):
        tier.list()
    with pytest.raises(PermissionError):
        tier.stat("any/key")


def test_the_local_listing_is_what_fsspec_lists(test_config, tmp_path: Path) -> None:
    """Files, nested directories, symlinks to a file, a directory and nothing: the same entries and fields."""
    from dataclasses import replace

    import fsspec

    root = tmp_path / "tier"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.bin").write_bytes(b"12345")
    (root / "y.bin").write_bytes(b"yo")
    (root / "empty").mkdir()
    (root / "to-dir").symlink_to(root / "a")
    (root / "to-file").symlink_to(root / "y.bin")
    (root / "broken").symlink_to(root / "nothing")
    tier = Tier(replace(test_config.tier("pfs"), url=f"file://{root}"))
    ours = tier._find(str(root))
    theirs = fsspec.filesystem("file").find(str(root), detail=True)
    assert set(ours) == set(theirs) == {str(root / k) for k in ("a/b/x.bin", "y.bin", "to-dir", "to-file", "broken")}
    for path, info in theirs.items():
        assert {k: ours[path][k] for k in ("size", "type", "mtime", "ino")} == {
            k: info[k] for k in ("size", "type", "mtime", "ino")
        }, path
    listed = {o.key: o.version for o in tier.list()}  # a file's version: its inode, mtime and ctime
    st = (root / "y.bin").lstat()
    assert listed["y.bin"] == f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    assert tier._find(str(root / "y.bin")) == {} and tier._find(str(root / "nothing")) == {}
    assert tier.stat("a/b/x.bin").size == 5 and tier.read_bytes("y.bin") == b"yo"
    with pytest.raises(FileNotFoundError, match="is a directory"):
        tier.stat("a")


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", id="imf-fixdate"),
        pytest.param("Mon, 07 Dec 2026 17:35:08 GMT", id="today"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", id="rfc850"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0100", id="offset"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", id="no-such-day"),
    ],
)
def test_last_modified_dates_read_as_email_utils_reads_them(text: str) -> None:
    from email.utils import parsedate_to_datetime

    from pipelines.storage.s3crt import http_date

    try:
        expected = parsedate_to_datetime(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            http_date(text)
    else:
        assert http_date(text) == expected and http_date(text).utcoffset() == expected.utcoffset()
