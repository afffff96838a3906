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

from typing import TYPE_CHECKING

from pipelines.core.lazy import lazy_getattr

if TYPE_CHECKING:
    from pipelines.datasets.preparation.plan import (
        DOCS_DIR,
        FORMATS,
        POLICIES,
        QUARANTINE_DIR,
        SHARDS_DIR,
        BuildGroup,
        InputError,
        PlanRef,
        PreparePlan,
        load_plan,
        plan_preparation,
        store_plan,
    )
    from pipelines.datasets.preparation.publishing import (
        Publication,
        PublishError,
        ShardValidation,
        prepare,
        publish,
        read_records,
        shard_stem,
        validate_shard,
    )
    from pipelines.datasets.preparation.shards import BuiltShard, build_group

#: Public name → the submodule defining it; imported on first use, so importing one submodule (or
#: this package, at DAG parse time) does not import the others.
_EXPORTS = {
    "BuildGroup": "plan",
    "PlanRef": "plan",
    "load_plan": "plan",
    "store_plan": "plan",
    "BuiltShard": "shards",
    "Publication": "publishing",
    "ShardValidation": "publishing",
    "DOCS_DIR": "plan",
    "FORMATS": "plan",
    "InputError": "plan",
    "POLICIES": "plan",
    "PreparePlan": "plan",
    "PublishError": "publishing",
    "QUARANTINE_DIR": "plan",
    "SHARDS_DIR": "plan",
    "build_group": "shards",
    "plan_preparation": "plan",
    "prepare": "publishing",
    "publish": "publishing",
    "read_records": "publishing",
    "shard_stem": "publishing",
    "validate_shard": "publishing",
}

__all__ = [
    "DOCS_DIR",
    "FORMATS",
    "POLICIES",
    "QUARANTINE_DIR",
    "SHARDS_DIR",
    "BuildGroup",
    "BuiltShard",
    "InputError",
    "PlanRef",
    "PreparePlan",
    "Publication",
    "PublishError",
    "ShardValidation",
    "build_group",
    "load_plan",
    "plan_preparation",
    "prepare",
    "publish",
    "read_records",
    "shard_stem",
    "store_plan",
    "validate_shard",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
