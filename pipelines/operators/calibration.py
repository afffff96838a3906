"""``CalibrateTierOperator``: measure one tier and store its fitted profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

__all__ = ["CalibrateTierOperator"]


class CalibrateTierOperator(BaseOperator):
    """Calibrate one tier within a budget and store the profile; on failure the old profile stays.

    Returns (XCom) the fitted profile (MB/s, ms) and the path it was stored at.

    Args:
        tier: Tier name (templated).
        budget: Bytes to move, with unit (templated), e.g. ``"256 MiB"``.
        budget_s: Time budget in seconds.
        config_path: Tier config file.
    """

    template_fields: Sequence[str] = ("tier", "budget")

    def __init__(
        self,
        *,
        tier: str,
        budget: str = "256 MiB",
        budget_s: float = 120.0,
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tier = tier
        self.budget = budget
        self.budget_s = budget_s
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Calibrate and return the fitted profile (MB/s, ms) and where it was stored."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.core.units import UnitError, parse_size
        from pipelines.model.calibration import calibrate_tier, describe, save_profile
        from pipelines.operators.context import load_config_in_task, open_tier_in_task

        try:
            budget = parse_size(self.budget)
        except UnitError as exc:
            raise AirflowFailException(f"budget: {exc} (got {self.budget!r})") from None
        config = load_config_in_task(self.config_path)
        tier = open_tier_in_task(config, self.tier)
        self.log.info("Calibrating %s (%s) within %d bytes / %.0f s", tier.name, tier.url(), budget, self.budget_s)
        profile, samples = calibrate_tier(tier, budget_bytes=budget, budget_s=self.budget_s)
        for s in samples:
            self.log.info(
                "%s %7d B x %4d at c=%2d: %.1f MB/s",
                s.direction,
                s.size,
                s.objects,
                s.concurrency,
                s.throughput_bps / 1e6,
            )
        path = save_profile(config, tier.name, profile, samples)
        summary = {"tier": tier.name, **describe(profile), "stored": str(path)}
        self.log.info("profile: %s", summary)
        return summary
