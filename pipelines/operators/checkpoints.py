"""Checkpoint operators: discover → promote (mapped per checkpoint) → retain, and restore.

Thin wrappers over :mod:`pipelines.checkpoints`. Each promoted copy emits an asset event
``tierflow/checkpoints/<run>@<tier>`` through the alias ``tierflow_checkpoints`` (extras: step,
metrics, tier, bytes). A checkpoint that changed while it was copied fails the task for a retry;
a checksum mismatch, a missing checkpoint or a bad setting fails it for good.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

from pipelines.core.config import TierflowConfig
from pipelines.core.payloads import native
from pipelines.operators.context import fatal_errors, load_config_in_task
from pipelines.operators.lineage import report_checkpoint

__all__ = [
    "CHECKPOINT_ALIAS",
    "DiscoverCheckpointsOperator",
    "PromoteCheckpointOperator",
    "RestoreCheckpointOperator",
    "RetainCheckpointsOperator",
    "checkpoint_asset",
]

CHECKPOINT_ALIAS = AssetAlias(name="tierflow_checkpoints")


def checkpoint_asset(run: str, tier: str) -> Asset:
    """The asset standing for a training run's checkpoints on one tier."""
    return Asset(name=f"tierflow/checkpoints/{run}@{tier}", uri=f"tierflow://{tier}/checkpoints/{run}")


def _rules(op: _CheckpointOperator) -> Any:
    """The completion rules, from the operator's rendered (native) arguments."""
    from pipelines.checkpoints import Rules

    name = type(op).__name__
    pattern = native(op.pattern or None, str | None, f"{name}.pattern")
    marker = native(op.marker or None, str | None, f"{name}.marker")
    grace = native(op.grace_s, float | None, f"{name}.grace_s")
    return Rules.with_extras(pattern, marker, grace)


def _chain(config_or_path: str | TierflowConfig | None, target: str | None = None) -> list[Any]:
    """The tiers from NVMe to object storage (one of each kind), then ``target`` if asked, from one config load.

    ``config_or_path``: a config loaded already, or its path (None: the default).
    ``target=""`` means the config's NVMe tier, whatever its name.
    """
    from pipelines.checkpoints import chain
    from pipelines.operators.context import open_tier_in_task

    config = config_or_path if isinstance(config_or_path, TierflowConfig) else load_config_in_task(config_or_path)
    extra = [] if target is None else [target or config.primary("nvme").name]
    return [open_tier_in_task(config, name) for name in [*chain(config), *extra]]


class _CheckpointOperator(BaseOperator):
    """Shared arguments of the checkpoint operators: which run, how checkpoints are recognised, which config.

    Args:
        run: Only this training run (templated); None or empty: every run.
        pattern: An extra checkpoint name pattern with one group, the step (templated).
        marker: An extra completion marker file name (templated).
        grace_s: Seconds before a checkpoint without a marker counts as partial (templated).
        config_path: Tier config file; default ``$TIERFLOW_CONFIG``, else the packaged default.
        **kwargs: Passed to ``BaseOperator`` (task_id, retries, pool, ...).
    """

    template_fields: Sequence[str] = ("run", "pattern", "marker", "grace_s")

    def __init__(
        self,
        *,
        run: str | None = None,
        pattern: str | None = None,
        marker: str | None = None,
        grace_s: float | None = None,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.pattern = pattern
        self.marker = marker
        self.grace_s = grace_s
        self.config_path = config_path

    def _run_name(self) -> str | None:
        """The run asked for; None or an empty name (an emptied form field) means every run."""
        return native(self.run or None, str | None, f"{type(self).__name__}.run")


class DiscoverCheckpointsOperator(_CheckpointOperator):
    """List checkpoints on NVMe; return the complete ones not yet committed on object storage (one per mapped task).

    Takes the shared arguments of the checkpoint operators (``run``, ``pattern``, ``marker``,
    ``grace_s``, ``config_path``).

    Returns (XCom) one :class:`~pipelines.checkpoints.CheckpointRef` per checkpoint to promote: map
    :class:`PromoteCheckpointOperator` over it.
    """

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Discover; logs in-progress and partial ones too."""
        from pipelines.checkpoints import discover, to_promote

        with fatal_errors():
            rules = _rules(self)
            tiers = _chain(self.config_path)
            every = discover(tiers[0], rules, self._run_name())
            todo = to_promote(tiers, rules, self._run_name(), on_first=every)
        for state in ("in_progress", "partial"):
            names = [f"{c.run}/{c.name}" for c in every if c.state == state]
            if names:
                self.log.info("%d %s (not promoted): %s", len(names), state.replace("_", " "), names)
        self.log.info("%d checkpoint(s) on %s, %d to promote", len(every), tiers[0].name, len(todo))
        return [c.ref().to_json() for c in todo]


class PromoteCheckpointOperator(_CheckpointOperator):
    """Promote one checkpoint NVMe → PFS → object storage; map it over the discovery (``checkpoint=``).

    Args:
        checkpoint: A :class:`~pipelines.checkpoints.CheckpointRef` (its JSON form, at least ``{"run", "name"}``;
            templated; one item of the discovery's XCom).
        outlets: Declared by default as the alias ``tierflow_checkpoints`` (also for ``.partial()``):
            each committed copy is an event of ``tierflow/checkpoints/<run>@<tier>`` through it, with
            step, metrics, tier, bytes, checkpoint and seconds as extras.
        mlflow_run_id: The MLflow run that trains this checkpoint (templated): with ``[lineage]`` in the
            tier config, each committed copy is tagged on it (``tierflow.checkpoint.<name>.<tier>``).
        deadline: Promote within this long after the run was queued, e.g. ``"30min"`` (templated;
            empty: none): each hop takes the fewest streams that finish in time, or warns.
        **kwargs: The shared checkpoint arguments and ``BaseOperator``'s.

    Returns (XCom) one :class:`~pipelines.checkpoints.PromoteResult` per hop (run, checkpoint, step,
    source, tier, copied_bytes, objects, bytes, seconds, already, metrics). Skips when the checkpoint
    is no longer complete on NVMe.
    """

    template_fields: Sequence[str] = (
        *_CheckpointOperator.template_fields,
        "checkpoint",
        "mlflow_run_id",
        "deadline",
    )

    def __init__(
        self,
        *,
        checkpoint: dict[str, Any],
        outlets: Sequence[Any] = (CHECKPOINT_ALIAS,),  # in the signature, so .partial() (a mapped task) declares it too
        mlflow_run_id: str | None = None,
        deadline: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(outlets=list(outlets), **kwargs)
        self.checkpoint = checkpoint
        self.mlflow_run_id = mlflow_run_id
        self.deadline = deadline

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Promote; returns one summary per hop and emits one asset event per committed copy."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.checkpoints import CheckpointRef, discover, promote_through
        from pipelines.operators.deadlines import PARAM, seconds_left

        with fatal_errors():
            ref = CheckpointRef.from_json(self.checkpoint, "PromoteCheckpointOperator.checkpoint")
            run, name = ref.run, ref.name
            rules = _rules(self)
            config = load_config_in_task(self.config_path)
            tiers = _chain(config)
            found = [c for c in discover(tiers[0], rules, run) if c.name == name]
            if not found or found[0].state != "complete":
                raise AirflowSkipException(f"{run}/{name} is no longer complete on {tiers[0].name}")
            run_of = context.get("dag_run")
            left = seconds_left({PARAM: self.deadline}, getattr(run_of, "queued_at", None))
            deadline_at = None if left is None else time.monotonic() + left
            results = promote_through(tiers, found[0], rules, deadline_at=deadline_at)
        by_name = {t.name: t for t in tiers}
        training_run = native(self.mlflow_run_id or None, str | None, "PromoteCheckpointOperator.mlflow_run_id")
        for r in results:
            if not r.already:
                report_checkpoint(self, config, r, by_name[r.source], by_name[r.target], training_run)
        events = context.get("outlet_events")
        for r in results:
            done = "already committed there" if r.already else f"{r.copied_bytes} bytes copied in {r.seconds:.2f} s"
            self.log.info(
                "%s/%s step %d %s -> %s: %s (%d objects)", run, name, r.step, r.source, r.target, done, r.objects
            )
            if events is not None and not r.already:
                extra = {
                    k: v
                    for k, v in r.to_json().items()
                    if k in ("step", "metrics", "tier", "bytes", "checkpoint", "seconds")
                }
                events[CHECKPOINT_ALIAS].add(checkpoint_asset(run, r.target), extra=extra)
        return [r.to_json() for r in results]


class RetainCheckpointsOperator(_CheckpointOperator):
    """Apply retention per tier (and optionally remove partial checkpoints from NVMe); dry-run available.

    Args:
        retention: Tier name → settings (``{"latest": 2, "every": 1000, "best": {"metric": ..., "n": ...}}``);
            a tier without settings gets the default for its kind (templated, a dict).
        dry_run: Log what would be deleted, delete nothing (templated, a bool).
        remove_partial: Also remove partial checkpoint directories from NVMe (templated, a bool).
        outlets: Declared by default as the alias ``tierflow_checkpoints``: each checkpoint deleted
            (not in a dry run) is an event of ``tierflow/checkpoints/<run>@<tier>`` with
            ``event: pruned``, the checkpoint and the tier as extras, so the Assets view shows what left.

    Returns (XCom) tier name → :class:`~pipelines.checkpoints.TierPrune`.
    """

    template_fields: Sequence[str] = (*_CheckpointOperator.template_fields, "retention", "simulate", "remove_partial")

    def __init__(
        self,
        *,
        retention: dict[str, Any] | None = None,
        dry_run: bool = False,
        remove_partial: bool = True,
        outlets: Sequence[Any] = (CHECKPOINT_ALIAS,),  # in the signature, so .partial() declares it too
        **kwargs: Any,
    ) -> None:
        super().__init__(outlets=list(outlets), **kwargs)
        self.retention = retention
        self.simulate = dry_run  # BaseOperator already has a dry_run() method
        self.remove_partial = remove_partial

    def execute(self, context: Any) -> dict[str, Any]:
        """Prune; returns per tier what was deleted and kept (and why)."""
        import pipelines.checkpoints as ck

        with fatal_errors():
            dry = native(self.simulate, bool, "RetainCheckpointsOperator.dry_run")
            remove_partial = native(self.remove_partial, bool, "RetainCheckpointsOperator.remove_partial")
            given = native(self.retention or {}, dict[str, Any], "RetainCheckpointsOperator.retention")
            rules = _rules(self)
            tiers = _chain(self.config_path)
            unknown = set(given) - {t.name for t in tiers}
            if unknown:
                raise ValueError(f"params.retention names unknown tiers {sorted(unknown)}")
            policies = {
                # An explicit {} is refused by policy_from_spec (one line), never read as the default.
                t.name: ck.policy_from_spec(given[t.name] if t.name in given else ck.DEFAULT_RETENTION[t.config.kind])
                for t in tiers
            }
            summary = ck.retain(tiers, policies, rules, self._run_name(), dry)
            if remove_partial:
                gone = ck.cleanup_partial(tiers[0], ck.discover(tiers[0], rules, self._run_name()), dry)
                summary[tiers[0].name].partial_removed = gone
        verb = "would delete" if dry else "deleted"
        for tier, entry in summary.items():
            what = ", ".join(entry.deleted) or "nothing"
            note = f" ({entry.note})" if entry.note else ""
            self.log.info("%s: %s %s, %d objects; kept %d%s", tier, verb, what, entry.objects, len(entry.kept), note)
            if entry.partial_removed:
                self.log.info("%s: %s partial %s", tier, verb, ", ".join(entry.partial_removed))
        events = context.get("outlet_events")
        if events is not None and not dry:
            for tier, entry in summary.items():
                for deleted in entry.deleted:
                    run, _, name = deleted.partition("/")
                    extra = {"event": "pruned", "checkpoint": name, "tier": tier}
                    events[CHECKPOINT_ALIAS].add(checkpoint_asset(run, tier), extra=extra)
        return {tier: entry.to_json() for tier, entry in summary.items()}


class RestoreCheckpointOperator(_CheckpointOperator):
    """Restore a step (or the latest) of a run onto a tier (NVMe by default), verified and pinned.

    Returns (XCom) a :class:`~pipelines.checkpoints.RestoreResult`.

    Args:
        step: A step number, or ``"latest"`` (templated: an int or the string ``latest``).
        target: Tier to restore onto (templated; default ``""``: the config's NVMe tier, whatever its name).
        holder: Pin holder name, e.g. the job that resumes from it (templated).
    """

    template_fields: Sequence[str] = (*_CheckpointOperator.template_fields, "step", "target", "holder")

    def __init__(self, *, step: int | str = "latest", target: str = "", holder: str = "restore", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.target = target
        self.holder = holder

    def execute(self, context: Any) -> dict[str, Any]:
        """Restore; returns a :class:`~pipelines.checkpoints.RestoreResult`: where from, where to, any fallback."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.checkpoints import restore

        run = self._run_name()
        if not run:
            raise AirflowFailException("params.run: name the training run to restore")
        with fatal_errors():
            asked = native(self.step, int | str | None, "RestoreCheckpointOperator.step")
            text = asked.strip().lower() if isinstance(asked, str) else None
            if text is not None and text not in ("latest", "") and not text.isdigit():
                raise ValueError(f"RestoreCheckpointOperator.step: a step number or 'latest', got {asked!r}")
            step = int(text) if text and text.isdigit() else asked if isinstance(asked, int) else None  # form: "100"
            rules = _rules(self)
            *tiers, target = _chain(self.config_path, self.target or "")
            result = restore(tiers, target, run, step, rules, holder=self.holder)
        for why in result.fallbacks:
            self.log.warning("fallback: %s", why)
        self.log.info(
            "restored %s/%s (step %d) from %s to %s", run, result.name, result.step, result.source, result.path
        )
        return result.to_json()
