"""Dataset staging against SeaweedFS and real local directories: round trips, faults, resume, eviction."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.core.checksum import checksum_file
from pipelines.core.errors import InputError
from pipelines.core.fileio import WRITE_SLICE, pwrite_all, write_all
from pipelines.core.manifest import COMMIT_MARKER, Entry, Manifest, ManifestError, list_local_source
from pipelines.datasets.cache import CacheFullError, cache_entries, ensure_space, pin, touch
from pipelines.datasets.staging import NotCommittedError, publish_directory, stage_dataset
from pipelines.storage.commit import build_manifest, commit, read_commit
from pipelines.storage.s3 import S3Tier
from pipelines.storage.tier import TMP_MARKER, Tier
from pipelines.transfer import TransferError, TransferSettings, copy_entries, reap_multipart_uploads

pytestmark = pytest.mark.integration

MiB = 2**20
PART = 5 * MiB  # the S3 minimum, so part-1/part/part+1 stay small


def write_files(root: Path, sizes: dict[str, int]) -> None:
    for key, size in sizes.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def same_tree(a: Path, b: Path) -> None:
    left = {e.key: checksum_file(str(a / e.key)) for e in list_local_source(str(a))}
    right = {e.key: checksum_file(str(b / e.key)) for e in list_local_source(str(b))}
    assert left == right


def lying_about(entries: list[Entry], checksum_of: str, size_of: str) -> list[Entry]:
    """The entries with a manifest's lie about one object's checksum and another's size."""
    return [
        replace(e, checksum="0" * 32)
        if e.key == checksum_of
        else replace(e, size=e.size + 1)
        if e.key == size_of
        else e
        for e in entries
    ]


def small_corpus(tiers: dict[str, Tier], tmp_path: Path) -> tuple[Path, Tier, TransferSettings, list[Entry]]:
    """60 small files, an empty one and a deep one as a file tier; the settings the at-once tests copy them with."""
    src = tmp_path / "src"
    write_files(src, {f"s/{i:03d}.bin": 1 + i * 4099 for i in range(60)} | {"empty.bin": 0, "p/q/r/deep.bin": 7})
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    return src, local, TransferSettings(concurrency=4, part_size=PART, retries=1), list_local_source(str(src))


def copied_again(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The keys the engine logged as copied again one by one, sorted."""
    return sorted(r.getMessage().split(":")[0] for r in caplog.records if "copied again one by one" in r.getMessage())


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if TMP_MARKER in p.name]


def test_round_trip_mixed_sizes_object_pfs_nvme(tiers: dict[str, Tier], tmp_path: Path) -> None:
    src = tmp_path / "src"
    sizes = {"empty": 0, "one": 1, "part-1": PART - 1, "part": PART, "part+1": PART + 1, "big/100MiB": 100 * MiB}
    sizes |= {f"small/{i:04d}.bin": 1 + (i * 37) % 3000 for i in range(2000)}
    write_files(src, sizes)
    settings = TransferSettings(concurrency=8, part_size=PART)
    report, record = publish_directory(str(src), tiers["object"], "mixed", "v1", settings)
    assert report.copied_objects == len(sizes) and record.manifest.total_bytes == sum(sizes.values())
    for hop in (("object", "pfs"), ("pfs", "nvme")):
        plan, staged, committed = stage_dataset(tiers[hop[0]], tiers[hop[1]], "mixed", "v1", settings)
        assert staged is not None and staged.copied_objects == len(sizes)
        assert committed is not None and committed.manifest.checksum() == record.manifest.checksum()
    same_tree(src, tmp_path / "nvme" / "datasets" / "mixed" / "v1")
    same_tree(src, tmp_path / "pfs" / "datasets" / "mixed" / "v1")
    # A second run finds the version committed with the same manifest and copies nothing.
    plan, staged, _ = stage_dataset(tiers["object"], tiers["pfs"], "mixed", "v1", settings)
    assert plan.already_staged and staged is None
    # Back up to object storage from NVMe (local -> object with the manifest's checksums) and server-side.
    back = copy_entries(
        tiers["nvme"],
        "datasets/mixed/v1",
        tiers["object"],
        "copy-back",
        record.manifest.entries,
        replace(settings, verify=True),
    )
    assert back.copied_objects == len(sizes)
    server_side = copy_entries(
        tiers["object"], "copy-back", tiers["object"], "copy-2", record.manifest.entries, settings
    )
    assert server_side.copied_objects == len(sizes)
    assert {o.key.split("/", 1)[1]: o.size for o in tiers["object"].list("copy-2")} == sizes


def test_staging_requires_a_committed_source(tiers: dict[str, Tier], tmp_path: Path) -> None:
    tiers["object"].write_bytes("datasets/nocommit/v1/a.bin", b"data without a marker")
    with pytest.raises(NotCommittedError, match="not committed on tier object"):
        stage_dataset(tiers["object"], tiers["pfs"], "nocommit", "v1")
    assert not (tmp_path / "pfs" / "datasets").exists()


def test_flipped_byte_is_detected_and_nothing_is_committed(tiers: dict[str, Tier], tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_files(src, {f"f{i}.bin": 200_000 for i in range(5)})
    publish_directory(str(src), tiers["object"], "flip", "v1")
    stage_dataset(tiers["object"], tiers["pfs"], "flip", "v1")
    staged = tmp_path / "pfs" / "datasets" / "flip" / "v1" / "f2.bin"
    data = bytearray(staged.read_bytes())
    data[12345] ^= 0x10
    staged.write_bytes(bytes(data))
    with pytest.raises(TransferError) as info:
        stage_dataset(tiers["pfs"], tiers["nvme"], "flip", "v1")
    assert info.value.fatal
    assert [f.key for f in info.value.report.failures] == ["f2.bin"]
    assert "does not match the manifest" in info.value.report.failures[0].error
    assert read_commit(tiers["nvme"], "flip", "v1") is None
    nvme = tmp_path / "nvme" / "datasets" / "flip" / "v1"
    assert not (nvme / "f2.bin").exists() and not leftovers(tmp_path / "nvme")
    # A fatal failure removes the version's uncommitted copy: it would fill the cache for nothing.
    assert not nvme.exists() or not [p for p in nvme.rglob("*") if p.is_file()]


def test_read_back_verification_catches_a_bad_destination(tiers: dict[str, Tier], tmp_path: Path) -> None:
    """Verification reads the destination: here the object store hands back other bytes than it was sent."""
    entries = [Entry("a.bin", 3, None)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"abc")
    local = Tier(replace(tiers["pfs"].config, url=f"file://{tmp_path / 'src'}"))

    class Corrupting(S3Tier):
        def checksum(self, key: str) -> tuple[str, int]:  # a mock: silent corruption at rest cannot be made
            return "0" * 32, 3

    bad = Corrupting(tiers["object"].config, tiers["object"].storage_options)
    with pytest.raises(TransferError, match="read-back"):
        copy_entries(local, "", bad, "verify", entries, TransferSettings(verify=True))
    assert not tiers["object"].exists("verify/a.bin")


def test_hostile_keys_and_symlinks(tiers: dict[str, Tier], tmp_path: Path) -> None:
    # A marker on the source naming a key that escapes the prefix: refused before anything is written.
    hostile = {
        "dataset": "evil",
        "version": "v1",
        "algorithm": "xxh3-128",
        "objects": 1,
        "bytes": 1,
        "entries": [["../../outside.bin", 1, "00"]],
    }
    marker = {"committed_at": "x", "tier": "object", "manifest": hostile}
    tiers["object"].write_bytes(f"datasets/evil/v1/{COMMIT_MARKER}", json.dumps(marker).encode())
    with pytest.raises(ManifestError, match=r"'\.\.' segments"):
        stage_dataset(tiers["object"], tiers["pfs"], "evil", "v1")
    assert not (tmp_path / "pfs").exists() or not any((tmp_path / "pfs").rglob("*.bin"))
    for key in ("/abs", "a\\b", "a\x00b"):
        with pytest.raises(ManifestError):
            Manifest("evil", "v1", (Entry(key, 1, "00"),))
    # Symlinks: a link to a file outside the source is refused; a linked directory is not descended.
    src = tmp_path / "linked"
    write_files(src, {"in.bin": 10})
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (src / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    assert [e.key for e in list_local_source(str(src))] == ["in.bin"]
    (src / "leak").symlink_to(outside)
    with pytest.raises(ManifestError, match="symlink points outside"):
        publish_directory(str(src), tiers["object"], "links", "v1")
    assert tiers["object"].list("datasets/links") == []


@pytest.mark.parametrize("use_crt", [True, False], ids=["crt", "s3fs"])
def test_a_symlink_swapped_in_after_the_check_is_never_sent(
    tiers: dict[str, Tier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_crt: bool
) -> None:
    """The file checked and hashed is the file sent, even if its name is swapped for a symlink (#17 item 6).

    The swap happens for real (a rename over the name), but at the one moment that makes the race
    certain: right after the engine hashed the file. That moment is reached by wrapping the
    engine's hash function; without the wrapper the race would pass or fail by chance.
    """
    import pipelines.transfer.engine as engine

    src = tmp_path / "src"
    write_files(src, {"data.bin": 4096, "big.bin": 12 * MiB})
    original = {name: (src / name).read_bytes() for name in ("data.bin", "big.bin")}
    secrets = {}
    for name, data in original.items():
        secret = tmp_path / f"secret-{name}"
        secret.write_bytes(b"S" * len(data))  # same size: only the content could tell
        secrets[name] = secret
    entries = list_local_source(str(src))
    real_checksum = engine.checksum_file

    def hash_then_swap(path: str, *args, **kwargs):
        result = real_checksum(path, *args, **kwargs)
        for name, secret in secrets.items():
            link = src / f".swap-{name}"
            if not link.exists() and (src / name).exists() and not (src / name).is_symlink():
                link.symlink_to(secret)
                os.replace(link, src / name)  # the name now points outside the source
        return result

    monkeypatch.setattr(engine, "checksum_file", hash_then_swap)
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    settings = TransferSettings(concurrency=1, part_size=PART, use_crt=use_crt)
    destination = "object"
    try:
        copy_entries(local, "", tiers[destination], "swapped", entries, settings)
        refused = False
    except TransferError:
        refused = True  # refusing is as good as sending the checked file; sending the secret is not
    assert all((src / name).is_symlink() for name in original), "the swap never happened"
    for name, data in original.items():
        key = f"swapped/{name}"
        assert refused or tiers[destination].exists(key)
        if tiers[destination].exists(key):
            assert tiers[destination].read_bytes(key) == data, f"{name}: the swapped-in file was sent"


def test_downloads_without_the_native_client_are_ranged_hashed_on_the_way_and_byte_identical(
    tiers: dict[str, Tier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsspec path (no CRT; every GCS and Azure download) reads parts in parallel and never reads a file back."""
    import pipelines.transfer.engine as engine

    src = tmp_path / "src"
    sizes = {"empty": 0, "one": 1, "part-1": PART - 1, "part": PART, "part+1": PART + 1, "parts": 3 * PART + 7}
    write_files(src, sizes)
    entries = list_local_source(str(src))
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    up = copy_entries(local, "", tiers["object"], "fs", entries, TransferSettings(part_size=PART))
    read_back: list[str] = []
    real_checksum = engine.checksum_file

    def counted(path: str, *args, **kwargs):
        read_back.append(path)
        return real_checksum(path, *args, **kwargs)

    monkeypatch.setattr(engine, "checksum_file", counted)  # to see that no downloaded file is hashed again
    settings = TransferSettings(concurrency=3, part_size=PART, use_crt=False)
    report = copy_entries(tiers["object"], "fs", tiers["nvme"], "fs", entries, settings)
    assert report.copied_objects == len(sizes) and read_back == []
    same_tree(src, tmp_path / "nvme" / "fs")
    assert report.checksums == up.checksums
    assert not leftovers(tmp_path / "nvme")


def test_two_concurrent_stagings_give_one_uncorrupted_result(tiers: dict[str, Tier], tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_files(src, {f"f{i:03d}.bin": 50_000 + i for i in range(150)} | {"big.bin": 24 * MiB})
    publish_directory(str(src), tiers["object"], "race", "v1")
    errors: list[BaseException] = []

    def stage() -> None:
        try:
            stage_dataset(tiers["object"], tiers["pfs"], "race", "v1", TransferSettings(concurrency=4, part_size=PART))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    same_tree(src, tmp_path / "pfs" / "datasets" / "race" / "v1")
    assert read_commit(tiers["pfs"], "race", "v1") is not None
    assert not leftovers(tmp_path / "pfs")


def _kill_when(proc: subprocess.Popen[bytes], ready: callable, timeout: float = 60) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the copy finished (exit {proc.returncode}) before it could be interrupted")


def _cli_env(test_config_path: Path, s3_credentials) -> dict[str, str]:
    creds = s3_credentials[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "TIERFLOW_CONFIG": str(test_config_path),
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_ENDPOINT_URL": creds.endpoint_url,
        "AWS_REGION": creds.region,
    }


def test_resume_after_the_copying_process_is_killed(
    tiers: dict[str, Tier], tmp_path: Path, test_config_path: Path, s3_credentials
) -> None:
    """Download side: kill `tierflow copy` mid-way, rerun: committed objects skipped, temporaries gone."""
    src = tmp_path / "src"
    write_files(src, {f"f{i:03d}.bin": 3 * MiB for i in range(60)})
    _, record = publish_directory(str(src), tiers["object"], "resume", "v1")
    dest = tmp_path / "dest"
    base = tiers["object"].url("datasets/resume/v1")
    cmd = [sys.executable, "-m", "pipelines.cli", "copy", base, str(dest), "--concurrency", "2"]
    proc = subprocess.Popen(
        cmd, env=_cli_env(test_config_path, s3_credentials), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: dest.exists() and len([p for p in dest.iterdir() if TMP_MARKER not in p.name]) >= 5)
    done_before = {p.name for p in dest.iterdir() if TMP_MARKER not in p.name}
    assert 5 <= len(done_before) < 60
    local = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    report = copy_entries(tiers["object"], "datasets/resume/v1", local, "", record.manifest.entries)
    assert report.skipped_objects >= len(done_before) - 1 and report.copied_objects + report.skipped_objects == 60
    same_tree(src, dest)
    assert not leftovers(dest)


def test_a_rerun_of_a_plain_directory_copy_skips_what_is_there_both_ways(
    tiers: dict[str, Tier], tmp_path: Path
) -> None:
    """No manifest on either side: the rerun hashes local files and compares them with stored checksums."""
    src = tmp_path / "src"
    sizes = {f"d/{i:03d}.bin": 1 + i * 997 for i in range(40)} | {"big.bin": 3 * PART}
    write_files(src, sizes)
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    settings = TransferSettings(concurrency=4, part_size=PART)
    entries = list_local_source(str(src))
    first = copy_entries(local, "", tiers["object"], "plain", entries, settings)
    assert (first.copied_objects, first.skipped_objects) == (41, 0)
    again = copy_entries(local, "", tiers["object"], "plain", entries, settings)
    assert (again.copied_objects, again.skipped_objects) == (0, 41)
    assert again.checksums == first.checksums
    # A file changed in place (same size, other bytes) is sent again; the rest is still skipped.
    (src / "d/007.bin").write_bytes(os.urandom(sizes["d/007.bin"]))
    changed = copy_entries(local, "", tiers["object"], "plain", list_local_source(str(src)), settings)
    assert (changed.copied_objects, changed.skipped_objects) == (1, 40)
    assert changed.checksums["d/007.bin"] == checksum_file(str(src / "d/007.bin"))[0]
    # Download side, from the bare prefix (no commit marker): the stored checksums against local hashes.
    dest = tmp_path / "dest"
    down = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    remote = list(build_manifest(tiers["object"], "plain", "adhoc", "adhoc").entries)
    assert copy_entries(tiers["object"], "plain", down, "", remote, settings).copied_objects == 41
    rerun = copy_entries(tiers["object"], "plain", down, "", remote, settings)
    assert (rerun.copied_objects, rerun.skipped_objects) == (0, 41)
    same_tree(src, dest)


def test_killed_upload_leaves_no_orphaned_multipart_upload_after_rerun(
    tiers: dict[str, Tier],
    tmp_path: Path,
    test_config_path: Path,
    s3_credentials,
) -> None:
    """Upload side: kill mid multipart upload; the rerun reaps the orphan and finishes."""
    src = tmp_path / "src"
    write_files(src, {f"f{i}.bin": 48 * MiB for i in range(4)})
    target = tiers["object"].url("upload")
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "copy",
        str(src),
        target,
        "--concurrency",
        "2",
        "--part-size",
        "5 MiB",
    ]
    proc = subprocess.Popen(
        cmd, env=_cli_env(test_config_path, s3_credentials), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    bucket, _, root = tiers["object"].root.partition("/")

    def uploading() -> bool:
        page = tiers["object"].fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{root}/upload")
        return bool(page.get("Uploads"))

    _kill_when(proc, uploading)
    assert uploading(), "the killed upload should have left an unfinished multipart upload"
    entries = [Entry(e.key, e.size, checksum_file(str(src / e.key))[0]) for e in list_local_source(str(src))]
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    report = copy_entries(local, "", tiers["object"], "upload", entries, TransferSettings(concurrency=2))
    assert report.copied_objects + report.skipped_objects == 4
    reaped = reap_multipart_uploads(tiers["object"], "upload")
    assert not uploading() and reaped.aborted == 0 and reaped.left == 0
    assert {o.key: o.size for o in tiers["object"].list("upload")} == {f"upload/f{i}.bin": 48 * MiB for i in range(4)}


def test_a_second_copy_never_aborts_a_live_upload(
    tiers: dict[str, Tier], tmp_path: Path, test_config_path: Path, s3_credentials
) -> None:
    """Two copies into one prefix: the second's start-up cleanup leaves the first's multipart upload alone."""
    first = tmp_path / "first"
    write_files(first, {f"f{i}.bin": 48 * MiB for i in range(3)})
    target = tiers["object"].url("shared")
    cmd = [sys.executable, "-m", "pipelines.cli", "copy", str(first), target, "--concurrency", "2"]
    cmd += ["--part-size", "5 MiB"]
    proc = subprocess.Popen(
        cmd,
        env=_cli_env(test_config_path, s3_credentials),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    bucket, _, root = tiers["object"].root.partition("/")

    def uploads() -> list[dict]:
        return (
            tiers["object"]
            .fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{root}/shared")
            .get("Uploads", [])
        )

    deadline = time.monotonic() + 60
    while not uploads() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uploads(), "the first copy finished before a second one could start beside it"
    second = tmp_path / "second"
    write_files(second, {"other.bin": 1 * MiB})
    entries = list_local_source(str(second))
    local = Tier(replace(tiers["pfs"].config, url=f"file://{second}"))
    copy_entries(local, "", tiers["object"], "shared", entries, TransferSettings(concurrency=2))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()
    listed = {o.key: o.size for o in tiers["object"].list("shared")}
    assert listed == {"shared/other.bin": MiB} | {f"shared/f{i}.bin": 48 * MiB for i in range(3)}
    for i in range(3):
        assert tiers["object"].checksum(f"shared/f{i}.bin") == checksum_file(str(first / f"f{i}.bin"))
    assert not uploads()


def test_an_upload_aborted_under_its_writer_is_started_again(tiers: dict[str, Tier], tmp_path: Path) -> None:
    """Another tool's cleanup aborting a live multipart upload costs a retry, not the copy."""
    src = tmp_path / "src"
    write_files(src, {"big.bin": 40 * MiB})
    bucket, _, root = tiers["object"].root.partition("/")
    aborted: list[str] = []

    def abort_when_seen() -> None:  # an aggressive lifecycle tool, for real, against the live upload
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not aborted:
            page = tiers["object"].fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{root}/vanish")
            for upload in page.get("Uploads", []):
                tiers["object"].fs.call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(upload["UploadId"])
            time.sleep(0.01)

    watcher = threading.Thread(target=abort_when_seen)
    watcher.start()
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    try:
        entries = list_local_source(str(src))
        report = copy_entries(local, "", tiers["object"], "vanish", entries, TransferSettings(part_size=PART))
    finally:
        watcher.join()
    assert aborted, "the watcher never saw the upload in flight"
    assert report.copied_objects == 1
    assert tiers["object"].checksum("vanish/big.bin") == checksum_file(str(src / "big.bin"))


def test_a_dead_writers_lease_outlives_a_cleanup_that_could_not_list(tiers: dict[str, Tier], tmp_path: Path) -> None:
    """A reaper with revoked credentials forgets nothing: the next one aborts the dead writer's upload."""
    import json

    from pipelines.core.temporaries import host_tag
    from pipelines.transfer.cleanup import lease_directory

    obj = tiers["object"]
    bucket, _, root = obj.root.partition("/")
    key = f"{root}/leased/big.bin"
    obj.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)  # a dead writer's unfinished upload
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = lease_directory() / f"{host_tag()}.{gone.stdout.strip()}.test.{os.getpid()}.json"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"object": f"{bucket}/{key}", "host": host_tag(), "pid": int(gone.stdout)}))
    revoked = Tier(obj.config, {**obj.storage_options, "secret": "revoked"})
    with pytest.raises(PermissionError):
        reap_multipart_uploads(revoked, "leased")
    assert lease.exists(), "a cleanup that could not list forgot the dead writer's lease"
    reaped = reap_multipart_uploads(obj, "leased")
    assert reaped.writer_gone == 1 and not lease.exists()
    assert not obj.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{root}/leased").get("Uploads")


def test_a_replaced_version_leaves_only_its_own_objects_on_every_tier(tiers: dict[str, Tier], tmp_path: Path) -> None:
    """Publishing other content under a committed name: refused; replaced, nothing of the old stays (#17 item 9)."""
    old, new = tmp_path / "old", tmp_path / "new"
    write_files(old, {f"old/{i:02d}.bin": 1000 + i for i in range(12)} | {"shared.bin": 10})
    write_files(new, {f"new/{i:02d}.bin": 2000 + i for i in range(5)} | {"shared.bin": 20})
    publish_directory(str(old), tiers["object"], "big", "v1")
    stage_dataset(tiers["object"], tiers["pfs"], "big", "v1")
    with pytest.raises(InputError, match="already committed with other content"):
        publish_directory(str(new), tiers["object"], "big", "v1")
    assert len(read_commit(tiers["object"], "big", "v1").manifest.entries) == 13
    _, record = publish_directory(str(new), tiers["object"], "big", "v1", replace=True)
    expected = {f"datasets/big/v1/{e.key}": e.size for e in record.manifest.entries}
    listed = {o.key: o.size for o in tiers["object"].list("datasets/big/v1") if COMMIT_MARKER not in o.key}
    assert listed == expected
    stage_dataset(tiers["object"], tiers["pfs"], "big", "v1")  # the PFS copy of the old content is replaced too
    same_tree(new, tmp_path / "pfs" / "datasets" / "big" / "v1")
    assert read_commit(tiers["pfs"], "big", "v1").manifest.checksum() == record.manifest.checksum()


@pytest.fixture
def small_disk(tmpfs) -> Path:
    """A real 6 MiB file system to fill (skipped where mounting needs a root this test lacks)."""
    return tmpfs("6m")


def _on(tier: Tier, mount: Path, kind: str) -> Tier:
    """``tier`` moved onto the small disk, with a budget far larger than the disk really has."""
    return Tier(replace(tier.config, kind=kind, url=f"file://{mount}", capacity_bytes=100 * MiB))


@pytest.mark.parametrize("kind", ["pfs", "nvme"])
def test_a_version_whose_marker_would_not_fit_is_refused_before_copying(
    tiers: dict[str, Tier], tmp_path: Path, small_disk: Path, kind: str
) -> None:
    """Data that fits the real free space but leaves no room for its commit marker: refused up front (#17 item 3)."""
    target = _on(tiers[kind], small_disk, kind)
    free = shutil.disk_usage(small_disk).free
    files = (free - 64 * 1024) // 4096  # every block but 64 KiB used by data; the marker needs more
    src = tmp_path / "src"
    write_files(src, {f"d/{i:05d}.bin": 4096 for i in range(files)})
    publish_directory(str(src), tiers["object"], "tight", "v1")
    with pytest.raises(CacheFullError, match=r"tight/v1 needs \d+ B|need \d+ B"):
        stage_dataset(tiers["object"], target, "tight", "v1")
    assert not (small_disk / "datasets").exists() or not any((small_disk / "datasets").rglob("*"))


def test_a_full_disk_mid_copy_fails_clearly_and_removes_its_uncommitted_copy(
    tiers: dict[str, Tier], tmp_path: Path, small_disk: Path, neighbour
) -> None:
    """Another tenant fills the disk while staging copies: one fatal failure, nothing of the version left."""
    nvme = _on(tiers["nvme"], small_disk, "nvme")
    src = tmp_path / "src"
    write_files(src, {f"{i:02d}.bin": 256 * 1024 for i in range(16)})  # 4 MiB
    publish_directory(str(src), tiers["object"], "full", "v1")
    staged = small_disk / "datasets" / "full" / "v1"
    tenant = small_disk / "other-tenant.bin"
    filler = neighbour(staged, tenant)
    with pytest.raises(TransferError) as info:
        stage_dataset(tiers["object"], nvme, "full", "v1", TransferSettings(concurrency=1, part_size=PART))
    filler.join()
    assert info.value.fatal and any("No space left" in f.error for f in info.value.report.failures)
    assert read_commit(nvme, "full", "v1") is None
    assert not leftovers(small_disk)
    assert not staged.exists() or not any(p.is_file() for p in staged.rglob("*"))  # its own copy removed
    assert tenant.stat().st_size > 0  # the neighbour's file is not Tierflow's to remove
    tenant.unlink()
    _, report, committed = stage_dataset(tiers["object"], nvme, "full", "v1")  # room again: the rerun completes
    assert committed is not None and report is not None and report.copied_objects == 16
    same_tree(src, staged)


def test_a_cache_makes_room_by_evicting_what_is_durable_elsewhere(
    tiers: dict[str, Tier], tmp_path: Path, small_disk: Path
) -> None:
    """The real free space, not only the budget, decides eviction; an older version makes room."""
    nvme = _on(tiers["nvme"], small_disk, "nvme")
    filler = tmp_path / "filler"
    write_files(filler, {"old.bin": 3 * MiB})
    publish_directory(str(filler), tiers["object"], "filler", "v1")
    stage_dataset(tiers["object"], nvme, "filler", "v1")  # an older version occupies half the disk
    src = tmp_path / "src"
    write_files(src, {"a.bin": 1 * MiB, "b.bin": 1 * MiB, "c.bin": 2 * MiB})
    publish_directory(str(src), tiers["object"], "new", "v1")
    _, report, committed = stage_dataset(tiers["object"], nvme, "new", "v1")  # 100 MiB budget, 6 MiB disk
    assert committed is not None and report is not None
    assert read_commit(nvme, "filler", "v1") is None
    assert not [p for p in (small_disk / "datasets" / "filler").rglob("*") if p.is_file()]
    same_tree(src, small_disk / "datasets" / "new" / "v1")


def test_cache_capacity_eviction_and_pins(tiers: dict[str, Tier], tmp_path: Path) -> None:
    nvme = Tier(replace(tiers["nvme"].config, capacity_bytes=10 * MiB))
    for i, name in enumerate(("old", "mid", "new")):
        src = tmp_path / name
        write_files(src, {"data.bin": 3 * MiB})
        publish_directory(str(src), tiers["object"], name, "v1")
        stage_dataset(tiers["object"], nvme, name, "v1")
        touch(nvme, name, "v1", now=1000.0 + i)
    # Local-only data (not on a durable tier) and a pinned version are never evicted.
    write_files(tmp_path / "local", {"only.bin": MiB})
    local_only = Manifest(
        "localonly", "v1", (Entry("only.bin", MiB, checksum_file(str(tmp_path / "local" / "only.bin"))[0]),)
    )
    nvme.put_file(tmp_path / "local" / "only.bin", "datasets/localonly/v1/only.bin")
    commit(nvme, local_only)
    touch(nvme, "localonly", "v1", now=1.0)
    pin(nvme, "old", "v1", "job-42", ttl_s=3600)
    assert sum(e.bytes for e in cache_entries(nvme)) > 10 * MiB - 1
    with pytest.raises(CacheFullError, match="pinned by job-42"):
        ensure_space(nvme, 9 * MiB, [tiers["object"], tiers["pfs"]])
    assert {e.dataset for e in cache_entries(nvme)} == {"old", "mid", "new", "localonly"}  # nothing evicted
    report = ensure_space(nvme, 2 * MiB, [tiers["object"], tiers["pfs"]])
    assert [(e["dataset"], e["why"]) for e in report.evicted] == [("mid", "least recently used; committed on object")]
    kept = {k["dataset"]: k["why"] for k in report.kept}
    assert kept == {"localonly": "no committed copy on a more durable tier", "old": "pinned by job-42"}
    assert read_commit(nvme, "mid", "v1") is None and not nvme.list("datasets/mid")
    assert {e.dataset for e in cache_entries(nvme)} == {"old", "new", "localonly"}
    # An expired pin no longer protects.
    pin(nvme, "old", "v1", "job-42", ttl_s=1, now=time.time() - 10)
    report = ensure_space(nvme, 5 * MiB, [tiers["object"]])
    assert [e["dataset"] for e in report.evicted] == ["old"]


def test_small_downloads_in_flight_at_once_finish_or_fail_one_by_one(
    tiers: dict[str, Tier], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Object -> local small objects all go through the CRT at once; what fails there is copied one by one.

    A manifest that lies about one object's checksum and another's size: both fail where they are
    finished (in the CRT's callback), are tried again one by one, and are reported, while the
    empty object (never asked for by range) and the rest land whole, with no temporaries.
    """
    src, local, settings, entries = small_corpus(tiers, tmp_path)
    copy_entries(local, "", tiers["object"], "at-once", entries, settings)
    lying = lying_about(entries, checksum_of="s/003.bin", size_of="s/004.bin")
    dest = tmp_path / "dest"
    down = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    with caplog.at_level("DEBUG", logger="pipelines.transfer.engine"), pytest.raises(TransferError) as failed:
        copy_entries(tiers["object"], "at-once", down, "", lying, settings)
    again = copied_again(caplog)
    assert again == ["s/003.bin", "s/004.bin"]  # failed where the CRT finished them, then one by one
    report = failed.value.report
    assert sorted(f.key for f in report.failures) == ["s/003.bin", "s/004.bin"]
    assert report.copied_objects == len(entries) - 2
    assert not (dest / "s/003.bin").exists() and not (dest / "s/004.bin").exists()
    assert leftovers(dest) == []
    (src / "s/003.bin").unlink()
    (src / "s/004.bin").unlink()
    same_tree(src, dest)
    assert (dest / "empty.bin").read_bytes() == b""


def test_small_uploads_in_flight_at_once_finish_or_fail_one_by_one(
    tiers: dict[str, Tier], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Local -> object small files all go through the CRT at once; what fails there is copied one by one.

    A manifest that lies about one file's checksum and another's size: both are refused before
    their PUT starts, tried again one by one and reported, with no object under their keys; the
    rest (an empty file among them) land whole, and what went at once is in the copy index: a
    rerun skips every one of them unread.
    """
    src, local, settings, entries = small_corpus(tiers, tmp_path)
    lying = lying_about(entries, checksum_of="s/003.bin", size_of="s/004.bin")
    with caplog.at_level("DEBUG", logger="pipelines.transfer.engine"), pytest.raises(TransferError) as failed:
        copy_entries(local, "", tiers["object"], "up-at-once", lying, settings)
    again = copied_again(caplog)
    assert again == ["s/003.bin", "s/004.bin"]  # refused where they were started, then one by one
    report = failed.value.report
    assert sorted(f.key for f in report.failures) == ["s/003.bin", "s/004.bin"]
    assert report.copied_objects == len(entries) - 2
    landed = {o.key for o in tiers["object"].list("up-at-once")}
    assert landed == {f"up-at-once/{e.key}" for e in entries} - {"up-at-once/s/003.bin", "up-at-once/s/004.bin"}
    for e in entries:
        if f"up-at-once/{e.key}" in landed:
            assert tiers["object"].read_bytes(f"up-at-once/{e.key}") == (src / e.key).read_bytes()
    (src / "s/003.bin").unlink()
    (src / "s/004.bin").unlink()
    rest = list_local_source(str(src))
    rerun = copy_entries(local, "", tiers["object"], "up-at-once", rest, settings)
    assert (rerun.copied_objects, rerun.skipped_objects) == (0, len(rest))


@pytest.mark.parametrize("fsync", [pytest.param(False, id="plain"), pytest.param(True, id="fsync")])
def test_small_local_files_go_a_directory_at_a_time_and_what_fails_there_one_by_one(
    tiers: dict[str, Tier], tmp_path: Path, fsync: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Local -> local small files are copied a directory at a time; anything unusual is left to the one-by-one copy.

    A symlink (inside the source) is not opened there but copied one by one through its target;
    a manifest lying about one file's checksum and another's size fails for those two only, with
    nothing under their names; a file over the one-read size and an empty one land whole; no
    temporaries are left, fsynced or not.
    """
    src = tmp_path / "src"
    sizes = {f"a/{i:03d}.bin": 1 + i * 4099 for i in range(40)} | {"b/c/deep.bin": 7, "b/empty.bin": 0}
    write_files(src, sizes | {"big/9MiB.bin": 9 * MiB})
    (src / "b" / "link.bin").symlink_to(src / "a" / "007.bin")
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    entries = list_local_source(str(src))
    lying = lying_about(entries, checksum_of="a/003.bin", size_of="a/004.bin")
    dest = tmp_path / "dest"
    down = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    settings = TransferSettings(concurrency=2, part_size=PART, retries=1, fsync=fsync)
    with caplog.at_level("DEBUG", logger="pipelines.transfer.engine"), pytest.raises(TransferError) as failed:
        copy_entries(local, "", down, "", lying, settings)
    again = copied_again(caplog)
    assert again == ["a/003.bin", "a/004.bin", "b/link.bin"]  # the other 41 went a directory at a time
    report = failed.value.report
    assert sorted(f.key for f in report.failures) == ["a/003.bin", "a/004.bin"]
    assert report.copied_objects == len(entries) - 2 == 42
    assert not (dest / "a/003.bin").exists() and not (dest / "a/004.bin").exists()
    assert leftovers(dest) == []
    assert not (dest / "b" / "link.bin").is_symlink()  # its content was copied, not the link
    for gone in ("a/003.bin", "a/004.bin"):
        (src / gone).unlink()
    same_tree(src, dest)
    assert (dest / "b/empty.bin").read_bytes() == b""


def test_a_rerun_upload_trusts_the_index_only_while_file_and_object_are_unchanged(
    tiers: dict[str, Tier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy index (pipelines.transfer.seen) skips unread what it proved, and nothing it cannot prove.

    A file rewritten in place with its size and mtime put back (which a size-and-time sync misses)
    and an object replaced by another writer are both sent again; a rerun that changes nothing
    makes no HEAD at all (counted by a spy that still asks the store).
    """
    src = tmp_path / "src"
    sizes = {f"d/{i:03d}.bin": 100 + i for i in range(30)} | {"big.bin": 3 * PART}
    write_files(src, sizes)
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    obj = tiers["object"]
    settings = TransferSettings(concurrency=4, part_size=PART)
    entries = list_local_source(str(src))
    first = copy_entries(local, "", obj, "indexed", entries, settings)
    assert first.copied_objects == 31
    heads: list[str] = []
    asked = S3Tier.stored_checksum

    def counted(self: S3Tier, key: str) -> str | None:
        heads.append(key)
        return asked(self, key)

    monkeypatch.setattr(S3Tier, "stored_checksum", counted)
    again = copy_entries(local, "", obj, "indexed", entries, settings)
    assert (again.copied_objects, again.skipped_objects, heads) == (0, 31, [])
    assert again.checksums == first.checksums  # the multipart object's ETag came back with its upload too
    # Rewritten in place, same size, mtime put back: the ctime moved, so it is hashed and sent again.
    path = src / "d/005.bin"
    before = path.stat()
    path.write_bytes(os.urandom(before.st_size))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Replaced on the store by another writer (same size, other bytes, no checksum metadata).
    obj.fs.pipe_file(obj.path("indexed/d/007.bin"), os.urandom(sizes["d/007.bin"]))
    changed = copy_entries(local, "", obj, "indexed", list_local_source(str(src)), settings)
    assert (changed.copied_objects, changed.skipped_objects) == (2, 29)
    assert obj.read_bytes("indexed/d/005.bin") == path.read_bytes()
    assert obj.read_bytes("indexed/d/007.bin") == (src / "d/007.bin").read_bytes()
    # An unreadable index is a cold start, not an error: everything is proved again by hash and HEAD.
    for index in (Path(os.environ["TIERFLOW_HOME"]) / "cache" / "copies").glob("*.json"):
        index.write_text("{not json")
    heads.clear()
    cold = copy_entries(local, "", obj, "indexed", list_local_source(str(src)), settings)
    assert (cold.copied_objects, cold.skipped_objects, len(heads)) == (0, 31, 31)


def test_round_trip_of_300_mib_and_20000_small_objects_is_byte_identical(
    tiers: dict[str, Tier], tmp_path: Path
) -> None:
    """The sizes of #12: one object of 300 MiB (ranged parts written at their offsets) and 20,000 small ones.

    Up through the CRT from local files, down with every small object in flight at once, each
    file hashed by the test itself on both sides; a rerun both ways copies nothing.
    """
    src = tmp_path / "src"
    write_files(src, {"big/300MiB.bin": 300 * MiB})
    small = src / "small"
    for i in range(20_000):
        if i % 1000 == 0:
            (small / f"{i // 1000:02d}").mkdir(parents=True)
        (small / f"{i // 1000:02d}" / f"{i:05d}.rec").write_bytes(os.urandom(1 + i % 97))
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    settings = TransferSettings(concurrency=16, part_size=8 * MiB)
    entries = list_local_source(str(src))
    assert len(entries) == 20_001
    up = copy_entries(local, "", tiers["object"], "sizes", entries, settings)
    assert up.copied_objects == 20_001
    dest = tmp_path / "dest"
    down = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    remote = list(build_manifest(tiers["object"], "sizes", "adhoc", "adhoc").entries)
    assert copy_entries(tiers["object"], "sizes", down, "", remote, settings).copied_objects == 20_001
    same_tree(src, dest)
    assert leftovers(dest) == []
    assert copy_entries(local, "", tiers["object"], "sizes", entries, settings).skipped_objects == 20_001
    assert copy_entries(tiers["object"], "sizes", down, "", remote, settings).skipped_objects == 20_001


@pytest.mark.parametrize("size", [0, 1, WRITE_SLICE - 1, WRITE_SLICE, WRITE_SLICE + 1, 3 * WRITE_SLICE + 7])
def test_writes_in_slices_land_whole_at_their_offsets(tmp_path: Path, size: int) -> None:
    """Local copies and downloads write in slices of at most 1 MiB: every byte lands, in order, at its offset."""
    data = os.urandom(size)
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_all(fd, data)
        pwrite_all(fd, data[::-1], size + 5)  # past a 5-byte hole, as a ranged part lands
    finally:
        os.close(fd)
    assert path.read_bytes() == (data + bytes(5) + data[::-1] if size else b"")  # writing nothing extends nothing


def test_a_rerun_local_copy_trusts_the_index_only_while_both_files_are_unchanged(
    tiers: dict[str, Tier], tmp_path: Path
) -> None:
    """Local -> local reruns skip unread what the copy index proved (pipelines.transfer.seen).

    Small files (a directory at a time), a file over the one-read size and one the kernel copies
    are all recorded; a rerun copies nothing and rewrites nothing (inodes kept). A source rewritten
    in place with its mtime put back, a destination rewritten in place with its mtime put back
    (only its ctime tells) and a destination replaced by rename are each copied again; nothing else.
    """
    src = tmp_path / "src"
    sizes = {f"d/{i:03d}.bin": 100 + i for i in range(30)} | {"mid/9MiB.bin": 9 * MiB, "big/17MiB.bin": 17 * MiB}
    write_files(src, sizes)
    local = Tier(replace(tiers["pfs"].config, url=f"file://{src}"))
    dest = tmp_path / "dest"
    down = Tier(replace(tiers["pfs"].config, url=f"file://{dest}"))
    settings = TransferSettings(concurrency=2, part_size=PART)
    assert copy_entries(local, "", down, "", list_local_source(str(src)), settings).copied_objects == 32
    inodes = {p: p.stat().st_ino for p in dest.rglob("*.bin")}
    again = copy_entries(local, "", down, "", list_local_source(str(src)), settings)
    assert (again.copied_objects, again.skipped_objects) == (0, 32)
    assert {p: p.stat().st_ino for p in dest.rglob("*.bin")} == inodes  # nothing rewritten

    def rewrite_keeping_mtime(path: Path) -> None:
        before = path.stat()
        with open(path, "r+b") as fh:  # in place: same inode, same size
            fh.write(os.urandom(64))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    rewrite_keeping_mtime(src / "d/005.bin")
    rewrite_keeping_mtime(dest / "mid/9MiB.bin")
    replaced = dest / "big/17MiB.bin"
    (dest / "big/other").write_bytes(os.urandom(17 * MiB))
    os.replace(dest / "big/other", replaced)
    changed = copy_entries(local, "", down, "", list_local_source(str(src)), settings)
    assert (changed.copied_objects, changed.skipped_objects) == (3, 29)
    same_tree(src, dest)
    assert leftovers(dest) == []
