"""Which expectation suite a preparation uses, and a first one inferred from the data when there is none.

Looked up in order:

1. a suite file given by name (``tierflow datasets prepare --suite FILE``, the operator's ``suite_file``);
2. ``<dataset>.json`` in the suites directory given, else ``$TIERFLOW_SUITES``;
3. ``<state_dir>/suites/<dataset>.json``: a suite inferred before (edit it: it is yours);
4. the suites packaged with Tierflow (the demo's ``synthetic``);
5. none: one is inferred from the first raw input under the prefix (its columns and types, and
   "not null" for every column without nulls in the sample), saved as in 3, and said so in the log.

The plan carries the suite it was made with, so every build and validation task of a run checks
the same expectations, on whichever node it runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pipelines.datasets.preparation.plan import InputError, list_inputs
from pipelines.datasets.validation import ARROW_TYPES, PACKAGED_SUITES, SUITES_ENV, Suite, load_suite_file
from pipelines.storage.tier import Tier

log = logging.getLogger(__name__)

__all__ = ["infer_suite", "resolve_suite"]

#: Records read from the first input to infer a schema.
SAMPLE_ROWS = 10_000
#: Arrow's inferred types, as the suite names them.
_INFERRED = {"int64": "int64", "double": "float64", "bool": "bool", "string": "string", "large_string": "string"}


def resolve_suite(
    dataset: str,
    source: Tier,
    prefix: str,
    *,
    suite_file: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Suite:
    """The suite to prepare ``dataset`` with (see the module's order); inferred and saved when there is none."""
    if suite_file is not None:
        return load_suite_file(Path(suite_file), dataset)
    chosen = directory or os.environ.get(SUITES_ENV)
    saved = Path(state_dir) / "suites" if state_dir else None
    for folder in (Path(chosen) if chosen else None, saved, PACKAGED_SUITES):
        if folder is not None and (folder / f"{dataset}.json").is_file():
            return load_suite_file(folder / f"{dataset}.json", dataset)
    suite = infer_suite(dataset, source, list_inputs(source, prefix)[0][0])
    if saved is None:
        log.warning("no suite for %s: inferred one from %s (not saved: no state directory)", dataset, suite.source)
        return suite
    path = saved / f"{dataset}.json"
    saved.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_suite_file(suite), indent=2) + "\n")
    tmp.replace(path)
    log.warning(
        "no suite for %s: inferred %d columns from %s and saved the suite to %s (edit it to add expectations)",
        dataset,
        len(suite.schema),
        suite.source,
        path,
    )
    return load_suite_file(path, dataset)


def infer_suite(dataset: str, source: Tier, key: str) -> Suite:
    """A suite inferred from one raw input: its columns and types, and not-null where the sample has no null.

    Raises:
        InputError: A column of a type a suite cannot declare (nested, timestamp, ...), named.
    """
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="tierflow-suite-") as tmp:
        local = os.path.join(tmp, "sample")
        if key.endswith(".parquet"):
            source.get_file(key, local)
            batch = next(pq.ParquetFile(local).iter_batches(batch_size=SAMPLE_ROWS), None)
            table = pa.Table.from_batches([batch]) if batch is not None else pq.read_schema(local).empty_table()
        else:
            with open(local, "wb") as out:
                out.write(_first_lines(source, key))
            try:
                table = pj.read_json(local)
            except pa.ArrowException as exc:
                raise InputError(
                    f"{source.url(key)}: records do not parse, so no schema can be inferred ({exc})"
                ) from None
    schema: dict[str, str] = {}
    for column in table.schema:
        kind = _INFERRED.get(str(column.type), str(column.type))
        if kind not in ARROW_TYPES:
            raise InputError(
                f"{source.url(key)}: column {column.name!r} is {column.type}, which a suite cannot declare "
                f"({', '.join(ARROW_TYPES)}): write the suite by hand and give it with --suite"
            )
        schema[column.name] = kind
    not_null = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": name}}
        for name in schema
        if table.num_rows and table.column(name).null_count == 0
    ]
    return Suite(dataset, tuple(schema.items()), tuple(not_null), source.url(key))


def _first_lines(source: Tier, key: str) -> bytes:
    """The first SAMPLE_ROWS records of a JSONL input (decoded when gzip or zstd), whole lines only."""
    import gzip

    from pipelines.datasets.compression import iter_decompressed

    out = b""
    with source.open_read(key) as fh:
        if key.endswith(".gz"):
            stream: Any = gzip.GzipFile(fileobj=fh)
            while out.count(b"\n") < SAMPLE_ROWS and (chunk := stream.read(2**20)):
                out += chunk
        elif key.endswith(".zst"):
            for chunk in iter_decompressed(fh, source.url(key)):
                out += chunk
                if out.count(b"\n") >= SAMPLE_ROWS:
                    break
        else:
            while out.count(b"\n") < SAMPLE_ROWS and (chunk := fh.read(2**20)):
                out += chunk
    lines = out.split(b"\n")
    # Reading stopped at SAMPLE_ROWS newlines (the lines before them are whole) or at the end of the input.
    whole = lines[:SAMPLE_ROWS] if out.count(b"\n") >= SAMPLE_ROWS else lines
    return b"\n".join(line for line in whole if line.strip()) + b"\n"


def _suite_file(suite: Suite) -> dict[str, Any]:
    return {
        "dataset": suite.dataset,
        "inferred_from": suite.source,
        "schema": dict(suite.schema),
        "expectations": list(suite.expectations),
    }
