"""Planning a preparation: list the raw inputs once, measure zstd levels on a sample, size shards and build groups."""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core import errors
from pipelines.core.checksum import checksum_bytes
from pipelines.core.manifest import dataset_prefix, validate_name
from pipelines.core.payloads import Payload
from pipelines.datasets.compression import iter_decompressed, measure_levels, train_dictionary
from pipelines.datasets.validation import Suite
from pipelines.model.bandwidth import MAX_MAP_LENGTH, Workload, plan_hop
from pipelines.model.codecs import CodecSample, choose_compression
from pipelines.storage.commit import read_commit

if TYPE_CHECKING:
    from pipelines.core.config import TierConfig
    from pipelines.storage.tier import Tier

log = logging.getLogger(__name__)

__all__ = [
    "BuildGroup",
    "InputError",
    "PlanRef",
    "PreparePlan",
    "list_inputs",
    "load_plan",
    "plan_preparation",
    "shard_size_for",
    "store_plan",
]


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


#: The full plans of a version, stored with it (``<prefix>/_tierflow_plan/<checksum>.json``): a
#: reserved name, so commits keep it and manifests leave it out.
PLAN_DIR = "_tierflow_plan"


class InputError(errors.InputError):
    """Raw input that cannot be prepared; the message names the object (and line) at fault."""


@dataclass(frozen=True)
class PreparePlan(Payload):
    """What :func:`plan_preparation` decided, with the reasons (the plan task's XCom ``plan``)."""

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
    #: The suite's expectations and where it came from: every task of the run checks the same ones.
    expectations: tuple[dict[str, Any], ...] = ()
    suite_source: str = ""

    def suite(self) -> Suite:
        """The suite this plan was made with."""
        return Suite(self.dataset, self.schema, self.expectations, self.suite_source)

    def tasks(self) -> list[BuildGroup]:
        """One build task per group (nothing when the version is already published)."""
        if self.already_published:
            return []
        n = len(self.groups)
        return [
            BuildGroup(
                index=i,
                name=f"{self.dataset}/{self.version} group {i + 1}/{n}",
                count=n,
                inputs=len(g),
                input_bytes=sum(size for _, size in g),
            )
            for i, g in enumerate(self.groups)
        ]


@dataclass(frozen=True)
class BuildGroup(Payload):
    """One mapped build task: group ``index`` of ``count`` in the stored plan, and its label (never its keys)."""

    index: int
    name: str
    count: int
    inputs: int  #: how many raw inputs the group packs
    input_bytes: int


@dataclass(frozen=True)
class PlanRef(Payload):
    """Where a preparation's full plan is stored (its inputs, groups and suite), as XCom carries it."""

    dataset: str
    version: str
    tier: str
    key: str
    checksum: str
    groups: int
    inputs: int
    already_published: bool


def store_plan(target: Tier, plan: PreparePlan) -> PlanRef:
    """Write the full plan beside the version on ``target`` (once per content) and return its reference."""
    data = json.dumps(plan.to_json(), sort_keys=True, separators=(",", ":")).encode()
    digest = checksum_bytes(data)
    key = f"{dataset_prefix(plan.dataset, plan.version)}/{PLAN_DIR}/{digest}.json"
    if not target.exists(key):
        target.write_bytes(key, data)
    return PlanRef(
        dataset=plan.dataset,
        version=plan.version,
        tier=target.name,
        key=key,
        checksum=digest,
        groups=len(plan.groups),
        inputs=sum(len(g) for g in plan.groups),
        already_published=plan.already_published,
    )


def load_plan(target: Tier, ref: PlanRef) -> PreparePlan:
    """The full plan ``ref`` points at, checked against its checksum.

    Raises:
        InputError: The stored plan is gone or is not the one the reference names.
    """
    try:
        data = target.read_bytes(ref.key)
    except FileNotFoundError:
        raise InputError(f"{target.url(ref.key)}: the preparation plan is gone (replan the run)") from None
    if checksum_bytes(data) != ref.checksum:
        raise InputError(f"{target.url(ref.key)}: the stored plan does not match checksum {ref.checksum}")
    return PreparePlan.from_json(json.loads(data), target.url(ref.key))


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


def within_map_length(
    estimated_output: int, shard_bytes: int, max_map_length: int, reasons: dict[str, str]
) -> tuple[int, str]:
    """The shard size grown, when needed, so ``estimated_output`` makes at most ``max_map_length`` shards.

    Validation maps one task per shard, and Airflow refuses to map more than ``max_map_length``.
    """
    floor = -(-estimated_output // max_map_length)  # integers: a float quotient of exabytes can round down
    if shard_bytes >= floor:
        return shard_bytes, reasons.get("shard_bytes", f"{shard_bytes} B")
    return floor, (
        f"{floor / 2**20:.0f} MiB: ~{estimated_output / 1e9:.1f} GB compressed in at most "
        f"max_map_length {max_map_length} shards"
    )


def jsonl_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
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
                out += jsonl_bytes(rows)
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


def _level(
    source: Tier, target: Tier, work: Workload, samples: Sequence[CodecSample], given: int | None
) -> tuple[int, str]:
    """The zstd level and why: the one given, else the planner's choice from the measured samples."""
    if given is not None:
        return given, f"level {given} given"
    if not samples:
        return 3, "no records to sample; zstd default level 3"
    hop = plan_hop(source.config, target.config, work)
    choice = choose_compression(source.config, target.config, work, hop.concurrency, samples)
    if choice.level:
        return choice.level, choice.reason
    chosen = min(samples, key=lambda s: work.bytes / s.compress_bps - s.ratio).level
    return chosen, f"level {chosen}: {choice.reason}; zstd is required"


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
    max_map_length: int = MAX_MAP_LENGTH,
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
    level, reasons["level"] = _level(source, target, work, samples, level)
    ratio = next((s.ratio for s in samples if s.level == level), 1.0) if samples else 1.0
    speed = next((s.compress_bps for s in samples if s.level == level), 50e6) if samples else 50e6
    estimated = int(work.bytes / max(ratio, 1.0))
    if shard_bytes is None:
        shard_bytes, reasons["shard_bytes"] = shard_size_for(estimated, target.config)
        shard_bytes, reasons["shard_bytes"] = within_map_length(estimated, shard_bytes, max_map_length, reasons)
    else:
        reasons["shard_bytes"] = f"{shard_bytes} B given"
        if math.ceil(estimated / shard_bytes) > max_map_length:
            raise InputError(
                f"shard_size {shard_bytes} B makes ~{math.ceil(estimated / shard_bytes)} shards of "
                f"~{estimated} B compressed, more than max_map_length {max_map_length}: "
                f"use at least {math.ceil(estimated / max_map_length)} B"
            )
    group_bytes = speed * GROUP_SECONDS
    count = min(max_groups, max_map_length, max(1, math.ceil(work.bytes / group_bytes)))
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
        expectations=suite.expectations,
        suite_source=suite.source,
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
