"""Every ``tierflow`` command group as a user runs it: real files, tiers named by the user, good and bad input.

The tier config here has a PFS (``lustre``) and an NVMe cache (``localssd``) and no object store,
so every command runs on real directories. Each bad input must end in one line naming what is
wrong and the exit status of the one error map: 2 for input the user can fix, 1 for a failed job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from pipelines.cli.main import main
from pipelines.core.config import DEFAULT_CONFIG as DEFAULT_TIERS

pytestmark = pytest.mark.unit

CONFIG = """
[tierflow]
state_dir = "{state}"

[[tier]]
name = "lustre"
kind = "pfs"
url = "file://{root}/lustre"
capacity = "1 GB"
[tier.bandwidth]
read = "500 MB/s"
write = "400 MB/s"
latency = "1 ms"
metadata_ops = "2000/s"
max_streams = 8

[[tier]]
name = "localssd"
kind = "nvme"
url = "file://{root}/localssd"
capacity = "1 GB"
[tier.bandwidth]
read = "1 GB/s"
write = "800 MB/s"
latency = "0.1 ms"
metadata_ops = "10000/s"
max_streams = 8
"""


@pytest.fixture
def tierflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``tierflow ARGS`` in process on this test's config; returns (exit status, stdout, stderr)."""
    for d in ("lustre", "localssd"):
        (tmp_path / d).mkdir()
    (tmp_path / "tiers.toml").write_text(CONFIG.format(state=tmp_path / "state", root=tmp_path))
    monkeypatch.setenv("TIERFLOW_CONFIG", str(tmp_path / "tiers.toml"))
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path / "state"))

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse refusing the arguments, as the console script would exit
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def corpus(root: Path, files: int = 9) -> Path:
    for i in range(files):
        (root / f"part-{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"part-{i % 3}" / f"{i:02d}.bin").write_bytes(os.urandom(500 + 101 * i))
    return root


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("_tierflow")
    }


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_config_check(tierflow, tmp_path: Path) -> None:
    code, out, _ = tierflow("config", "check")
    assert code == 0 and "lustre" in out and "localssd" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.format(state=tmp_path, root=tmp_path).replace('write = "400 MB/s"', 'write = "0 MB/s"'))
    code, _, err = tierflow("config", "check", str(bad))
    assert code == 2 and "tier 'lustre'.bandwidth.write" in one_line(err)


def test_config_check_shows_each_node_and_which_one_this_is(tierflow, tmp_path: Path, monkeypatch) -> None:
    nodes = tmp_path / "nodes.toml"
    text = CONFIG.format(state=tmp_path, root=tmp_path)
    nodes.write_text(
        text + '\n[[node]]\nname = "n1"\n[node.tiers.localssd]\nurl = "file:///mnt/ssd1"\n[[node]]\nname = "n2"\n'
    )
    monkeypatch.setenv("TIERFLOW_NODE", "n1")
    code, out, _ = tierflow("config", "check", str(nodes))
    assert code == 0 and "node n1: queue n1; localssd at file:///mnt/ssd1 (this process: TIERFLOW_NODE)" in out
    assert f"node n2: queue n2; localssd at file://{tmp_path}/localssd" in out
    code, out, _ = tierflow("--json", "config", "check", str(nodes))
    assert code == 0 and json.loads(out)["this_node"] == "n1"
    monkeypatch.setenv("TIERFLOW_NODE", "n3")
    code, _, err = tierflow("config", "check", str(nodes))
    assert code == 2 and "TIERFLOW_NODE='n3'" in one_line(err) and "nodes: n1, n2" in err


def test_datasets_publish_stage_ls_with_role_defaults_and_bad_input(tierflow, tmp_path: Path) -> None:
    src = corpus(tmp_path / "corpus")
    code, out, err = tierflow("datasets", "publish", str(src), "--name", "c", "--version", "v1", "--tier", "lustre")
    assert code == 0, err
    assert "published c/v1 on lustre" in out
    code, out, err = tierflow("datasets", "stage", "c", "v1", "--from", "lustre", "--to", "localssd")
    assert code == 0, err
    assert digests(tmp_path / "localssd" / "datasets" / "c" / "v1") == digests(src)
    code, out, _ = tierflow("datasets", "ls")
    assert code == 0 and "lustre" in out and "localssd" in out and out.count("committed") >= 2
    code, _, err = tierflow("datasets", "ls", "--tier", "tape")
    assert code == 2 and "no tier named 'tape'" in one_line(err)
    code, _, err = tierflow("datasets", "stage", "c", "v9", "--from", "lustre", "--to", "localssd")
    assert code == 2 and "dataset c/v9 is not committed on tier lustre" in one_line(err)
    missing = tmp_path / "missing"
    code, _, err = tierflow("datasets", "publish", str(missing), "--name", "c", "--version", "v2", "--tier", "lustre")
    assert code == 2 and f"{missing}: no such directory to publish" in one_line(err)
    (tmp_path / "empty").mkdir()
    code, _, err = tierflow(
        "datasets", "publish", str(tmp_path / "empty"), "--name", "c", "--version", "v2", "--tier", "lustre"
    )
    assert code == 2 and "no files to publish" in one_line(err)
    assert not (tmp_path / "lustre" / "datasets" / "c" / "v2").exists()  # nothing committed, nothing left
    code, _, err = tierflow("datasets", "publish", str(src), "--name", "c", "--version", "v2")
    assert code == 2 and "no tier of kind 'object'" in one_line(err)  # the default is the object role


def test_a_committed_version_is_immutable_unless_replaced(tierflow, tmp_path: Path) -> None:
    """Other content under a published name is refused; --replace leaves exactly the new files (#17 item 9)."""
    old = corpus(tmp_path / "old", files=12)
    new = tmp_path / "new"
    (new / "data").mkdir(parents=True)
    for i in range(4):
        (new / "data" / f"{i}.bin").write_bytes(os.urandom(700 + i))
    publish = ("datasets", "publish", "--name", "big", "--version", "v1", "--tier", "lustre")
    assert tierflow(*publish[:2], str(old), *publish[2:])[0] == 0
    assert tierflow("datasets", "stage", "big", "v1", "--from", "lustre", "--to", "localssd")[0] == 0
    version = tmp_path / "lustre" / "datasets" / "big" / "v1"
    marker = (version / "_tierflow_commit.json").read_bytes()
    code, _, err = tierflow(*publish[:2], str(new), *publish[2:])
    assert code == 2 and "is already committed with other content" in one_line(err) and "--replace" in err
    assert (version / "_tierflow_commit.json").read_bytes() == marker and digests(version) == digests(old)
    code, out, err = tierflow(*publish[:2], str(old), *publish[2:])  # the same content again: a no-op rerun
    assert code == 0 and "0 copied" in out, (out, err)
    code, out, err = tierflow(*publish[:2], str(new), *publish[2:], "--replace")
    assert code == 0, err
    assert digests(version) == digests(new)  # none of the 12 earlier files is left under the version
    assert tierflow("datasets", "stage", "big", "v1", "--from", "lustre", "--to", "localssd")[0] == 0
    assert digests(tmp_path / "localssd" / "datasets" / "big" / "v1") == digests(new)


def test_cache_evict_pin_unpin(tierflow, tmp_path: Path) -> None:
    src = corpus(tmp_path / "corpus")
    assert tierflow("datasets", "publish", str(src), "--name", "c", "--version", "v1", "--tier", "lustre")[0] == 0
    assert tierflow("datasets", "stage", "c", "v1", "--from", "lustre", "--to", "localssd")[0] == 0
    code, out, err = tierflow("cache", "pin", "c", "v1", "--holder", "job-1", "--ttl", "1 h")
    assert code == 0 and "pinned c/v1 on localssd for job-1" in out, err  # the NVMe role's tier by default
    code, _, err = tierflow("cache", "evict", "--need", "1 GB", "--dry-run")  # room only if c/v1 went
    assert code == 1 and "job-1" in one_line(err)  # the pin blocks it: a failed job, saying why
    assert tierflow("cache", "unpin", "c", "v1", "--holder", "job-1")[0] == 0
    code, out, _ = tierflow("cache", "evict", "--need", "1 GB", "--dry-run")
    assert code == 0 and "would evict c/v1" in out
    assert (tmp_path / "localssd" / "datasets" / "c" / "v1").is_dir()  # a dry run deletes nothing
    code, _, err = tierflow("cache", "evict", "--need", "5 GBs")
    assert code == 2 and one_line(err).startswith("tierflow cache evict: --need: unknown size unit 'GBs'")
    code, _, err = tierflow("cache", "pin", "c", "v1", "--holder", "job-1", "--ttl", "soon")
    assert code == 2 and "--ttl" in one_line(err)


def test_checkpoints_ls_promote_prune_restore(tierflow, tmp_path: Path) -> None:
    from pipelines.devtools.corpus import write_checkpoint

    for step in (100, 200, 300):
        write_checkpoint(tmp_path / "localssd", "run1", step, shards=2, metrics={"loss": 1.0 / step})
    code, out, err = tierflow("checkpoints", "promote")
    assert code == 0 and out.count("-> lustre") == 3, err
    code, out, _ = tierflow("checkpoints", "ls")
    assert code == 0 and out.count("committed") == 6
    code, out, err = tierflow("checkpoints", "prune", "--keep-nvme", "latest=1", "--keep-pfs", "latest=5")
    assert code == 0 and "localssd: deleted 2 checkpoints (10 objects)" in out, err
    assert sorted(p.name for p in (tmp_path / "localssd" / "checkpoints" / "run1").iterdir()) == ["step_000300"]
    code, out, err = tierflow("checkpoints", "restore", "run1", "--step", "100")
    assert code == 0 and "restored run1/step_000100 (step 100) from lustre" in out, err
    code, _, err = tierflow("checkpoints", "prune", "--keep-nvme", "")
    assert code == 2 and "at least one of latest, every, best" in one_line(err)  # empty is refused, not the default
    code, _, err = tierflow("checkpoints", "restore", "nobody")
    assert code == 1 and "run 'nobody'" in one_line(err)
    code, _, err = tierflow("checkpoints", "ls", "--tier", "tape")
    assert code == 2 and "no tier named 'tape'" in one_line(err)


def test_a_missing_tier_root_is_an_error_never_recreated(tierflow, tmp_path: Path) -> None:
    """An NVMe root that is gone (an unmounted file system) is refused, not written into (#17 item 4)."""
    from pipelines.devtools.corpus import write_checkpoint

    write_checkpoint(tmp_path / "localssd", "run1", 100, shards=1, metrics={"loss": 1.0})
    assert tierflow("checkpoints", "promote")[0] == 0
    src = corpus(tmp_path / "corpus", files=2)
    assert tierflow("datasets", "publish", str(src), "--name", "c", "--version", "v1", "--tier", "lustre")[0] == 0
    shutil.rmtree(tmp_path / "localssd")
    for args in (
        ("checkpoints", "prune", "--keep-nvme", "latest=1"),
        ("checkpoints", "restore", "run1"),
        ("datasets", "ls", "--tier", "localssd"),
    ):
        code, _, err = tierflow(*args)
        assert code == 2, (args, err)
        assert f"tier 'localssd': its root {tmp_path / 'localssd'} does not exist" in one_line(err), args
        assert not (tmp_path / "localssd").exists(), f"{args} re-created the missing root"
    code, out, err = tierflow("datasets", "ls")  # every tier: the missing one is named, the others still listed
    assert code == 1 and "tier 'localssd': its root" in err and out.splitlines()[1].split()[:3] == ["lustre", "c", "v1"]
    assert not (tmp_path / "localssd").exists()


def test_plan_calibrate_and_codec_refuse_bad_input_in_one_line(tierflow, tmp_path: Path) -> None:
    code, _, err = tierflow("plan", "--dataset-size", "2 TBs")
    assert code == 2 and "unknown size unit 'TBs'" in one_line(err)
    code, _, err = tierflow("calibrate", "--budget", "lots")
    assert code == 2 and one_line(err).startswith("tierflow calibrate: --budget:")
    code, _, err = tierflow("compress", str(tmp_path / "nope"), str(tmp_path / "x.zst"))
    assert code == 2 and "no such file" in one_line(err)
    raw = tmp_path / "a.txt"
    raw.write_bytes(b"tierflow " * 1000)
    code, _, err = tierflow("compress", str(raw), str(tmp_path / "a.zst"), "--level", "99")
    assert code == 2 and "level" in one_line(err)


@pytest.mark.integration
def test_an_unreachable_object_store_during_prune_ends_in_one_line_and_deletes_nothing(
    tierflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on the endpoint (as when the S3 server is stopped): one line, exit 1, NVMe untouched."""
    from pipelines.devtools.corpus import write_checkpoint
    from pipelines.devtools.s3server import free_port

    text = (tmp_path / "tiers.toml").read_text()
    (tmp_path / "tiers.toml").write_text(
        text
        + """
[[tier]]
name = "s3main"
kind = "object"
url = "s3://gone-bucket/x/"
conn_id = "unused"
capacity = "1 GB"
[tier.bandwidth]
read = "100 MB/s"
write = "100 MB/s"
latency = "1 ms"
metadata_ops = "1000/s"
max_streams = 4
"""
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for step in (1, 2, 3):
        write_checkpoint(tmp_path / "localssd", "r", step, shards=1)
    before = sorted(p.name for p in (tmp_path / "localssd" / "checkpoints" / "r").iterdir())
    code, _, err = tierflow("checkpoints", "prune", "--keep-nvme", "latest=0")
    line = one_line(err)
    assert (
        code == 1 and f"cannot reach {os.environ['AWS_ENDPOINT_URL']} (connection refused): check the endpoint" in line
    )
    assert sorted(p.name for p in (tmp_path / "localssd" / "checkpoints" / "r").iterdir()) == before


def test_copy_and_calibrate_refuse_what_would_do_nothing(tierflow, tmp_path: Path) -> None:
    """A missing or empty source is an error naming it (exit 1) and creates nothing, at either end."""
    missing, dest = tmp_path / "missing", tmp_path / "out" / "deeper"
    code, _, err = tierflow("copy", str(missing), str(dest))
    assert code == 1 and f"{missing}: no such file or directory" in one_line(err)
    assert not missing.exists() and not (tmp_path / "out").exists()  # neither end was created
    (tmp_path / "empty").mkdir()
    code, _, err = tierflow("copy", str(tmp_path / "empty"), str(dest))
    assert code == 1 and "nothing there to copy" in one_line(err)
    assert not (tmp_path / "out").exists()
    code, _, err = tierflow("calibrate", "--tier", "tape")
    assert code == 2 and "no tier named 'tape'" in one_line(err)


def test_copy_has_the_manners_of_s5cmd_and_rclone(tierflow, tmp_path: Path) -> None:
    """Same place and inside itself refused; one file copied; numbers checked first; units echoed as given."""
    src = corpus(tmp_path / "src")
    code, _, err = tierflow("copy", str(src), str(src))
    assert code == 2 and "source and destination are the same place" in one_line(err)
    code, _, err = tierflow("copy", str(src), str(src / "part-0" / "again"))
    assert code == 2 and "the destination is inside the source" in one_line(err)
    assert not (src / "part-0" / "again").exists()
    for bad, says in (
        (("--concurrency", "0"), "argument --concurrency: must be at least 1 (got 0)"),
        (("--concurrency", "many"), "argument --concurrency: not a whole number: 'many'"),
        (("--part-size", "8 XB"), "argument --part-size: unknown size unit 'XB'"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
    ):
        code, out, err = tierflow("copy", str(src), str(tmp_path / "never"), *bad)
        assert code == 2 and f"tierflow copy: error: {says}" in err, (bad, err)
        assert err.startswith("usage: tierflow copy "), err  # the command's usage, not the top level's
    assert not (tmp_path / "never").exists()
    one = src / "part-1" / "01.bin"
    code, out, err = tierflow("copy", str(one), str(tmp_path / "single"), "--part-size", "8 MB")
    assert code == 0 and out.startswith("copied 1 object, 601 B (1 copied, 0 already there)"), err
    assert out.rstrip().endswith("part size 8 MB")
    assert (tmp_path / "single" / "01.bin").read_bytes() == one.read_bytes()
    inside = tmp_path / "lustre" / "sub" / "f.bin"  # a file inside a configured tier, below its root
    inside.parent.mkdir()
    inside.write_bytes(b"in a tier")
    code, _, err = tierflow("copy", str(inside), str(tmp_path / "from-tier"))
    assert code == 0 and (tmp_path / "from-tier" / "f.bin").read_bytes() == b"in a tier", err
    # Global options after the subcommand; --json gives the summary. A rerun local to local skips
    # what the first run wrote (the copy index), and copies again what changed on either side.
    code, out, err = tierflow("copy", str(src), str(tmp_path / "tree"), "--json")
    first = json.loads(out)
    assert code == 0 and (first["objects"], first["copied_objects"], first["failed_objects"]) == (9, 9, 0), err
    assert digests(src) == digests(tmp_path / "tree")
    overwritten = tmp_path / "tree" / "part-1" / "01.bin"  # by someone else, in place, with as many bytes
    overwritten.write_bytes(bytes(reversed(overwritten.read_bytes())))
    code, out, _ = tierflow(
        "copy", str(src), str(tmp_path / "tree"), "--json", "--config", os.environ["TIERFLOW_CONFIG"]
    )
    again = json.loads(out)
    assert code == 0 and (again["copied_objects"], again["skipped_objects"]) == (1, 8), out
    assert digests(src) == digests(tmp_path / "tree")
    code, out, err = tierflow("--json", "copy", str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert code == 1 and out == "" and not (tmp_path / "x").exists()
    assert json.loads(err) == {
        "command": "tierflow copy",
        "error": f"{tmp_path / 'nowhere'}: no such file or directory",
        "exit_code": 1,
    }


def test_version_and_json_on_every_command_that_prints_results(tierflow, tmp_path: Path, capsys) -> None:
    """--version; --json on each command is one JSON document; errors under --json are JSON on stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("tierflow ")
    src = corpus(tmp_path / "corpus")
    runs = {
        ("config", "check"): lambda d: [t["name"] for t in d["tiers"]] == ["lustre", "localssd"],
        ("datasets", "ls"): lambda d: d == {"versions": [], "unavailable": []},
        ("datasets", "publish", str(src), "--name", "c", "--version", "v1", "--to", "lustre"): lambda d: (
            (d["dataset"], d["tier"], d["copied_objects"]) == ("c", "lustre", 9)
        ),
        ("datasets", "stage", "c", "v1", "--from", "lustre", "--to", "localssd"): lambda d: (
            not d["already_committed"] and d["copied_objects"] == 9
        ),
        ("datasets", "ls", "--tier", "localssd"): lambda d: (
            [(v["dataset"], v["committed"]) for v in d["versions"]] == [("c", True)]
        ),
        ("cache", "pin", "c", "v1", "--holder", "job-7"): lambda d: d["holder"] == "job-7",
        ("cache", "evict", "--dry-run"): lambda d: d["dry_run"] and d["evicted"] == [],
        ("cache", "unpin", "c", "v1", "--holder", "job-7"): lambda d: d["dataset"] == "c",
        ("checkpoints", "ls"): lambda d: d == {"checkpoints": []},
        ("checkpoints", "promote"): lambda d: d["promoted"] == [],
        ("checkpoints", "prune", "--dry-run"): lambda d: set(d["tiers"]) == {"localssd", "lustre"},
    }
    for args, holds in runs.items():
        code, out, err = tierflow(*args, "--json")
        assert code == 0, (args, err)
        assert holds(json.loads(out)), (args, out)
    code, out, err = tierflow("plan", "--dataset-size", "1 TB", "--json", "--config", str(DEFAULT_TIERS))
    assert code == 0 and json.loads(out)["energy_kWh"] > 0 and json.loads(out)["energy_J_per_GB"]["object"] == 10
    code, out, err = tierflow("datasets", "ls", "--tier", "tape", "--json")
    assert code == 2 and out == "" and "no tier named 'tape'" in json.loads(err)["error"]
    assert json.loads(err)["exit_code"] == 2
    # Arguments argparse refuses (before --json itself is parsed) are JSON too, wherever --json stands.
    refusals = {
        ("copy", "a", "b", "--part-size", "5 XB", "--json"): ("tierflow copy", "unknown size unit 'XB'"),
        ("--json", "datasets"): ("tierflow datasets", "required: action"),
    }
    for args, (command, says) in refusals.items():
        code, out, err = tierflow(*args)
        refused = json.loads(err)
        assert (code, out, refused["exit_code"], refused["command"]) == (2, "", 2, command), (args, err)
        assert says in refused["error"], (args, err)
    code, out, err = tierflow("copy", "a", "b", "--part-size", "5 XB")
    assert code == 2 and err.startswith("usage: tierflow copy") and "unknown size unit 'XB'" in err


def test_human_output_has_headers_units_and_says_when_nothing_is_there(tierflow, tmp_path: Path) -> None:
    code, out, _ = tierflow("datasets", "ls")
    assert code == 0 and out.strip() == "no dataset versions on lustre, localssd"
    code, out, _ = tierflow("checkpoints", "ls", "--run", "r9")
    assert code == 0 and out.strip() == "no checkpoints of run r9 on localssd, lustre"
    code, out, _ = tierflow("checkpoints", "promote")
    assert code == 0 and out.startswith("nothing to promote")
    tierflow("datasets", "publish", str(corpus(tmp_path / "c")), "--name", "c", "--version", "v1", "--to", "lustre")
    code, out, _ = tierflow("datasets", "ls")
    header, row = out.splitlines()
    assert header.split() == ["tier", "dataset", "version", "state", "size", "pinned", "by"]
    assert row.split()[:4] == ["lustre", "c", "v1", "committed"] and row.split()[5:] == ["kB", "-"]


def _stderr_of(args: list[str], env: dict[str, str], on_terminal: bool) -> tuple[int, str]:
    """Run ``tierflow ARGS`` with stderr on a pseudo-terminal (as in a shell) or a pipe (as in a script)."""
    import pty
    import subprocess
    import sys

    command = [sys.executable, "-m", "pipelines.cli", *args]
    if not on_terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=120), seen.decode(errors="replace")


def test_a_progress_bar_on_a_terminal_and_not_in_a_pipe(tierflow, tmp_path: Path) -> None:
    src = corpus(tmp_path / "src", files=60)
    env = dict(os.environ)
    code, terminal = _stderr_of(["copy", str(src), str(tmp_path / "a")], env, on_terminal=True)
    assert code == 0 and re.search(r"\d+%\|.*\| .*B/.*B .*/s ETA .* \d+/60 objects", terminal), terminal
    code, piped = _stderr_of(["copy", str(src), str(tmp_path / "b")], env, on_terminal=False)
    assert code == 0 and piped == ""
    code, as_json = _stderr_of(["copy", str(src), str(tmp_path / "c"), "--json"], env, on_terminal=True)
    assert code == 0 and "%|" not in as_json  # --json is for scripts: no bar even on a terminal
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"tierflow progress " * 200_000)
    code, terminal = _stderr_of(["compress", str(raw), str(tmp_path / "raw.zst")], env, on_terminal=True)
    assert code == 0 and re.search(r"compress raw\.txt: +\d+%\|", terminal), terminal


def test_calibrate_check_stores_nothing_and_says_whether_the_fit_agrees(tierflow, tmp_path: Path) -> None:
    """--check measures and compares, exit 1 when the fit disagrees; a plain run stores or keeps a candidate."""
    import json

    profiles = tmp_path / "state" / "profiles"
    code, out, _ = tierflow("calibrate", "--tier", "lustre", "--repeats", "2", "--budget", "8 MiB", "--check", "--json")
    result = json.loads(out)["profiles"]["lustre"]
    assert result["status"] == "checked" and result["repeats"] == 2 and result["against"] == "configured profile"
    assert code == (0 if result["agrees"] else 1)
    assert not profiles.exists() or not list(profiles.iterdir())  # a check stores nothing
    code, out, _ = tierflow("calibrate", "--tier", "lustre", "--repeats", "2", "--budget", "8 MiB", "--apply")
    assert code == 0 and "stored: the fit" in out and (profiles / "lustre.json").is_file()
    code, _, err = tierflow("calibrate", "--repeats", "0")
    assert code == 2 and "--repeats: must be at least 1" in err.strip().splitlines()[-1]  # after the usage
    code, _, err = tierflow("calibrate", "--check", "--apply")
    assert code == 2 and "not allowed with argument" in err.strip().splitlines()[-1]
