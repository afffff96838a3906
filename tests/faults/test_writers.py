"""Two writers at once on every hop and on checkpoint promotion: one correct result, nothing leaked.

Both writers are real `tierflow` processes started together on the same source and destination.
Each must succeed, or fail in one line; the checker then finds the destination whole (after a
rerun if either failed), no unfinished multipart upload and no temporary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from checker import LocalStore, S3Store, Store, check_copy, check_markers, temporaries
from harness import HOPS, PART, Cli, Tally, copy_source, one_line, seeds

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("hop", HOPS)
def test_two_copies_at_once_give_one_whole_result(
    hop: str, cli: Cli, tiers, object_store: S3Store, tmp_path: Path, tally: Tally
) -> None:
    source, src = copy_source(hop, cli, tiers["object"].url("src"), tmp_path / "corpus")
    dst_kind = hop.split("->")[1]
    for seed, _ in seeds(f"writers {hop}", 3):
        if dst_kind == "s3":
            dst, store, prefix = tiers["object"].url(f"two/{seed}"), object_store, f"two/{seed}"
        else:
            dst, store, prefix = str(tmp_path / "two" / str(seed)), LocalStore(str(tmp_path / "two" / str(seed))), ""
        writers = [cli.start("copy", src, dst, *PART, "--concurrency", "2") for _ in range(2)]
        results = [(w.wait(timeout=300), w.communicate()[1]) for w in writers]
        tally.fault(f"two writers: copy {hop}")
        where = f"{hop} seed {seed}: exits {[rc for rc, _ in results]}"
        for rc, err in results:
            if rc:
                one_line(err)
        if any(rc for rc, _ in results):
            assert cli.run("copy", src, dst, *PART).returncode == 0, where
            tally.reruns += 1
        whole = check_copy(store, prefix, source)
        assert not whole.problems and whole.objects == len(source), f"{where}: {whole.problems or whole.objects}"
        tally.verified(whole)
        if dst_kind == "s3":
            assert not object_store.pending_uploads(prefix), f"{where}: orphaned uploads"
        else:
            assert not temporaries(dst), f"{where}: temporaries left"


def test_two_promotions_at_once_commit_each_checkpoint_once_and_whole(
    cli: Cli, tiers, object_store: S3Store, tally: Tally
) -> None:
    from pipelines.devtools.corpus import write_checkpoint

    stores: dict[str, Store] = {"pfs": LocalStore(tiers["pfs"].root), "object": object_store}
    for seed, _ in seeds("writers promote", 3):
        run = f"run{seed}"
        for step in (100, 200):
            write_checkpoint(Path(tiers["nvme"].root), run, step, shards=3, shard_bytes=4 * 2**20, seed=step)
        writers = [cli.start("checkpoints", "promote", "--run", run) for _ in range(2)]
        results = [(w.wait(timeout=300), w.communicate()[1]) for w in writers]
        tally.fault("two writers: checkpoint promotion")
        where = f"promote seed {seed}: exits {[rc for rc, _ in results]}"
        for rc, err in results:
            if rc:
                one_line(err)
        if any(rc for rc, _ in results):
            assert cli.run("checkpoints", "promote", "--run", run).returncode == 0, where
            tally.reruns += 1
        for name, store in stores.items():
            checked = check_markers(store, f"checkpoints/{run}")
            assert not checked.problems and checked.markers == 2, f"{where}: {name}: {checked.problems}"
            tally.verified(checked)
        assert not object_store.pending_uploads(f"checkpoints/{run}"), f"{where}: orphaned uploads"
        assert not temporaries(tiers["pfs"].root), f"{where}: temporaries left"
