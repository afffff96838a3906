"""A disk filled by another writer while a copy lands on it: one line, nothing partial, the rerun finishes.

The disk is a real 64 MiB tmpfs (mounting it needs root: that test is skipped elsewhere); the
neighbour starts writing once the first file of the copy appears and stops when the disk is full.
Without root the same failure comes from a file-size limit (``RLIMIT_FSIZE``): every write past
it fails with ``EFBIG``, as a write past a quota or a full disk does, and that test runs everywhere.
"""

from __future__ import annotations

import resource
import signal
import subprocess
from pathlib import Path

import pytest
from checker import LocalStore, check_copy, temporaries
from harness import PART, Cli, Tally, corpus, one_line, rerun_whole

pytestmark = pytest.mark.faults


@pytest.fixture
def disk(tmpfs) -> Path:
    return tmpfs("64m")


@pytest.mark.parametrize("hop", ["s3->local", "local->local"])
def test_a_disk_filled_mid_copy_fails_in_one_line_and_the_rerun_finishes(
    hop: str, cli: Cli, tiers, disk: Path, neighbour, tmp_path: Path, tally: Tally
) -> None:
    source = corpus(tmp_path / "corpus")  # ~53 MiB: it fits the 64 MiB disk alone, not beside the neighbour
    src = str(tmp_path / "corpus")
    if hop == "s3->local":
        assert cli.run("copy", src, tiers["object"].url("src"), *PART).returncode == 0
        src = tiers["object"].url("src")
    dst, tenant = disk / "copy", disk / "neighbour.bin"
    filler = neighbour(dst, tenant)
    done = cli.run("copy", src, str(dst), *PART, "--concurrency", "2")
    filler.join()
    tally.fault(f"disk full: copy {hop}")
    assert done.returncode != 0, "the copy should not fit beside the neighbour"
    # One line per object that failed (as s5cmd does), then the summary; never a traceback.
    assert one_line(done.stderr).endswith("failed") and "No space left" in done.stderr, done.stderr
    partial = check_copy(LocalStore(str(dst)), "", source)
    assert not partial.problems, partial.problems
    assert not temporaries(str(dst)), "temporaries left after the failure"
    tenant.unlink()  # the neighbour is gone: room again
    rerun_whole(cli, src, str(dst), LocalStore(str(dst)), "", source, tally, f"disk full: {hop}")


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:  # in the child, before exec: the limit and the ignored signal carry over
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG

    return apply


@pytest.mark.parametrize("limit", [4 * 2**20, 64 * 2**10], ids=["4MiB", "64KiB"])
@pytest.mark.parametrize("hop", ["s3->local", "local->local"])
def test_a_file_size_limit_fails_in_one_line_and_the_rerun_finishes(
    hop: str, limit: int, cli: Cli, tiers, tmp_path: Path, tally: Tally
) -> None:
    """No root needed: writes past the limit fail, everything below it lands whole.

    At 4 MiB the two 24 MiB files fail (kernel copies); at 64 KiB every small file's write is cut
    short part-way (the write takes what fits, then fails), which must never leave a short file
    under a final name.
    """
    source = corpus(tmp_path / "corpus")
    src = str(tmp_path / "corpus")
    if hop == "s3->local":
        assert cli.run("copy", src, tiers["object"].url("limited"), *PART).returncode == 0
        src = tiers["object"].url("limited")
    dst = tmp_path / "copy"
    done = subprocess.run(
        cli.command("copy", src, str(dst), *PART, "--concurrency", "2"),
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(limit),
    )
    tally.fault(f"file size limit: copy {hop}")
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr).endswith("failed") and "File too large" in done.stderr, done.stderr
    assert "retry" not in done.stderr.lower(), "a write past the limit cannot succeed on a retry"
    partial = check_copy(LocalStore(str(dst)), "", source)
    assert not partial.problems, partial.problems
    assert not (dst / "big" / "a.bin").exists() and not (dst / "big" / "b.bin").exists()
    assert not temporaries(str(dst)), "temporaries left after the failure"
    rerun_whole(cli, src, str(dst), LocalStore(str(dst)), "", source, tally, f"file size limit: {hop}")
