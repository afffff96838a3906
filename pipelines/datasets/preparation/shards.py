"""Building shards: pack a group's inputs into zstd shards of the planned size, each decoded again before upload."""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.core.checksum import checksum_bytes, checksum_file
from pipelines.core.manifest import dataset_prefix
from pipelines.core.payloads import Payload
from pipelines.datasets.compression import compress_file
from pipelines.datasets.validation import Finding, Suite

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.storage.tier import Tier
from pipelines.datasets.preparation.plan import DICTIONARY_KEY, SHARDS_DIR, InputError, PreparePlan, jsonl_bytes
from pipelines.datasets.preparation.readers import read_input

log = logging.getLogger(__name__)

__all__ = ["BuiltShard", "build_group", "validate_integrity"]


@dataclass(frozen=True)
class BuiltShard(Payload):
    """A shard a build task uploaded (one item of its XCom): the validation and publish tasks read it."""

    key: str  #: under the version's prefix, e.g. ``shards/part-0000-0001.parquet``
    size: int
    checksum: str | None  #: None: not known (integrity is then checked by decoding only)
    rows: int
    raw_bytes: int


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
            data = jsonl_bytes(table.to_pylist())
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


def load_dictionary(target: Tier, plan: PreparePlan) -> bytes | None:
    if not plan.dictionary_checksum:
        return None
    data = target.read_bytes(f"{dataset_prefix(plan.dataset, plan.version)}/{DICTIONARY_KEY}")
    if checksum_bytes(data) != plan.dictionary_checksum:
        raise InputError(f"{target.url(dataset_prefix(plan.dataset, plan.version))}: dictionary changed since the plan")
    return data


def build_group(
    source: Tier, target: Tier, plan: PreparePlan, index: int, suite: Suite, workdir: str | None = None
) -> list[BuiltShard]:
    """Pack group ``index`` of the plan into shards, check each decoded, and upload them.

    A rerun first removes the shards an earlier attempt of this group left (the version is not
    committed, so nothing reads them). Returns one record per shard.

    Raises:
        InputError: Bad input (object and line named); nothing of this group is uploaded.
    """
    prefix = dataset_prefix(plan.dataset, plan.version)
    group = plan.groups[index]
    dictionary = load_dictionary(target, plan)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tierflow-prepare-", dir=workdir) as tmp:
        writer = _ShardWriter(plan, index, tmp, suite.arrow_schema(), dictionary)
        raw_in = 0
        for n, (key, size) in enumerate(group, 1):
            local = os.path.join(tmp, "input-" + posixpath.basename(key))
            source.get_file(key, local)
            for table in read_input(local, source.url(key), suite):
                writer.add(table)
            os.unlink(local)
            raw_in += size
            if n == len(group) or n % 200 == 0:
                log.info("group %d: %d/%d inputs, %.1f MB read", index, n, len(group), raw_in / 1e6)
        shards = writer.close()
        stale = [o.key for o in target.list(f"{prefix}/{SHARDS_DIR}") if f"/part-{index:04d}-" in o.key]
        target.delete(stale)
        out: list[BuiltShard] = []
        for shard in shards:
            report = validate_integrity(shard.local, shard.key, suite, dictionary)
            if report:
                raise InputError(f"shard {shard.key} does not read back after writing: {report}")
            digest, size = checksum_file(shard.local)
            target.put_file(shard.local, f"{prefix}/{shard.key}")
            out.append(BuiltShard(shard.key, size, digest, shard.rows, shard.raw_bytes))
    seconds = time.monotonic() - started
    log.info(
        "group %d: %d inputs → %d shards, %d rows, %.1f MB → %.1f MB in %.1f s",
        index,
        len(group),
        len(out),
        sum(s.rows for s in out),
        sum(s.raw_bytes for s in out) / 1e6,
        sum(s.size for s in out) / 1e6,
        seconds,
    )
    return out


def validate_integrity(path: str, name: str, suite: Suite, dictionary: bytes | None) -> str | None:
    """Decode a freshly written shard, batch by batch; None when it reads back with the suite's schema, else why not."""
    from pipelines.datasets.validation import check_schema, iter_shard

    drift: list[Finding] = []
    try:
        for batch in iter_shard(path, name, suite, dictionary):
            drift = drift or check_schema(batch.schema, suite, name)
    except ValueError as exc:
        return str(exc)
    return "; ".join(f.detail for f in drift) or None
