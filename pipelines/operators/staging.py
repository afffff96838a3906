"""Staging operators: plan → mapped shard copies → commit, the one-task form, and cache eviction.

Every operator stores its arguments in ``__init__`` and does its work in ``execute`` through
:mod:`pipelines.datasets.staging`, :mod:`pipelines.datasets.cache` and the transfer engine. XCom carries small
summaries only, each a payload of :mod:`pipelines.datasets.payloads` (a shard task names its shard
by ``(index, count, manifest checksum)``, never by its objects).

Failures are classified once: a checksum mismatch, a missing source commit, a bad config, a full
cache or a permission error fail the task for good (``AirflowFailException``); anything else is
raised for Airflow to retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

from pipelines.core.payloads import native
from pipelines.operators.context import fatal_errors, open_tiers_in_task
from pipelines.operators.lineage import report_dataset

__all__ = [
    "STAGED_ALIAS",
    "CommitStagingOperator",
    "EvictCacheOperator",
    "PlanStagingOperator",
    "StageDatasetOperator",
    "StageShardOperator",
    "dataset_asset",
]

#: Every committed copy is reported through this alias as an event of the asset (dataset, tier).
STAGED_ALIAS = AssetAlias(name="tierflow_staged")


def dataset_asset(dataset: str, tier: str) -> Asset:
    """The asset standing for a dataset on one tier."""
    return Asset(name=f"tierflow/{dataset}@{tier}", uri=f"tierflow://{tier}/datasets/{dataset}")


class PlanStagingOperator(BaseOperator):
    """Plan one hop of a committed dataset version and return one shard descriptor per mapped task.

    The plan (concurrency, part size, shards, predicted time and bottleneck, with reasons) is
    logged. When the target already holds the same committed version the list is empty and the
    copies are skipped.

    Returns (XCom) one :class:`~pipelines.datasets.payloads.ShardTask` per mapped copy, and pushes
    the :class:`~pipelines.datasets.payloads.StagingPlan` as XCom ``plan``.

    Args:
        dataset: Dataset name (templated).
        version: Dataset version (templated).
        source: Source tier name (templated).
        target: Target tier name (templated); empty skips this hop.
        target_task_s: How long one mapped copy task should run.
        max_concurrency: Most streams the plan may choose (e.g. what the task's pod was sized for).
        memory_budget: Bytes of part buffers the plan may hold in flight (default: the planner's).
        deadline: Finish the staging within this long after the run was queued, e.g. ``"6h"``
            (templated; empty: no deadline): the plan takes the fewest streams that finish in
            time, or warns with what would.
        then: The tier a later hop copies this hop's target to (templated): the deadline is
            shared between the two hops.
        concurrent_tasks: How many copy tasks share these tiers at once (other runs' included):
            the plan takes its share of their aggregate bandwidth and operation rate.
        node: The ``[[node]]`` this task belongs to (a per-node hop, on that node's queue): the
            tiers are that node's, and a worker of another node (``$TIERFLOW_NODE``) fails the task.
        config_path: Tier config file; default ``$TIERFLOW_CONFIG``, else the packaged default.
    """

    template_fields: Sequence[str] = ("dataset", "version", "source", "target", "deadline", "then")

    def __init__(
        self,
        *,
        dataset: str,
        version: str,
        source: str,
        target: str,
        target_task_s: float = 600.0,
        max_concurrency: int | None = None,
        memory_budget: int | None = None,
        deadline: str | None = None,
        then: str | None = None,
        concurrent_tasks: int = 1,
        node: str | None = None,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.version = version
        self.source = source
        self.target = target
        self.target_task_s = target_task_s
        self.max_concurrency = max_concurrency
        self.memory_budget = memory_budget
        self.deadline = deadline
        self.then = then
        self.concurrent_tasks = concurrent_tasks
        self.node = node
        self.config_path = config_path

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Plan the hop; returns the shard descriptors (small)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.datasets.staging import plan_stage

        if not self.target:
            raise AirflowSkipException("no target tier for this hop")
        from pipelines.operators.deadlines import PARAM, seconds_left

        with fatal_errors():
            names = [self.source, self.target, *([self.then] if self.then else [])]
            source, target, *later = open_tiers_in_task(self.config_path, *names, node=self.node)
            then = later[0] if later else None
            caps = {
                "max_concurrency": self.max_concurrency,
                "memory_budget": self.memory_budget,
                "tasks": self.concurrent_tasks if self.concurrent_tasks > 1 else None,
            }
            planner = {k: v for k, v in caps.items() if v is not None}
            run = context.get("dag_run")
            started = getattr(run, "queued_at", None) or getattr(run, "start_date", None)
            left = seconds_left({PARAM: self.deadline}, started)
            plan = plan_stage(
                source,
                target,
                self.dataset,
                self.version,
                target_task_s=self.target_task_s,
                deadline_s=left,
                then=then,
                **planner,
            )
        for choice, reason in plan.hop.reasons.items():
            self.log.info("plan %s: %s", choice, reason)
        if plan.hop.meets_deadline is False and not plan.already_staged:
            self.log.warning("plan: this hop will be late: %s", plan.hop.reasons["deadline"])
        context["ti"].xcom_push(key="plan", value=plan.summary().to_json())
        return [shard.to_json() for shard in plan.shards()]


class StageShardOperator(BaseOperator):
    """Copy one shard of a planned hop (mapped with ``expand(shard=...)`` over the plan's output).

    Returns (XCom) a :class:`~pipelines.datasets.payloads.ShardCopy`.

    Args:
        shard: A :class:`~pipelines.datasets.payloads.ShardTask` (its JSON form) from :class:`PlanStagingOperator`.
        verify: Read every copied object back at the target and compare checksums (templated: a bool).
        fsync: fsync local files before they are renamed into place.
        node: The ``[[node]]`` this task belongs to (a per-node hop, on that node's queue): the
            tiers are that node's, and a worker of another node (``$TIERFLOW_NODE``) fails the task.
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = ("shard", "verify")

    def __init__(
        self,
        *,
        shard: dict[str, Any],
        verify: bool = False,
        fsync: bool = False,
        node: str | None = None,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.verify = verify
        self.fsync = fsync
        self.node = node
        self.config_path = config_path

    def pre_execute(self, context: Any) -> None:
        """The shard's ``execution_timeout`` from its plan (unless the DAG set one): Airflow applies it next."""
        from pipelines.core.units import format_duration
        from pipelines.datasets.payloads import ShardTask

        with fatal_errors():  # a malformed shard fails in one line, as execute would
            timeout_s = ShardTask.from_json(self.shard, "StageShardOperator.shard").timeout_s
        if self.execution_timeout is None and timeout_s > 0:
            self.execution_timeout = timedelta(seconds=timeout_s)
            self.log.info("execution timeout %s from the plan", format_duration(timeout_s))

    def execute(self, context: Any) -> dict[str, Any]:
        """Copy the shard; returns the copy summary (small)."""
        from pipelines.core.units import format_bytes, format_duration, format_prediction
        from pipelines.datasets.payloads import ShardCopy, ShardTask
        from pipelines.datasets.staging import stage_shard
        from pipelines.transfer import TransferSettings

        with fatal_errors():
            s = ShardTask.from_json(self.shard, "StageShardOperator.shard")
            verify = native(self.verify, bool, "StageShardOperator.verify")
            self.log.info(
                "%s: %s at %d stream(s), %s parts; predicted %s (%s)",
                s.name,
                format_bytes(s.bytes),
                s.concurrency,
                f"{s.part_size / 2**20:g} MiB",  # part sizes are whole MiB
                format_prediction(s.predicted_s, s.uncertainty),
                s.bottleneck,
            )
            settings = TransferSettings(
                concurrency=s.concurrency,
                part_size=s.part_size,
                verify=verify,
                fsync=self.fsync,
                expected_s=s.predicted_s,  # a copy falling behind its plan says so
            )
            source, target = open_tiers_in_task(self.config_path, s.source, s.target, node=self.node)
            report = stage_shard(source, target, s.dataset, s.version, s.index, s.count, s.manifest_checksum, settings)
        self.log.info(
            "shard %d/%d: %s; predicted %s", s.index + 1, s.count, report.line(), format_duration(s.predicted_s)
        )
        return ShardCopy.of(s, report).to_json()


def _emit(context: Any, summary: Any) -> None:
    events = context.get("outlet_events")
    if events is not None:
        extra = {"event": "committed", **summary.to_json()}
        events[STAGED_ALIAS].add(dataset_asset(summary.dataset, summary.tier), extra=extra)


class CommitStagingOperator(BaseOperator):
    """Commit a staged hop (after every shard copied) and emit the (dataset, tier) asset event.

    Returns (XCom, and the asset event's extra) a :class:`~pipelines.datasets.payloads.HopSummary`.

    Args:
        plan_task_id: Task id of the hop's :class:`PlanStagingOperator`.
        stage_task_id: Task id of the hop's mapped :class:`StageShardOperator`.
        node: The ``[[node]]`` this task belongs to (a per-node hop, on that node's queue): the
            tiers are that node's, and a worker of another node (``$TIERFLOW_NODE``) fails the task.
        config_path: Tier config file.
        outlets: Declared by default as the alias ``tierflow_staged`` (also for ``.partial()``): the
            committed copy is an event of the (dataset, tier) asset through it.
    """

    def __init__(
        self,
        *,
        plan_task_id: str,
        stage_task_id: str,
        node: str | None = None,
        config_path: str | None = None,
        outlets: Sequence[Any] = (STAGED_ALIAS,),  # in the signature, so .partial() (a mapped task) declares it too
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(outlets=list(outlets), **kwargs)
        self.plan_task_id = plan_task_id
        self.stage_task_id = stage_task_id
        self.node = node
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Commit and return the hop's summary: bytes, objects, seconds, predicted vs achieved MB/s."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.datasets.payloads import HopSummary, ShardCopy, StagingPlan
        from pipelines.datasets.staging import commit_stage
        from pipelines.operators.context import load_config_in_task, open_tiers, placement

        ti = context["ti"]
        pulled = ti.xcom_pull(task_ids=self.plan_task_id, key="plan")
        if not pulled:
            raise AirflowSkipException("hop not planned (no target)")
        with fatal_errors():
            plan = StagingPlan.from_json(pulled, f"XCom plan of {self.plan_task_id}")
            copies = ti.xcom_pull(task_ids=[self.stage_task_id]) or []  # a list even for one mapped task
            shards = [ShardCopy.from_json(c, f"XCom of {self.stage_task_id}") for c in copies if c]
        with fatal_errors():
            config = load_config_in_task(self.config_path, self.node)
        where = placement(config)
        summary = HopSummary.planned(plan).at(**where)
        if plan.already_staged:
            self.log.info("%s", summary.line())
            return summary.to_json()
        copied = sum(s.copied_bytes for s in shards)
        seconds = max((s.seconds for s in shards), default=0.0)
        with fatal_errors():
            source, target = open_tiers(config, plan.source, plan.target)
            commit_stage(
                source,
                target,
                plan.dataset,
                plan.version,
                plan.manifest_checksum,
                extra={"shards": len(shards), "copied_bytes": copied, **where},
            )
        summary = summary.copied(len(shards), sum(s.copied_objects for s in shards), copied, seconds)
        self.log.info("%s", summary.line())
        _emit(context, summary)
        report_dataset(self, config, source, target, plan.dataset, plan.version, plan.manifest_checksum)
        return summary.to_json()


class StageDatasetOperator(BaseOperator):
    """Stage a small dataset version in one task: plan, copy, commit, asset event.

    Returns (XCom, and the asset event's extra) a :class:`~pipelines.datasets.payloads.HopSummary`.

    Args:
        dataset: Dataset name (templated).
        version: Dataset version (templated).
        source: Source tier name (templated).
        target: Target tier name (templated).
        verify: Read every copied object back at the target.
        node: The ``[[node]]`` this task belongs to (a per-node hop, on that node's queue): the
            tiers are that node's, and a worker of another node (``$TIERFLOW_NODE``) fails the task.
        config_path: Tier config file.
        outlets: Declared by default as the alias ``tierflow_staged`` (also for ``.partial()``).
    """

    template_fields: Sequence[str] = ("dataset", "version", "source", "target")

    def __init__(
        self,
        *,
        dataset: str,
        version: str,
        source: str,
        target: str,
        verify: bool = False,
        node: str | None = None,
        config_path: str | None = None,
        outlets: Sequence[Any] = (STAGED_ALIAS,),  # in the signature, so .partial() (a mapped task) declares it too
        **kwargs: Any,
    ) -> None:
        super().__init__(outlets=list(outlets), **kwargs)
        self.dataset = dataset
        self.version = version
        self.source = source
        self.target = target
        self.verify = verify
        self.node = node
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Stage; returns a :class:`~pipelines.datasets.payloads.HopSummary`."""
        from pipelines.datasets.payloads import HopSummary
        from pipelines.datasets.staging import stage_dataset
        from pipelines.operators.context import load_config_in_task, open_tiers, placement

        with fatal_errors():
            verify = native(self.verify, bool, "StageDatasetOperator.verify")
            config = load_config_in_task(self.config_path, self.node)
            source, target = open_tiers(config, self.source, self.target)
            plan, report, _ = stage_dataset(source, target, self.dataset, self.version, verify=verify)
        summary = HopSummary.planned(plan.summary()).at(**placement(config))
        if report is not None:
            summary = summary.copied(1, report.copied_objects, report.copied_bytes, report.seconds)
            _emit(context, summary)
            report_dataset(self, config, source, target, self.dataset, self.version, plan.manifest_checksum)
        self.log.info("%s", summary.line())
        return summary.to_json()


class EvictCacheOperator(BaseOperator):
    """Make room on a cache tier: evict least-recently-used committed versions held on a more durable tier.

    Returns (XCom) what was evicted and kept, each with why, and the bytes free afterwards.

    Args:
        tier: The cache tier (templated).
        need_bytes: Bytes that must be free afterwards (templated, an int; e.g. from a plan's XCom).
        keep: ``[dataset, version]`` pairs never to evict in this pass (templated, a list).
        report_only: Report what would go without deleting (a dry run).
        node: The ``[[node]]`` this task belongs to (a per-node hop, on that node's queue): the
            tiers are that node's, and a worker of another node (``$TIERFLOW_NODE``) fails the task.
        config_path: Tier config file.
        outlets: Declared by default as the alias ``tierflow_staged``: each version evicted is an
            event of ``tierflow/<dataset>@<tier>`` with ``event: evicted``, its version, bytes, why
            and node as extras, so the Assets view shows what left the cache.
    """

    template_fields: Sequence[str] = ("tier", "need_bytes", "keep")

    def __init__(
        self,
        *,
        tier: str,
        need_bytes: int,
        keep: Sequence[Sequence[str]] = (),
        report_only: bool = False,
        node: str | None = None,
        config_path: str | None = None,
        outlets: Sequence[Any] = (STAGED_ALIAS,),  # in the signature, so .partial() declares it too
        **kwargs: Any,
    ) -> None:
        super().__init__(outlets=list(outlets), **kwargs)
        self.tier = tier
        self.need_bytes = need_bytes
        self.keep = keep
        self.report_only = report_only
        self.node = node
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Evict as needed and return what was removed and kept, each with why."""
        from pipelines.datasets.cache import ensure_space
        from pipelines.operators.context import load_config_in_task, open_tier_in_task

        with fatal_errors():
            need = native(self.need_bytes, int, "EvictCacheOperator.need_bytes")
            keep = native(self.keep, list[tuple[str, str]], "EvictCacheOperator.keep")
            config = load_config_in_task(self.config_path, self.node)
            cache = open_tier_in_task(config, self.tier)
            durable = [open_tier_in_task(config, t.name) for t in config.tiers if t.name != self.tier]
            report = ensure_space(
                cache,
                need,
                durable,
                keep=keep,
                dry_run=self.report_only,
            )
        for item in report.evicted:
            self.log.info("evicted %s/%s (%d bytes): %s", item["dataset"], item["version"], item["bytes"], item["why"])
        for item in report.kept:
            self.log.info("kept %s/%s (%d bytes): %s", item["dataset"], item["version"], item["bytes"], item["why"])
        if not self.report_only:
            from pipelines.operators.metrics import record_event

            for item in report.evicted:
                record_event(
                    config.state_dir, "eviction", {"tier": self.tier, "node": self.node or ""}, bytes=item["bytes"]
                )
        events = context.get("outlet_events")
        if events is not None and not self.report_only:
            for item in report.evicted:
                extra = {"event": "evicted", "tier": self.tier, "node": self.node, **item}
                events[STAGED_ALIAS].add(dataset_asset(item["dataset"], self.tier), extra=extra)
        return report.summary()
