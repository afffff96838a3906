"""The S3 server stopped and restarted under a running copy, and credentials revoked mid-run.

The server is the test's own SeaweedFS (not the session's), stopped for real (SIGTERM, then SIGKILL
after a second) at a seeded moment and started again on the same data. A copy may ride it out on
its retries or fail; either way it ends in one line, leaves nothing partial, and its rerun
finishes. Revoking credentials restarts the server with a new key pair: the old one is refused.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from checker import LocalStore, check_copy, temporaries
from harness import PART, Cli, Tally, corpus, one_line, own_store, rerun_whole, seeds

pytestmark = pytest.mark.faults


def _bounce(server, down_s: float) -> None:
    server.stop(grace=1)
    time.sleep(down_s)
    server.start()


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_server_restarted_mid_copy_loses_nothing(
    direction: str, own_cli: Cli, own_server, tmp_path: Path, tally: Tally
) -> None:
    source = corpus(tmp_path / "corpus")
    if direction == "download":
        assert own_cli.run("copy", str(tmp_path / "corpus"), "s3://faults/root/src", *PART).returncode == 0
    for seed, rng in seeds(f"restart {direction}", 2):
        if direction == "upload":
            src, dst, prefix = str(tmp_path / "corpus"), f"s3://faults/root/up{seed}", f"up{seed}"
        else:
            src, dst, prefix = "s3://faults/root/src", str(tmp_path / f"down{seed}"), ""
        proc = own_cli.start("copy", src, dst, *PART, "--concurrency", "2")
        at, down = rng.uniform(0.8, 1.6), rng.uniform(0.0, 1.5)
        where = f"{direction} seed {seed}: server stopped {at:.2f} s in for {down:.2f} s"
        time.sleep(at)
        _bounce(own_server, down)
        _, err = proc.communicate(timeout=300)
        if proc.returncode:
            one_line(err)  # the command's own lines, no traceback
        outcome = "failed in one line, rerun finished" if proc.returncode else "rode it out on retries"
        tally.fault(f"server restart: {direction}: {outcome}")
        store = own_store(own_server) if direction == "upload" else LocalStore(dst)
        if direction == "download":
            Path(dst).mkdir(exist_ok=True)
        partial = check_copy(store, prefix, source)
        assert not partial.problems, f"{where}: {partial.problems}"
        rerun_whole(own_cli, src, dst, store, prefix, source, tally, where)
        if direction == "upload":
            assert not own_store(own_server).pending_uploads(prefix), f"{where}: orphaned uploads"
        else:
            assert not temporaries(dst), f"{where}: temporaries left"


def test_credentials_revoked_mid_upload_fail_in_one_line_and_leave_nothing_partial(
    own_cli: Cli, own_server, tmp_path: Path, tally: Tally
) -> None:
    source = corpus(tmp_path / "corpus")
    for seed, rng in seeds("revoke", 2):
        dst, prefix = f"s3://faults/root/rev{seed}", f"rev{seed}"
        proc = own_cli.start("copy", str(tmp_path / "corpus"), dst, *PART, "--concurrency", "2")
        time.sleep(rng.uniform(0.8, 1.4))
        old = own_server.credentials()
        own_server.stop(grace=1)
        (own_server.root / "credentials.json").unlink()  # a new key pair on start: the old one is revoked
        new = own_server.start()
        assert new.access_key != old.access_key
        out, err = proc.communicate(timeout=300)
        tally.fault(
            "credentials revoked: upload: " + ("finished first" if proc.returncode == 0 else "refused in one line")
        )
        where = f"revoke seed {seed}"
        if proc.returncode == 0:  # it had finished everything before the server went down
            assert "copied" in out, where
        else:  # refused with the old key, or the server was down longer than the retries last
            one_line(err)
            # SeaweedFS may also answer 500 InternalError while it starts again: the server's fault,
            # still reported in one line naming it so (the copy retries it first, then gives up).
            causes = ("denied", "InvalidAccessKeyId", "403", "credentials", "connect", "Connection", "server's side")
            assert any(w in err for w in causes), f"{where}: {err}"
        store = own_store(own_server)
        partial = check_copy(store, prefix, source)
        assert not partial.problems, f"{where}: {partial.problems}"
        stale = own_cli.run("copy", str(tmp_path / "corpus"), dst, *PART)  # the old key: refused at once
        assert stale.returncode != 0 and len(stale.stderr.strip().splitlines()) == 1, stale.stderr
        own_cli.env |= {"AWS_ACCESS_KEY_ID": new.access_key, "AWS_SECRET_ACCESS_KEY": new.secret_key}
        rerun_whole(own_cli, str(tmp_path / "corpus"), dst, store, prefix, source, tally, where)
        assert not store.pending_uploads(prefix), f"{where}: orphaned uploads"
