"""Dataset preparation against SeaweedFS: shards, round trips, bad input, validation and the quarantine policy."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.datasets.preparation import (
    QUARANTINE_DIR,
    InputError,
    PublishError,
    build_group,
    plan_preparation,
    prepare,
    publish,
    read_records,
    validate_shard,
)
from pipelines.datasets.validation import load_suite
from pipelines.devtools.corpus import generate_corpus
from pipelines.storage.commit import read_commit
from pipelines.storage.tier import Tier

pytestmark = pytest.mark.integration

SUITE = load_suite("synthetic")


def upload(tier: Tier, prefix: str, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        tier.write_bytes(f"{prefix}/{key}", data)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def corpus_records(root: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(root.rglob("*")):
        if path.name.endswith(".jsonl"):
            rows += [json.loads(line) for line in path.read_text().splitlines()]
        elif path.name.endswith(".jsonl.gz"):
            rows += [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
        elif path.name.endswith(".parquet"):
            rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture
def raw_corpus(tiers: dict[str, Tier], tmp_path: Path) -> list[dict]:
    root = tmp_path / "corpus"
    generate_corpus(root)
    upload(
        tiers["object"],
        "raw/corpus",
        {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()},
    )
    return corpus_records(root)


@pytest.mark.parametrize(("fmt", "dictionary"), [("parquet", False), ("jsonl", False), ("jsonl", True)])
def test_round_trip_gives_identical_records(tiers, raw_corpus, fmt: str, dictionary: bool) -> None:
    obj = tiers["object"]
    _plan, record, summary = prepare(
        obj, obj, "raw/corpus", "synthetic", "v1", SUITE, fmt=fmt, shard_bytes=1 * 2**20, dictionary=dictionary
    )
    assert record is not None and summary["quarantined"] == []
    keys = [e.key for e in record.manifest.entries]
    shards = [k for k in keys if k.startswith("shards/")]
    assert len(shards) >= 2  # 208 raw files packed into a few shards
    assert len(shards) < 208 / 10
    assert all(k.endswith(".parquet" if fmt == "parquet" else ".jsonl.zst") for k in shards)
    assert "validation/report.json" in keys and any(k.endswith("index.html") for k in keys)
    assert ("dictionary.zdict" in keys) is dictionary
    back = sorted(read_records(obj, "synthetic", "v1"), key=lambda r: r["id"])
    assert back == raw_corpus
    if fmt == "parquet":
        meta = pq.ParquetFile(obj.open_read(f"datasets/synthetic/v1/{shards[0]}")).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
    # Published once: a rerun changes nothing.
    _, again, info = prepare(obj, obj, "raw/corpus", "synthetic", "v1", SUITE, fmt=fmt)
    assert again is None and info["already_published"]


def test_malformed_json_line_is_named_with_file_and_line(tiers) -> None:
    obj = tiers["object"]
    good = jsonl([{"id": i, "source": "web", "lang": "en", "text": "t", "tokens": 1} for i in range(3)])
    upload(obj, "raw/bad", {"a.jsonl": good, "b.jsonl": good + b'{"id": 9, "text": "unterminated\n' + good})
    with pytest.raises(InputError, match=r"raw/bad/b\.jsonl line 4: not valid JSON"):
        prepare(obj, obj, "raw/bad", "synthetic", "v1", SUITE, fmt="jsonl", level=1)
    assert read_commit(obj, "synthetic", "v1") is None


def test_schema_drift_names_the_column_and_types(tiers, tmp_path: Path) -> None:
    obj = tiers["object"]
    rows = [{"id": i, "source": "web", "lang": "en", "text": "t", "tokens": str(i)} for i in range(5)]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    upload(obj, "raw/drift", {"p.parquet": sink.getvalue().to_pybytes()})
    with pytest.raises(InputError, match=r"p\.parquet: column 'tokens' is string, the suite says int64"):
        prepare(obj, obj, "raw/drift", "synthetic", "v1", SUITE, level=1)
    upload(obj, "raw/drift-json", {"j.jsonl": jsonl(rows)})
    with pytest.raises(InputError, match=r"j\.jsonl line 1: column 'tokens' is str, the schema says int64"):
        prepare(obj, obj, "raw/drift-json", "synthetic", "v1", SUITE, level=1)
    assert read_commit(obj, "synthetic", "v1") is None


def test_empty_input_fails_validation(tiers) -> None:
    obj = tiers["object"]
    upload(obj, "raw/empty", {"empty.jsonl": b""})
    with pytest.raises(PublishError, match=r"expect_table_row_count_to_be_between.*observed 0"):
        prepare(obj, obj, "raw/empty", "synthetic", "v1", SUITE, level=1)
    assert read_commit(obj, "synthetic", "v1") is None
    with pytest.raises(InputError, match="no input under"):
        prepare(obj, obj, "raw/nothing-here", "synthetic", "v1", SUITE, level=1)


def rows(start: int, n: int, lang: str = "en") -> list[dict]:
    return [
        {"id": i, "source": "web", "lang": lang, "text": "tier " * 50, "tokens": 50} for i in range(start, start + n)
    ]


def four_shards(obj: Tier, fmt: str = "jsonl", bad_lang_in: int | None = None):
    """Four inputs in four groups: each group makes one shard."""
    files = {f"f{g}.jsonl": jsonl(rows(g * 1000, 1000, "xx" if g == bad_lang_in else "en")) for g in range(4)}
    upload(obj, "raw/four", files)
    plan = plan_preparation(obj, obj, "raw/four", "synthetic", "v1", SUITE, fmt, level=3)
    plan = type(plan).from_json({**plan.to_json(), "groups": [[[f"raw/four/f{g}.jsonl", 1]] for g in range(4)]})
    shards = [s for g in range(4) for s in build_group(obj, obj, plan, g, SUITE)]
    assert len(shards) == 4
    return plan, shards


def test_flipped_bit_and_truncated_frame_are_quarantined_and_the_rest_published(tiers) -> None:
    obj = tiers["object"]
    plan, shards = four_shards(obj)
    prefix = "datasets/synthetic/v1/"
    flipped = bytearray(obj.read_bytes(prefix + shards[1].key))
    flipped[len(flipped) // 2] ^= 0x10
    obj.write_bytes(prefix + shards[1].key, bytes(flipped))
    whole = obj.read_bytes(prefix + shards[2].key)
    obj.write_bytes(prefix + shards[2].key, whole[: len(whole) - 7])
    validations = [validate_shard(obj, plan, shard, SUITE) for shard in shards]
    assert [v.report.passed for v in validations] == [True, False, False, True]
    # With the build's checksum out of the way, the zstd frame itself catches both faults.
    for shard in shards[1:3]:
        report = validate_shard(obj, plan, dataclasses.replace(shard, checksum=None), SUITE).report
        assert report.findings[0].check == "integrity" and (
            "corrupt" in report.findings[0].detail or "truncated" in report.findings[0].detail
        )
    with pytest.raises(PublishError, match="50% failed"):
        publish(obj, plan, shards, validations, policy="quarantine", max_failed_fraction=0.25)
    assert read_commit(obj, "synthetic", "v1") is None
    record, summary = publish(obj, plan, shards, validations, policy="quarantine", max_failed_fraction=0.5)
    assert summary.quarantined == [shards[1].key, shards[2].key]
    assert all(shards[1].key in line or shards[2].key in line for line in summary.failures)
    published = {e.key for e in record.manifest.entries if e.key.startswith("shards/")}
    assert published == {shards[0].key, shards[3].key}
    for bad in shards[1:3]:
        assert obj.exists(f"{prefix}{QUARANTINE_DIR}/{bad.key}")
        assert json.loads(obj.read_bytes(f"{prefix}{QUARANTINE_DIR}/{bad.key}.report.json"))["passed"] is False
        assert not obj.exists(prefix + bad.key)
    assert sorted(r["id"] for r in read_records(obj, "synthetic", "v1")) == list(range(1000)) + list(range(3000, 4000))


def test_failed_expectation_is_named_and_policy_fail_publishes_nothing(tiers) -> None:
    obj = tiers["object"]
    plan, shards = four_shards(obj, bad_lang_in=2)
    validations = [validate_shard(obj, plan, s, SUITE) for s in shards]
    failing = [v.report.to_json() for v in validations if not v.report.passed]
    assert [r["shard"] for r in failing] == [shards[2].key]
    assert failing[0]["findings"][0]["check"] == "expect_column_values_to_be_in_set"
    assert failing[0]["findings"][0]["column"] == "lang" and "'xx'" in failing[0]["findings"][0]["detail"]
    with pytest.raises(PublishError, match=r"part-0002-0000\.jsonl\.zst: expect_column_values_to_be_in_set \[lang\]"):
        publish(obj, plan, shards, validations, policy="fail")
    assert read_commit(obj, "synthetic", "v1") is None
    assert obj.exists("datasets/synthetic/v1/" + shards[2].key)  # nothing moved under policy fail


def test_large_jsonl_inputs_are_streamed_with_the_same_records_and_errors(tiers, monkeypatch) -> None:
    import pipelines.datasets.preparation.readers as prep

    monkeypatch.setattr(prep, "STREAM_JSON_ABOVE", 0)  # every input takes the streaming path
    monkeypatch.setattr(prep, "JSON_BLOCK", 64 * 1024)  # many blocks per file
    obj = tiers["object"]
    rows = [
        {"id": i, "source": "web", "lang": "en", "text": "tier " * (i % 50 + 1), "tokens": 1} for i in range(20_000)
    ]
    upload(obj, "raw/big", {"big.jsonl": jsonl(rows)})
    prepare(obj, obj, "raw/big", "synthetic", "v1", SUITE, level=1)
    assert sorted(read_records(obj, "synthetic", "v1"), key=lambda r: r["id"]) == rows
    broken = jsonl(rows[:15_000]) + b"{not json}\n" + jsonl(rows[15_000:])
    upload(obj, "raw/big-bad", {"big.jsonl": broken})
    with pytest.raises(InputError, match=r"big\.jsonl line 15001: not valid JSON"):
        prepare(obj, obj, "raw/big-bad", "synthetic", "v2", SUITE, level=1)


def test_a_validation_logs_no_great_expectations_chatter(tmp_path: Path) -> None:
    """A fresh process (as a task is) validating one shard: GX's import-time INFO lines stay out of the log."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(name)s: %(message)s')\n"
        "from pipelines.devtools.corpus import generate_corpus\n"
        "from pipelines.datasets.validation import load_suite, validate_local_shard\n"
        "root = Path(sys.argv[1])\n"
        "generate_corpus(root)\n"
        "shard = next(root.rglob('*.parquet'))\n"
        "print('passed', validate_local_shard(str(shard), shard.name, load_suite('synthetic')).passed)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "passed True", done.stdout[-2000:]
    assert not [line for line in lines if "Skipping registering" in line], f"{len(lines)} lines"
    assert len(lines) < 10, done.stdout[-2000:]


def test_a_dataset_without_a_suite_gets_one_inferred_and_saved(tiers, tmp_path: Path, caplog) -> None:
    """No suite anywhere: one is inferred from the first input, saved in the state directory, said so, and used."""
    from pipelines.datasets.preparation.suites import resolve_suite

    rows = [
        {"id": i, "text": f"row {i}", "score": i / 7, "ok": i % 2 == 0, "note": None if i % 3 else "x"}
        for i in range(300)
    ]
    upload(tiers["object"], "raw/fresh", {"a.jsonl": jsonl(rows[:150]), "b.jsonl.gz": gzip.compress(jsonl(rows[150:]))})
    state = tmp_path / "state"
    with caplog.at_level("WARNING", logger="pipelines"):
        suite = resolve_suite("fresh", tiers["object"], "raw/fresh", state_dir=state)
    saved = state / "suites" / "fresh.json"
    assert suite.source == str(saved) and f"saved the suite to {saved}" in caplog.text
    data = json.loads(saved.read_text())
    assert data["schema"] == {"id": "int64", "text": "string", "score": "float64", "ok": "bool", "note": "string"}
    not_null = {e["kwargs"]["column"] for e in data["expectations"]}
    assert not_null == {"id", "text", "score", "ok"}  # 'note' has nulls in the sample
    assert data["inferred_from"] == tiers["object"].url("raw/fresh/a.jsonl")
    plan, published, summary = prepare(tiers["object"], tiers["object"], "raw/fresh", "fresh", "v1", suite, fmt="jsonl")
    assert published is not None and summary["rows"] == 300 and plan.suite() == suite
    # Found again (and edited by the user, it is theirs) rather than inferred anew.
    data["expectations"].append(
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "id", "min_value": 0}}
    )
    saved.write_text(json.dumps(data))
    assert len(resolve_suite("fresh", tiers["object"], "raw/fresh", state_dir=state).expectations) == 5
    # A suite file given by name wins; a missing one is named.
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"schema": {"id": "int64"}, "expectations": []}))
    assert resolve_suite("fresh", tiers["object"], "raw/fresh", suite_file=given, state_dir=state).schema == (
        ("id", "int64"),
    )
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope.json'}: no such suite file"):
        resolve_suite("fresh", tiers["object"], "raw/fresh", suite_file=tmp_path / "nope.json")


def test_a_column_a_suite_cannot_declare_is_named_when_inferring(tiers, tmp_path: Path) -> None:
    from pipelines.datasets.preparation.suites import resolve_suite

    upload(tiers["object"], "raw/nested", {"a.jsonl": jsonl([{"id": 1, "tags": ["a", "b"]}])})
    with pytest.raises(InputError, match=r"column 'tags' is list<item: string>, which a suite cannot declare"):
        resolve_suite("nested", tiers["object"], "raw/nested", state_dir=tmp_path)
    assert not (tmp_path / "suites" / "nested.json").exists()
