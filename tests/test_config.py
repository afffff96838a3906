"""Tier config: loading, defaults, and one clear line for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

pytestmark = pytest.mark.unit

GOOD = """
[tierflow]
state_dir = "state"

[s3_server]
port = 9000
conn_id = "s3_local"

[[tier]]
name = "object"
kind = "object"
url = "s3://training-data/team-a/"
conn_id = "s3_local"
capacity = "3.5 TB"
[tier.bandwidth]
read = "1.5 GiB/s"
write = "800 MB/s"
stream_read = "200 MB/s"
latency = "2 ms"
metadata_ops = "3500/s"
max_streams = 128

[[tier]]
name = "pfs"
kind = "pfs"
url = "file:///mnt/lustre/stage"
capacity = "1 PB"
[tier.bandwidth]
read = "100 GB/s"
write = "80 GB/s"
latency = "0.5 ms"
metadata_ops = "50000/s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    return path


def test_good_config_loads_into_frozen_dataclasses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_HOME", raising=False)
    cfg = load_config(write(tmp_path, GOOD))
    obj = cfg.tier("object")
    assert obj.bucket == "training-data"
    assert obj.root == "training-data/team-a"
    assert obj.capacity_bytes == 3_500_000_000_000
    assert obj.bandwidth.read_bps == 1.5 * 2**30
    assert obj.bandwidth.stream_read_bps == 200e6
    assert obj.bandwidth.stream_write_bps == 800e6  # defaults to the aggregate
    assert obj.bandwidth.latency_s == pytest.approx(0.002)
    assert obj.pool == "tierflow_object"
    pfs = cfg.tier("pfs")
    assert pfs.root == "/mnt/lustre/stage" and pfs.conn_id is None
    assert pfs.bandwidth.max_streams == 64
    assert not pfs.create  # a missing root is an error unless the config says create = true
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.buckets_for("s3_local") == ("training-data",)
    assert cfg.s3_server is not None and cfg.s3_server.endpoint_url == "http://127.0.0.1:9000"
    with pytest.raises(AttributeError):
        obj.name = "other"  # type: ignore[misc]
    with pytest.raises(KeyError, match=r"no tier named 'nvme'.*object, pfs"):
        cfg.tier("nvme")


def test_default_config_serves_the_embedded_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_CONFIG", raising=False)
    monkeypatch.setenv("TIERFLOW_HOME", str(tmp_path))
    cfg = load_config()
    assert cfg.source == str(DEFAULT_CONFIG)
    assert [t.kind for t in cfg.tiers] == ["object", "pfs", "nvme"]
    assert cfg.tier("pfs").root == str(tmp_path / "tiers" / "pfs")
    assert cfg.s3_server is not None
    assert cfg.tier("object").conn_id == cfg.s3_server.conn_id
    assert cfg.tier("pfs").create and cfg.tier("nvme").create  # directories under the state directory


def test_tierflow_config_env_points_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_CONFIG", str(write(tmp_path, GOOD)))
    assert load_config().tier("object").url == "s3://training-data/team-a/"


def _mutate(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        pytest.param(
            _mutate('metadata_ops = "3500/s"', 'metadata_ops = "3500/s"\nspeed = 3'),
            "tier 'object'.bandwidth.speed",
            None,
            id="unknown-key",
        ),
        pytest.param(_mutate('capacity = "3.5 TB"\n', ""), "tier 'object'.capacity", None, id="missing-field"),
        pytest.param(
            _mutate('read = "1.5 GiB/s"', 'read = "1.5 GiB"'),
            "tier 'object'.bandwidth.read",
            "'1.5 GiB'",
            id="bad-unit",
        ),
        pytest.param(
            _mutate('write = "800 MB/s"', 'write = "0 MB/s"'), "tier 'object'.bandwidth.write", "'0 MB/s'", id="zero"
        ),
        pytest.param(
            _mutate('capacity = "3.5 TB"', 'capacity = "-1 TB"'), "tier 'object'.capacity", "'-1 TB'", id="negative"
        ),
        pytest.param(
            _mutate('latency = "2 ms"', 'latency = "nan ms"'), "tier 'object'.bandwidth.latency", "'nan ms'", id="nan"
        ),
        pytest.param(_mutate('kind = "object"', 'kind = "tape"'), "tier 'object'.kind", "'tape'", id="bad-kind"),
        pytest.param(_mutate("s3://training-data/", "s3://tr/"), "tier 'object'.url", "'tr'", id="short-bucket"),
        pytest.param(
            _mutate('url = "file:///mnt/lustre/stage"', 'url = "file://relative/dir"'),
            "tier 'pfs'.url",
            None,
            id="relative-path",
        ),
        pytest.param(
            _mutate('conn_id = "s3_local"\ncapacity', "capacity"),
            "tier 'object'.conn_id",
            None,
            id="object-without-connection",
        ),
        pytest.param(
            _mutate("max_streams = 128", "max_streams = 0"),
            "tier 'object'.bandwidth.max_streams",
            "0",
            id="zero-streams",
        ),
        pytest.param(_mutate('name = "pfs"', 'name = "object"'), "tier 'object'.name", None, id="duplicate-name"),
        pytest.param(
            _mutate('stream_read = "200 MB/s"', 'stream_read = "20 GB/s"'),
            "tier 'object'.bandwidth",
            None,
            id="stream-faster-than-tier",
        ),
        pytest.param(
            _mutate("port = 9000", 'port = 9000\nhost = "0.0.0.0"'),
            "s3_server.host",
            "'0.0.0.0'",
            id="server-not-loopback",
        ),
        pytest.param(
            _mutate('url = "file:///mnt/lustre/stage"', 'url = "file:///mnt/lustre/stage"\ncreate = "yes"'),
            "tier 'pfs'.create",
            "'yes'",
            id="create-not-a-boolean",
        ),
        pytest.param(
            _mutate('conn_id = "s3_local"\ncapacity', 'conn_id = "s3_local"\ncreate = true\ncapacity'),
            "tier 'object'.create",
            None,
            id="create-on-an-object-tier",
        ),
        pytest.param(GOOD.replace("[[tier]]", "[[tiers]]"), "tiers", None, id="misspelt-table"),
        pytest.param(_mutate("[tierflow]", "[tierflow"), "not valid TOML", None, id="not-toml"),
    ],
)
def test_bad_config_gives_one_line_naming_file_field_and_value(
    tmp_path: Path, text: str, field: str, value: str | None
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert field in message
    if value is not None:
        assert f"(got {value})" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline: tier: missing required field$"):
        parse_config("", source="inline")


def test_cli_config_check(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "config", "check", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "object" in good.stdout and "s3://training-data/team-a/" in good.stdout and "1.61 GB/s" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(_mutate('write = "800 MB/s"', 'write = "fast"'))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"{bad}: tier 'object'.bandwidth.write" in result.stderr and "'fast'" in result.stderr


def test_nodes_with_their_queues() -> None:
    base = (
        '[[tier]]\nname = "nvme"\nkind = "nvme"\nurl = "file:///tmp/x"\ncapacity = "1 GB"\n'
        '[tier.bandwidth]\nread = "1 GB/s"\nwrite = "1 GB/s"\nlatency = "0.1 ms"\nmetadata_ops = "1000/s"\n'
    )
    cfg = parse_config(base + '[[node]]\nname = "node1"\nqueue = "nvme-node1"\n[[node]]\nname = "node2"\n')
    assert [(n.name, n.queue) for n in cfg.nodes] == [("node1", "nvme-node1"), ("node2", "node2")]
    assert parse_config(base).nodes == ()
    with pytest.raises(ConfigError, match=r"node\[1\]\.name: duplicate node name"):
        parse_config(base + '[[node]]\nname = "a"\n[[node]]\nname = "a"\n')
    with pytest.raises(ConfigError, match=r"node\[1\]\.queue: two nodes cannot share a queue"):
        parse_config(base + '[[node]]\nname = "a"\nqueue = "q"\n[[node]]\nname = "b"\nqueue = "q"\n')
    with pytest.raises(ConfigError, match=r"node\[0\]\.host: unknown key"):
        parse_config(base + '[[node]]\nname = "a"\nhost = "x"\n')


NODE_TIERS = (
    '[[tier]]\nname = "pfs"\nkind = "pfs"\nurl = "file:///tmp/pfs"\ncapacity = "10 GB"\n'
    '[tier.bandwidth]\nread = "1 GB/s"\nwrite = "1 GB/s"\nlatency = "0.1 ms"\nmetadata_ops = "1000/s"\n'
    '[[tier]]\nname = "nvme"\nkind = "nvme"\nurl = "file:///tmp/nvme"\ncapacity = "1 GB"\n'
    '[tier.bandwidth]\nread = "1 GB/s"\nwrite = "1 GB/s"\nlatency = "0.1 ms"\nmetadata_ops = "1000/s"\n'
    '[[node]]\nname = "node1"\n[node.tiers.nvme]\nurl = "file:///mnt/nvme1"\ncapacity = "2 GB"\n'
    '[[node]]\nname = "node2"\n'
)


def test_a_node_has_its_own_nvme_url_and_capacity_and_nothing_else_changes() -> None:
    cfg = parse_config(NODE_TIERS)
    assert cfg.node is None and cfg.tier("nvme").url == "file:///tmp/nvme"
    node1 = cfg.for_node("node1")
    assert node1.node == "node1"
    assert (node1.tier("nvme").url, node1.tier("nvme").capacity_bytes) == ("file:///mnt/nvme1", 2 * 10**9)
    assert node1.tier("pfs") == cfg.tier("pfs") and node1.nodes == cfg.nodes
    node2 = cfg.for_node("node2")  # no values of its own: the tier's
    assert node2.tier("nvme") == cfg.tier("nvme") and node2.node == "node2"
    with pytest.raises(ConfigError, match=r"no \[\[node\]\] named 'node3' \(nodes: node1, node2\)"):
        cfg.for_node("node3")
    assert node1.for_node("node2") == node2 and node2.for_node("node1") == node1  # from any node's view


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('[node.tiers.pfs]\nurl = "file:///x"\n', r"node 'n'\.tiers\.pfs: only nvme tiers are node-local"),
        ('[node.tiers.nosuch]\nurl = "file:///x"\n', r"node 'n'\.tiers\.nosuch: unknown key \(allowed: nvme, pfs\)"),
        ('[node.tiers.nvme]\nurl = "relative/x"\n', r"node 'n'\.tiers\.nvme\.url: a nvme tier needs a file:///"),
        ('[node.tiers.nvme]\ncapacity = "lots"\n', r"node 'n'\.tiers\.nvme\.capacity"),
        ("[node.tiers.nvme]\nbandwidth = {}\n", r"node 'n'\.tiers\.nvme\.bandwidth: unknown key"),
    ],
)
def test_node_tier_values_are_checked_in_one_line(table: str, error: str) -> None:
    base = NODE_TIERS.split("[[node]]")[0]
    with pytest.raises(ConfigError, match=error):
        parse_config(base + '[[node]]\nname = "n"\n' + table)


def test_tierflow_node_selects_the_node_and_a_wrong_name_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, NODE_TIERS)
    monkeypatch.setenv("TIERFLOW_NODE", "node1")
    assert load_config(path).tier("nvme").url == "file:///mnt/nvme1"
    monkeypatch.setenv("TIERFLOW_NODE", "node9")
    with pytest.raises(ConfigError, match=r"^TIERFLOW_NODE='node9': .*no \[\[node\]\] named 'node9'"):
        load_config(path)
    monkeypatch.setenv("TIERFLOW_NODE", "")
    assert load_config(path).node is None


def test_a_per_node_task_on_another_nodes_worker_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.operators.context import load_config_in_task, log, placement

    path = str(write(tmp_path, NODE_TIERS))
    monkeypatch.setenv("TIERFLOW_NODE", "node1")
    mine = load_config_in_task(path, "node1")
    assert mine.tier("nvme").url == "file:///mnt/nvme1"
    assert placement(mine)["node"] == "node1" and str(placement(mine)["worker"]).startswith("node1@")
    with pytest.raises(AirflowFailException, match="task for node 'node2' ran on a worker of node 'node1'"):
        load_config_in_task(path, "node2")  # its queue reached the wrong worker: never fill this NVMe for it
    monkeypatch.delenv("TIERFLOW_NODE")
    said = io.StringIO()
    handler = logging.StreamHandler(said)  # on the logger itself: Airflow's logging setup replaces root's handlers
    log.addHandler(handler)
    try:
        assert load_config_in_task(path, "node1").tier("nvme").url == "file:///mnt/nvme1"
    finally:
        log.removeHandler(handler)
    assert "TIERFLOW_NODE is not set on this worker: taking node 'node1'" in said.getvalue()


MINIMAL = """
[tierflow]
state_dir = "{root}"
[s3_server]
port = 8533
conn_id = "tierflow_s3"
[[tier]]
name = "object"
kind = "object"
url = "s3://bucket/x/"
conn_id = "tierflow_s3"
capacity = "1 GB"
[tier.bandwidth]
read = "1 GB/s"
write = "1 GB/s"
latency = "1 ms"
metadata_ops = "100/s"
[[tier]]
name = "nvme"
kind = "nvme"
url = "file://{root}"
capacity = "1 GB"
[tier.bandwidth]
read = "1 GB/s"
write = "1 GB/s"
latency = "1 ms"
metadata_ops = "100/s"
[[node]]
name = "node1"
[node.tiers.nvme]
url = "file://{root}"
[node.kubernetes]
hostname = "h1"
[kubernetes]
pfs_claim = "pfs"
[lineage]
mlflow_tracking_uri = "sqlite:///mlflow.db"
"""

#: Where an unknown key goes to make each table list the keys it allows, and that table's name in the reference.
TABLES = {
    "[tierflow]": "tierflow",
    "[s3_server]": "s3_server",
    'name = "object"': "tier",
    'read = "1 GB/s"': "tier.bandwidth",
    'name = "node1"': "node",
    "[node.tiers.nvme]": "node.tiers.<tier>",
    "[node.kubernetes]": "node.kubernetes",
    "[kubernetes]": "kubernetes",
    "[lineage]": "lineage",
}


def test_the_readme_reference_names_every_key_the_config_takes(tmp_path) -> None:
    """Each table is given an unknown key; every key its error says it allows is in the README's reference."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- config-reference -->", 1)[1].split("<!-- /config-reference -->", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", block, re.M))
    text = MINIMAL.format(root=tmp_path)
    assert parse_config(text).nodes[0].hostname == "h1"  # the minimal config itself is valid
    expected = set()
    for anchor, table in TABLES.items():
        with pytest.raises(ConfigError, match="unknown key") as err:
            parse_config(text.replace(anchor, anchor + "\nzz_unknown = 1", 1))
        allowed = re.search(r"allowed: ([^)]*)\)", str(err.value))
        assert allowed, str(err.value)
        tables_within = {"tier": {"bandwidth"}, "node": {"tiers", "kubernetes"}}.get(table, set())
        keys = set(allowed.group(1).split(", ")) - tables_within
        expected |= {f"{table}.{k}" for k in keys}
    assert expected - documented == set(), "keys missing from the README's configuration reference"
    assert documented - expected == set(), "the reference names keys the config does not take"
