"""The checkpoint lifecycle against SeaweedFS and real directories, with a simulated training run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.checkpoints import (
    CheckpointError,
    LatestN,
    Rules,
    discover,
    durable_copies,
    promote,
    promote_through,
    restore,
    retain,
    to_promote,
)
from pipelines.core.checksum import checksum_file
from pipelines.core.manifest import COMMIT_MARKER
from pipelines.storage.commit import read_marker
from pipelines.storage.tier import Tier

pytestmark = pytest.mark.integration

KiB, MiB = 2**10, 2**20


def write_checkpoint(
    nvme: Path,
    run: str,
    step: int,
    shards: int = 4,
    size: int = 256 * KiB,
    delay: float = 0.0,
    loss: float = 1.0,
    before_marker=lambda: None,
) -> Path:
    """A DCP-like checkpoint: rank shards, then metrics, then `.metadata` last (what makes it complete)."""
    d = nvme / "checkpoints" / run / f"step_{step:06d}"
    d.mkdir(parents=True, exist_ok=True)
    for rank in range(shards):
        (d / f"__{rank}_0.distcp").write_bytes(os.urandom(size))
        time.sleep(delay)
    (d / "metrics.json").write_text(json.dumps({"loss": loss, "eval_score": 1 / loss}))
    missing = [rank for rank in range(shards) if not (d / f"__{rank}_0.distcp").is_file()]
    assert not missing, f"step {step}: shards {missing} vanished while the checkpoint was being written"
    before_marker()
    # As DCP's writer does: the marker is written under a temporary name and renamed into place.
    (d / ".metadata.tmp").write_bytes(json.dumps({"step": step, "shards": shards}).encode())
    (d / ".metadata.tmp").rename(d / ".metadata")
    return d


def tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): checksum_file(str(p))[0]
        for p in sorted(path.rglob("*"))
        if p.is_file() and not str(p.relative_to(path)).startswith("_tierflow")
    }


def chain(tiers: dict[str, Tier]) -> list[Tier]:
    return [tiers["nvme"], tiers["pfs"], tiers["object"]]


def no_marker_without_its_objects(tiers: dict[str, Tier]) -> None:
    """The completion rule: wherever a Tierflow marker is, every object of its manifest is there with its size."""
    for tier in chain(tiers):
        for c in discover(tier):
            if c.committed:
                found = read_marker(tier, c.prefix)
                listed = {o.key: o.size for o in tier.list(c.prefix)}
                for e in found.manifest.entries:
                    assert listed.get(f"{c.prefix}/{e.key}") == e.size, f"{tier.name}: {c.prefix}/{e.key}"


def test_step_99_and_step_100_order_by_step_not_by_name_or_time(tiers, tmp_path: Path) -> None:
    nvme = tmp_path / "nvme"
    write_checkpoint(nvme, "r", 100)
    time.sleep(0.05)
    d99 = nvme / "checkpoints" / "r" / "step_99"
    write_checkpoint(nvme, "r", 99).rename(d99)  # written last: the newest mtime, the lower step
    found = discover(tiers["nvme"])
    assert [(c.name, c.step) for c in found] == [("step_99", 99), ("step_000100", 100)]
    for c in found:
        promote_through(chain(tiers), c)
    result = restore(chain(tiers)[1:], tiers["nvme"], "r")
    assert result.step == 100  # "latest" is the highest step, never the newest mtime


def test_discovery_states_and_framework_markers(tiers, tmp_path: Path) -> None:
    root = tmp_path / "nvme" / "checkpoints" / "job"
    for name, files in {
        "step_1": [".metadata", "__0_0.distcp"],
        "checkpoint-2": ["trainer_state.json", "model.safetensors"],
        "step_3": ["commit_success.txt", "d/array"],
        "step_4.orbax-checkpoint-tmp-99": ["commit_success.txt", "d/array"],
        "step_5": ["__0_0.distcp"],
        "not_a_checkpoint": ["x"],
    }.items():
        for f in files:
            (root / name / f).parent.mkdir(parents=True, exist_ok=True)
            (root / name / f).write_text("{}")
    (root / "checkpoint-2" / "trainer_state.json").write_text(
        json.dumps({"log_history": [{"loss": 2.5, "step": 2}, {"eval_loss": 2.25, "step": 2}], "best_metric": 2.25})
    )
    found = {c.name: c for c in discover(tiers["nvme"], Rules(grace_s=3600))}
    assert set(found) == {"step_1", "checkpoint-2", "step_3", "step_4.orbax-checkpoint-tmp-99", "step_5"}
    assert [found[n].framework for n in ("step_1", "checkpoint-2", "step_3")] == ["pytorch-dcp", "hf-trainer", "orbax"]
    assert found["checkpoint-2"].metrics == {"loss": 2.5, "eval_loss": 2.25, "step": 2.0, "best_metric": 2.25}
    assert found["step_4.orbax-checkpoint-tmp-99"].state == "in_progress"  # never complete, marker or not
    assert found["step_5"].state == "in_progress"
    later = {c.name: c.state for c in discover(tiers["nvme"], Rules(grace_s=60), now=time.time() + 120)}
    assert later["step_5"] == "partial" and later["step_4.orbax-checkpoint-tmp-99"] == "partial"
    assert later["step_1"] == "complete"
    with pytest.raises(CheckpointError, match="in_progress"):
        promote(tiers["nvme"], tiers["pfs"], found["step_5"])


def test_lifecycle_during_a_training_run_never_touches_a_checkpoint_being_written(tiers, tmp_path: Path) -> None:
    nvme = tmp_path / "nvme"
    completed: dict[int, float] = {}
    errors: list[BaseException] = []

    def train() -> None:
        try:
            for i, step in enumerate(range(100, 1300, 100)):
                write_checkpoint(
                    nvme,
                    "llm",
                    step,
                    shards=6,
                    size=128 * KiB,
                    delay=0.03,
                    loss=5 - i * 0.3,
                    before_marker=lambda s=step: completed.__setitem__(s, time.time()),
                )
        except BaseException as exc:  # asserted below
            errors.append(exc)

    policies = {"nvme": LatestN(2), "pfs": LatestN(3), "object": LatestN(4)}
    trainer = threading.Thread(target=train)
    trainer.start()
    promoted: list[tuple[int, float]] = []
    while trainer.is_alive() or not promoted or promoted[-1][0] != 1200:
        found = to_promote(chain(tiers))
        listed = time.time()
        for c in found:
            # Chosen only if its completion marker was written before the listing that chose it.
            assert c.step in completed and completed[c.step] <= listed, f"step {c.step} promoted while in progress"
            promote_through(chain(tiers), c)
            promoted.append((c.step, listed))
        retain(chain(tiers), policies)
        no_marker_without_its_objects(tiers)
        if not trainer.is_alive() and not to_promote(chain(tiers)):
            break
    trainer.join()
    assert errors == []
    steps = {t: sorted(c.step for c in discover(tiers[t])) for t in ("nvme", "pfs", "object")}
    assert steps == {"nvme": [1100, 1200], "pfs": [1000, 1100, 1200], "object": [900, 1000, 1100, 1200]}
    for t in ("nvme", "pfs", "object"):
        assert all(c.committed for c in discover(tiers[t]))
    newest = nvme / "checkpoints" / "llm" / "step_001200"
    assert tree(newest) == tree(tmp_path / "pfs" / "checkpoints" / "llm" / "step_001200")


def test_prune_keeps_what_is_not_safe_elsewhere_and_batches_object_deletes(tiers, tmp_path: Path) -> None:
    nvme = tmp_path / "nvme"
    for step in (1, 2, 3):
        write_checkpoint(nvme, "r", step, shards=2)
    for c in discover(tiers["nvme"])[:2]:
        promote(tiers["nvme"], tiers["pfs"], c)  # step 3 is only on NVMe
    summary = retain(chain(tiers), {"nvme": LatestN(0), "pfs": LatestN(0), "object": LatestN(0)})
    # NVMe may drop step 1 (committed and verified on the PFS), but the PFS must keep 1-2: they are not
    # on object storage. Step 3 has only its framework marker (never promoted): it is not complete for
    # retention, so step 2 is the newest complete checkpoint and stays on NVMe too.
    assert summary["nvme"].deleted == ["r/step_000001"]
    assert summary["nvme"].kept["r/step_000003"] == "not committed and verified on this tier"
    assert summary["nvme"].kept["r/step_000002"] == "newest complete checkpoint"
    assert summary["pfs"].deleted == []
    assert summary["pfs"].kept["r/step_000001"] == "not committed and verified on the next more durable tier"
    # Now many objects on object storage: deletes go 1,000 keys per request.
    obj = tiers["object"]
    for step in (10, 20):
        d = nvme / "checkpoints" / "big" / f"step_{step}"
        d.mkdir(parents=True)
        for i in range(1200):
            (d / f"{i:05d}.bin").write_bytes(b"x")
        (d / ".metadata").write_text("{}")
    for c in to_promote(chain(tiers), run="big"):
        promote_through(chain(tiers), c)
    calls: list[int] = []
    obj.fs.s3.meta.events.register(
        "before-parameter-build.s3.DeleteObjects", lambda params, **_: calls.append(len(params["Delete"]["Objects"]))
    )
    summary = retain(chain(tiers), {"nvme": LatestN(5), "pfs": LatestN(5), "object": LatestN(0)}, run="big")
    assert summary["object"].deleted == ["big/step_10"] and summary["object"].objects == 1202
    assert len(calls) == 3 and max(calls) <= 1000 and sum(calls) == 1202, calls  # marker batch + 2 data batches
    assert [c.step for c in discover(obj, run="big")] == [20]


def test_empty_or_failed_listing_deletes_nothing(tiers, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nvme = tmp_path / "nvme"
    for step in (1, 2):
        write_checkpoint(nvme, "r", step, shards=1)
    for c in to_promote(chain(tiers)):
        promote_through(chain(tiers), c)
    broken = Tier(tiers["object"].config, {**tiers["object"].storage_options, "secret": "wrong"})
    with caplog.at_level(logging.ERROR, logger="pipelines.checkpoints.pruning"):
        summary = retain(
            [tiers["nvme"], tiers["pfs"], broken], {"nvme": LatestN(0), "pfs": LatestN(0), "object": LatestN(0)}
        )
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listing object failed:")]
    assert said[-1] == (  # what will and will not be pruned, and why (#17 item 5)
        "listing object failed: nothing is deleted on object (its checkpoints are unknown) nor on pfs "
        "(its copies cannot be checked against object); nvme pruned as usual, each against the tier after it"
    )
    assert summary["object"].note == "listing failed"
    assert summary["pfs"].deleted == [] and "listing of object failed" in summary["pfs"].note
    assert summary["nvme"].deleted == ["r/step_000001"]  # its PFS copy was listed and verified
    assert retain(chain(tiers), {"nvme": LatestN(0)}, run="nobody")["nvme"].deleted == []


def test_restore_from_object_storage_after_nvme_and_pfs_copies_were_pruned(tiers, tmp_path: Path) -> None:
    nvme = tmp_path / "nvme"
    originals = {}
    for step in (100, 200, 300):
        originals[step] = tree(write_checkpoint(nvme, "r", step, shards=3, size=3 * MiB + 17))
    for c in to_promote(chain(tiers)):
        promote_through(chain(tiers), c)
    retain(chain(tiers), {"nvme": LatestN(0), "pfs": LatestN(0), "object": LatestN(5)})
    assert [c.step for c in discover(tiers["nvme"])] == [300] and [c.step for c in discover(tiers["pfs"])] == [300]
    result = restore(chain(tiers), tiers["nvme"], "r", step=100, holder="job-42")
    assert (result.step, result.source, result.fallbacks) == (100, "object", [])
    assert tree(nvme / "checkpoints" / "r" / "step_000100") == originals[100]
    (restored,) = [c for c in discover(tiers["nvme"]) if c.step == 100]
    assert restored.committed and restored.pinned_by == ("job-42",)
    # Pinned: even a keep-nothing policy leaves it.
    assert "r/step_000100" not in retain(chain(tiers), {"nvme": LatestN(0)})["nvme"].deleted


def test_a_flipped_bit_makes_restore_fall_back_to_the_previous_step(tiers, tmp_path: Path) -> None:
    nvme = tmp_path / "nvme"
    originals = {s: tree(write_checkpoint(nvme, "r", s, shards=2, size=1 * MiB)) for s in (1, 2)}
    for c in to_promote(chain(tiers)):
        promote_through(chain(tiers), c)
    for tier in ("nvme", "pfs"):
        (tmp_path / tier / "checkpoints").rename(tmp_path / f"{tier}-gone")  # only object storage holds them now
    obj = tiers["object"]
    key = "checkpoints/r/step_000002/__1_0.distcp"
    data = bytearray(obj.read_bytes(key))
    data[12345] ^= 0x01
    obj.fs.pipe_file(obj.path(key), bytes(data))  # same size, one bit different: only the checksum can tell
    result = restore(chain(tiers), tiers["nvme"], "r")
    assert result.step == 1 and result.source == "object"
    assert len(result.fallbacks) == 1 and "step 2 on object failed verification" in result.fallbacks[0]
    assert tree(nvme / "checkpoints" / "r" / "step_000001") == originals[1]
    assert read_marker(tiers["nvme"], "checkpoints/r/step_000002") is None  # the bad copy is not committed


def test_killed_promotion_resumes_and_no_tier_marks_an_incomplete_copy(tiers, tmp_path: Path, s3_credentials) -> None:
    nvme = tmp_path / "nvme"
    original = tree(write_checkpoint(nvme, "r", 7, shards=6, size=24 * MiB))
    creds = s3_credentials[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "TIERFLOW_CONFIG": str(tmp_path / "tiers.toml"),
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_ENDPOINT_URL": creds.endpoint_url,
        "AWS_REGION": creds.region,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "checkpoints", "promote"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    obj, prefix = tiers["object"], "checkpoints/r/step_000007"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len([o for o in obj.list(prefix)]) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the promotion finished before it could be killed"
    assert read_marker(obj, prefix) is None and not obj.exists(f"{prefix}/{COMMIT_MARKER}")
    no_marker_without_its_objects(tiers)
    rerun = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "checkpoints", "promote"], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert read_marker(obj, prefix) is not None
    no_marker_without_its_objects(tiers)
    assert durable_copies(obj, discover(obj))  # committed and every object listed with its size
    (tmp_path / "nvme" / "checkpoints").rename(tmp_path / "nvme-gone")
    (tmp_path / "pfs" / "checkpoints").rename(tmp_path / "pfs-gone")
    restore(chain(tiers), tiers["nvme"], "r")
    assert tree(nvme / "checkpoints" / "r" / "step_000007") == original


def test_a_checkpoint_rewritten_during_promotion_is_not_committed(tiers, tmp_path: Path) -> None:
    from pipelines.storage.tier import TMP_MARKER

    d = write_checkpoint(tmp_path / "nvme", "r", 5, shards=4, size=48 * MiB)
    (c,) = discover(tiers["nvme"])
    target = tmp_path / "pfs" / "checkpoints" / "r" / "step_000005"
    rewritten = threading.Event()

    def rewrite_when_copying() -> None:  # the job rewrites a shard while the promotion is copying
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if target.is_dir() and any(TMP_MARKER in p.name for p in target.iterdir()):
                with open(d / "__3_0.distcp", "ab") as fh:
                    fh.write(b"more")
                rewritten.set()
                return
            time.sleep(0.001)

    watcher = threading.Thread(target=rewrite_when_copying)
    watcher.start()
    with pytest.raises(CheckpointError, match="changed while it was copied"):
        promote(tiers["nvme"], tiers["pfs"], c)
    watcher.join()
    assert rewritten.is_set()
    assert read_marker(tiers["pfs"], c.prefix) is None and read_marker(tiers["nvme"], c.prefix) is None
    (again,) = discover(tiers["nvme"])
    promote(tiers["nvme"], tiers["pfs"], again)
    assert tree(target) == tree(d)


def test_a_second_promotion_vouches_for_the_nvme_copy_only_after_hashing_it(tiers, tmp_path: Path) -> None:
    d = write_checkpoint(tmp_path / "nvme", "r", 9, shards=2)
    (c,) = discover(tiers["nvme"])
    promote(tiers["nvme"], tiers["pfs"], c)
    marker = d / COMMIT_MARKER
    marker.unlink()  # as if the run stopped between the PFS commit and the NVMe one
    again = promote(tiers["nvme"], tiers["pfs"], discover(tiers["nvme"])[0])
    assert again.already and marker.exists()
    marker.unlink()
    data = bytearray((d / "__0_0.distcp").read_bytes())
    data[0] ^= 0xFF
    (d / "__0_0.distcp").write_bytes(bytes(data))  # same size, other bytes
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        promote(tiers["nvme"], tiers["pfs"], discover(tiers["nvme"])[0])
    assert not marker.exists()


def test_a_half_promoted_copy_never_counts_as_the_newest_on_its_tier(tiers, tmp_path: Path) -> None:
    """A framework marker without Tierflow's commit marker is not complete: retention keeps the committed copy.

    What a promotion killed mid-copy leaves on object storage: the DCP ``.metadata`` and one shard of a newer
    step, no commit marker. Neither a keep-nothing nor a ``latest=1`` policy may then delete the newest
    committed checkpoint there, and ``ls`` must not call the half copy complete.
    """
    nvme = tmp_path / "nvme"
    write_checkpoint(nvme, "r", 400, shards=2)
    for c in to_promote(chain(tiers)):
        promote_through(chain(tiers), c)
    obj = tiers["object"]
    half = "checkpoints/r/step_000500"
    obj.fs.pipe_file(obj.path(f"{half}/.metadata"), b"{}")
    obj.fs.pipe_file(obj.path(f"{half}/__0_0.distcp"), os.urandom(1000))
    found = {c.step: c for c in discover(obj)}
    assert found[500].status == "uncommitted" and found[400].status == "committed"
    for policy in (LatestN(0), LatestN(1)):
        summary = retain([tiers["pfs"], obj], {"object": policy})
        assert summary["object"].deleted == [], summary
        assert summary["object"].kept["r/step_000400"] == "newest complete checkpoint"
        assert summary["object"].kept["r/step_000500"] == "not committed and verified on this tier"
        assert read_marker(obj, "checkpoints/r/step_000400") is not None
    # Nor on NVMe: a newer step with only its framework marker does not make the committed one deletable there.
    write_checkpoint(nvme, "r", 600, shards=1)
    summary = retain(chain(tiers), {"nvme": LatestN(0)})
    assert summary["nvme"].deleted == [] and summary["nvme"].kept["r/step_000400"] == "newest complete checkpoint"
    # Committed but with an object missing is not complete either: restore and retention skip it.
    obj.fs.rm(obj.path("checkpoints/r/step_000400/__1_0.distcp"))
    (damaged,) = [c for c in discover(obj) if c.step == 400]
    assert damaged.committed and damaged.status == "damaged"


def _committed_on(tier: Tier, run: str, step: int, loss: float = 1.0) -> None:
    """A small committed checkpoint written straight to ``tier``: one shard, ``.metadata``, the marker."""
    from pipelines.core.checksum import checksum_bytes
    from pipelines.core.manifest import Entry, Manifest
    from pipelines.storage.commit import commit

    name = f"step_{step:06d}"
    files = {"__0_0.distcp": os.urandom(1024 + step), ".metadata": json.dumps({"step": step}).encode()}
    for rel, data in files.items():
        tier.write_bytes(f"checkpoints/{run}/{name}/{rel}", data)
    entries = tuple(Entry(rel, len(data), checksum_bytes(data)) for rel, data in files.items())
    commit(tier, Manifest(run, name, entries, namespace="checkpoints"), extra={"metrics": {"loss": loss}})


@pytest.mark.parametrize("kind", ["object", "nvme"])
def test_discovery_reads_only_new_or_rewritten_commit_markers(kind: str, tiers, tmp_path: Path) -> None:
    """A pass over committed checkpoints makes O(new) marker reads: the listing's ETag/inode says what changed."""
    from pipelines.checkpoints.markers import MarkerCache

    tier, path = tiers[kind], tmp_path / "markers.json"
    for step in range(1, 31):
        _committed_on(tier, "cached", step * 100)
    first = MarkerCache(path)
    found = discover(tier, markers=first)
    assert len(found) == 30 and all(c.committed and c.verified for c in found) and first.reads == 30
    again = MarkerCache(path)  # the next pass, in another process: the cache file
    assert [c.manifest_checksum for c in discover(tier, markers=again)] == [c.manifest_checksum for c in found]
    assert again.reads == 0
    _committed_on(tier, "cached", 3100)  # one new checkpoint
    _committed_on(tier, "cached", 100, loss=0.5)  # one rewritten: new content, a new marker
    third = MarkerCache(path)
    latest = {c.step: c for c in discover(tier, markers=third)}
    assert third.reads == 2 and len(latest) == 31
    assert latest[100].metrics == {"loss": 0.5}, "a rewritten marker must never be served from the cache"
    tier.delete_prefix("checkpoints/cached/step_000200")
    fourth = MarkerCache(path)
    assert 200 not in {c.step for c in discover(tier, markers=fourth)} and fourth.reads == 0
    assert not any("step_000200" in url for url in json.loads(path.read_text())), "a gone marker stays cached"
