"""A small, deterministic synthetic training corpus for the demo, tests and benchmarks.

The same seed always gives byte-identical files, so a demo run, a test and a benchmark see the
same data. The corpus has the shapes that make real pipelines hard: many tiny JSONL files next
to a few large ones, records from a few bytes to tens of kilobytes, a gzipped JSONL file and
Parquet files.

Each record: ``{"id": int, "source": str, "lang": str, "text": str, "tokens": int}``.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CorpusFile", "generate_corpus", "jsonl", "records", "write_checkpoint", "write_jsonl"]

_WORDS = [
    "data",
    "model",
    "training",
    "token",
    "shard",
    "cache",
    "tier",
    "storage",
    "object",
    "file",
    "system",
    "node",
    "gradient",
    "loss",
    "step",
    "checkpoint",
    "batch",
    "epoch",
    "layer",
    "weight",
    "bias",
    "attention",
    "head",
    "sequence",
    "vector",
    "matrix",
    "kernel",
    "stream",
    "bandwidth",
    "latency",
    "throughput",
    "parallel",
    "compress",
    "validate",
    "promote",
    "restore",
    "prune",
    "retain",
    "commit",
]
_SOURCES = ("web", "books", "code", "papers", "forums")
_LANGS = ("en", "de", "fr", "es", "ja")


@dataclass(frozen=True)
class CorpusFile:
    """One generated file: its path relative to the corpus root, size in bytes and record count."""

    key: str
    size: int
    records: int


def records(seed: int, start_id: int, count: int) -> Iterator[dict[str, object]]:
    """Yield ``count`` deterministic records with ids from ``start_id``; text lengths are heavy-tailed."""
    rng = random.Random(seed * 1_000_003 + start_id)
    for i in range(count):
        n_words = max(1, min(8000, int(rng.lognormvariate(4.0, 1.2))))
        text = " ".join(rng.choices(_WORDS, k=n_words))
        yield {
            "id": start_id + i,
            "source": rng.choice(_SOURCES),
            "lang": rng.choice(_LANGS),
            "text": text,
            "tokens": n_words,
        }


def jsonl(rows: list[dict[str, object]]) -> bytes:
    """Records as compact JSON lines."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def write_jsonl(path: Path, size: int, seed: int) -> int:
    """A JSONL file of synthetic records of at least ``size`` bytes (a shard to compress); returns its size."""
    written, start = 0, 0
    with open(path, "wb") as fh:
        while written < size:
            rows = list(records(seed, start, 5000))
            start += len(rows)
            data = jsonl(rows)
            fh.write(data)
            written += len(data)
    return written


def generate_corpus(root: Path, seed: int = 7, scale: int = 1) -> list[CorpusFile]:
    """Write the corpus under ``root`` and return its files, sorted by key.

    ``scale`` multiplies the number of files of every kind: scale 1 is about 9.5 MB in 208 files
    and 18,600 records.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    out: list[CorpusFile] = []
    next_id = 0

    def emit(key: str, data: bytes, n: int) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(CorpusFile(key, len(data), n))

    for i in range(200 * scale):  # the small-file problem: many files of a few records each
        rows = list(records(seed, next_id, 1 + i % 5))
        emit(f"jsonl/small/part-{i:05d}.jsonl", jsonl(rows), len(rows))
        next_id += len(rows)
    for i in range(4 * scale):
        rows = list(records(seed, next_id, 2000))
        emit(f"jsonl/large/part-{i:05d}.jsonl", jsonl(rows), len(rows))
        next_id += len(rows)
    rows = list(records(seed, next_id, 1000))
    emit("jsonl/gz/part-00000.jsonl.gz", gzip.compress(jsonl(rows), mtime=0), len(rows))
    next_id += len(rows)
    for i in range(3 * scale):
        rows = list(records(seed, next_id, 3000))
        table = pa.Table.from_pylist(rows)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy")
        emit(f"parquet/part-{i:05d}.parquet", sink.getvalue().to_pybytes(), len(rows))
        next_id += len(rows)
    return sorted(out, key=lambda f: f.key)


def write_checkpoint(
    root: Path,
    run: str,
    step: int,
    shards: int = 4,
    shard_bytes: int = 256 * 1024,
    metrics: dict[str, float] | None = None,
    seed: int | None = None,
) -> Path:
    """Write a PyTorch-DCP-like checkpoint as a training job would, under ``root/checkpoints/<run>/step_<step>``.

    Rank shards first, then ``metrics.json``, then the ``.metadata`` marker (written under a
    temporary name and renamed, as DCP's file-system writer does): only then is it complete.
    """
    rng = random.Random(step if seed is None else seed)
    d = root / "checkpoints" / run / f"step_{step:06d}"
    d.mkdir(parents=True, exist_ok=True)
    for rank in range(shards):
        (d / f"__{rank}_0.distcp").write_bytes(rng.randbytes(shard_bytes))
    (d / "metrics.json").write_text(json.dumps(metrics if metrics is not None else {"loss": 1.0}))
    (d / ".metadata.tmp").write_text(json.dumps({"step": step, "shards": shards}))
    (d / ".metadata.tmp").rename(d / ".metadata")
    return d
