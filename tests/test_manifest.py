"""Manifests and commit markers on plain data: validation, sharding, round trips."""

from __future__ import annotations

import pytest

from pipelines.core.manifest import Entry, Manifest, ManifestError, dataset_prefix, entries_from_json

pytestmark = pytest.mark.unit


def manifest(*entries: Entry) -> Manifest:
    return Manifest("ds", "v1", entries)


def test_round_trip_and_identity() -> None:
    m = manifest(Entry("b/2.bin", 2, "cc"), Entry("a.bin", 1, "aa"))
    assert [e.key for e in m.entries] == ["a.bin", "b/2.bin"]
    again = Manifest.from_json(m.to_json())
    assert again == m and again.checksum() == m.checksum()
    assert manifest(Entry("a.bin", 1, "ab")).checksum() != manifest(Entry("a.bin", 1, "aa")).checksum()
    assert m.prefix == "datasets/ds/v1" and m.total_bytes == 3 and m.complete


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("../escape", "'..' segments", id="dotdot"),
        pytest.param("/etc/passwd", "relative path", id="absolute"),
        pytest.param("a\\b", "relative path", id="backslash"),
        pytest.param("a\x00b", "relative path", id="nul"),
        pytest.param("a//b", "normal form", id="not-normal"),
        pytest.param("_tierflow_commit.json", "reserved prefix", id="reserved"),
    ],
)
def test_hostile_keys_are_refused(key: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        manifest(Entry(key, 1, "x"))
    with pytest.raises(ManifestError, match=message):
        entries_from_json([[key, 1, "x"]])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"dataset": "ds"}, "missing field 'version'", id="missing-field"),
        pytest.param(
            {
                "dataset": "ds",
                "version": "v1",
                "algorithm": "xxh3-128",
                "objects": 3,
                "bytes": 3,
                "entries": [["a", 1, "x"]],
            },
            "truncated",
            id="truncated",
        ),
        pytest.param(
            {"dataset": "ds", "version": "v1", "algorithm": "md5", "objects": 0, "bytes": 0, "entries": []},
            "unsupported checksum algorithm",
            id="algorithm",
        ),
        pytest.param(
            {
                "dataset": "ds",
                "version": "v1",
                "algorithm": "xxh3-128",
                "objects": 2,
                "bytes": 2,
                "entries": [["a", 1, "x"], ["a", 1, "x"]],
            },
            "listed twice",
            id="duplicate",
        ),
        pytest.param(
            {
                "dataset": "ds",
                "version": "v1",
                "algorithm": "xxh3-128",
                "objects": 1,
                "bytes": -1,
                "entries": [["a", -1, "x"]],
            },
            "invalid size",
            id="negative-size",
        ),
    ],
)
def test_bad_manifest_json_names_the_problem(data: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.from_json(data, "marker.json")
    assert str(info.value).startswith("marker.json: ")


def test_dataset_names_are_validated() -> None:
    with pytest.raises(ManifestError, match="invalid dataset name"):
        dataset_prefix("../x", "v1")
    with pytest.raises(ManifestError, match="invalid dataset version"):
        dataset_prefix("x", "v 1")


def test_shards_are_balanced_deterministic_and_cover_everything() -> None:
    sizes = [1000, 900, 800, 10, 10, 10, 10, 5, 0, 700]
    m = manifest(*(Entry(f"f{i}", s, "x") for i, s in enumerate(sizes)))
    shards = m.shards(3)
    assert len(shards) == 3
    keys = sorted(e.key for shard in shards for e in shard)
    assert keys == sorted(e.key for e in m.entries)
    loads = [sum(e.size for e in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(sizes)
    assert m.shards(3) == shards
    assert len(m.shards(50)) == len(sizes)  # never an empty shard
    assert manifest().shards(4) == []
