"""Progress of a copy: rate-limited lines in task logs, a live bar on a terminal.

Every :class:`Progress` logs bytes, MB/s and ETA at most every few seconds (what a task log or a
pipe shows). Inside :func:`terminal_progress` (the ``tierflow`` command, when stderr is a
terminal), each one also draws a live bar on stderr (objects, bytes, MB/s, ETA) and its log lines
are left out, so the two never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LATE_MARGIN", "Progress", "terminal_progress"]

#: How far past its plan a copy may be heading before it says so.
LATE_MARGIN = 0.25

#: Set inside :func:`terminal_progress`: new Progress instances draw a bar there.
_terminal: dict[str, Any] = {"on": False}


@contextlib.contextmanager
def terminal_progress(enabled: bool | None = None) -> Iterator[None]:
    """Draw live progress bars on stderr for copies made inside the block.

    ``enabled`` defaults to whether stderr is a terminal: piped or redirected output gets the
    rate-limited lines only.
    """
    on = sys.stderr.isatty() if enabled is None else enabled
    previous = _terminal["on"]
    _terminal["on"] = on
    try:
        yield
    finally:
        _terminal["on"] = previous


class Progress:
    """Thread-safe byte and object counter: logs at most every ``interval`` seconds, or drives a bar.

    Args:
        total: Bytes to move.
        label: What moves (``source -> destination``).
        interval: Seconds between log lines.
        objects: Objects to move (shown on the bar).
        expected_s: The planned duration: once the copy is a quarter of the way there and its rate
            says it will end more than :data:`LATE_MARGIN` after it, one warning gives the lateness.
    """

    def __init__(
        self, total: int, label: str, interval: float, objects: int = 0, expected_s: float | None = None
    ) -> None:
        self.total = total
        self.expected_s = expected_s
        self.warned = False
        self.objects_total = objects
        self.label = label
        self.interval = interval
        self.done = 0
        self.objects = 0
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()
        self.bar = _bar(total, objects, label) if _terminal["on"] and total else None

    def add(self, n: int, objects: int = 1) -> None:
        """Count ``n`` more bytes (and ``objects`` finished objects); log a line when the interval has passed."""
        with self.lock:
            self.done += n
            self.objects += objects
            if self.bar is not None:
                self.bar.set_postfix_str(self._objects(), refresh=False)
                self.bar.update(n)
                return
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
            self._behind(elapsed, eta, rate)

    def _behind(self, elapsed: float, eta: float, rate: float) -> None:
        """Warn once when the rate so far puts the end more than LATE_MARGIN past the plan."""
        if self.warned or not self.expected_s or elapsed < self.expected_s / 4:
            return
        finish = elapsed + eta
        if finish <= self.expected_s * (1 + LATE_MARGIN):
            return
        self.warned = True
        late = finish - self.expected_s
        from pipelines.core.units import format_duration

        log.warning(
            "%s: behind plan: at %.1f MB/s it ends in %s, %s later than the %s planned (%.0f%% late)",
            self.label,
            rate / 1e6,
            format_duration(eta),
            format_duration(late),
            format_duration(self.expected_s),
            100 * late / self.expected_s,
        )

    def close(self) -> None:
        """Finish the bar, if there is one (the summary line follows it)."""
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def _objects(self) -> str:
        return f"{self.objects:,}/{self.objects_total:,} objects" if self.objects_total else f"{self.objects:,} objects"


def _bar(total: int, objects: int, label: str) -> Any:
    """A tqdm bar in bytes with decimal units (MB, MB/s), as the summary line reports them."""
    import os

    from tqdm import tqdm

    short = label if len(label) <= 40 else "…" + label[-39:]
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        known = size.columns > 0 and size.lines > 0
    except (OSError, ValueError):
        known = False
    return tqdm(
        total=total,
        desc=short,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        # Follows a resized terminal; one that reports no size (0 × 0, where tqdm would draw
        # nothing: every bar falls below a screen of no rows) gets 100 × 24.
        dynamic_ncols=known,
        ncols=None if known else 100,
        nrows=None if known else 24,
        leave=False,
        file=sys.stderr,
        postfix=f"0/{objects:,} objects" if objects else None,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B {rate_fmt} ETA {remaining}{postfix}",
    )
