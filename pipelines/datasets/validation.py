"""Validation of prepared shards: integrity checks first, then the dataset's Great Expectations suite.

A dataset's suite is a JSON file in the repository (``pipelines/datasets/suites/<dataset>.json``, or the
directory named by ``TIERFLOW_SUITES``): its column schema (Arrow type names) and a list of GX 1.x
expectations by their GX names (``expect_column_values_to_be_in_set`` ...) and keyword arguments.
Every suite also gets ``expect_table_row_count_to_be_between(min_value=1)``, because GX's column
expectations pass vacuously on an empty batch.

Integrity checks run before GX and stop it when they fail: the shard's checksum against what its
builder recorded, every zstd frame decoded whole (checksum, size and truncation), the Parquet footer
and page checksums, and the schema against the suite's (a drift names the column and both types).

A shard is read in batches of about :data:`BATCH_BYTES` of records while it is decoded, so memory
follows the batch, not the shard. A shard of one batch is validated as one GX batch. A larger one
runs each row-wise expectation (GX's map expectations: in a set, between, not null, a regex ...)
batch by batch and adds up their counts, then judges them once (``mostly`` included); expectations
over the whole shard (uniqueness, means, row counts, table columns) run once at the end on the
columns they name, which are all that is kept of each batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.checksum import checksum_file
from pipelines.core.payloads import Payload
from pipelines.datasets.compression import CorruptFrameError, DecompressionLimitError, iter_decompressed

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "Finding",
    "ShardReport",
    "Suite",
    "SuiteError",
    "check_schema",
    "iter_shard",
    "load_suite",
    "load_suite_file",
    "read_shard",
    "run_expectations",
    "validate_local_shard",
]

SUITES_ENV = "TIERFLOW_SUITES"
PACKAGED_SUITES = Path(__file__).with_name("suites")
#: Rows shown per failing expectation in a report (GX's partial unexpected list).
EXAMPLES = 5
ARROW_TYPES = ("int8", "int16", "int32", "int64", "uint32", "uint64", "float32", "float64", "bool", "string")
ROW_COUNT = {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}
#: Decoded bytes of records per batch: what a streamed shard holds in memory at once. Measured on a
#: 128 MiB shard (674 MB of JSON): peak RSS above GX's own import +127 / +199 / +265 MiB at 4 / 8 /
#: 16 MiB, in 17 / 10 / 7 s (a pandas frame of text is several times its JSON while GX runs on it).
BATCH_BYTES = 8 * 2**20
#: kwargs through which an expectation names the columns it reads.
COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Suite:
    """A dataset's schema and expectations, as declared in its suite file."""

    dataset: str
    schema: tuple[tuple[str, str], ...]
    expectations: tuple[dict[str, Any], ...]
    source: str

    def arrow_schema(self) -> pa.Schema:
        """The schema as Arrow types (``string`` is Arrow's utf8)."""
        import pyarrow as pa

        return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in self.schema])

    def all_expectations(self) -> list[dict[str, Any]]:
        """The declared expectations plus the row count ≥ 1 that every suite needs."""
        return [*self.expectations, ROW_COUNT]


def suites_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where suites are read from: the argument, else ``$TIERFLOW_SUITES``, else the packaged ones."""
    return Path(directory or os.environ.get(SUITES_ENV) or PACKAGED_SUITES)


def load_suite(dataset: str, directory: str | os.PathLike[str] | None = None) -> Suite:
    """Read and check ``<dataset>.json`` in the suites directory.

    Raises:
        SuiteError: No suite for the dataset, or a bad field (file and field named).
    """
    path = suites_dir(directory) / f"{dataset}.json"
    if not path.is_file():
        raise SuiteError(f"no expectation suite for dataset {dataset!r}: {path} does not exist")
    return load_suite_file(path, dataset)


def load_suite_file(path: Path, dataset: str) -> Suite:
    """Read and check a suite file (``dataset`` names the suite when the file does not).

    Raises:
        SuiteError: The file is missing, not JSON, or has a bad field (file and field named).
    """
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise SuiteError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, dict) or not schema:
        raise SuiteError(f"{path}: field 'schema' must map column names to types {ARROW_TYPES}")
    for column, kind in schema.items():
        if kind not in ARROW_TYPES:
            raise SuiteError(f"{path}: schema.{column}: unknown type {kind!r} (one of {ARROW_TYPES})")
    expectations = data.get("expectations", [])
    if not isinstance(expectations, list):
        raise SuiteError(f"{path}: field 'expectations' must be a list")
    for i, item in enumerate(expectations):
        if not isinstance(item, dict) or not str(item.get("type", "")).startswith("expect_"):
            raise SuiteError(f"{path}: expectations[{i}]: needs a 'type' naming a GX expectation (expect_...)")
        if not isinstance(item.get("kwargs", {}), dict):
            raise SuiteError(f"{path}: expectations[{i}].kwargs must be an object")
        column = item.get("kwargs", {}).get("column")
        if column is not None and column not in schema:
            raise SuiteError(f"{path}: expectations[{i}] names column {column!r}, which is not in the schema")
    return Suite(str(data.get("dataset", dataset)), tuple(schema.items()), tuple(expectations), str(path))


@dataclass(frozen=True)
class Finding(Payload):
    """One failed check: which (an expectation type or an integrity check), on which column, and what was seen."""

    check: str
    detail: str
    column: str | None = None

    def line(self) -> str:
        """One line for logs and summaries."""
        where = f" [{self.column}]" if self.column else ""
        return f"{self.check}{where}: {self.detail}"


@dataclass
class ShardReport(Payload):
    """The outcome of validating one shard (with :attr:`passed` in its JSON form, for readers of the stored report)."""

    shard: str
    rows: int = 0
    findings: list[Finding] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (XCom and the stored report)."""
        return super().to_json() | {"passed": self.passed, "seconds": round(self.seconds, 3)}


def check_schema(actual: pa.Schema, suite: Suite, where: str) -> list[Finding]:
    """Differences between a shard's schema and the suite's: one finding per column, naming both types."""
    expected = suite.arrow_schema()
    out = []
    for name in expected.names:
        if name not in actual.names:
            out.append(Finding("schema", f"{where}: column {name!r} is missing", name))
        elif not _same_type(actual.field(name).type, expected.field(name).type):
            out.append(
                Finding(
                    "schema",
                    f"{where}: column {name!r} is {actual.field(name).type}, "
                    f"the suite says {expected.field(name).type}",
                    name,
                )
            )
    for name in actual.names:
        if name not in expected.names:
            out.append(
                Finding("schema", f"{where}: column {name!r} ({actual.field(name).type}) is not in the suite", name)
            )
    return out


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    import pyarrow as pa

    strings = (pa.string(), pa.large_string())
    return a == b or (a in strings and b in strings)


def iter_shard(
    path: str, name: str, suite: Suite, dictionary: bytes | None = None, verify_pages: bool = True
) -> Iterator[pa.RecordBatch]:
    """The records of a local shard (``.parquet`` or ``.jsonl.zst``) in batches, decoded and checked on the way.

    Every page checksum or zstd frame is checked as it is read; a ``.jsonl.zst`` shard is parsed
    while it is decoded (no temporary file). ``verify_pages=False`` skips Parquet's page checksums,
    for a caller that has just checked the whole file's xxh3 against its manifest (which covers
    every byte, at several GB/s). An empty shard yields nothing.

    Raises:
        CorruptFrameError: A zstd frame is corrupt or truncated (possibly after earlier batches).
        DecompressionLimitError: The frame would expand past the limit.
        ValueError: A file whose footer, pages or records cannot be read (``name`` in the message).
    """
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        try:
            with pq.ParquetFile(path, page_checksum_verification=verify_pages) as shard:
                meta = shard.metadata
                raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                rows = max(1024, BATCH_BYTES * meta.num_rows // raw) if raw else 65536
                yield from shard.iter_batches(batch_size=rows)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{name}: unreadable Parquet ({exc})") from None
        return
    if not name.endswith(".jsonl.zst"):
        raise ValueError(f"{name}: not a shard Tierflow writes (.parquet or .jsonl.zst)")
    options = pj.ParseOptions(explicit_schema=suite.arrow_schema(), unexpected_field_behavior="infer")
    with open(path, "rb") as fh:
        for lines in _line_batches(iter_decompressed(fh, name, dictionary, compressed_size=os.path.getsize(path))):
            try:
                table = pj.read_json(pa.py_buffer(lines), parse_options=options)
            except pa.ArrowException as exc:
                raise ValueError(f"{name}: records do not parse ({exc})") from None
            yield from table.combine_chunks().to_batches()


def _line_batches(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decoded bytes cut at line ends into pieces of about :data:`BATCH_BYTES` (the last one may be shorter).

    Each piece is joined once from the decoder's chunks (no growing buffer: memory stays near two pieces).
    """
    pieces: list[bytes] = []
    held = 0
    for chunk in chunks:
        pieces.append(chunk)
        held += len(chunk)
        if held < BATCH_BYTES:
            continue
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            continue  # a line longer than the chunk: wait for its end
        pieces[-1] = chunk[:cut]
        yield b"".join(pieces)
        rest = chunk[cut:]
        pieces, held = ([rest], len(rest)) if rest else ([], 0)
    if held and any(p.strip() for p in pieces):
        yield b"".join(pieces)


def read_shard(
    path: str, name: str, suite: Suite, dictionary: bytes | None = None, verify_pages: bool = True
) -> pa.Table:
    """A local shard as one table (:func:`iter_shard` for what is checked and raised; memory follows the shard)."""
    import pyarrow as pa

    batches = list(iter_shard(path, name, suite, dictionary, verify_pages))
    if not batches:
        return suite.arrow_schema().empty_table()
    return pa.Table.from_batches(batches)


def _quiet_gx() -> None:
    """Keep Great Expectations' INFO chatter out of task logs.

    Its import alone logs ~200 lines of "Skipping registering function ..."; its warnings and
    errors still come through, and the validation's findings are logged by Tierflow.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # This one sets its own level to INFO when imported ("Created temporary directory ... for
    # ephemeral docs site" on every validation): import it first, then lower it.
    import great_expectations.data_context.types.base as gx_base

    gx_base.logger.setLevel(logging.WARNING)


def _context(docs_dir: str | None) -> Any:
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir:
        context.add_data_docs_site(
            site_name="tierflow",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


@contextlib.contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """Skip GX's md5 over a pandas hash of the whole batch while a shard is validated.

    GX stores it only as a batch marker; Tierflow already identifies each shard by its xxh3-128
    checksum, and the fingerprint costs as much as all the expectations together (0.5 s of 1.0 s
    on a 235,000-row shard).
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if not hasattr(engine, "HASH_THRESHOLD"):
        yield
        return
    saved = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = saved


class _Expectations:
    """A list of suite expectations bound to one GX context, run on one pandas frame at a time."""

    def __init__(self, suite: Suite, items: Sequence[dict[str, Any]], shard: str, docs_dir: str | None) -> None:
        _quiet_gx()
        import great_expectations as gx
        from great_expectations.exceptions import InvalidExpectationConfigurationError
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        context = _context(docs_dir)
        gx_suite = gx.ExpectationSuite(name=f"{suite.dataset}")
        declared = suite.all_expectations()
        for item in items:
            try:
                gx_suite.add_expectation_configuration(
                    ExpectationConfiguration(type=item["type"], kwargs=dict(item.get("kwargs", {})))
                )
            except (InvalidExpectationConfigurationError, TypeError, ValueError) as exc:
                i = declared.index(item)
                raise SuiteError(f"{suite.source}: expectations[{i}] ({item['type']}): {exc}") from None
        gx_suite = context.suites.add(gx_suite)
        batch = (
            context.data_sources.add_pandas("shards")
            .add_dataframe_asset(shard.replace("/", "_"))
            .add_batch_definition_whole_dataframe("shard")
        )
        self._definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="shard", data=batch, suite=gx_suite)
        )
        self._checkpoint = None
        if docs_dir:
            self._checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name="tierflow",
                    validation_definitions=[self._definition],
                    result_format={"result_format": "SUMMARY"},
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["tierflow"])],
                )
            )

    def run(self, frame: pd.DataFrame) -> Any:
        """GX's validation result for ``frame`` (Data Docs built when the context has a site)."""
        with _without_batch_fingerprint():
            if self._checkpoint is not None:
                outcome = self._checkpoint.run(batch_parameters={"dataframe": frame})
                return next(iter(outcome.run_results.values()))
            return self._definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")


def _finding(config: Any, success: bool, res: dict[str, Any], raised: str | None) -> Finding | None:
    if success:
        return None
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    if raised:
        detail = f"raised {raised}"
    elif "unexpected_count" in res:
        examples = list(res.get("partial_unexpected_list") or [])[:EXAMPLES]
        detail = f"{res['unexpected_count']} of {res.get('element_count', '?')} rows unexpected, e.g. {examples}"
    else:
        detail = f"observed {res.get('observed_value')!r}"
    return Finding(config.type, f"{detail} (expected {kwargs})", config.kwargs.get("column"))


def _raised(r: Any) -> str | None:
    info = r.exception_info or {}
    return str(info.get("exception_message")) if info.get("raised_exception") else None


def _statistics(result: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(result.statistics).items() if isinstance(v, int | float)}


def run_expectations(
    frame: pd.DataFrame, suite: Suite, shard: str, docs_dir: str | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """Run the suite on one shard's rows with GX; optionally build its Data Docs into ``docs_dir``.

    Returns the failed expectations (each with its column and a few unexpected values) and GX's statistics.

    Raises:
        SuiteError: An expectation GX does not know, or bad arguments for it (the suite file named).
    """
    result = _Expectations(suite, suite.all_expectations(), shard, docs_dir).run(frame)
    found = (_finding(r.expectation_config, r.success, r.result or {}, _raised(r)) for r in result.results)
    return [f for f in found if f is not None], _statistics(result)


def _row_wise(item: dict[str, Any]) -> bool:
    """Whether an expectation judges each row on its own (its counts add up over batches)."""
    _quiet_gx()
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        impl = get_expectation_impl(item["type"])
    except Exception:  # GX's own error for an unknown type: raised, with the suite named, when it is added
        return False
    metric = str(getattr(impl, "map_metric", "") or "")
    if "unique" in metric and "within_record" not in metric:
        return False  # uniqueness within one batch says nothing of the shard
    return issubclass(impl, ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation)


class _Tally:
    """A row-wise expectation's counts added up over the batches of a shard."""

    def __init__(self) -> None:
        self.config: Any = None
        self.elements = self.missing = self.unexpected = 0
        self.examples: list[Any] = []
        self.raised: str | None = None
        self.has_missing = False

    def add(self, r: Any) -> None:
        res = r.result or {}
        self.config = r.expectation_config
        self.raised = self.raised or _raised(r)
        self.elements += int(res.get("element_count") or 0)
        self.has_missing = self.has_missing or "missing_count" in res
        self.missing += int(res.get("missing_count") or 0)
        self.unexpected += int(res.get("unexpected_count") or 0)
        room = EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(list(res.get("partial_unexpected_list") or [])[:room])

    def finding(self) -> Finding | None:
        """The finding over the whole shard, judged as GX judges one batch (``mostly`` of the non-missing rows)."""
        counted = self.elements - self.missing
        mostly = float(self.config.kwargs.get("mostly", 1.0) or 1.0)
        success = self.raised is None and (
            self.unexpected == 0 or (counted > 0 and (counted - self.unexpected) / counted >= mostly)
        )
        res = {
            "element_count": self.elements,
            "unexpected_count": self.unexpected,
            "partial_unexpected_list": self.examples,
        }
        return _finding(self.config, success, res, self.raised)


def _columns(items: Sequence[dict[str, Any]], suite: Suite) -> list[str] | None:
    """The columns ``items`` read, in schema order; None when one of them needs the whole table."""
    names: set[str] = set()
    for item in items:
        kwargs = item.get("kwargs", {})
        named = [kwargs[k] for k in COLUMN_KWARGS if k in kwargs]
        if not named and "row_count" not in item["type"]:
            return None  # a table expectation (its columns, their order): it reads every column
        for value in named:
            names.update(value if isinstance(value, list) else [value])
    order = [name for name, _ in suite.schema]
    if not names:  # row counts only: the narrowest column carries the rows
        fixed = [name for name, kind in suite.schema if kind != "string"]
        return [(fixed or order)[0]]
    return [name for name in order if name in names]


def _validate_batches(
    first: pa.RecordBatch, rest: Iterator[pa.RecordBatch], suite: Suite, name: str, docs_dir: str | None
) -> tuple[int, list[Finding], dict[str, Any]]:
    """Validate a shard read in batches: row-wise expectations per batch, the others once on the columns they read."""
    import pyarrow as pa

    items = suite.all_expectations()
    row_wise = [item for item in items if _row_wise(item)]
    whole = [item for item in items if not _row_wise(item)]
    keep = _columns(whole, suite) if whole else []
    per_batch = _Expectations(suite, row_wise, name, None) if row_wise else None
    tallies = [_Tally() for _ in row_wise]
    kept: list[pa.RecordBatch] = []
    rows = 0
    for batch in _chained(first, rest):
        rows += batch.num_rows
        if per_batch is not None:
            for tally, r in zip(tallies, per_batch.run(batch.to_pandas()).results, strict=True):
                tally.add(r)
        if keep is None:
            kept.append(batch)
        elif keep:
            kept.append(batch.select(keep))
    found = [t.finding() for t in tallies]
    evaluated, successful = len(tallies), sum(f is None for f in found)
    if whole:
        table = pa.Table.from_batches(kept)
        del kept
        result = _Expectations(suite, whole, name, docs_dir).run(table.to_pandas())
        del table
        for r in result.results:
            found.append(_finding(r.expectation_config, r.success, r.result or {}, _raised(r)))
        evaluated += len(result.results)
        successful += sum(bool(r.success) for r in result.results)
    stats = {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": 100.0 * successful / evaluated if evaluated else 100.0,
    }
    return rows, [f for f in found if f is not None], stats


def _chained(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def validate_local_shard(
    path: str,
    name: str,
    suite: Suite,
    expected_checksum: str | None = None,
    dictionary: bytes | None = None,
    docs_dir: str | None = None,
) -> ShardReport:
    """Validate a shard held in a local file: integrity checks, then (only if they pass) the GX suite.

    The shard is read in batches while it is decoded (the module's docstring says how the suite is
    run over them); an integrity failure found in a later batch discards what GX found before it.
    A shard read in more than one batch gets Data Docs for its whole-shard expectations; its row-wise
    ones are in the report.
    """
    start = time.perf_counter()
    report = ShardReport(shard=name)
    if expected_checksum is not None:
        digest, _ = checksum_file(path)
        if digest != expected_checksum:
            report.findings.append(
                Finding("checksum", f"{name}: xxh3-128 is {digest}, the build recorded {expected_checksum}")
            )
    if report.passed:
        try:
            report.rows, findings, report.statistics = _validate_stream(
                iter_shard(path, name, suite, dictionary, verify_pages=expected_checksum is None), suite, name, docs_dir
            )
            report.findings.extend(findings)
        except (CorruptFrameError, DecompressionLimitError, ValueError) as exc:
            if isinstance(exc, SuiteError):
                raise
            report.rows, report.statistics = 0, {}
            report.findings = [Finding("integrity", str(exc))]
    report.seconds = time.perf_counter() - start
    return report


def _validate_stream(
    batches: Iterator[pa.RecordBatch], suite: Suite, name: str, docs_dir: str | None
) -> tuple[int, list[Finding], dict[str, Any]]:
    """Rows, findings and statistics: the schema first, then the suite (one GX batch when the shard is one)."""
    import pyarrow as pa

    first = next(batches, None)
    if first is None:  # an empty shard: the row count >= 1 fails, as GX says it
        frame = suite.arrow_schema().empty_table().to_pandas()
        findings, stats = run_expectations(frame, suite, name, docs_dir)
        return 0, findings, stats
    drift = check_schema(first.schema, suite, name)
    if drift:
        for _ in batches:  # the rest is still decoded whole: a corrupt frame is the finding that counts
            pass
        return first.num_rows, drift, {}
    second = next(batches, None)
    if second is None:
        findings, stats = run_expectations(pa.Table.from_batches([first]).to_pandas(), suite, name, docs_dir)
        return first.num_rows, findings, stats
    return _validate_batches(first, _chained(second, batches), suite, name, docs_dir)
