"""DAG ``dataset_preparation``: raw JSONL/Parquet → validated zstd shards → a published dataset version.

1. ``plan`` lists the raw inputs once and takes the zstd level, shard size and build groups from
   the bandwidth planner (a level or shard size given in the params wins). It finds the dataset's
   expectation suite (the ``suite_file`` param, else ``<dataset>.json`` in ``$TIERFLOW_SUITES``, in
   ``<state_dir>/suites/`` or among the packaged ones) or, when there is none, infers one from the
   first input and saves it to ``<state_dir>/suites/<dataset>.json``; the plan carries it to
   every later task.
2. ``build`` (mapped, one task per group) packs many small inputs into few shards, Parquet with the
   zstd codec or JSONL in zstd frames, decodes each one again and uploads it.
3. ``validate`` (mapped, one task per shard) runs the integrity checks and the dataset's Great
   Expectations suite (the plan's); each task links to its Data Docs.
4. ``publish`` applies the policy — ``fail``, or ``quarantine`` the failing shards under
   ``_quarantine/`` when few enough fail — and commits the version on object storage, marker last.
   Its asset event (``tierflow_dataset_published``, extras: dataset, version ...) schedules
   ``dataset_staging``.

Bad input and failed validation are final: the task fails at once, naming the object, line,
column or expectation, and nothing is published.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from pipelines.operators.preparation import (
    BuildShardsOperator,
    PlanPreparationOperator,
    PublishDatasetOperator,
    ValidateShardOperator,
)

with DAG(
    dag_id="dataset_preparation",
    description="Shard, zstd-compress and validate raw training data; publish only what passes",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    tags=["tierflow", "preparation"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    params={
        "dataset": Param("synthetic", type="string", title="Dataset", description="Name; its suite is <name>.json."),
        "suite_file": Param(
            None,
            type=["null", "string"],
            title="Suite file",
            description="A suite file on the workers; empty: <dataset>.json, else one inferred from the data.",
        ),
        "version": Param("v2", type="string", title="Version", description="Version to publish (immutable)."),
        "source_prefix": Param(
            "raw/synthetic", type="string", title="Source prefix", description="Raw input prefix on object storage."
        ),
        "format": Param("parquet", enum=["parquet", "jsonl"], title="Shard format"),
        "level": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=19,
            title="zstd level",
            description="Empty: the planner chooses from a measured sample.",
        ),
        "shard_size": Param(
            None, type=["null", "string"], title="Shard size", description='e.g. "128 MiB"; empty: from the plan.'
        ),
        "dictionary": Param(False, type="boolean", title="zstd dictionary", description="JSONL shards only."),
        "policy": Param("quarantine", enum=["fail", "quarantine"], title="On validation failure"),
        "max_failed_fraction": Param(
            0.1, type="number", minimum=0, maximum=1, title="Max failed fraction", description="For quarantine."
        ),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    plan = PlanPreparationOperator(
        task_id="plan",
        dataset="{{ params.dataset }}",
        version="{{ params.version }}",
        source_prefix="{{ params.source_prefix }}",
        format="{{ params.format }}",
        level="{{ params.level }}",
        shard_size="{{ params.shard_size }}",
        dictionary="{{ params.dictionary }}",
        suite_file="{{ params.suite_file }}",
    )
    build = BuildShardsOperator.partial(task_id="build", map_index_template="{{ task.group['name'] }}").expand(
        group=plan.output
    )

    @task
    def shards(built: Any) -> list[dict[str, Any]]:
        """Every shard the build tasks wrote, one list for the mapped validation (within max_map_length)."""
        from airflow.configuration import conf
        from airflow.sdk.exceptions import AirflowFailException

        found = [s for group in built if group for s in group]
        limit = conf.getint("core", "max_map_length", fallback=1024)
        if len(found) > limit:  # the plan sizes shards to fit; a ratio far off its sample can still miss
            raise AirflowFailException(
                f"{len(found)} shards built, more than [core] max_map_length {limit} validation tasks: "
                "give a larger shard_size or raise max_map_length"
            )
        return found

    validate = ValidateShardOperator.partial(
        task_id="validate",
        policy="{{ params.policy }}",
        map_index_template="{{ task.shard['key'] }}",
        retries=0,
    ).expand(shard=shards(build.output))
    publish = PublishDatasetOperator(
        task_id="publish",
        policy="{{ params.policy }}",
        max_failed_fraction="{{ params.max_failed_fraction }}",
        retries=0,
    )
    validate >> publish
