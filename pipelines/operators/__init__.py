"""Thin Airflow operators over the Tierflow library.

Each operator stores its arguments in ``__init__`` (which runs at every DAG parse) and, in
``execute``, resolves connections and calls one library function. Library modules are imported
inside ``execute`` so that parsing a DAG stays fast.
"""

from pipelines.operators.probe import ProbeTierOperator
from pipelines.operators.staging import (
    STAGED_ALIAS,
    CommitStagingOperator,
    EvictCacheOperator,
    PlanStagingOperator,
    StageDatasetOperator,
    StageShardOperator,
    dataset_asset,
)

__all__ = [
    "STAGED_ALIAS",
    "CommitStagingOperator",
    "EvictCacheOperator",
    "PlanStagingOperator",
    "ProbeTierOperator",
    "StageDatasetOperator",
    "StageShardOperator",
    "dataset_asset",
]
