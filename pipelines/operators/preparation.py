"""Preparation operators: plan → mapped shard builds → mapped shard validations → publish.

Thin wrappers over :mod:`pipelines.datasets.preparation`. Bad input, a bad suite and a failed validation
are final (``AirflowFailException``): retrying cannot change the data. Each validation task links
to its shard's GX Data Docs (the "Validation docs" extra link), served by the storage-bandwidth
plugin from the dataset's own copy on object storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from pipelines.core.payloads import native
from pipelines.operators.assets import PUBLISHED
from pipelines.operators.context import fatal_errors, load_config_in_task, open_tiers, open_tiers_in_task
from pipelines.operators.lineage import report_dataset

__all__ = [
    "BuildShardsOperator",
    "PlanPreparationOperator",
    "PublishDatasetOperator",
    "ValidateShardOperator",
    "ValidationDocsLink",
    "docs_route",
]


def docs_route(dataset: str, version: str, shard_key: str) -> str:
    """The plugin route of a shard's Data Docs (relative to the API server's base URL)."""
    from pipelines.datasets.preparation import shard_stem

    return f"/storage-bandwidth/docs/{dataset}/{version}/{shard_stem(shard_key)}/index.html"


class ValidationDocsLink(BaseOperatorLink):
    """Link from a validation task to its shard's GX Data Docs."""

    name = "Validation docs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The docs URL the task recorded while it ran (empty before)."""
        return str(getattr(operator, "docs_url", "") or "")


#: Plans read in this process, by checksum (a worker running many build tasks reads each once).
_PLANS: dict[str, Any] = {}


def _plan(context: Any, plan_task_id: str, config_path: str | None) -> Any:
    """The full plan the planning task stored beside the version (XCom carries only its reference)."""
    from pipelines.datasets.preparation import PlanRef, load_plan

    with fatal_errors():
        ref = PlanRef.from_json(
            context["ti"].xcom_pull(task_ids=plan_task_id, key="plan"), f"XCom plan of {plan_task_id}"
        )
        if ref.checksum not in _PLANS:
            (target,) = open_tiers_in_task(config_path, ref.tier)
            _PLANS[ref.checksum] = load_plan(target, ref)
        return _PLANS[ref.checksum]


class PlanPreparationOperator(BaseOperator):
    """List the raw inputs, choose level, shard size and groups; return one descriptor per build group.

    The plan's reasons are logged. A version already committed on the target is never rebuilt: the
    list is empty and everything after is skipped.

    Returns (XCom) one :class:`~pipelines.datasets.preparation.BuildGroup` per mapped build (its
    index and counts, never its keys). The full :class:`~pipelines.datasets.preparation.PreparePlan`
    (every input, the groups, the suite) is stored beside the version on the target
    (``<prefix>/_tierflow_plan/<checksum>.json``) and XCom ``plan`` carries its
    :class:`~pipelines.datasets.preparation.PlanRef`, so XComs stay small at any input count.

    Args:
        dataset: Dataset name (templated); its suite is found as :mod:`pipelines.datasets.preparation.suites`
            says (``suite_file``, ``<dataset>.json`` in ``suites_dir``, one inferred before, the packaged
            ones), or inferred from the first raw input and saved under the state directory.
        version: Version to publish (templated).
        source_prefix: Raw input prefix on the source tier (templated).
        format: ``parquet`` or ``jsonl`` (templated).
        level: zstd level 1-19, or None for the planner's choice (templated, an int or None).
        shard_size: Shard size (``"128 MiB"``), or None for the planner's (templated).
        dictionary: Train a zstd dictionary (JSONL only; templated, a bool).
        source: Tier holding the raw input (default: the config's object tier, whatever its name).
        target: Tier the version is published on (default: the config's object tier).
        suites_dir: Where ``<dataset>.json`` is looked for first; default ``$TIERFLOW_SUITES``.
        suite_file: A suite file to use, whatever the dataset's name (templated; None: look it up).
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = (
        "dataset",
        "version",
        "source_prefix",
        "format",
        "level",
        "shard_size",
        "dictionary",
        "suite_file",
    )

    def __init__(
        self,
        *,
        dataset: str,
        version: str,
        source_prefix: str,
        format: str = "parquet",
        level: int | None = None,
        shard_size: str | None = None,
        dictionary: bool = False,
        source: str | None = None,
        target: str | None = None,
        suites_dir: str | None = None,
        suite_file: str | None = None,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.suite_file = suite_file
        self.dataset = dataset
        self.version = version
        self.source_prefix = source_prefix
        self.format = format
        self.level = level
        self.shard_size = shard_size
        self.dictionary = dictionary
        self.source = source
        self.target = target
        self.suites_dir = suites_dir
        self.config_path = config_path

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Plan; returns the build-group descriptors."""
        from pipelines.core.config import load_config
        from pipelines.core.units import parse_size
        from pipelines.datasets.preparation import plan_preparation, store_plan
        from pipelines.datasets.preparation.suites import resolve_suite

        with fatal_errors():
            level = native(self.level, int | None, "PlanPreparationOperator.level")
            size = native(self.shard_size or None, str | None, "PlanPreparationOperator.shard_size")
            shard = parse_size(size) if size else None
            dictionary = native(self.dictionary, bool, "PlanPreparationOperator.dictionary")
            suite_file = native(self.suite_file or None, str | None, "PlanPreparationOperator.suite_file")
            source, target = open_tiers_in_task(self.config_path, (self.source, "object"), (self.target, "object"))
            suite = resolve_suite(
                self.dataset,
                source,
                self.source_prefix,
                suite_file=suite_file,
                directory=self.suites_dir,
                state_dir=load_config(self.config_path).state_dir,
            )
            self.log.info(
                "suite: %s (%d columns, %d expectations)", suite.source, len(suite.schema), len(suite.expectations)
            )
            plan = plan_preparation(
                source,
                target,
                self.source_prefix,
                self.dataset,
                self.version,
                suite,
                self.format,
                level=level,
                shard_bytes=shard,
                dictionary=dictionary,
                max_map_length=_max_map_length(),
            )
            ref = store_plan(target, plan)
        for choice, reason in plan.reasons.items():
            self.log.info("plan %s: %s", choice, reason)
        self.log.info("plan stored at %s (%d inputs in %d groups)", target.url(ref.key), ref.inputs, ref.groups)
        context["ti"].xcom_push(key="plan", value=ref.to_json())
        if plan.already_published:
            self.log.info("%s/%s is already published on %s: nothing to do", self.dataset, self.version, target.name)
        return [group.to_json() for group in plan.tasks()]


def _max_map_length() -> int:
    """Airflow's ``[core] max_map_length``: no mapped task may expand past it."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=1024)


class BuildShardsOperator(BaseOperator):
    """Pack one build group into shards and upload them; map it over the plan (``.expand(group=...)``).

    Returns (XCom) one :class:`~pipelines.datasets.preparation.BuiltShard` per shard uploaded.

    Args:
        group: A :class:`~pipelines.datasets.preparation.BuildGroup` (JSON) from :class:`PlanPreparationOperator`.
        plan_task_id: The planning task (its plan carries the suite the shards are built against).
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = ("group",)

    def __init__(
        self,
        *,
        group: dict[str, Any],
        plan_task_id: str = "plan",
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.plan_task_id = plan_task_id
        self.config_path = config_path

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Build; returns the shards uploaded."""
        from pipelines.datasets.preparation import BuildGroup, build_group

        plan = _plan(context, self.plan_task_id, self.config_path)
        with fatal_errors():
            group = BuildGroup.from_json(self.group, "BuildShardsOperator.group")
            source, target = open_tiers_in_task(self.config_path, plan.source, plan.target)
            return [shard.to_json() for shard in build_group(source, target, plan, group.index, plan.suite())]


class ValidateShardOperator(BaseOperator):
    """Validate one shard (integrity checks, then the GX suite) and store its Data Docs; map it over the shards.

    Under policy ``fail`` a failing shard fails this task (for good); under ``quarantine`` the
    report goes to the publish task, which moves the shard aside.

    Returns (XCom) a :class:`~pipelines.datasets.preparation.ShardValidation`.

    Args:
        shard: One :class:`~pipelines.datasets.preparation.BuiltShard` (its JSON form) from a build task.
        policy: ``fail`` or ``quarantine`` (templated).
        plan_task_id: The planning task (its plan carries the suite to check).
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = ("shard", "policy")
    operator_extra_links = (ValidationDocsLink(),)

    def __init__(
        self,
        *,
        shard: dict[str, Any],
        policy: str = "fail",
        plan_task_id: str = "plan",
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.policy = policy
        self.plan_task_id = plan_task_id
        self.config_path = config_path
        self.docs_url = ""

    def execute(self, context: Any) -> dict[str, Any]:
        """Validate; returns the report and the docs stored."""
        from airflow.configuration import conf
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.datasets.preparation import BuiltShard, validate_shard

        plan = _plan(context, self.plan_task_id, self.config_path)
        with fatal_errors():
            shard = BuiltShard.from_json(self.shard, "ValidateShardOperator.shard")
            config = load_config_in_task(self.config_path)
            (target,) = open_tiers(config, plan.target)
            validation = validate_shard(target, plan, shard, plan.suite())
        base = conf.get("api", "base_url", fallback="") or ""
        route = docs_route(plan.dataset, plan.version, shard.key)
        self.docs_url = base.rstrip("/") + route if validation.docs else ""
        report = validation.report
        from pipelines.operators.metrics import record_event

        record_event(config.state_dir, "validation", {"result": "passed" if report.passed else "failed"})
        if not report.passed and self.policy == "fail":
            raise AirflowFailException(
                f"{shard.key} failed validation: " + " | ".join(f.line() for f in report.findings)
            )
        return validation.to_json()


class PublishDatasetOperator(BaseOperator):
    """Apply the failure policy and commit the version; emits ``tierflow_dataset_published`` (dataset, version).

    Returns (XCom, and the asset event's extra) a :class:`~pipelines.datasets.preparation.Publication`.

    Args:
        policy: ``fail`` or ``quarantine`` (templated).
        max_failed_fraction: Under ``quarantine``, the largest fraction of shards that may fail (templated, a number).
        plan_task_id: The planning task.
        build_task_id: The mapped build task.
        validate_task_id: The mapped validation task.
        config_path: Tier config file.
        outlets: Declared by default as the asset ``tierflow_dataset_published`` (also for
            ``.partial()``), with the dataset and version as extras.
    """

    template_fields: Sequence[str] = ("policy", "max_failed_fraction")

    def __init__(
        self,
        *,
        policy: str = "fail",
        max_failed_fraction: float = 0.1,
        plan_task_id: str = "plan",
        build_task_id: str = "build",
        validate_task_id: str = "validate",
        config_path: str | None = None,
        outlets: Sequence[Any] = (PUBLISHED,),  # in the signature, so .partial() (a mapped task) declares it too
        **kwargs: Any,
    ) -> None:
        super().__init__(outlets=list(outlets), **kwargs)
        self.policy = policy
        self.max_failed_fraction = max_failed_fraction
        self.plan_task_id = plan_task_id
        self.build_task_id = build_task_id
        self.validate_task_id = validate_task_id
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Publish; returns the summary (also the asset event's extra)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.datasets.preparation import BuiltShard, ShardValidation, publish

        ti = context["ti"]
        plan = _plan(context, self.plan_task_id, self.config_path)
        if plan.already_published:
            raise AirflowSkipException(f"{plan.dataset}/{plan.version} is already published")
        with fatal_errors():
            built = ti.xcom_pull(task_ids=[self.build_task_id]) or []
            shards = [
                BuiltShard.from_json(s, f"XCom of {self.build_task_id}") for group in built if group for s in group
            ]
            validated = ti.xcom_pull(task_ids=[self.validate_task_id]) or []
            validations = [ShardValidation.from_json(v, f"XCom of {self.validate_task_id}") for v in validated if v]
            fraction = native(self.max_failed_fraction, float, "PublishDatasetOperator.max_failed_fraction")
            config = load_config_in_task(self.config_path)
            (target,) = open_tiers(config, plan.target)
            commit, published = publish(target, plan, shards, validations, self.policy, fraction)
        quarantined = f"; quarantined {', '.join(published.quarantined)}" if published.quarantined else ""
        self.log.info(
            "published %s/%s on %s: %d shards, %d rows, %d bytes (ratio %.2f, zstd level %d)%s",
            published.dataset,
            published.version,
            target.name,
            published.shards,
            published.rows,
            published.bytes,
            published.ratio,
            published.level,
            quarantined,
        )
        summary = published.to_json()
        events = context.get("outlet_events")
        if events is not None:
            events[PUBLISHED].extra = summary
        if published.quarantined:
            from pipelines.operators.metrics import record_event

            record_event(config.state_dir, "quarantine", {}, shards=len(published.quarantined))
        manifest = commit.manifest
        report_dataset(self, config, None, target, plan.dataset, plan.version, manifest.checksum())
        return summary
