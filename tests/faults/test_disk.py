"""A disk filled by another writer while a copy lands on it: one line, nothing partial, the rerun finishes.

The disk is a real 64 MiB tmpfs (mounting it needs root: the test is skipped elsewhere); the
neighbour starts writing once the first file of the copy appears and stops when the disk is full.
"""

from __future__ import annotations

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
