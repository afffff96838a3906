"""``ProbeTierOperator``: check that a tier can be written, listed, read back and cleaned, and how fast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

__all__ = ["ProbeTierOperator"]


class ProbeTierOperator(BaseOperator):
    """Probe one tier of the tier config with an object of ``probe_size`` (e.g. ``"8 MiB"``).

    Returns (XCom) the tier, the bytes moved, and the write, read, list and delete times.

    A wrong size, checksum or listing fails the task without retries (the tier is broken, not
    busy); an unreachable tier raises and is retried by Airflow.

    Args:
        tier: Name of the tier in the tier config (templated).
        probe_size: Size of the probe object with its unit (templated).
        config_path: Tier config file; default ``$TIERFLOW_CONFIG``, else the packaged default.
    """

    template_fields: Sequence[str] = ("tier", "probe_size")

    def __init__(self, *, tier: str, probe_size: str = "8 MiB", config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tier = tier
        self.probe_size = probe_size
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        """Run the probe and return its summary (small: it goes to XCom)."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.core.units import UnitError, format_bandwidth, parse_size
        from pipelines.operators.context import load_config_in_task, open_tier_in_task
        from pipelines.storage.probe import ProbeError, probe_tier

        try:
            size = parse_size(self.probe_size)
        except UnitError as exc:
            raise AirflowFailException(f"probe_size: {exc} (got {self.probe_size!r})") from None
        config = load_config_in_task(self.config_path)
        tier = open_tier_in_task(config, self.tier)
        self.log.info("Probing tier %s (%s) with %d bytes", tier.name, tier.url(), size)
        try:
            result = probe_tier(tier, size)
        except ProbeError as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info(
            "Tier %s: write %s, read %s, list %.1f ms, delete %.1f ms",
            tier.name,
            format_bandwidth(result.write_bps),
            format_bandwidth(result.read_bps),
            result.list_s * 1000,
            result.delete_s * 1000,
        )
        return result.summary()
