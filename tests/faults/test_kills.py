"""SIGKILL at seeded random moments, on every hop and every checkpoint operation; the checker after each.

For each case one unkilled run measures how long the operation takes; each seed then kills a
fresh run at a random fraction of that time (from start-up to the last object), checks what the
kill left, reruns the same command and checks again. The seed, the moment and whether the process
was still running are in the assertion messages.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from checker import LocalStore, S3Store, Store, check_copy, check_markers, temporaries
from harness import HOPS, PART, Cli, Tally, copy_source, rerun_whole, seeds

pytestmark = pytest.mark.faults

MiB = 2**20


@pytest.mark.parametrize("hop", HOPS)
def test_a_copy_killed_anywhere_leaves_nothing_partial_and_the_rerun_finishes(
    hop: str, cli: Cli, tiers, object_store: S3Store, tmp_path: Path, tally: Tally
) -> None:
    source, src_url = copy_source(hop, cli, tiers["object"].url("src"), tmp_path / "corpus")
    dst_kind = hop.split("->")[1]

    def destination(name: str) -> tuple[str, Store, str]:
        if dst_kind == "s3":
            return tiers["object"].url(f"dst/{name}"), object_store, f"dst/{name}"
        return str(tmp_path / "dst" / name), LocalStore(str(tmp_path / "dst" / name)), ""

    reference = cli.timed("copy", src_url, destination("reference")[0], *PART)
    for seed, rng in seeds(hop):
        url, store, prefix = destination(str(seed))
        delay = rng.uniform(0.05, 1.0) * reference
        where = f"{hop} seed {seed}: killed at {delay:.2f} s of {reference:.2f} s"
        killed = cli.killed_at(delay, "copy", src_url, url, *PART)
        tally.fault(f"SIGKILL: copy {hop}", killed)
        if dst_kind == "local" and not Path(url).exists():
            Path(url).mkdir(parents=True)  # killed before it made the directory: nothing to check yet
        after_kill = check_copy(store, prefix, source)
        assert not after_kill.problems, f"{where}: {after_kill.problems}"
        done = rerun_whole(cli, src_url, url, store, prefix, source, tally, where)
        if dst_kind == "s3":
            pending = object_store.pending_uploads(prefix)
            assert not pending, (
                f"{where}: orphaned multipart uploads {pending} after the rerun: {done.stderr}\n"
                f"the killed run said: {cli.last_killed_output}"
            )
        else:
            assert not temporaries(url), f"{where}: temporaries left after the rerun"


# -- checkpoints ------------------------------------------------------------------------------

STEP = re.compile(r"checkpoints/([^/]+)/step_(\d+)/_tierflow_commit\.json$")


def restorable(stores: dict[str, Store], run: str) -> tuple[int | None, dict[str, set[int]]]:
    """The newest step whose marker verifies on some tier, and the verified steps per tier (checker's view)."""
    steps: dict[str, set[int]] = {}
    for name, store in stores.items():
        steps[name] = set()
        for key in store.objects(f"checkpoints/{run}"):
            m = STEP.search(key)
            if m and m.group(1) == run:
                base = key.rsplit("/", 1)[0]
                result = check_markers(store, base)
                assert not result.problems, f"{name}: {result.problems}"
                steps[name].add(int(m.group(2)))
    every = set().union(*steps.values())
    return (max(every) if every else None), steps


def _stores(tiers, object_store: S3Store) -> dict[str, Store]:
    return {"nvme": LocalStore(tiers["nvme"].root), "pfs": LocalStore(tiers["pfs"].root), "object": object_store}


def _train(tiers, run: str, steps: tuple[int, ...]) -> None:
    from pipelines.devtools.corpus import write_checkpoint

    for step in steps:
        write_checkpoint(Path(tiers["nvme"].root), run, step, shards=3, shard_bytes=4 * MiB + step, seed=step)


def test_promotion_killed_anywhere_never_regresses_and_the_rerun_finishes(
    cli: Cli, tiers, object_store: S3Store, tally: Tally
) -> None:
    stores = _stores(tiers, object_store)
    _train(tiers, "reference", (100, 200))
    reference = cli.timed("checkpoints", "promote", "--run", "reference")
    for seed, rng in seeds("promote"):
        run = f"run{seed}"
        _train(tiers, run, (100, 200))
        delay = rng.uniform(0.05, 1.0) * reference
        where = f"promote seed {seed}: killed at {delay:.2f} s of {reference:.2f} s"
        killed = cli.killed_at(delay, "checkpoints", "promote", "--run", run)
        tally.fault("SIGKILL: checkpoint promotion", killed)
        restorable(stores, run)  # every marker there verifies
        assert not object_store.pending_uploads(f"checkpoints/{run}") or killed
        done = cli.run("checkpoints", "promote", "--run", run)
        tally.reruns += 1
        assert done.returncode == 0, f"{where}: {done.stderr}"
        newest, steps = restorable(stores, run)
        assert newest == 200 and steps["object"] == steps["pfs"] == {100, 200}, f"{where}: {steps}"
        assert not object_store.pending_uploads(f"checkpoints/{run}"), f"{where}: orphaned uploads"
        assert not temporaries(tiers["pfs"].root), f"{where}: temporaries left on PFS"
        tally.verified(check_markers(object_store, f"checkpoints/{run}"))


def test_restore_killed_anywhere_leaves_nothing_partial_and_the_rerun_finishes(
    cli: Cli, tiers, object_store: S3Store, tally: Tally
) -> None:
    stores = _stores(tiers, object_store)
    nvme = Path(tiers["nvme"].root)
    runs = ["reference"] + [f"run{seed}" for seed, _ in seeds("restore")]
    for run in runs:
        _train(tiers, run, (100, 200))
    assert cli.run("checkpoints", "promote").returncode == 0
    for run in runs:  # only object storage holds them now: restore must bring them back
        shutil.rmtree(nvme / "checkpoints" / run)
        shutil.rmtree(Path(tiers["pfs"].root) / "checkpoints" / run)
    reference = cli.timed("checkpoints", "restore", "reference")
    for (seed, rng), run in zip(seeds("restore"), runs[1:], strict=True):
        expected = {
            k.split("/", 3)[3]: object_store.digest(k) for k in object_store.objects(f"checkpoints/{run}/step_000200")
        }
        expected.pop("_tierflow_commit.json")
        delay = rng.uniform(0.05, 1.0) * reference
        where = f"restore seed {seed}: killed at {delay:.2f} s of {reference:.2f} s"
        killed = cli.killed_at(delay, "checkpoints", "restore", run)
        tally.fault("SIGKILL: checkpoint restore", killed)
        target = LocalStore(str(nvme))
        partial = check_copy(target, f"checkpoints/{run}/step_000200", expected)
        assert not partial.problems, f"{where}: {partial.problems}"
        restorable(stores, run)
        done = cli.run("checkpoints", "restore", run)
        tally.reruns += 1
        assert done.returncode == 0, f"{where}: {done.stderr}"
        whole = check_copy(target, f"checkpoints/{run}/step_000200", expected)
        assert not whole.problems and whole.objects == len(expected), f"{where}: {whole.problems}"
        newest, steps = restorable(stores, run)
        assert 200 in steps["nvme"] and newest == 200, f"{where}: {steps}"
        tally.verified(whole)
        assert not temporaries(str(nvme / "checkpoints" / run)), f"{where}: temporaries left"


def test_pruning_killed_anywhere_never_loses_the_newest_and_the_rerun_finishes(
    cli: Cli, tiers, object_store: S3Store, tally: Tally
) -> None:
    stores = _stores(tiers, object_store)
    policy = ["--keep-nvme", "latest=1", "--keep-pfs", "latest=2", "--keep-object", "latest=3"]
    runs = ["reference"] + [f"run{seed}" for seed, _ in seeds("prune")]
    for run in runs:
        _train(tiers, run, (100, 200, 300, 400))
    assert cli.run("checkpoints", "promote").returncode == 0
    reference = cli.timed("checkpoints", "prune", "--run", "reference", *policy)
    for (seed, rng), run in zip(seeds("prune"), runs[1:], strict=True):
        before, _ = restorable(stores, run)
        delay = rng.uniform(0.05, 1.0) * reference
        where = f"prune seed {seed}: killed at {delay:.2f} s of {reference:.2f} s"
        killed = cli.killed_at(delay, "checkpoints", "prune", "--run", run, *policy)
        tally.fault("SIGKILL: checkpoint pruning", killed)
        after, _ = restorable(stores, run)  # every marker left verifies: no marker over deleted data
        assert after == before, f"{where}: the newest restorable step went from {before} to {after}"
        done = cli.run("checkpoints", "prune", "--run", run, *policy)
        tally.reruns += 1
        assert done.returncode == 0, f"{where}: {done.stderr}"
        newest, steps = restorable(stores, run)
        assert newest == 400, f"{where}: {steps}"
        assert steps == {"nvme": {400}, "pfs": {300, 400}, "object": {200, 300, 400}}, f"{where}: {steps}"
        tally.verified(check_markers(object_store, f"checkpoints/{run}"))
