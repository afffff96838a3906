"""One classification of failures, read by the engine, the operators and the command line.

Backends translate their own errors once, into builtins (``FileNotFoundError``,
``PermissionError``, ``OSError`` with an errno) or into the classes below; everything above them
asks :func:`classify` what a failure means:

* :attr:`Outcome.TRANSIENT`: retrying may help (a dropped connection, a busy or restarting server,
  a throttled request). The engine retries with backoff; an operator lets Airflow retry.
* :attr:`Outcome.FATAL`: retrying cannot help (bad input or config, a checksum mismatch, missing
  source, no permission, a full or read-only disk). The engine stops retrying that object; an
  operator fails the task for good (``AirflowFailException``); the CLI exits non-zero with one line.
* :attr:`Outcome.DONE`: there is nothing to do (already committed). An operator skips.

The command line maps the same classes to exit codes (:func:`exit_code`): 2 for a usage or input
error the user can fix, 1 for a job that failed. Standard library only: the CLI imports it first.
"""

from __future__ import annotations

import enum
import errno
from typing import Any

__all__ = [
    "AlreadyDone",
    "InputError",
    "IntegrityError",
    "Outcome",
    "TierflowError",
    "classify",
    "exit_code",
    "is_server_fault",
    "one_line",
]


class Outcome(enum.Enum):
    """What a failure means for whoever runs the operation."""

    TRANSIENT = "transient"
    FATAL = "fatal"
    DONE = "done"


class TierflowError(Exception):
    """A failure with its context: the operation, source and destination, and what was already moved.

    Args:
        message: One line naming the object, field or endpoint at fault.
        operation: What was being done (``copy``, ``commit``, ``prune``, ...).
        source: Where from (URL or tier name), when it applies.
        destination: Where to, when it applies.
        moved_bytes: Bytes already moved and verified before the failure.
        outcome: What it means for this one failure, when not the class's (a checkpoint rewritten during
            its copy is transient, one committed with other content is fatal).
    """

    outcome: Outcome = Outcome.FATAL

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        moved_bytes: int = 0,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message)
        if outcome is not None:
            self.outcome = outcome
        self.operation = operation
        self.source = source
        self.destination = destination
        self.moved_bytes = moved_bytes

    def context(self) -> dict[str, Any]:
        """The failure as plain data (for logs and summaries)."""
        return {
            "error": str(self),
            "kind": type(self).__name__,
            "outcome": self.outcome.value,
            "operation": self.operation,
            "source": self.source,
            "destination": self.destination,
            "moved_bytes": self.moved_bytes,
        }


class InputError(TierflowError, ValueError):
    """Input the user can fix: a bad argument, setting, name or file (exit status 2)."""


class IntegrityError(TierflowError):
    """Bytes or a manifest that do not match what they must (never retried)."""


class AlreadyDone(TierflowError):
    """Nothing to do: the result is already there (operators skip)."""

    outcome = Outcome.DONE


#: errno values that no retry can mend.
_FATAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT}
)
#: Builtin exceptions that no retry can mend.
_FATAL_TYPES: tuple[type[BaseException], ...] = (
    PermissionError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,  # bad input, config, manifests and checksum mismatches derive from it
)
#: Client-side errors of an object store's library that no retry can mend (by class name: botocore
#: is not imported for them): a request the client refuses to send as asked.
_FATAL_CLIENT_ERRORS = ("ParamValidationError",)
#: S3 error codes (botocore ``ClientError``) that no retry can mend.
_FATAL_S3_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "NoSuchKey", "InvalidBucketName"}
)


def _s3_code(exc: BaseException | None) -> str | None:
    response = getattr(exc, "response", None)  # botocore ClientError, without importing botocore
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else None


#: S3 error codes that read as "not found" but mean a retry will succeed: a multipart upload
#: aborted under a writer (by another client's cleanup) is started again from its first part.
_TRANSIENT_S3_CODES = frozenset({"NoSuchUpload"})


def classify(exc: BaseException) -> Outcome:
    """Whether ``exc`` is worth retrying, final, or means the work is already done."""
    if isinstance(exc, TierflowError):
        return exc.outcome
    if _s3_code(exc) in _TRANSIENT_S3_CODES or _s3_code(exc.__cause__) in _TRANSIENT_S3_CODES:
        return Outcome.TRANSIENT  # s3fs raises these as FileNotFoundError
    if isinstance(exc, _FATAL_TYPES) or _chain_has(exc, *_FATAL_CLIENT_ERRORS):
        return Outcome.FATAL
    if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS:
        return Outcome.FATAL
    code = _s3_code(exc)
    if code is not None:
        return Outcome.FATAL if code in _FATAL_S3_CODES else Outcome.TRANSIENT
    return Outcome.TRANSIENT


def exit_code(exc: BaseException) -> int:
    """The command line's exit status for a failure: 2 for input the user can fix, 1 for a failed job."""
    if isinstance(exc, IntegrityError):
        return 1
    if _chain_has(exc, "NoCredentialsError", "PartialCredentialsError"):
        return 2
    return 2 if isinstance(exc, ValueError) else 1


def one_line(exc: BaseException) -> str:
    """The failure as one line: its message (an OS error's path and what went wrong), else its type.

    An object store that cannot be reached or has no credentials is said so, naming the
    endpoint and what to check, rather than in botocore's words.
    """
    explained = _unreachable(exc) or _server_fault(exc)
    if explained:
        return explained
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # "[Errno 20] Not a directory: '/a/b'"
        other = f" -> {exc.filename2}" if exc.filename2 else ""
        return f"{exc.filename}{other}: {exc.strerror}"
    quoted = isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
    text = (exc.args[0] if quoted else str(exc)).strip()  # str() of a KeyError quotes its message
    return text.splitlines()[0] if text else type(exc).__name__


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _chain_has(exc: BaseException, *names: str) -> BaseException | None:
    """The first exception in ``exc``'s chain whose class (or a base) is called one of ``names``."""
    for link in _chain(exc):
        if any(klass.__name__ in names for klass in type(link).__mro__):
            return link
    return None


#: What to check when an object store cannot be reached.
_CHECK_ENDPOINT = (
    "check the endpoint (AWS_ENDPOINT_URL, the tier's connection, or copy's --endpoint-url) and that it is up "
    "(the embedded one: tierflow s3 serve)"
)


#: S3 error codes of a fault on the server's side (s3fs raises them as OSError EREMOTEIO or EBUSY).
_SERVER_S3_CODES = frozenset({"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"})


def is_server_fault(exc: BaseException) -> bool:
    """Whether the object store failed the request on its side (5xx: busy, restarting, throttling)."""
    return any(_s3_code(link) in _SERVER_S3_CODES for link in _chain(exc))


def _server_fault(exc: BaseException) -> str | None:
    """One line for a request the object store failed on its side (5xx), after the retries gave up."""
    for link in _chain(exc):
        code = _s3_code(link)
        if code not in _SERVER_S3_CODES:
            continue
        response: dict[str, Any] = getattr(link, "response", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or code
        message = response.get("Error", {}).get("Message") or code
        request = getattr(link, "operation_name", "") or "a request"
        return (
            f"the object store failed {request} ({status} {message}), still after retries: "
            "a fault on the server's side (busy, restarting or out of disk): check the server, then run again "
            "(a rerun resumes)"
        )
    return None


def _unreachable(exc: BaseException) -> str | None:
    """One line for an endpoint that refuses, does not resolve or does not answer, or missing credentials.

    botocore's exceptions are matched by class name (this module imports nothing outside the
    standard library); the endpoint is the scheme and host of the request's URL.
    """
    if _chain_has(exc, "NoCredentialsError", "PartialCredentialsError"):
        return (
            "no credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "give the tier an Airflow connection, or start the embedded server (tierflow s3 serve)"
        )
    link = _chain_has(exc, "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")
    if link is None:
        return _unreachable_over_http(exc)
    url = str(getattr(link, "kwargs", {}).get("endpoint_url", ""))
    scheme, _, rest = url.partition("://")
    endpoint = f"{scheme}://{rest.split('/', 1)[0]}" if rest else "the object store"
    if type(link).__name__ == "ReadTimeoutError":
        why = "no answer in time"
    elif type(link).__name__ == "ConnectTimeoutError":
        why = "connection timed out"
    else:
        why = _why_not_connected(exc, link)
    return f"cannot reach {endpoint} ({why}): {_CHECK_ENDPOINT}"


def _why_not_connected(exc: BaseException, link: BaseException) -> str:
    if _chain_has(exc, "gaierror", "ClientConnectorDNSError"):
        return "host not found"
    if _chain_has(exc, "ConnectionRefusedError") or "refused" in str(link).lower():
        return "connection refused"
    return "cannot connect"


#: What to check when a GCS or Azure endpoint cannot be reached.
_CHECK_OTHER_ENDPOINT = (
    "check the tier's connection or storage options (STORAGE_EMULATOR_HOST for a GCS emulator, "
    "AZURE_STORAGE_CONNECTION_STRING for Azure) and that the service is up"
)


def _unreachable_over_http(exc: BaseException) -> str | None:
    """One line for a GCS (gcsfs: aiohttp) or Azure (azure-core) endpoint that cannot be reached."""
    link = _chain_has(exc, "ClientConnectorError", "ServiceRequestError")
    if link is None:
        return None
    host, port = getattr(link, "host", None), getattr(link, "port", None)
    endpoint = f"{host}:{port}" if host else "the object store"
    return f"cannot reach {endpoint} ({_why_not_connected(exc, link)}): {_CHECK_OTHER_ENDPOINT}"
