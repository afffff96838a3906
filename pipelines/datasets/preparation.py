"""Dataset preparation: raw JSONL/Parquet under a prefix → validated zstd shards → a committed dataset version.

The steps, each a function a task (or the CLI) calls:

1. :func:`plan_preparation` lists the raw inputs once, measures zstd levels on a sample, and takes
   the level, the shard size and the number of build groups from the bandwidth planner.
2. :func:`build_group` packs one group of inputs (many small files go into few shards) into shards
   of the planned size, Parquet with the zstd codec or JSONL in one zstd frame; decodes every shard
   again and checks it before uploading it under ``datasets/<name>/<version>/shards/``.
3. :func:`validate_shard` runs the integrity checks and the dataset's GX suite on one shard and
   stores its Data Docs with the dataset.
4. :func:`publish` applies the failure policy (``fail``, or ``quarantine`` the failing shards with
   their reports under ``_quarantine/``), writes the validation report and commits the version:
   the marker, holding the manifest of every shard, the report, the docs and the dictionary, goes
   last. Nothing is visible as a dataset before that.

Bad input stops the build with one line naming the object and, for JSON, the line number.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.checksum import checksum_bytes, checksum_file
from pipelines.core.manifest import Entry, Manifest, dataset_prefix, validate_name
from pipelines.datasets.compression import compress_file, iter_decompressed, measure_levels, train_dictionary
from pipelines.datasets.validation import ShardReport, Suite, validate_local_shard
from pipelines.model.bandwidth import Workload, choose_compression, plan_hop
from pipelines.storage.commit import commit, read_commit

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.core.config import TierConfig
    from pipelines.storage.commit import Commit
    from pipelines.storage.tier import Tier

__all__ = [
    "FORMATS",
    "POLICIES",
    "InputError",
    "PreparePlan",
    "PublishError",
    "build_group",
    "plan_preparation",
    "prepare",
    "publish",
    "read_records",
    "shard_stem",
    "validate_shard",
]

log = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl")
POLICIES = ("fail", "quarantine")
INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
DEFAULT_SHARD_BYTES = 128 * 2**20
#: Shards are never planned smaller than this (a small shard is the small-file problem again).
MIN_SHARD_BYTES = 4 * 2**20
#: A build group is sized to finish in about this long at the measured compression speed.
GROUP_SECONDS = 600.0
SAMPLE_BYTES = 4 * 2**20
SAMPLE_LEVELS = (1, 3, 6, 9)
#: Rows per Arrow batch while packing.
BATCH_ROWS = 16_384
#: JSONL inputs larger than this are parsed as a stream (bounded memory, one core) rather than whole.
STREAM_JSON_ABOVE = 256 * 2**20
JSON_BLOCK = 16 * 2**20
SHARDS_DIR = "shards"
QUARANTINE_DIR = "_quarantine"
REPORT_KEY = "validation/report.json"
DOCS_DIR = "validation/docs"
DICTIONARY_KEY = "dictionary.zdict"


class InputError(ValueError):
    """Raw input that cannot be prepared; the message names the object (and line) at fault."""


class PublishError(RuntimeError):
    """Validation failed under the policy: nothing was published. The message names every failing shard."""


@dataclass(frozen=True)
class PreparePlan:
    """What :func:`plan_preparation` decided, with the reasons; JSON-safe through :meth:`to_json`."""

    dataset: str
    version: str
    source: str
    source_prefix: str
    target: str
    format: str
    level: int
    threads: int
    shard_bytes: int
    groups: tuple[tuple[tuple[str, int], ...], ...]
    estimated_ratio: float
    schema: tuple[tuple[str, str], ...] = ()
    dictionary_checksum: str | None = None
    already_published: bool = False
    reasons: dict[str, str] = field(default_factory=dict)

    def tasks(self) -> list[dict[str, Any]]:
        """One descriptor per build group (nothing when the version is already published)."""
        if self.already_published:
            return []
        n = len(self.groups)
        return [
            {"index": i, "name": f"{self.dataset}/{self.version} group {i + 1}/{n}", "inputs": [list(x) for x in g]}
            for i, g in enumerate(self.groups)
        ]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-safe data (XCom)."""
        return {
            "dataset": self.dataset,
            "version": self.version,
            "source": self.source,
            "source_prefix": self.source_prefix,
            "target": self.target,
            "format": self.format,
            "level": self.level,
            "threads": self.threads,
            "shard_bytes": self.shard_bytes,
            "groups": [[list(x) for x in g] for g in self.groups],
            "estimated_ratio": self.estimated_ratio,
            "schema": [list(x) for x in self.schema],
            "dictionary_checksum": self.dictionary_checksum,
            "already_published": self.already_published,
            "reasons": self.reasons,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparePlan:
        """The plan back from :meth:`to_json`."""
        groups = tuple(tuple((str(k), int(s)) for k, s in g) for g in data["groups"])
        schema = tuple((str(c), str(t)) for c, t in data.get("schema") or ())
        return cls(**{**data, "groups": groups, "schema": schema, "reasons": dict(data.get("reasons") or {})})


def _input_kind(key: str) -> str | None:
    base = posixpath.basename(key)
    if base.startswith(("_", ".")):
        return None  # _SUCCESS, .crc and other markers are not data
    for suffix in INPUT_SUFFIXES:
        if base.endswith(suffix):
            return suffix
    raise InputError(f"{key}: not a supported input (one of {', '.join(INPUT_SUFFIXES)})")


def list_inputs(source: Tier, prefix: str) -> list[tuple[str, int]]:
    """The raw input objects under ``prefix`` (one listing), sorted by key.

    Raises:
        InputError: Nothing under the prefix, or an object of an unsupported kind (named).
    """
    prefix = prefix.strip("/")
    found = [(o.key, o.size) for o in source.list(prefix) if _input_kind(o.key)]
    if not found:
        raise InputError(f"no input under {source.url(prefix)} (looked for {', '.join(INPUT_SUFFIXES)})")
    return found


def _groups(inputs: Sequence[tuple[str, int]], count: int) -> tuple[tuple[tuple[str, int], ...], ...]:
    """Split inputs in key order into ``count`` contiguous groups of nearly equal bytes."""
    count = max(1, min(count, len(inputs)))
    total = sum(max(s, 1) for _, s in inputs)
    out: list[list[tuple[str, int]]] = [[]]
    done = 0
    for key, size in inputs:
        if out[-1] and len(out) < count and done >= total * len(out) / count:
            out.append([])
        out[-1].append((key, size))
        done += max(size, 1)
    return tuple(tuple(g) for g in out)


def shard_size_for(
    estimated_output: int, destination: TierConfig, target: int = DEFAULT_SHARD_BYTES
) -> tuple[int, str]:
    """The shard size: ``target`` unless the dataset is small, then enough shards to validate in parallel.

    Never below ``MIN_SHARD_BYTES``: each object costs a request on object storage and metadata
    operations on a PFS, so tiny shards bring back the small-file problem.
    """
    streams = max(1, destination.bandwidth.max_streams)
    if estimated_output >= target * streams:
        return target, f"{target / 2**20:.0f} MiB target; {math.ceil(estimated_output / target)} shards"
    size = max(MIN_SHARD_BYTES, min(target, math.ceil(estimated_output / streams)))
    return size, (
        f"small dataset (~{estimated_output / 2**20:.1f} MiB compressed): shards of {size / 2**20:.1f} MiB "
        f"so up to {streams} validate in parallel, never under {MIN_SHARD_BYTES / 2**20:.0f} MiB"
    )


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    """Records as compact JSON lines (values JSON cannot hold, e.g. timestamps, as strings)."""
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows).encode()


def _sample(source: Tier, inputs: Sequence[tuple[str, int]]) -> bytes:
    """Raw record bytes from the largest inputs, for measuring zstd (decoded when the input is compressed)."""
    import gzip

    out = b""
    for key, _size in sorted(inputs, key=lambda x: -x[1])[:4]:
        with source.open_read(key) as fh:
            if key.endswith(".parquet"):  # the first rows only: the footer and one row group are read
                import pyarrow.parquet as pq

                batch = next(pq.ParquetFile(fh).iter_batches(batch_size=20_000), None)
                rows = batch.to_pylist() if batch is not None else []
                out += _jsonl(rows)
            elif key.endswith(".gz"):
                out += gzip.GzipFile(fileobj=fh).read(SAMPLE_BYTES)
            elif key.endswith(".zst"):
                for chunk in iter_decompressed(fh, source.url(key)):
                    out += chunk
                    if len(out) >= SAMPLE_BYTES:
                        break
            else:
                out += fh.read(SAMPLE_BYTES)
        if len(out) >= SAMPLE_BYTES:
            break
    return out[:SAMPLE_BYTES]


def plan_preparation(
    source: Tier,
    target: Tier,
    source_prefix: str,
    dataset: str,
    version: str,
    suite: Suite,
    fmt: str = "parquet",
    level: int | None = None,
    shard_bytes: int | None = None,
    threads: int = 0,
    dictionary: bool = False,
    max_groups: int = 1024,
) -> PreparePlan:
    """Plan a preparation: inputs, level (from the planner unless given), shard size, groups.

    With ``dictionary`` (JSONL output only) a zstd dictionary is trained on sample records and
    stored with the dataset now, so every build task uses the same one.

    Raises:
        InputError: No usable input, a bad format, or an unsupported object (named).
    """
    validate_name(dataset, "dataset name")
    validate_name(version, "dataset version")
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
    if dictionary and fmt != "jsonl":
        raise InputError("a zstd dictionary applies to JSONL shards only (Parquet compresses per column page)")
    prefix = dataset_prefix(dataset, version)
    inputs = list_inputs(source, source_prefix)
    existing = read_commit(target, dataset, version)
    workers = threads or (os.cpu_count() or 1)
    reasons: dict[str, str] = {}
    sample = _sample(source, inputs)
    samples = measure_levels(sample, SAMPLE_LEVELS if level is None else (level,), workers) if sample else []
    work = Workload.from_sizes(s for _, s in inputs)
    if level is None and samples:
        hop = plan_hop(source.config, target.config, work)
        choice = choose_compression(source.config, target.config, work, hop.concurrency, samples)
        chosen = choice.level or min(samples, key=lambda s: work.bytes / s.compress_bps - s.ratio).level
        level = chosen
        reasons["level"] = choice.reason if choice.level else f"level {chosen}: {choice.reason}; zstd is required"
    elif level is None:
        level = 3
        reasons["level"] = "no records to sample; zstd default level 3"
    else:
        reasons["level"] = f"level {level} given"
    ratio = next((s.ratio for s in samples if s.level == level), 1.0) if samples else 1.0
    speed = next((s.compress_bps for s in samples if s.level == level), 50e6) if samples else 50e6
    if shard_bytes is None:
        shard_bytes, reasons["shard_bytes"] = shard_size_for(int(work.bytes / max(ratio, 1.0)), target.config)
    else:
        reasons["shard_bytes"] = f"{shard_bytes} B given"
    group_bytes = speed * GROUP_SECONDS
    count = min(max_groups, max(1, math.ceil(work.bytes / group_bytes)))
    reasons["groups"] = (
        f"{count} group(s): {work.bytes / 1e6:.1f} MB at {speed / 1e6:.0f} MB/s (level {level}, "
        f"{workers} threads) in tasks of ≤ {GROUP_SECONDS:.0f} s"
    )
    dictionary_checksum = None
    if dictionary and existing is None:
        lines = [line for line in sample.split(b"\n") if line][:50_000]
        data = train_dictionary(lines)
        target.write_bytes(f"{prefix}/{DICTIONARY_KEY}", data)
        dictionary_checksum = checksum_bytes(data)
        reasons["dictionary"] = f"{len(data)} B dictionary trained on {len(lines)} sample records"
    plan = PreparePlan(
        dataset=dataset,
        version=version,
        source=source.name,
        source_prefix=source_prefix.strip("/"),
        target=target.name,
        format=fmt,
        level=level,
        threads=workers,
        shard_bytes=int(shard_bytes),
        groups=_groups(inputs, count),
        estimated_ratio=round(ratio, 3),
        schema=suite.schema,
        dictionary_checksum=dictionary_checksum,
        already_published=existing is not None,
        reasons=reasons,
    )
    log.info(
        "prepare %s/%s from %s: %d inputs, %.1f MB; %s",
        dataset,
        version,
        source.url(source_prefix),
        len(inputs),
        work.bytes / 1e6,
        "already published" if existing else "; ".join(reasons.values()),
    )
    return plan


# -- reading raw input ------------------------------------------------------------------------


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


def _read_input(path: str, name: str, suite: Suite) -> Iterator[pa.Table]:
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


# -- writing shards ---------------------------------------------------------------------------


@dataclass
class _Shard:
    key: str
    local: str
    rows: int = 0
    raw_bytes: int = 0
    writer: Any = None


class _ShardWriter:
    """Packs record batches into shards of about ``plan.shard_bytes`` compressed, one local file at a time."""

    def __init__(self, plan: PreparePlan, group: int, workdir: str, schema: pa.Schema, dictionary: bytes | None):
        self.plan = plan
        self.group = group
        self.workdir = workdir
        self.schema = schema
        self.dictionary = dictionary
        self.raw_limit = plan.shard_bytes * max(plan.estimated_ratio, 1.0)
        self.current: _Shard | None = None
        self.finished: list[_Shard] = []

    def _open(self) -> _Shard:
        import pyarrow.parquet as pq

        n = len(self.finished)
        suffix = ".parquet" if self.plan.format == "parquet" else ".jsonl.zst"
        key = f"{SHARDS_DIR}/part-{self.group:04d}-{n:04d}{suffix}"
        local = os.path.join(self.workdir, posixpath.basename(key))
        shard = _Shard(key, local)
        if self.plan.format == "parquet":
            shard.writer = pq.ParquetWriter(
                local,
                self.schema,
                compression="zstd",
                compression_level=self.plan.level,
                write_page_checksum=True,
            )
        else:
            shard.writer = open(local + ".raw", "wb")  # noqa: SIM115 - closed in _close
        return shard

    def add(self, table: pa.Table) -> None:
        if self.current is None:
            self.current = self._open()
        shard = self.current
        if self.plan.format == "parquet":
            shard.writer.write_table(table)
            shard.raw_bytes += table.nbytes
        else:
            data = _jsonl(table.to_pylist())
            shard.writer.write(data)
            shard.raw_bytes += len(data)
        shard.rows += table.num_rows
        if shard.raw_bytes >= self.raw_limit:
            self._close()

    def _close(self) -> None:
        shard = self.current
        if shard is None:
            return
        shard.writer.close()
        if self.plan.format == "jsonl":
            compress_file(shard.local + ".raw", shard.local, self.plan.level, self.plan.threads, self.dictionary)
            os.unlink(shard.local + ".raw")
        self.finished.append(shard)
        self.current = None

    def close(self) -> list[_Shard]:
        if self.current is None and not self.finished:
            self.current = self._open()  # no records at all: one empty shard, which validation fails (row count ≥ 1)
        self._close()
        return self.finished


def _dictionary(target: Tier, plan: PreparePlan) -> bytes | None:
    if not plan.dictionary_checksum:
        return None
    data = target.read_bytes(f"{dataset_prefix(plan.dataset, plan.version)}/{DICTIONARY_KEY}")
    if checksum_bytes(data) != plan.dictionary_checksum:
        raise InputError(f"{target.url(dataset_prefix(plan.dataset, plan.version))}: dictionary changed since the plan")
    return data


def build_group(
    source: Tier, target: Tier, plan: PreparePlan, index: int, suite: Suite, workdir: str | None = None
) -> list[dict[str, Any]]:
    """Pack group ``index`` of the plan into shards, check each decoded, and upload them.

    A rerun first removes the shards an earlier attempt of this group left (the version is not
    committed, so nothing reads them). Returns one record per shard: key, size, checksum, rows and
    raw bytes.

    Raises:
        InputError: Bad input (object and line named); nothing of this group is uploaded.
    """
    prefix = dataset_prefix(plan.dataset, plan.version)
    group = plan.groups[index]
    dictionary = _dictionary(target, plan)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tierflow-prepare-", dir=workdir) as tmp:
        writer = _ShardWriter(plan, index, tmp, suite.arrow_schema(), dictionary)
        raw_in = 0
        for n, (key, size) in enumerate(group, 1):
            local = os.path.join(tmp, "input-" + posixpath.basename(key))
            source.get_file(key, local)
            for table in _read_input(local, source.url(key), suite):
                writer.add(table)
            os.unlink(local)
            raw_in += size
            if n == len(group) or n % 200 == 0:
                log.info("group %d: %d/%d inputs, %.1f MB read", index, n, len(group), raw_in / 1e6)
        shards = writer.close()
        stale = [o.key for o in target.list(f"{prefix}/{SHARDS_DIR}") if f"/part-{index:04d}-" in o.key]
        target.delete(stale)
        out: list[dict[str, Any]] = []
        for shard in shards:
            report = validate_integrity(shard.local, shard.key, suite, dictionary)
            if report:
                raise InputError(f"shard {shard.key} does not read back after writing: {report}")
            digest, size = checksum_file(shard.local)
            target.put_file(shard.local, f"{prefix}/{shard.key}")
            out.append(
                {"key": shard.key, "size": size, "checksum": digest, "rows": shard.rows, "raw_bytes": shard.raw_bytes}
            )
    seconds = time.monotonic() - started
    log.info(
        "group %d: %d inputs → %d shards, %d rows, %.1f MB → %.1f MB in %.1f s",
        index,
        len(group),
        len(out),
        sum(s["rows"] for s in out),
        sum(s["raw_bytes"] for s in out) / 1e6,
        sum(s["size"] for s in out) / 1e6,
        seconds,
    )
    return out


def validate_integrity(path: str, name: str, suite: Suite, dictionary: bytes | None) -> str | None:
    """Decode a freshly written shard whole; None when it reads back with the suite's schema, else why not."""
    from pipelines.datasets.validation import check_schema, read_shard

    try:
        table = read_shard(path, name, suite, dictionary)
    except ValueError as exc:
        return str(exc)
    drift = check_schema(table.schema, suite, name)
    return "; ".join(f.detail for f in drift) or None


# -- validation and publishing ----------------------------------------------------------------


def validate_shard(
    target: Tier, plan: PreparePlan, shard: dict[str, Any], suite: Suite, workdir: str | None = None
) -> tuple[ShardReport, list[list[Any]]]:
    """Validate one uploaded shard (integrity + GX) and store its Data Docs with the dataset.

    Returns the report and the manifest entries ``[key, size, checksum]`` of the docs stored.
    """
    prefix = dataset_prefix(plan.dataset, plan.version)
    dictionary = _dictionary(target, plan)
    stem = shard_stem(shard["key"])
    with tempfile.TemporaryDirectory(prefix="tierflow-validate-", dir=workdir) as tmp:
        local = os.path.join(tmp, posixpath.basename(shard["key"]))
        target.get_file(f"{prefix}/{shard['key']}", local)
        docs = os.path.join(tmp, "docs")
        report = validate_local_shard(local, shard["key"], suite, shard.get("checksum"), dictionary, docs)
        entries: list[list[Any]] = []
        for root, _dirs, files in os.walk(docs):
            for name in sorted(files):
                path = os.path.join(root, name)
                key = f"{DOCS_DIR}/{stem}/{os.path.relpath(path, docs).replace(os.sep, '/')}"
                digest, size = checksum_file(path)
                target.put_file(path, f"{prefix}/{key}")
                entries.append([key, size, digest])
    log.info(
        "%s: %s, %d rows, %.2f s%s",
        shard["key"],
        "passed" if report.passed else "FAILED",
        report.rows,
        report.seconds,
        "".join(f"\n  {f.line()}" for f in report.findings),
    )
    return report, entries


def publish(
    target: Tier,
    plan: PreparePlan,
    shards: Sequence[dict[str, Any]],
    reports: Sequence[dict[str, Any]],
    docs: Sequence[Sequence[Any]] = (),
    policy: str = "fail",
    max_failed_fraction: float = 0.1,
    extra: dict[str, Any] | None = None,
) -> tuple[Commit, dict[str, Any]]:
    """Apply the policy and commit the version; returns the commit and a summary.

    ``fail``: any failing shard fails the whole version. ``quarantine``: failing shards move with
    their reports under ``_quarantine/`` and the rest is published, as long as the failing fraction
    is at most ``max_failed_fraction`` and at least one shard passed.

    Raises:
        PublishError: The policy refuses to publish (every failing shard and check named); no marker
            is written.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    prefix = dataset_prefix(plan.dataset, plan.version)
    by_key = {r["shard"]: r for r in reports}
    missing = [s["key"] for s in shards if s["key"] not in by_key]
    if missing:
        raise PublishError(f"{plan.dataset}/{plan.version}: no validation report for {missing}")
    failed = [by_key[s["key"]] for s in shards if not by_key[s["key"]]["passed"]]
    lines = [
        f"{r['shard']}: "
        + "; ".join(
            f"{f['check']}{' [' + f['column'] + ']' if f['column'] else ''} {f['detail']}" for f in r["findings"]
        )
        for r in failed
    ]
    fraction = len(failed) / len(shards) if shards else 1.0
    if failed and (policy == "fail" or fraction > max_failed_fraction or len(failed) == len(shards)):
        why = (
            "policy fail" if policy == "fail" else f"{fraction:.0%} failed, over the {max_failed_fraction:.0%} allowed"
        )
        if policy == "quarantine":
            _quarantine(target, prefix, [s for s in shards if not by_key[s["key"]]["passed"]], by_key)
        raise PublishError(
            f"{plan.dataset}/{plan.version} not published ({why}): {len(failed)} of {len(shards)} shard(s) failed — "
            + " | ".join(lines)
        )
    good = [s for s in shards if by_key[s["key"]]["passed"]]
    if failed:
        _quarantine(target, prefix, [s for s in shards if not by_key[s["key"]]["passed"]], by_key)
    raw = sum(s["raw_bytes"] for s in good)
    stored = sum(s["size"] for s in good)
    summary = {
        "dataset": plan.dataset,
        "version": plan.version,
        "format": plan.format,
        "level": plan.level,
        "shards": len(good),
        "rows": sum(s["rows"] for s in good),
        "raw_bytes": raw,
        "bytes": stored,
        "ratio": round(raw / stored, 3) if stored else 0.0,
        "quarantined": [r["shard"] for r in failed],
        "failures": lines,
        "policy": policy,
        "schema": dict(plan.schema),
    }
    report = {"summary": summary, "shards": [by_key[s["key"]] for s in shards]}
    data = json.dumps(report, indent=1).encode()
    target.write_bytes(f"{prefix}/{REPORT_KEY}", data)
    entries = [Entry(s["key"], s["size"], s["checksum"]) for s in good]
    entries.append(Entry(REPORT_KEY, len(data), checksum_bytes(data)))
    failed_stems = {shard_stem(r["shard"]) for r in failed}  # their docs went to quarantine with them
    entries += [Entry(str(k), int(n), str(c)) for k, n, c in docs if _docs_stem(str(k)) not in failed_stems]
    if plan.dictionary_checksum:
        size = target.stat(f"{prefix}/{DICTIONARY_KEY}").size
        entries.append(Entry(DICTIONARY_KEY, size, plan.dictionary_checksum))
    manifest = Manifest(plan.dataset, plan.version, tuple(entries))
    record = commit(target, manifest, source=f"{plan.source}:{plan.source_prefix}", extra={"preparation": summary})
    log.info(
        "published %s/%s on %s: %d shards, %d rows, %.1f MB (ratio %.2f)%s",
        plan.dataset,
        plan.version,
        target.name,
        len(good),
        summary["rows"],
        stored / 1e6,
        summary["ratio"],
        f"; quarantined {summary['quarantined']}" if failed else "",
    )
    return record, summary


def shard_stem(key: str) -> str:
    """A shard's name without directory and suffixes (``shards/part-0000-0001.jsonl.zst`` → ``part-0000-0001``)."""
    return posixpath.basename(key).split(".", 1)[0]


def _docs_stem(key: str) -> str | None:
    """The shard a Data Docs key belongs to (``validation/docs/<stem>/...``)."""
    parts = key.split("/")
    return parts[2] if len(parts) > 2 else None


def _quarantine(target: Tier, prefix: str, shards: Sequence[dict[str, Any]], reports: dict[str, Any]) -> None:
    """Move failing shards and their reports under ``_quarantine/`` (copy, then delete the original)."""
    for shard in shards:
        src = f"{prefix}/{shard['key']}"
        dst = f"{prefix}/{QUARANTINE_DIR}/{shard['key']}"
        if target.exists(src):
            target.fs.copy(target.path(src), target.path(dst))
            target.delete([src])
        target.write_bytes(f"{dst}.report.json", json.dumps(reports[shard["key"]], indent=1).encode())
        log.warning("quarantined %s → %s", target.url(src), target.url(dst))


def read_records(tier: Tier, dataset: str, version: str, workdir: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a committed prepared version, shard by shard (the dictionary applied when there is one).

    Raises:
        FileNotFoundError: The version is not committed on ``tier``.
    """
    from pipelines.datasets.validation import read_shard

    found = read_commit(tier, dataset, version)
    if found is None:
        raise FileNotFoundError(f"{dataset}/{version} is not committed on {tier.url()}")
    prefix = found.manifest.prefix
    keys = {e.key for e in found.manifest.entries}
    dictionary = tier.read_bytes(f"{prefix}/{DICTIONARY_KEY}") if DICTIONARY_KEY in keys else None
    suite = _suite_from_commit(found)
    with tempfile.TemporaryDirectory(prefix="tierflow-read-", dir=workdir) as tmp:
        for entry in found.manifest.entries:
            if not entry.key.startswith(f"{SHARDS_DIR}/"):
                continue
            local = os.path.join(tmp, posixpath.basename(entry.key))
            tier.get_file(f"{prefix}/{entry.key}", local)
            yield from read_shard(local, entry.key, suite, dictionary).to_pylist()
            os.unlink(local)


def _suite_from_commit(found: Commit) -> Suite:
    """The schema the version was prepared with (kept in its marker), as a suite without expectations."""
    schema = (found.extra.get("preparation") or {}).get("schema")
    if not schema:
        raise InputError(f"{found.manifest.dataset}/{found.manifest.version} was not prepared by Tierflow (no schema)")
    return Suite(found.manifest.dataset, tuple(schema.items()), (), f"commit marker of {found.manifest.prefix}")


def prepare(
    source: Tier,
    target: Tier,
    source_prefix: str,
    dataset: str,
    version: str,
    suite: Suite,
    fmt: str = "parquet",
    level: int | None = None,
    shard_bytes: int | None = None,
    threads: int = 0,
    dictionary: bool = False,
    policy: str = "fail",
    max_failed_fraction: float = 0.1,
    workdir: str | None = None,
) -> tuple[PreparePlan, Commit | None, dict[str, Any]]:
    """Plan, build, validate and publish in one process (the CLI; the DAG runs the steps as tasks).

    Returns the plan, the commit (None when the version was already published) and the summary.

    Raises:
        InputError: Bad input, named.
        PublishError: Validation failed under the policy.
    """
    plan = plan_preparation(
        source, target, source_prefix, dataset, version, suite, fmt, level, shard_bytes, threads, dictionary
    )
    if plan.already_published:
        return plan, None, {"dataset": dataset, "version": version, "already_published": True}
    shards = [s for i in range(len(plan.groups)) for s in build_group(source, target, plan, i, suite, workdir)]
    reports, docs = [], []
    for shard in shards:
        report, entries = validate_shard(target, plan, shard, suite, workdir)
        reports.append(report.to_json())
        docs += entries
    record, summary = publish(target, plan, shards, reports, docs, policy, max_failed_fraction)
    return plan, record, summary
