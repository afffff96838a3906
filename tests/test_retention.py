"""Retention policies and the pruning invariants, on plain data (no tiers, no servers)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.checkpoints import (
    AnyOf,
    BestN,
    Candidate,
    EveryNSteps,
    LatestN,
    Rules,
    parse_step,
    plan_prune,
    policy_from_spec,
)

pytestmark = pytest.mark.unit


def c(step: int, **kw) -> Candidate:
    return Candidate(step, manifest_checksum=kw.pop("checksum", f"m{step}"), **kw)


@pytest.mark.parametrize(
    ("name", "step"),
    [
        pytest.param("step_000100", 100, id="padded"),
        pytest.param("step_99", 99, id="unpadded"),
        pytest.param("checkpoint-100", 100, id="hf"),
        pytest.param("global_step100", 100, id="deepspeed"),
        pytest.param("step_100.orbax-checkpoint-tmp-1712", 100, id="orbax-tmp"),
        pytest.param("latest", None, id="no-step"),
        pytest.param("step_abc", None, id="not-a-number"),
    ],
)
def test_parse_step(name: str, step: int | None) -> None:
    assert parse_step(name) == step


def test_step_99_sorts_before_step_100_and_latest_is_the_highest_step() -> None:
    names = ["step_100", "step_99", "step_1000", "step_0101"]
    assert sorted(names, key=parse_step) == ["step_99", "step_100", "step_0101", "step_1000"]
    assert LatestN(1).keep([c(parse_step(n)) for n in names]) == {1000}


def test_configured_pattern_needs_one_group() -> None:
    assert parse_step("ckpt.e3.s250", Rules.with_extras(pattern=r"^ckpt\.e\d+\.s(\d+)$")) == 250
    with pytest.raises(ValueError, match="exactly one group"):
        Rules(patterns=(r"^(e\d+)-(\d+)$",))


def test_policies_keep_what_they_say() -> None:
    cands = [c(s, metrics={"eval_loss": 10 - s / 100}) for s in (100, 200, 300, 400, 500)]
    assert LatestN(2).keep(cands) == {400, 500}
    assert EveryNSteps(200).keep(cands) == {200, 400}
    assert BestN("eval_loss", 2, "max").keep(cands) == {100, 200}
    assert BestN("eval_loss", 1, "min").keep(cands) == {500}
    assert BestN("accuracy", 3).keep(cands) == set()  # nobody reports it: it keeps nothing
    assert AnyOf((LatestN(1), EveryNSteps(200))).keep(cands) == {200, 400, 500}
    assert policy_from_spec({"latest": 1, "every": 200}).keep(cands) == {200, 400, 500}
    with pytest.raises(ValueError, match="unknown retention setting 'oldest'"):
        policy_from_spec({"oldest": 1})
    with pytest.raises(ValueError, match="mode"):
        BestN("loss", 1, "lowest")


def test_decision_explains_every_kept_checkpoint() -> None:
    cands = [c(100), c(200, pinned=True), c(300, checksum=None), c(400), c(500, complete=False), c(600)]
    durable = {100: "m100", 400: "m400", 600: "m600"}
    decision = plan_prune(cands, LatestN(0), durable)
    assert decision.delete == [100, 400]
    assert decision.keep == {
        200: "pinned",
        300: "not committed and verified on the next more durable tier",
        500: "not committed and verified on this tier",
        600: "newest complete checkpoint",
    }


def test_a_copy_with_other_content_on_the_next_tier_does_not_count() -> None:
    assert plan_prune([c(1), c(2)], LatestN(0), {1: "different"}).delete == []


def test_empty_or_failed_listing_deletes_nothing() -> None:
    assert plan_prune([], LatestN(0), {}).delete == []
    assert plan_prune(None, LatestN(0), {}).delete == []


policies = st.recursive(
    st.one_of(
        st.builds(LatestN, st.integers(0, 5)),
        st.builds(EveryNSteps, st.integers(1, 500)),
        st.builds(BestN, st.sampled_from(["loss", "score"]), st.integers(0, 4), st.sampled_from(["min", "max"])),
    ),
    lambda inner: st.builds(AnyOf, st.tuples(inner, inner)),
    max_leaves=4,
)


@st.composite
def tier_state(draw):
    steps = draw(st.lists(st.integers(0, 5000), unique=True, max_size=25))
    cands = []
    durable = {}
    for s in steps:
        metrics = draw(st.dictionaries(st.sampled_from(["loss", "score"]), st.floats(-10, 10), max_size=2))
        checksum = draw(st.sampled_from([None, f"m{s}"]))
        cands.append(c(s, checksum=checksum, complete=draw(st.booleans()), pinned=draw(st.booleans()), metrics=metrics))
        copy = draw(st.sampled_from(["none", "same", "other"]))
        if copy != "none":
            durable[s] = f"m{s}" if copy == "same" else "other"
    most_durable = draw(st.booleans())
    newest_elsewhere = draw(st.one_of(st.none(), st.integers(0, 6000)))
    return cands, (None if most_durable else durable), newest_elsewhere


@settings(max_examples=400, deadline=None)
@given(state=tier_state(), policy=policies)
def test_no_policy_can_break_the_invariants(state, policy) -> None:
    cands, durable, newest_elsewhere = state
    decision = plan_prune(cands, policy, durable, newest_elsewhere)
    by_step = {x.step: x for x in cands}
    deleted = set(decision.delete)
    assert len(deleted) == len(decision.delete)
    assert deleted | set(decision.keep) == set(by_step) and not deleted & set(decision.keep)
    complete = [x.step for x in cands if x.complete]
    for s in deleted:
        x = by_step[s]
        assert x.complete, "only complete checkpoints may be deleted"
        assert not x.pinned, "a pinned checkpoint was deleted"
        assert s != max(complete), "the newest complete checkpoint was deleted"
        assert s != newest_elsewhere, "the newest checkpoint of the run was deleted"
        if durable is not None:
            assert x.manifest_checksum is not None and durable.get(s) == x.manifest_checksum
    assert not deleted & policy.keep([x for x in cands if x.complete]), "deleted what the policy keeps"
