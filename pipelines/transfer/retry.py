"""The engine's one retry layer: transient failures are retried with jittered exponential backoff, fatal ones never."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from pipelines.core.errors import Outcome, classify
from pipelines.transfer.report import TransferSettings

log = logging.getLogger(__name__)

__all__ = ["is_fatal", "retrying"]

T = TypeVar("T")


def is_fatal(exc: BaseException) -> bool:
    """Whether no retry can mend ``exc`` (:func:`pipelines.core.errors.classify`)."""
    return classify(exc) is not Outcome.TRANSIENT


def retrying(
    fn: Callable[[], T],
    settings: TransferSettings,
    what: str,
    only: Callable[[BaseException], bool] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a fatal error, or ``settings.retries`` retries (backoff with jitter).

    ``only`` narrows which transient failures are retried (the others are raised at once).
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # classified below: fatal errors are not retried
            attempt += 1
            if is_fatal(exc) or attempt > settings.retries or (only is not None and not only(exc)):
                raise
            delay = settings.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("%s: %s (attempt %d of %d), retrying in %.1f s", what, exc, attempt, settings.retries, delay)
            time.sleep(delay)
