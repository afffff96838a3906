"""Reading raw inputs (JSONL, gzipped or zstd JSONL, Parquet) as Arrow batches checked against the suite's schema."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipelines.datasets.compression import iter_decompressed
from pipelines.datasets.validation import Suite

if TYPE_CHECKING:
    import pyarrow as pa

from pipelines.datasets.preparation.plan import BATCH_ROWS, JSON_BLOCK, STREAM_JSON_ABOVE, InputError

__all__ = []


def _locate_json_error(path: str, name: str, schema: pa.Schema) -> str | None:
    """Find the first bad line of a JSONL file in plain Python, for a message with a line number."""
    kinds = {f.name: f.type for f in schema}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                return f"{name} line {number}: not valid JSON ({exc})"
            if not isinstance(record, dict):
                return f"{name} line {number}: expected a JSON object, got {type(record).__name__}"
            for column, value in record.items():
                if column not in kinds:
                    return f"{name} line {number}: column {column!r} is not in the dataset schema"
                problem = _type_problem(value, kinds[column])
                if problem:
                    return f"{name} line {number}: column {column!r} is {problem}, the schema says {kinds[column]}"
    return None


def _type_problem(value: Any, kind: pa.DataType) -> str | None:
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_integer(kind) and (isinstance(value, bool) or not isinstance(value, int)):
        return type(value).__name__
    if pa.types.is_floating(kind) and (isinstance(value, bool) or not isinstance(value, int | float)):
        return type(value).__name__
    if pa.types.is_string(kind) and not isinstance(value, str):
        return type(value).__name__
    if pa.types.is_boolean(kind) and not isinstance(value, bool):
        return type(value).__name__
    return None


def read_input(path: str, name: str, suite: Suite) -> Iterator[pa.Table]:
    """Batches of one local raw input, in the suite's schema.

    Raises:
        InputError: Unparseable records or a schema drift (object, line or column and types named).
    """
    import gzip

    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from pipelines.datasets.validation import check_schema

    schema = suite.arrow_schema()
    if name.endswith(".parquet"):
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{name}: not a readable Parquet file ({exc})") from None
        drift = check_schema(parquet.schema_arrow, suite, name)
        if drift:
            raise InputError("schema drift: " + "; ".join(f.detail for f in drift))
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=schema.names):
            yield pa.Table.from_batches([batch]).cast(schema)
        return
    plain = path
    if name.endswith((".gz", ".zst")):
        plain = path + ".raw"
        with open(plain, "wb") as out:
            if name.endswith(".gz"):
                with gzip.open(path, "rb") as gz:
                    shutil.copyfileobj(gz, out, 2**20)
            else:
                with open(path, "rb") as fh:
                    for chunk in iter_decompressed(fh, name, compressed_size=os.path.getsize(path)):
                        out.write(chunk)
    try:
        if os.path.getsize(plain) == 0:
            return
        options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        try:
            if os.path.getsize(plain) <= STREAM_JSON_ABOVE:  # small: parse whole, on all cores
                table = pj.read_json(plain, parse_options=options)
                yield from (pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=BATCH_ROWS))
            else:  # large (multi-GB) inputs stream block by block: memory stays bounded
                reader = pj.open_json(plain, read_options=pj.ReadOptions(block_size=JSON_BLOCK), parse_options=options)
                for batch in reader:
                    yield pa.Table.from_batches([batch])
        except pa.ArrowException as exc:
            located = _locate_json_error(plain, name, schema)
            raise InputError(located or f"{name}: records do not parse ({exc})") from None
    finally:
        if plain != path and os.path.exists(plain):
            os.unlink(plain)
