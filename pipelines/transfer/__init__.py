"""The transfer engine: copy a manifest (or a shard of it) between tiers, verified and resumable.

:mod:`~pipelines.transfer.engine` moves the bytes; :mod:`~pipelines.transfer.report` holds its
settings, report and errors; :mod:`~pipelines.transfer.retry` is its one retry layer;
:mod:`~pipelines.transfer.progress` logs progress; :mod:`~pipelines.transfer.cleanup` removes what
interrupted copies left; :mod:`~pipelines.transfer.local` copies local files.
"""

from pipelines.transfer.cleanup import reap_multipart_uploads, remove_temporaries
from pipelines.transfer.engine import CHECKSUM_METADATA, copy_entries, copy_prefix, source_entries
from pipelines.transfer.report import ChecksumMismatch, Failure, TransferError, TransferReport, TransferSettings

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
]
