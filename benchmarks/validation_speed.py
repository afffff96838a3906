"""Shard validation (integrity checks + the GX suite) against only reading the same Parquet with pyarrow.

One Parquet shard of the synthetic dataset (zstd level 3, page checksums, ~235,000 rows). Ours is
:func:`pipelines.datasets.validation.validate_local_shard` as the validation task calls it, without Data
Docs: the file's xxh3 against the checksum its builder recorded, the read, the schema check, the
``synthetic`` suite's 8 expectations. The reference is ``pq.read_table`` alone.
The target is validation ≤ 3x the read time (a ratio ≥ 0.33 below, as higher is better). GX is
imported before timing (about 4 s, once per task process). Building the Data Docs is reported in
the notes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pipelines.core.checksum import checksum_file
from pipelines.datasets.validation import load_suite, validate_local_shard
from pipelines.devtools.bench import BenchContext, Comparison, timed
from pipelines.devtools.corpus import records

DESCRIPTION = "validate a 200 MB-raw Parquet shard (integrity + GX) vs pyarrow read only, MB/s of Parquet"
ROWS = 235_000


def _shard(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    suite = load_suite("synthetic")
    table = pa.Table.from_pylist(list(records(29, 0, ROWS)), schema=suite.arrow_schema())
    pq.write_table(table, path, compression="zstd", compression_level=3, write_page_checksum=True)


def run(ctx: BenchContext) -> list[Comparison]:
    import logging

    import great_expectations  # noqa: F401 - imported once per task process; not what is measured
    import pyarrow.parquet as pq

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    path = ctx.workdir / "shard.parquet"
    _shard(path)
    size = path.stat().st_size
    suite = load_suite("synthetic")
    built = checksum_file(str(path))[0]  # what the build task records for the shard
    validate_local_shard(str(path), "warm-up.parquet", suite)
    ours, ref, docs = [], [], []
    for i in range(ctx.runs):
        steps = [
            ("ref", lambda: pq.read_table(path)),
            ("ours", lambda: validate_local_shard(str(path), "s.parquet", suite, built)),
        ]
        for name, fn in steps if i % 2 == 0 else reversed(steps):
            (ours if name == "ours" else ref).append(size / timed(fn) / 1e6)
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            docs.append(timed(lambda t=tmp: validate_local_shard(str(path), "s.parquet", suite, built, docs_dir=t)))
    report = validate_local_shard(str(path), "s.parquet", suite, built)
    assert report.passed, json.dumps(report.to_json())
    return [
        Comparison(
            "validate 1 Parquet shard",
            "MB/s",
            ours,
            ref,
            "pyarrow read",
            notes={
                "shard MB": round(size / 1e6, 1),
                "rows": ROWS,
                "validate/read time": round(sorted(r / o for o, r in zip(ours, ref, strict=True))[len(ours) // 2], 2),
                "with Data Docs s": round(sorted(docs)[len(docs) // 2], 2),
            },
        )
    ]
