"""Shards validated while they are decoded, in batches, with the verdicts of one whole batch.

Real shards in real files and Great Expectations itself. ``BATCH_BYTES`` is set small so that a
3,000-record shard is read in many batches; the same shard with the default batch size is one
GX batch, the reference each streamed verdict must equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.datasets import validation
from pipelines.datasets.validation import iter_shard, load_suite, load_suite_file, validate_local_shard
from pipelines.devtools.corpus import jsonl, records

pytestmark = pytest.mark.unit

SUITE = load_suite("synthetic")
SMALL_BATCH = 64 * 1024


def corpus(n: int = 3000) -> list[dict]:
    rows = list(records(11, 0, n))
    rows[10]["lang"], rows[2900]["lang"] = "xx", "yy"  # in-set fails in the first batch and the last
    rows[2500]["id"] = rows[5]["id"]  # a duplicate id many batches apart
    rows[1500]["tokens"] = 0  # out of range in a middle batch
    return rows


def write_zst(path: Path, rows: list[dict], frames: int = 4) -> Path:
    """A shard of several zstd frames (each with its checksum), as the shard builder writes them."""
    data = jsonl(rows)
    step = -(-len(data) // frames)
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
    path.write_bytes(b"".join(cctx.compress(data[i : i + step]) for i in range(0, len(data), step)))
    return path


def verdicts(report: validation.ShardReport) -> list[str]:
    return sorted(f.line() for f in report.findings)


@pytest.mark.parametrize("fmt", [pytest.param("jsonl.zst", id="jsonl-zst"), pytest.param("parquet", id="parquet")])
def test_a_shard_read_in_batches_gets_the_verdicts_of_one_batch(tmp_path: Path, monkeypatch, fmt: str) -> None:
    rows = corpus()
    path = tmp_path / f"s.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows, schema=SUITE.arrow_schema()), path, row_group_size=500)
    else:
        write_zst(path, rows)
    whole = validate_local_shard(str(path), path.name, SUITE)
    assert len(list(iter_shard(str(path), path.name, SUITE))) == 1
    monkeypatch.setattr(validation, "BATCH_BYTES", SMALL_BATCH)
    assert len(list(iter_shard(str(path), path.name, SUITE))) >= 3  # Parquet's batches hold at least 1,024 rows
    streamed = validate_local_shard(str(path), path.name, SUITE)
    assert streamed.rows == whole.rows == len(rows)
    checks = {(f.check, f.column) for f in streamed.findings}
    assert checks == {
        ("expect_column_values_to_be_in_set", "lang"),
        ("expect_column_values_to_be_unique", "id"),
        ("expect_column_values_to_be_between", "tokens"),
    }, verdicts(streamed)
    assert verdicts(streamed) == verdicts(whole)
    in_set = next(f for f in streamed.findings if f.column == "lang")
    assert "2 of 3000 rows unexpected, e.g. ['xx', 'yy']" in in_set.detail
    stats = streamed.statistics
    assert (stats["evaluated_expectations"], stats["unsuccessful_expectations"]) == (8, 3)


def test_mostly_is_judged_over_the_whole_shard_not_per_batch(tmp_path: Path, monkeypatch) -> None:
    """2 bad rows of 3,000 pass ``mostly: 0.999`` although the batch holding them alone would not."""
    suite_file = tmp_path / "mostly.json"
    suite_file.write_text(
        json.dumps(
            {
                "schema": dict(SUITE.schema),
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_in_set",
                        "kwargs": {"column": "lang", "mostly": 0.999, "value_set": ["en", "de", "fr", "es", "ja"]},
                    },
                    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "tokens", "min_value": 1}},
                ],
            }
        )
    )
    suite = load_suite_file(suite_file, "synthetic")
    monkeypatch.setattr(validation, "BATCH_BYTES", SMALL_BATCH)
    rows = corpus()
    passing = validate_local_shard(str(write_zst(tmp_path / "a.jsonl.zst", rows)), "a.jsonl.zst", suite)
    assert passing.passed, verdicts(passing)
    for i in (100, 200):
        rows[i]["lang"] = "zz"
    failing = validate_local_shard(str(write_zst(tmp_path / "b.jsonl.zst", rows)), "b.jsonl.zst", suite)
    assert [f.line().split(":")[0] for f in failing.findings] == ["expect_column_values_to_be_in_set [lang]"]
    assert "4 of 3000 rows unexpected" in failing.findings[0].detail


def test_a_corrupt_frame_after_good_batches_is_the_only_finding(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(validation, "BATCH_BYTES", SMALL_BATCH)
    path = write_zst(tmp_path / "c.jsonl.zst", corpus())
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x08  # in the last frame: earlier batches have been validated by then
    path.write_bytes(bytes(data))
    report = validate_local_shard(str(path), path.name, SUITE)
    assert [f.check for f in report.findings] == ["integrity"], verdicts(report)
    assert "c.jsonl.zst" in report.findings[0].detail and report.rows == 0


def test_records_that_do_not_parse_and_an_empty_shard(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.zst"
    bad.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b'{"id": "seven"}\n'))
    report = validate_local_shard(str(bad), bad.name, SUITE)
    assert [f.check for f in report.findings] == ["integrity"] and "records do not parse" in report.findings[0].detail
    empty = tmp_path / "empty.jsonl.zst"
    empty.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b""))
    report = validate_local_shard(str(empty), empty.name, SUITE)
    assert [f.check for f in report.findings] == ["expect_table_row_count_to_be_between"] and report.rows == 0
