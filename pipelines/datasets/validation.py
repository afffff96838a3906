"""Validation of prepared shards: integrity checks first, then the dataset's Great Expectations suite.

A dataset's suite is a JSON file in the repository (``pipelines/datasets/suites/<dataset>.json``, or the
directory named by ``TIERFLOW_SUITES``): its column schema (Arrow type names) and a list of GX 1.x
expectations by their GX names (``expect_column_values_to_be_in_set`` ...) and keyword arguments.
Every suite also gets ``expect_table_row_count_to_be_between(min_value=1)``, because GX's column
expectations pass vacuously on an empty batch.

Integrity checks run before GX and stop it when they fail: the shard's checksum against what its
builder recorded, every zstd frame decoded whole (checksum, size and truncation), the Parquet footer
and page checksums, and the schema against the suite's (a drift names the column and both types).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
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


def read_shard(
    path: str, name: str, suite: Suite, dictionary: bytes | None = None, verify_pages: bool = True
) -> pa.Table:
    """Read a local shard (``.parquet`` or ``.jsonl.zst``), checking every page checksum or zstd frame on the way.

    ``verify_pages=False`` skips Parquet's page checksums, for a caller that has just checked the
    whole file's xxh3 against its manifest (which covers every byte, at several GB/s).

    Raises:
        CorruptFrameError: A zstd frame is corrupt or truncated.
        DecompressionLimitError: The frame would expand past the limit.
        ValueError: A Parquet file whose footer, pages or records cannot be read (``name`` in the message).
    """
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        try:
            return pq.read_table(path, page_checksum_verification=verify_pages)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{name}: unreadable Parquet ({exc})") from None
    if name.endswith(".jsonl.zst"):
        with tempfile.NamedTemporaryFile(suffix=".jsonl", dir=os.path.dirname(path)) as raw:
            with open(path, "rb") as fh:
                for chunk in iter_decompressed(fh, name, dictionary, compressed_size=os.path.getsize(path)):
                    raw.write(chunk)
            raw.flush()
            if raw.tell() == 0:
                return suite.arrow_schema().empty_table()
            try:
                return pj.read_json(
                    raw.name,
                    parse_options=pj.ParseOptions(
                        explicit_schema=suite.arrow_schema(), unexpected_field_behavior="infer"
                    ),
                )
            except pa.ArrowException as exc:
                raise ValueError(f"{name}: records do not parse ({exc})") from None
    raise ValueError(f"{name}: not a shard Tierflow writes (.parquet or .jsonl.zst)")


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


def run_expectations(
    frame: pd.DataFrame, suite: Suite, shard: str, docs_dir: str | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """Run the suite on one shard's rows with GX; optionally build its Data Docs into ``docs_dir``.

    Returns the failed expectations (each with its column and a few unexpected values) and GX's statistics.

    Raises:
        SuiteError: An expectation GX does not know, or bad arguments for it (the suite file named).
    """
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.exceptions import InvalidExpectationConfigurationError
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    context = _context(docs_dir)
    gx_suite = gx.ExpectationSuite(name=f"{suite.dataset}")
    for i, item in enumerate(suite.all_expectations()):
        try:
            gx_suite.add_expectation_configuration(
                ExpectationConfiguration(type=item["type"], kwargs=dict(item.get("kwargs", {})))
            )
        except (InvalidExpectationConfigurationError, TypeError, ValueError) as exc:
            raise SuiteError(f"{suite.source}: expectations[{i}] ({item['type']}): {exc}") from None
    gx_suite = context.suites.add(gx_suite)
    batch = (
        context.data_sources.add_pandas("shards")
        .add_dataframe_asset(shard.replace("/", "_"))
        .add_batch_definition_whole_dataframe("shard")
    )
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="shard", data=batch, suite=gx_suite))
    if docs_dir:
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="tierflow",
                validation_definitions=[definition],
                result_format={"result_format": "SUMMARY"},
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["tierflow"])],
            )
        )
        with _without_batch_fingerprint():
            outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        result = next(iter(outcome.run_results.values()))
    else:
        with _without_batch_fingerprint():
            result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    findings = []
    for r in result.results:
        if r.success:
            continue
        config = r.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
        res = r.result or {}
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail = f"raised {r.exception_info.get('exception_message')}"
        elif "unexpected_count" in res:
            examples = list(res.get("partial_unexpected_list") or [])[:EXAMPLES]
            detail = f"{res['unexpected_count']} of {res.get('element_count', '?')} rows unexpected, e.g. {examples}"
        else:
            detail = f"observed {res.get('observed_value')!r}"
        findings.append(Finding(config.type, f"{detail} (expected {kwargs})", config.kwargs.get("column")))
    stats = {k: v for k, v in dict(result.statistics).items() if isinstance(v, int | float)}
    return findings, stats


def validate_local_shard(
    path: str,
    name: str,
    suite: Suite,
    expected_checksum: str | None = None,
    dictionary: bytes | None = None,
    docs_dir: str | None = None,
) -> ShardReport:
    """Validate a shard held in a local file: integrity checks, then (only if they pass) the GX suite."""
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
            table = read_shard(path, name, suite, dictionary, verify_pages=expected_checksum is None)
        except (CorruptFrameError, DecompressionLimitError, ValueError) as exc:
            report.findings.append(Finding("integrity", str(exc)))
        else:
            report.rows = table.num_rows
            report.findings.extend(check_schema(table.schema, suite, name))
            if report.passed:
                findings, stats = run_expectations(table.to_pandas(), suite, name, docs_dir)
                report.findings.extend(findings)
                report.statistics = stats
    report.seconds = time.perf_counter() - start
    return report
