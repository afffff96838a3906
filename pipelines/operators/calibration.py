"""``CalibrateTierOperator``: measure one tier and store its fitted profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

__all__ = ["CalibrateTierOperator"]


class CalibrateTierOperator(BaseOperator):
    """Calibrate one tier within a budget; store the fit if it agrees with the current profile, else keep it aside.

    The sweep runs ``repeats`` times and each term is their median, with its spread. A fit that
    disagrees with the stored calibration beyond the spread (or, before any, with the configured
    numbers by more than a factor of two) is kept as the tier's candidate and logged as a warning;
    plans keep the old numbers unless ``apply`` is set. On failure the old profile stays.

    Returns (XCom) the fitted profile (MB/s, ms), its spread, whether it was ``applied`` or kept as
    a ``candidate``, the agreement, and the file written.

    Args:
        tier: Tier name (templated).
        budget: Bytes to move, with unit (templated), e.g. ``"256 MiB"``.
        budget_s: Time budget in seconds (shared by the repeats).
        repeats: Sweeps to run; each term is their median (templated, an int).
        apply: Store the fit even where it disagrees (templated, a bool).
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = ("tier", "budget", "repeats", "apply")

    def __init__(
        self,
        *,
        tier: str,
        budget: str = "256 MiB",
        budget_s: float = 120.0,
        repeats: int = 3,
        apply: bool = False,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tier = tier
        self.budget = budget
        self.budget_s = budget_s
        self.repeats = repeats
        self.apply = apply
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Calibrate and return the fitted profile (MB/s, ms) and where it was stored."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.core.payloads import native
        from pipelines.core.units import UnitError, parse_size
        from pipelines.model.calibration import calibrate_repeated, describe, store_fit
        from pipelines.operators.context import fatal_errors, load_config_in_task, open_tier_in_task

        try:
            budget = parse_size(self.budget)
        except UnitError as exc:
            raise AirflowFailException(f"budget: {exc} (got {self.budget!r})") from None
        with fatal_errors():  # a value of the wrong type fails at once, retries cannot fix it
            repeats = native(self.repeats, int, "CalibrateTierOperator.repeats")
            apply = native(self.apply, bool, "CalibrateTierOperator.apply")
        if repeats < 1:
            raise AirflowFailException(f"repeats must be at least 1 (got {repeats})")
        config = load_config_in_task(self.config_path)
        tier = open_tier_in_task(config, self.tier)
        self.log.info(
            "Calibrating %s (%s): %d sweep(s) within %d bytes / %.0f s",
            tier.name,
            tier.url(),
            repeats,
            budget,
            self.budget_s,
        )
        fit = calibrate_repeated(tier, budget_bytes=budget, budget_s=self.budget_s, repeats=repeats)
        for s in fit.samples:
            self.log.info(
                "%.1f MB/s: %s %7d B x %4d at c=%2d",
                s.throughput_bps / 1e6,
                s.direction,
                s.size,
                s.objects,
                s.concurrency,
            )
        status, agreed, path = store_fit(config, tier.name, fit, apply=apply)
        if status == "candidate":
            self.log.warning(
                "%s: the fit %s; the old profile stays and the fit is kept as a candidate (%s): "
                "trigger with apply=true (or run tierflow calibrate --tier %s --apply) to take it",
                tier.name,
                agreed.line(),
                path,
                tier.name,
            )
        else:
            self.log.info("%s: stored; the fit %s", tier.name, agreed.line())
        summary = {
            "tier": tier.name,
            **describe(fit.profile),
            "spread": {t: round(v, 4) for t, v in fit.spread.items()},
            "repeats": fit.repeats,
            "status": status,
            **agreed.to_json(),
            "stored": str(path),
        }
        return summary
