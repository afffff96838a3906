"""The one classification of failures: what each means (retry or not) and the line a user reads.

The server-side faults are built with botocore's own ``ClientError`` and s3fs's own translation,
the exact exceptions a copy meets when the store answers 5xx (SeaweedFS does while it restarts:
the fault suite meets them for real, at moments it cannot choose).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from s3fs.errors import translate_boto_error

from pipelines.core.errors import InputError, Outcome, classify, exit_code, is_server_fault, one_line

pytestmark = pytest.mark.unit


def s3_error(status: int, code: str, message: str, operation: str = "ListObjectsV2") -> OSError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    error = ClientError(response, operation)  # type: ignore[arg-type]
    translated = translate_boto_error(error)
    assert isinstance(translated, OSError)
    return translated


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        pytest.param(500, "InternalError", "We encountered an internal error", id="internal-error"),
        pytest.param(500, "500", "Internal Server Error", id="bare-500"),
        pytest.param(503, "SlowDown", "Please reduce your request rate", id="slow-down"),
        pytest.param(503, "ServiceUnavailable", "Service Unavailable", id="unavailable"),
    ],
)
def test_a_server_side_fault_is_retried_and_reads_as_the_servers_fault(status: int, code: str, message: str) -> None:
    exc = s3_error(status, code, message)
    assert classify(exc) is Outcome.TRANSIENT and is_server_fault(exc)
    line = one_line(exc)
    assert "\n" not in line and "Errno" not in line, line
    assert f"ListObjectsV2 ({status} {message})" in line and "server's side" in line, line
    assert exit_code(exc) == 1


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        pytest.param(
            NotADirectoryError(20, "Not a directory", "/d/blocker/x"), "/d/blocker/x: Not a directory", id="path"
        ),
        pytest.param(
            IsADirectoryError(21, "Is a directory", "/d/.f.tmp", None, "/d/f"),
            "/d/.f.tmp -> /d/f: Is a directory",
            id="two",
        ),
        pytest.param(FileNotFoundError("s3://b/k: no such object"), "s3://b/k: no such object", id="said-already"),
        pytest.param(KeyError("no tier named 'tape'"), "no tier named 'tape'", id="key-error-unquoted"),
    ],
)
def test_an_os_error_reads_as_its_path_and_what_went_wrong(exc: BaseException, line: str) -> None:
    assert one_line(exc) == line


def _param_error() -> BaseException:
    from botocore.exceptions import ParamValidationError

    return ParamValidationError(report="Invalid type for parameter VersionId, value: 5, type: <class 'int'>")


@pytest.mark.parametrize(
    ("exc", "outcome", "code"),
    [
        pytest.param(s3_error(403, "AccessDenied", "Access Denied"), Outcome.FATAL, 1, id="denied"),
        pytest.param(s3_error(404, "NoSuchBucket", "no bucket"), Outcome.FATAL, 1, id="no-bucket"),
        pytest.param(s3_error(404, "NoSuchUpload", "aborted"), Outcome.TRANSIENT, 1, id="upload-aborted-under-us"),
        pytest.param(OSError(28, "No space left on device"), Outcome.FATAL, 1, id="disk-full"),
        pytest.param(InputError("--part-size: not a size"), Outcome.FATAL, 2, id="input"),
        pytest.param(ConnectionResetError(104, "reset"), Outcome.TRANSIENT, 1, id="reset"),
        pytest.param(_param_error(), Outcome.FATAL, 1, id="a-request-the-client-refuses-to-send"),
    ],
)
def test_classification_and_exit_codes(exc: BaseException, outcome: Outcome, code: int) -> None:
    assert classify(exc) is outcome
    assert exit_code(exc) == code
    assert not is_server_fault(exc)
    assert "\n" not in one_line(exc)
