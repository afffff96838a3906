"""A disk filled by another writer while a copy lands on it: one line, nothing partial, the rerun finishes.

The disk is a real 64 MiB tmpfs (mounting it needs root: the test is skipped elsewhere); the
neighbour starts writing once the first file of the copy appears and stops when the disk is full.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from checker import LocalStore, check_copy, temporaries
from harness import PART, Cli, Tally, corpus, one_line

pytestmark = pytest.mark.faults


@pytest.fixture
def disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _fill_once_copying(dst: Path, neighbour: Path) -> threading.Thread:
    def fill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (dst.exists() and any(p.is_file() for p in dst.rglob("*"))):
            time.sleep(0.002)
        with open(neighbour, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass

    thread = threading.Thread(target=fill)
    thread.start()
    return thread


@pytest.mark.parametrize("hop", ["s3->local", "local->local"])
def test_a_disk_filled_mid_copy_fails_in_one_line_and_the_rerun_finishes(
    hop: str, cli: Cli, tiers, disk: Path, tmp_path: Path, tally: Tally
) -> None:
    source = corpus(tmp_path / "corpus")  # ~53 MiB: it fits the 64 MiB disk alone, not beside the neighbour
    src = str(tmp_path / "corpus")
    if hop == "s3->local":
        assert cli.run("copy", src, tiers["object"].url("src"), *PART).returncode == 0
        src = tiers["object"].url("src")
    dst, neighbour = disk / "copy", disk / "neighbour.bin"
    filler = _fill_once_copying(dst, neighbour)
    done = cli.run("copy", src, str(dst), *PART, "--concurrency", "2")
    filler.join()
    tally.fault(f"disk full: copy {hop}")
    assert done.returncode != 0, "the copy should not fit beside the neighbour"
    # One line per object that failed (as s5cmd does), then the summary; never a traceback.
    assert one_line(done.stderr).endswith("failed") and "No space left" in done.stderr, done.stderr
    partial = check_copy(LocalStore(str(dst)), "", source)
    assert not partial.problems, partial.problems
    assert not temporaries(str(dst)), "temporaries left after the failure"
    neighbour.unlink()  # the neighbour is gone: room again
    again = cli.run("copy", src, str(dst), *PART)
    tally.reruns += 1
    assert again.returncode == 0, again.stderr
    whole = check_copy(LocalStore(str(dst)), "", source)
    assert not whole.problems and whole.objects == len(source), whole.problems or whole.objects
    tally.verified(whole)
