"""Typed payloads between tasks: every XCom value reads back as the class that wrote it, or fails naming the field."""

from __future__ import annotations

import json

import pytest

from pipelines.checkpoints import CheckpointRef, PromoteResult, RestoreResult, TierPrune
from pipelines.core.payloads import PayloadError, native
from pipelines.datasets.payloads import HopSummary, ShardCopy, ShardTask, StagingPlan
from pipelines.datasets.preparation import BuildGroup, BuiltShard, PlanRef, Publication, ShardValidation
from pipelines.datasets.validation import Finding, ShardReport
from pipelines.model.bandwidth import Bottleneck, HopSizing, Workload, plan_hop
from pipelines.model.observations import Observation

pytestmark = pytest.mark.unit

BOTTLENECK = Bottleneck("pfs", "write", "bandwidth")


def sizing():
    from pipelines.core.config import load_config

    config = load_config()
    return plan_hop(config.tier("object"), config.tier("pfs"), Workload.uniform(10, 2**20)).summary()


EXAMPLES = [
    BOTTLENECK,
    sizing(),
    StagingPlan("d", "v1", "object", "pfs", "abc", 10, 2**20, False, 4096, sizing()),
    ShardTask("d", "v1", "object", "pfs", 0, 2, "abc", "d/v1 shard 1/2", 8, 8 * 2**20, 512, 0.5, BOTTLENECK),
    ShardCopy("object", "pfs", 5, 512, 5, 512, 0, 0, 0.25, 0.0, 8, 8 * 2**20, 0, 0.5, BOTTLENECK),
    HopSummary("d", "v1", "object", "pfs", 10, 2**20, "abc", 1.0, 1.0, BOTTLENECK, False, 2, 10, 2**20, 0.5, 2.1),
    Observation(1.0, "dag", "task", "object", "pfs", 2**20, 10, 1.0, 2.0, BOTTLENECK),
    BuildGroup(0, "d/v1 group 1/1", 1, 2, 30),
    PlanRef("d", "v1", "object", "datasets/d/v1/_tierflow_plan/abc.json", "abc", 1, 2, False),
    BuiltShard("shards/part-0000-0000.parquet", 100, "xxh3:00", 5, 400),
    ShardValidation(ShardReport("s", 5, [Finding("schema", "bad", "lang")], {"rows": 5}, 0.1), (("docs/a", 1, "c"),)),
    Publication("d", "v1", "parquet", 3, 1, 5, 400, 100, 4.0, "fail"),
    CheckpointRef("run", "step_000100", 100, 2**20),
    PromoteResult("run", "step_000100", 100, "nvme", "pfs", 10, 2, 10, 0.1, False, {"loss": 0.5}),
    RestoreResult("run", "step_000100", 100, "object", "nvme", "/nvme/checkpoints/run/step_000100"),
    TierPrune(deleted=["run/step_000100"], kept={"run/step_000200": "newest complete checkpoint"}, objects=3),
]


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: type(p).__name__)
def test_every_payload_reads_back_as_written_through_json(payload) -> None:
    data = json.loads(json.dumps(payload.to_json()))  # what XCom stores
    assert type(payload).from_json(data) == payload


def test_json_keys_are_the_ones_tasks_and_asset_extras_always_carried() -> None:
    promoted = PromoteResult("run", "step_1", 1, "nvme", "pfs", 10, 2, 10, 0.1, False, {}).to_json()
    assert promoted["checkpoint"] == "step_1" and promoted["tier"] == "pfs" and "name" not in promoted
    assert ShardReport("s").to_json()["passed"] is True  # readers of the stored report rely on it
    assert BOTTLENECK.to_json() == {"tier": "pfs", "direction": "write", "resource": "bandwidth"}
    assert str(BOTTLENECK) == "bandwidth-bound on pfs write"


def test_a_missing_field_is_named_with_the_payload_and_where_it_came_from() -> None:
    data = ShardTask("d", "v", "a", "b", 0, 1, "c", "n", 1, 1, 1, 0.1, BOTTLENECK).to_json()
    del data["manifest_checksum"]
    with pytest.raises(PayloadError, match=r"^StageShardOperator\.shard: ShardTask has no field 'manifest_checksum'"):
        ShardTask.from_json(data, "StageShardOperator.shard")


def test_a_wrong_type_deep_inside_is_named_by_its_path() -> None:
    data = StagingPlan("d", "v1", "object", "pfs", "abc", 10, 2**20, False, 0, sizing()).to_json()
    data["hop"]["bottleneck"]["tier"] = 7
    with pytest.raises(PayloadError, match=r"plan\.hop\.bottleneck\.tier: expected str, got int 7"):
        StagingPlan.from_json(data, "plan")
    with pytest.raises(PayloadError, match="expected a StagingPlan"):
        StagingPlan.from_json("not a plan", "plan")


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        pytest.param(True, bool, True, id="bool"),
        pytest.param(3, float, 3.0, id="int-widens-to-float"),
        pytest.param(None, int | None, None, id="optional-none"),
        pytest.param(5, int | None, 5, id="optional-int"),
        pytest.param([["d", "v1"]], list[tuple[str, str]], [("d", "v1")], id="pairs"),
    ],
)
def test_native_accepts_native_values(value, tp, expected) -> None:
    assert native(value, tp, "Op.arg") == expected


@pytest.mark.parametrize(
    ("value", "tp", "message"),
    [
        pytest.param("True", bool, r"Op\.arg: expected bool, got str 'True' \(a template rendered as text", id="str"),
        pytest.param(True, int, r"Op\.arg: expected an integer, got True", id="bool-is-not-int"),
        pytest.param("3", int | None, r"Op\.arg: expected int, got str '3'", id="optional"),
        pytest.param([["d"]], list[tuple[str, str]], r"Op\.arg\[0\]: expected 2 items, got 1", id="short-pair"),
    ],
)
def test_native_refuses_text_where_a_value_belongs_in_one_line(value, tp, message) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        native(value, tp, "Op.arg")
    assert "\n" not in str(caught.value)


def test_an_observation_learns_only_from_what_was_copied() -> None:
    """Objects already on the target cost almost nothing: the prediction is scaled to the bytes copied."""
    copy = ShardCopy("object", "pfs", 10, 1000, 5, 250, 5, 750, 0.5, 0.0, 8, 8, 0, 2.0, BOTTLENECK)
    seen = copy.observation("dag", "task")
    assert seen is not None and seen.bytes == 250 and seen.predicted_s == pytest.approx(0.5)
    assert seen.bottleneck == BOTTLENECK
    nothing = ShardCopy("object", "pfs", 10, 1000, 0, 0, 10, 1000, 0.1, 0.0, 8, 8, 0, 2.0, BOTTLENECK)
    assert nothing.observation("dag", "task") is None
    assert HopSizing.from_json(sizing().to_json()).bottleneck == sizing().bottleneck
