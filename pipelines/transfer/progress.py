"""Progress of a copy in the task log: bytes, MB/s and ETA, at most every few seconds."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

__all__ = ["Progress"]


class Progress:
    """Thread-safe byte counter that logs at most every ``interval`` seconds."""

    def __init__(self, total: int, label: str, interval: float) -> None:
        self.total = total
        self.label = label
        self.interval = interval
        self.done = 0
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; log a line when the interval has passed."""
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %.1f / %.1f MB (%.0f%%), %.1f MB/s, ETA %.0f s",
                self.label,
                self.done / 1e6,
                self.total / 1e6,
                100 * self.done / self.total if self.total else 100,
                rate / 1e6,
                eta,
            )
