"""What a user's DAG gets from ``pipelines.operators``: every public operator, and outlets that mapping keeps."""

from __future__ import annotations

import inspect

import pendulum
import pytest

pytestmark = pytest.mark.unit


def test_every_public_operator_and_alias_is_exported_and_documents_its_arguments() -> None:
    from airflow.sdk import BaseOperator

    import pipelines.operators as ops

    operators = [getattr(ops, n) for n in ops.__all__ if inspect.isclass(getattr(ops, n))]
    operators = [o for o in operators if issubclass(o, BaseOperator)]
    assert len(operators) == 15, [o.__name__ for o in operators]
    for name in ("CHECKPOINT_ALIAS", "STAGED_ALIAS", "PUBLISHED"):
        assert name in ops.__all__
    for op in operators:
        doc = "\n".join(inspect.getdoc(c) or "" for c in op.__mro__ if c.__module__.startswith("pipelines"))
        own = [p for c in op.__mro__ if c.__module__.startswith("pipelines") for p in inspect.signature(c).parameters]
        missing = [p for p in own if p not in ("self", "kwargs") and f"{p}:" not in doc]
        assert not missing, f"{op.__name__} does not document {missing}"


def test_mapped_operators_declare_their_outlets_without_being_told() -> None:
    """A user's ``.partial(...)`` without ``outlets=`` still emits the operator's asset events."""
    from airflow.sdk import DAG, Asset

    from pipelines.operators import (
        CHECKPOINT_ALIAS,
        PUBLISHED,
        STAGED_ALIAS,
        EvictCacheOperator,
        PromoteCheckpointOperator,
        PublishDatasetOperator,
        RetainCheckpointsOperator,
        StageDatasetOperator,
    )

    mine = Asset(name="my_asset", uri="s3://my-bucket/x")
    with DAG("outlets_check", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        promote = PromoteCheckpointOperator.partial(task_id="promote").expand(checkpoint=[{"run": "r", "name": "n"}])
        stage = StageDatasetOperator.partial(task_id="stage", version="v1", source="a", target="b").expand(
            dataset=["d1", "d2"]
        )
        publish = PublishDatasetOperator(task_id="publish")
        told = PromoteCheckpointOperator.partial(task_id="told", outlets=[mine]).expand(checkpoint=[{}])
        evict = EvictCacheOperator(task_id="evict", tier="nvme", need_bytes=0)  # eviction and pruning emit too
        retain = RetainCheckpointsOperator(task_id="retain")
    assert list(promote.outlets) == [CHECKPOINT_ALIAS]
    assert list(stage.outlets) == [STAGED_ALIAS]
    assert list(publish.outlets) == [PUBLISHED]
    assert list(told.outlets) == [mine]  # what the user declares wins
    assert list(evict.outlets) == [STAGED_ALIAS] and list(retain.outlets) == [CHECKPOINT_ALIAS]


def test_the_readme_holds_the_generated_operator_reference() -> None:
    from pathlib import Path

    from pipelines.devtools.reference import BEGIN, END, operator_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == operator_reference().strip(), "run: python -m pipelines.devtools.reference --write"
