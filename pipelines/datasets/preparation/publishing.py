"""Validating shards and publishing the version (``fail`` or ``quarantine``; commit marker last); reading it back."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.checksum import checksum_bytes, checksum_file
from pipelines.core.errors import TierflowError
from pipelines.core.manifest import Entry, Manifest, dataset_prefix
from pipelines.core.payloads import Payload
from pipelines.datasets.validation import ShardReport, Suite, iter_shard, validate_local_shard
from pipelines.storage.commit import commit, read_commit

if TYPE_CHECKING:
    from pipelines.storage.commit import Commit
    from pipelines.storage.tier import Tier
from pipelines.datasets.preparation.plan import (
    DICTIONARY_KEY,
    DOCS_DIR,
    POLICIES,
    QUARANTINE_DIR,
    REPORT_KEY,
    SHARDS_DIR,
    InputError,
    PreparePlan,
    plan_preparation,
)
from pipelines.datasets.preparation.shards import BuiltShard, build_group, load_dictionary

log = logging.getLogger(__name__)

__all__ = [
    "Publication",
    "PublishError",
    "ShardValidation",
    "prepare",
    "publish",
    "read_records",
    "shard_stem",
    "validate_shard",
]


class PublishError(TierflowError):
    """Validation failed under the policy: nothing was published. The message names every failing shard."""


@dataclass(frozen=True)
class ShardValidation(Payload):
    """A validation task's result (its XCom): the shard's report and its stored Data Docs ``(key, size, checksum)``."""

    report: ShardReport
    docs: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True)
class Publication(Payload):
    """A published version (the publish task's XCom and its asset event's extra)."""

    dataset: str
    version: str
    format: str
    level: int
    shards: int
    rows: int
    raw_bytes: int
    bytes: int
    ratio: float
    policy: str
    quarantined: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def validate_shard(
    target: Tier, plan: PreparePlan, shard: BuiltShard, suite: Suite, workdir: str | None = None
) -> ShardValidation:
    """Validate one uploaded shard (integrity + GX) and store its Data Docs with the dataset."""
    prefix = dataset_prefix(plan.dataset, plan.version)
    dictionary = load_dictionary(target, plan)
    stem = shard_stem(shard.key)
    with tempfile.TemporaryDirectory(prefix="tierflow-validate-", dir=workdir) as tmp:
        local = os.path.join(tmp, posixpath.basename(shard.key))
        target.get_file(f"{prefix}/{shard.key}", local)
        docs = os.path.join(tmp, "docs")
        report = validate_local_shard(local, shard.key, suite, shard.checksum, dictionary, docs)
        entries: list[tuple[str, int, str]] = []
        for root, _dirs, files in os.walk(docs):
            for name in sorted(files):
                path = os.path.join(root, name)
                key = f"{DOCS_DIR}/{stem}/{os.path.relpath(path, docs).replace(os.sep, '/')}"
                digest, size = checksum_file(path)
                target.put_file(path, f"{prefix}/{key}")
                entries.append((key, size, digest))
    log.info(
        "%s: %s, %d rows, %.2f s%s",
        shard.key,
        "passed" if report.passed else "FAILED",
        report.rows,
        report.seconds,
        "".join(f"\n  {f.line()}" for f in report.findings),
    )
    return ShardValidation(report, tuple(entries))


def publish(
    target: Tier,
    plan: PreparePlan,
    shards: Sequence[BuiltShard],
    validations: Sequence[ShardValidation],
    policy: str = "fail",
    max_failed_fraction: float = 0.1,
) -> tuple[Commit, Publication]:
    """Apply the policy and commit the version; returns the commit and what was published.

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
    by_key = {v.report.shard: v.report for v in validations}
    docs = [d for v in validations for d in v.docs]
    good, failed, lines = _apply_policy(target, plan, shards, by_key, policy, max_failed_fraction)
    raw = sum(s.raw_bytes for s in good)
    stored = sum(s.size for s in good)
    published = Publication(
        dataset=plan.dataset,
        version=plan.version,
        format=plan.format,
        level=plan.level,
        shards=len(good),
        rows=sum(s.rows for s in good),
        raw_bytes=raw,
        bytes=stored,
        ratio=round(raw / stored, 3) if stored else 0.0,
        policy=policy,
        quarantined=[s.key for s in failed],
        failures=lines,
    )
    summary = published.to_json() | {"schema": dict(plan.schema)}  # the schema lets readers decode the version
    report = {"summary": summary, "shards": [by_key[s.key].to_json() for s in shards]}
    data = json.dumps(report, indent=1).encode()
    target.write_bytes(f"{prefix}/{REPORT_KEY}", data)
    entries = [Entry(s.key, s.size, str(s.checksum)) for s in good]
    entries.append(Entry(REPORT_KEY, len(data), checksum_bytes(data)))
    failed_stems = {shard_stem(s.key) for s in failed}  # their docs went to quarantine with them
    entries += [Entry(k, n, c) for k, n, c in docs if _docs_stem(k) not in failed_stems]
    if plan.dictionary_checksum:
        size = target.stat(f"{prefix}/{DICTIONARY_KEY}").size
        entries.append(Entry(DICTIONARY_KEY, size, plan.dictionary_checksum))
    manifest = Manifest(plan.dataset, plan.version, tuple(entries))
    record = commit(
        target,
        manifest,
        source=f"{plan.source}:{plan.source_prefix}",
        extra={"preparation": summary},
        exclusive=True,
        keep=(QUARANTINE_DIR,),
    )
    log.info(
        "published %s/%s on %s: %d shards, %d rows, %.1f MB (ratio %.2f)%s",
        plan.dataset,
        plan.version,
        target.name,
        len(good),
        published.rows,
        stored / 1e6,
        published.ratio,
        f"; quarantined {published.quarantined}" if failed else "",
    )
    return record, published


def _apply_policy(
    target: Tier,
    plan: PreparePlan,
    shards: Sequence[BuiltShard],
    by_key: dict[str, ShardReport],
    policy: str,
    max_failed_fraction: float,
) -> tuple[list[BuiltShard], list[BuiltShard], list[str]]:
    """The shards to publish, those that failed (quarantined when the policy says so) and one line per failure.

    Raises:
        PublishError: The policy refuses to publish the version.
    """
    prefix = dataset_prefix(plan.dataset, plan.version)
    missing = [s.key for s in shards if s.key not in by_key]
    if missing:
        raise PublishError(f"{plan.dataset}/{plan.version}: no validation report for {missing}")
    failed = [s for s in shards if not by_key[s.key].passed]
    lines = [
        f"{s.key}: "
        + "; ".join(f"{f.check}{' [' + f.column + ']' if f.column else ''} {f.detail}" for f in by_key[s.key].findings)
        for s in failed
    ]
    fraction = len(failed) / len(shards) if shards else 1.0
    refused = failed and (policy == "fail" or fraction > max_failed_fraction or len(failed) == len(shards))
    if failed and policy == "quarantine":
        _quarantine(target, prefix, failed, by_key)
    if refused:
        why = (
            "policy fail" if policy == "fail" else f"{fraction:.0%} failed, over the {max_failed_fraction:.0%} allowed"
        )
        raise PublishError(
            f"{plan.dataset}/{plan.version} not published ({why}): {len(failed)} of {len(shards)} shard(s) failed — "
            + " | ".join(lines)
        )
    return [s for s in shards if by_key[s.key].passed], failed, lines


def shard_stem(key: str) -> str:
    """A shard's name without directory and suffixes (``shards/part-0000-0001.jsonl.zst`` → ``part-0000-0001``)."""
    return posixpath.basename(key).split(".", 1)[0]


def _docs_stem(key: str) -> str | None:
    """The shard a Data Docs key belongs to (``validation/docs/<stem>/...``)."""
    parts = key.split("/")
    return parts[2] if len(parts) > 2 else None


def _quarantine(target: Tier, prefix: str, shards: Sequence[BuiltShard], reports: dict[str, ShardReport]) -> None:
    """Move failing shards and their reports under ``_quarantine/`` (copy, then delete the original)."""
    for shard in shards:
        src = f"{prefix}/{shard.key}"
        dst = f"{prefix}/{QUARANTINE_DIR}/{shard.key}"
        if target.exists(src):
            target.copy_key(src, dst)
            target.delete([src])
        target.write_bytes(f"{dst}.report.json", json.dumps(reports[shard.key].to_json(), indent=1).encode())
        log.warning("quarantined %s → %s", target.url(src), target.url(dst))


def read_records(tier: Tier, dataset: str, version: str, workdir: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a committed prepared version, shard by shard (the dictionary applied when there is one).

    Raises:
        FileNotFoundError: The version is not committed on ``tier``.
    """
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
            for batch in iter_shard(local, entry.key, suite, dictionary):
                yield from batch.to_pylist()
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
    validations = [validate_shard(target, plan, shard, suite, workdir) for shard in shards]
    record, published = publish(target, plan, shards, validations, policy, max_failed_fraction)
    return plan, record, published.to_json()
