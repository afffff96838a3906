"""Thin Airflow operators over the Tierflow library: everything a user's DAG imports is exported here.

Each operator stores its arguments in ``__init__`` (which runs at every DAG parse) and, in
``execute``, resolves connections and calls one library function. Library modules are imported
inside ``execute`` so that parsing a DAG stays fast. Operators that emit asset events declare
their outlets themselves (also when mapped with ``.partial()``).
"""

from pipelines.operators.assets import PUBLISHED
from pipelines.operators.calibration import CalibrateTierOperator
from pipelines.operators.checkpoints import (
    CHECKPOINT_ALIAS,
    DiscoverCheckpointsOperator,
    PromoteCheckpointOperator,
    RestoreCheckpointOperator,
    RetainCheckpointsOperator,
    checkpoint_asset,
)
from pipelines.operators.preparation import (
    BuildShardsOperator,
    PlanPreparationOperator,
    PublishDatasetOperator,
    ValidateShardOperator,
    ValidationDocsLink,
)
from pipelines.operators.probe import ProbeTierOperator
from pipelines.operators.roles import by_role, default_retention, role_name
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
    "CHECKPOINT_ALIAS",
    "PUBLISHED",
    "STAGED_ALIAS",
    "BuildShardsOperator",
    "CalibrateTierOperator",
    "CommitStagingOperator",
    "DiscoverCheckpointsOperator",
    "EvictCacheOperator",
    "PlanPreparationOperator",
    "PlanStagingOperator",
    "ProbeTierOperator",
    "PromoteCheckpointOperator",
    "PublishDatasetOperator",
    "RestoreCheckpointOperator",
    "RetainCheckpointsOperator",
    "StageDatasetOperator",
    "StageShardOperator",
    "ValidateShardOperator",
    "ValidationDocsLink",
    "by_role",
    "checkpoint_asset",
    "dataset_asset",
    "default_retention",
    "role_name",
]
