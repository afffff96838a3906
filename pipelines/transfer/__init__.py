"""The transfer engine: copy a manifest (or a shard of it) between tiers, verified and resumable.

:mod:`~pipelines.transfer.engine` moves the bytes; :mod:`~pipelines.transfer.report` holds its
settings, report and errors; :mod:`~pipelines.transfer.retry` is its one retry layer;
:mod:`~pipelines.transfer.progress` logs progress; :mod:`~pipelines.transfer.cleanup` removes what
interrupted copies left; :mod:`~pipelines.transfer.local` copies local files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.core.lazy import lazy_getattr

if TYPE_CHECKING:
    from pipelines.transfer.cleanup import reap_multipart_uploads, remove_temporaries
    from pipelines.transfer.engine import CHECKSUM_METADATA, copy_entries, copy_prefix, source_entries, workload_of
    from pipelines.transfer.report import ChecksumMismatch, Failure, TransferError, TransferReport, TransferSettings

#: Public name → the submodule defining it; imported on first use, so importing one submodule (or
#: this package, at DAG parse time) does not import the others.
_EXPORTS = {
    "CHECKSUM_METADATA": "engine",
    "ChecksumMismatch": "report",
    "Failure": "report",
    "TransferError": "report",
    "TransferReport": "report",
    "TransferSettings": "report",
    "copy_entries": "engine",
    "copy_prefix": "engine",
    "reap_multipart_uploads": "cleanup",
    "remove_temporaries": "cleanup",
    "source_entries": "engine",
    "workload_of": "engine",
}

__all__ = [
    "CHECKSUM_METADATA",
    "ChecksumMismatch",
    "Failure",
    "TransferError",
    "TransferReport",
    "TransferSettings",
    "copy_entries",
    "copy_prefix",
    "reap_multipart_uploads",
    "remove_temporaries",
    "source_entries",
    "workload_of",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
