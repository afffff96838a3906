"""What a copy is asked to do and what it did: settings, failures per object, the report and its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.core.errors import IntegrityError, Outcome, TierflowError
from pipelines.model.bandwidth import DEFAULT_PART_SIZE, HopPlan

__all__ = ["ChecksumMismatch", "Failure", "TransferError", "TransferReport", "TransferSettings"]


class ChecksumMismatch(IntegrityError, ValueError):
    """The bytes moved do not match the manifest (or the destination does not match the source)."""


@dataclass(frozen=True)
class TransferSettings:
    """How a copy runs; normally derived from a :class:`~pipelines.model.bandwidth.HopPlan`."""

    concurrency: int = 8
    part_size: int = DEFAULT_PART_SIZE
    verify: bool = False
    fsync: bool = False
    retries: int = 4
    backoff_s: float = 0.5
    progress_interval_s: float = 5.0
    use_crt: bool = True
    #: Uploads from local files remember what they wrote (:mod:`pipelines.transfer.seen`) so reruns skip it unread.
    copy_index: bool = True
    #: What the plan predicted for this copy, in seconds: a copy falling behind it logs a warning with its lateness.
    expected_s: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {self.concurrency})")
        if self.part_size < 5 * 2**20:
            raise ValueError(f"part size must be at least 5 MiB, the S3 minimum (got {self.part_size})")

    @classmethod
    def from_plan(cls, plan: HopPlan, **overrides: Any) -> TransferSettings:
        """Settings sized by the planner, for a copy of the whole hop."""
        return cls(concurrency=plan.concurrency, part_size=plan.part_size, expected_s=plan.predicted_s, **overrides)


@dataclass(frozen=True)
class Failure:
    """One object that could not be copied, and why."""

    key: str
    error: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.error}"


@dataclass
class TransferReport:
    """What a copy did. ``checksums`` holds every object's checksum (for manifests and commits)."""

    source: str
    destination: str
    objects: int = 0
    bytes: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    skipped_objects: int = 0
    skipped_bytes: int = 0
    seconds: float = 0.0
    concurrency: int = 0
    part_size: int = 0
    checksums: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def throughput_bps(self) -> float:
        """Bytes actually moved per second."""
        return self.copied_bytes / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One human line: objects, bytes, seconds, MB/s."""
        from pipelines.core.units import format_bandwidth, format_bytes

        objects = f"{self.objects:,} object{'' if self.objects == 1 else 's'}"
        return (
            f"{objects}, {format_bytes(self.bytes)} ({self.copied_objects:,} copied, {self.skipped_objects:,} "
            f"already there) in {self.seconds:.2f} s, {format_bandwidth(self.throughput_bps)}"
        )

    def to_json(self) -> dict[str, Any]:
        """The counts as plain data (the CLI's ``--json`` fields; checksums left out)."""
        return {
            "source": self.source,
            "destination": self.destination,
            "objects": self.objects,
            "bytes": self.bytes,
            "copied_objects": self.copied_objects,
            "copied_bytes": self.copied_bytes,
            "skipped_objects": self.skipped_objects,
            "skipped_bytes": self.skipped_bytes,
            "failed_objects": len(self.failures),
            "seconds": round(self.seconds, 3),
            "throughput_bps": round(self.throughput_bps),
            "concurrency": self.concurrency,
            "part_size": self.part_size,
        }


class TransferError(TierflowError):
    """Some objects could not be copied; ``report.failures`` names each one.

    Fatal when any object failed for good (checksum, permission, missing source, full disk),
    transient otherwise.
    """

    def __init__(self, report: TransferReport) -> None:
        self.report = report
        shown = "; ".join(str(f) for f in report.failures[:10])
        more = f" (+{len(report.failures) - 10} more)" if len(report.failures) > 10 else ""
        super().__init__(
            f"{len(report.failures)} of {report.objects} objects failed copying {report.source} -> "
            f"{report.destination}: {shown}{more}; {report.copied_objects} objects / {report.copied_bytes} bytes were "
            "copied and verified",
            operation="copy",
            source=report.source,
            destination=report.destination,
            moved_bytes=report.copied_bytes,
        )

    @property
    def fatal(self) -> bool:
        """Whether retrying cannot help (checksum mismatch, permission, missing source, disk full)."""
        return any(f.fatal for f in self.report.failures)

    @property
    def outcome(self) -> Outcome:  # type: ignore[override]
        """Fatal when any object failed for good."""
        return Outcome.FATAL if self.fatal else Outcome.TRANSIENT
