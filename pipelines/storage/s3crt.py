"""The bulk data path to object storage: the AWS Common Runtime S3 client (``awscrt``).

fsspec/s3fs stays the general interface to object tiers (listing, metadata, deletes, server-side
copies). Moving the bytes of whole objects between a local file and an object store is the hot
path, and there s3fs stays at 0.25-0.8x of s5cmd on this machine (see ``benchmarks/``), while the
CRT client — native code, parts in parallel, file I/O off the GIL — keeps up with it. The CRT is
what ``boto3[crt]`` builds on and is maintained by AWS.

:class:`CrtMover` uploads from and downloads to local files only (``send_filepath``, and
an ``on_body`` stream written at its offsets and hashed on the way): the object is created by a
single PUT or a completed multipart upload, so nothing partial becomes visible; a failed multipart
upload is aborted by the client.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, unquote_plus, urlencode, urlparse

from pipelines.core.errors import Outcome, TierflowError
from pipelines.storage.credentials import CRT_CREDENTIALS

__all__ = ["CrtMover", "NativeUnavailable", "crt_available", "http_date"]


def crt_available(storage_options: dict[str, Any]) -> bool:
    """Whether the CRT path can serve these storage options.

    It can sign with static keys (and a session token), with refreshing credentials
    (:data:`~pipelines.storage.credentials.CRT_CREDENTIALS`, which a ``session`` from an Airflow
    connection comes with) or with the default chain; not anonymously or with an s3fs ``profile``.
    """
    try:
        import awscrt.s3  # noqa: F401
    except ImportError:
        return False
    if storage_options.get("anon") or storage_options.get("profile"):
        return False
    return not storage_options.get("session") or callable(storage_options.get(CRT_CREDENTIALS))


_T = TypeVar("_T")
_SHARED: dict[str, tuple[int, Any]] = {}
_SHARED_LOCK = threading.Lock()


def _shared(name: str, make: Callable[[], _T]) -> _T:
    """One ``name`` per process for every client (made on first use, and again in a forked child).

    A copy opens two clients (metadata and bulk); each resolving the default credential chain
    costs ~30 ms here. A child of ``fork`` has none of its parent's CRT threads: it makes its own.
    """
    with _SHARED_LOCK:
        pid, value = _SHARED.get(name, (0, None))
        if pid != os.getpid():
            value = make()
            _SHARED[name] = (os.getpid(), value)
        return value


def _bootstrap() -> Any:
    """The CRT's event loops and host resolver, shared by this process's clients."""
    from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup

    def make() -> Any:
        loop_group = EventLoopGroup()
        return ClientBootstrap(loop_group, DefaultHostResolver(loop_group))

    return _shared("bootstrap", make)


def _ambient_credentials() -> Any:
    """Credentials from the environment when it holds keys (what the default chain would find first), else the chain.

    The environment provider reads the variables when a request is signed; the default chain
    (profiles, web identity, container and instance metadata) is resolved once per process.
    """
    from awscrt.auth import AwsCredentialsProvider

    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return AwsCredentialsProvider.new_environment()
    return _shared("default-chain", AwsCredentialsProvider.new_default_chain)


def _translate(exc: BaseException, what: str) -> BaseException:
    """Map CRT errors onto builtins, as the rest of Tierflow sees them."""
    from awscrt.s3 import S3ResponseError

    if isinstance(exc, S3ResponseError):
        status = exc.status_code
        if status in (401, 403):
            return PermissionError(f"{what}: access denied ({status})")
        if status == 404 and (b"NoSuchUpload" in (exc.body or b"") or exc.operation_name in _UPLOAD_STEPS):
            # Another client aborted this multipart upload under us: starting it again will do.
            message = f"{what}: the multipart upload was aborted by another client"
            return TierflowError(message, outcome=Outcome.TRANSIENT)
        if status == 404:
            return FileNotFoundError(f"{what}: not found")
        return OSError(f"{what}: S3 error {status} in {exc.operation_name}: {exc.name}")
    name = getattr(exc, "name", "")
    if name in _LOCAL_ERRORS:
        code = _LOCAL_ERRORS[name]
        return OSError(code, f"{what}: {os.strerror(code)} ({name})")
    return OSError(f"{what}: {type(exc).__name__}: {exc}")


#: Steps of a multipart upload that answer 404 only when the upload itself is gone.
_UPLOAD_STEPS = frozenset({"UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload"})

#: CRT errors about the local file, as the errno the rest of Tierflow classifies.
_LOCAL_ERRORS = {
    "AWS_ERROR_NO_SPACE": errno.ENOSPC,
    "AWS_ERROR_NO_PERMISSION": errno.EACCES,
    "AWS_ERROR_FILE_INVALID_PATH": errno.ENOENT,
    "AWS_ERROR_MAX_FDS_EXCEEDED": errno.EMFILE,
}


class NativeUnavailable(Exception):
    """The native client got no answer it can give (an error, not "not found").

    The caller asks s3fs instead, whose own errors are the ones the error map turns into one line.
    """


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class CrtMover:
    """Upload and download whole objects between local files and one S3 endpoint; its metadata too.

    Beside the bulk transfers, the same native client answers the few metadata requests a copy
    makes before its first byte — HEAD, ``ListObjectsV2``, ``ListMultipartUploads`` and small
    GETs — so a copy needs neither botocore nor an event loop of its own (s3fs and aiobotocore
    take ~0.5 s to import and set up here, the CRT ~0.06 s).

    Args:
        storage_options: The tier's options (``key``, ``secret``, ``token``, ``endpoint_url``,
            ``client_kwargs.region_name``, or refreshing credentials under ``tierflow_credentials``);
            without them, keys in the environment, else the default AWS credential chain.
        concurrency: Connections the client may open.
        part_size: Multipart part size (upload parts and ranged GETs).
        memory_limit: Buffer memory the client may use (at least 1 GiB is the CRT's floor on
            64-bit; parts in flight are bounded by ``concurrency`` anyway).
        retries: Whether the CRT retries failed requests itself (the metadata client does not:
            its failures go to s3fs, which retries and names them).
        connect_timeout_ms: Milliseconds to open a connection (None: the CRT's default).
    """

    def __init__(
        self,
        storage_options: dict[str, Any],
        concurrency: int,
        part_size: int,
        memory_limit: int = 2**30,
        *,
        retries: bool = True,
        connect_timeout_ms: int | None = None,
    ) -> None:
        from awscrt.auth import AwsCredentials, AwsCredentialsProvider
        from awscrt.s3 import S3Client, S3RequestTlsMode, S3RetryConfig, S3RetryMode

        region = (
            (storage_options.get("client_kwargs") or {}).get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        endpoint = storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            parsed = urlparse(endpoint)
            self._host: str | None = parsed.netloc
            self._path_prefix = parsed.path.rstrip("/")
            tls = S3RequestTlsMode.DISABLED if parsed.scheme == "http" else S3RequestTlsMode.ENABLED
        else:  # AWS itself, virtual-hosted style
            self._host = None
            self._path_prefix = ""
            tls = S3RequestTlsMode.ENABLED
        self._region = region
        key, secret = storage_options.get("key"), storage_options.get("secret")
        current = storage_options.get(CRT_CREDENTIALS)
        if callable(current):

            def signing() -> AwsCredentials:  # asked by the CRT whenever it signs: refreshed credentials
                now = current()
                return AwsCredentials(now.access_key, now.secret_key, now.token or None)

            credentials = AwsCredentialsProvider.new_delegate(signing)
        elif key and secret:
            credentials = AwsCredentialsProvider.new_static(key, secret, storage_options.get("token") or None)
        else:
            credentials = _ambient_credentials()
        self._client = S3Client(
            bootstrap=_bootstrap(),
            region=region,
            tls_mode=tls,
            credential_provider=credentials,
            part_size=part_size,
            multipart_upload_threshold=2 * part_size,
            throughput_target_gbps=10.0,
            memory_limit=max(memory_limit, 2**30),
            max_active_connections_override=max(1, concurrency),
            retry_config=None if retries else S3RetryConfig(retry_mode=S3RetryMode.NONE),
            connect_timeout_ms=connect_timeout_ms,
        )

    def _request(
        self, method: str, path: str, headers: list[tuple[str, str]], query: dict[str, str] | None = None
    ) -> Any:
        """The HTTP request for ``bucket/key`` (a bucket alone for bucket-level requests) and its query."""
        from awscrt.http import HttpHeaders, HttpRequest

        bucket, _, key = path.partition("/")
        quoted = quote(key, safe="/~")
        if self._host is not None:
            host, target = self._host, f"{self._path_prefix}/{bucket}" + (f"/{quoted}" if key else "")
        else:
            host, target = f"{bucket}.s3.{self._region}.amazonaws.com", f"/{quoted}"
        if query is not None:
            target += "?" + urlencode(query, quote_via=quote, safe="-_.~")
        return HttpRequest(method, target, HttpHeaders([("Host", host), *headers]))

    # -- metadata: what a copy asks before its first byte ------------------------------------

    def _call(
        self, method: str, path: str, operation: str, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One signed request, waited for: ``(status, headers, body)``.

        A 404 is an answer (returned); anything else that is not a success raises
        :class:`NativeUnavailable`.
        """
        return self._answer(self._start(method, path, operation, query), path, operation)

    def _start(self, method: str, path: str, operation: str, query: dict[str, str] | None) -> Any:
        from awscrt.s3 import S3RequestType

        answer: dict[str, Any] = {"body": bytearray()}

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            answer["status"], answer["headers"] = status_code, headers

        def on_body(chunk: bytes, offset: int, **_: Any) -> None:
            answer["body"] += chunk

        try:
            request = self._client.make_request(
                type=S3RequestType.DEFAULT,
                operation_name=operation,
                request=self._request(method, path, [], query),
                on_headers=on_headers,
                on_body=on_body,
            )
        except Exception as exc:  # e.g. no credentials: s3fs says what is missing
            raise NativeUnavailable(f"{operation} {path}: {exc}") from exc
        return request, answer

    @staticmethod
    def _answer(started: Any, path: str, operation: str) -> tuple[int, dict[str, str], bytes]:
        from awscrt.s3 import S3ResponseError

        request, answer = started
        try:
            request.finished_future.result()
        except S3ResponseError as exc:
            if exc.status_code == 404:
                headers = {k.lower(): v for k, v in (exc.headers or [])}
                return 404, headers, bytes(exc.body or b"")
            raise NativeUnavailable(f"{operation} {path}: HTTP {exc.status_code}") from exc
        except Exception as exc:  # refused, unresolvable, timed out, credentials: s3fs names it
            raise NativeUnavailable(f"{operation} {path}: {exc}") from exc
        headers = {k.lower(): v for k, v in answer.get("headers") or []}
        return int(answer.get("status", 200)), headers, bytes(answer["body"])

    def head(self, path: str) -> dict[str, str] | None:
        """The response headers of HEAD ``bucket/key`` (lower-case names), or None when there is no such object."""
        status, headers, _ = self._call("HEAD", path, "HeadObject")
        return None if status == 404 else headers

    def get(self, path: str) -> bytes | None:
        """A whole (small) object in one GET, or None when there is no such object."""
        status, _, body = self._call("GET", path, "GetObject")
        return None if status == 404 else body

    def list_objects(self, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
        """Every object under ``prefix`` (s3fs-shaped: ``bucket/key`` → name, type, size, ETag, LastModified).

        Pages of 1,000 are parsed while the next is in flight. A bucket that does not exist raises
        :class:`NativeUnavailable` (s3fs says so).
        """
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000", "encoding-type": "url"}
        found: dict[str, dict[str, Any]] = {}
        page = self._call("GET", bucket, "ListObjectsV2", query)
        while True:
            status, _, body = page
            if status != 200:
                raise NativeUnavailable(f"ListObjectsV2 {bucket}/{prefix}: HTTP {status}")
            root, token, truncated = read_list_page(body)
            if truncated and not token:
                raise NativeUnavailable(f"ListObjectsV2 {bucket}/{prefix}: truncated page without a token")
            following = None
            if truncated:  # in flight while this page is read
                following = self._start("GET", bucket, "ListObjectsV2", query | {"continuation-token": str(token)})
            add_listed(root, bucket, found)
            if following is None:
                return found
            page = self._answer(following, bucket, "ListObjectsV2")

    def list_uploads(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        """Unfinished multipart uploads under ``prefix``: ``Key``, ``UploadId``, ``Initiated`` (as s3fs gives them)."""
        import xml.etree.ElementTree as ET

        query = {"uploads": "", "prefix": prefix}
        while True:
            status, _, body = self._call("GET", bucket, "ListMultipartUploads", query)
            if status != 200:
                raise NativeUnavailable(f"ListMultipartUploads {bucket}/{prefix}: HTTP {status}")
            root = ET.fromstring(body)
            for item in root.iter(f"{_S3_NS}Upload"):
                initiated = item.findtext(f"{_S3_NS}Initiated")
                yield {
                    "Key": item.findtext(f"{_S3_NS}Key") or "",
                    "UploadId": item.findtext(f"{_S3_NS}UploadId") or "",
                    "Initiated": datetime.fromisoformat(initiated) if initiated else None,
                }
            if root.findtext(f"{_S3_NS}IsTruncated") != "true":
                return
            query = {
                "uploads": "",
                "prefix": prefix,
                "key-marker": root.findtext(f"{_S3_NS}NextKeyMarker") or "",
                "upload-id-marker": root.findtext(f"{_S3_NS}NextUploadIdMarker") or "",
            }

    def upload(self, local_path: str, path: str, metadata: dict[str, str] | None = None) -> str | None:
        """PUT a finished local file to ``bucket/key`` (multipart above two parts). Blocks until done.

        Returns the new object's ETag (without quotes) when the store gave one.
        """
        return self.start_upload(local_path, path, metadata).result()

    def start_upload(self, local_path: str, path: str, metadata: dict[str, str] | None = None) -> Future[str | None]:
        """Start a PUT of a finished local file to ``bucket/key`` (multipart above two parts).

        The returned future ends with the new object's ETag (without quotes; None when the store
        gave none), or with the error as the rest of Tierflow classifies it; its callbacks run on
        a CRT thread. The file must stay readable under ``local_path`` until the future is done.
        """
        from awscrt.s3 import S3RequestType

        size = os.path.getsize(local_path)
        headers = [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]
        headers += [(f"x-amz-meta-{k}", v) for k, v in (metadata or {}).items()]
        answered: dict[str, str] = {}
        outcome: Future[str | None] = Future()

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            answered.update((k.lower(), v) for k, v in headers)

        def finished(done: Future[None]) -> None:
            outcome.request = None  # type: ignore[attr-defined]  # the cycle through it would hold the CRT's memory
            failed = done.exception()
            if failed is not None:  # translated to builtins for the engine's error classification
                outcome.set_exception(_translate(failed, f"upload to {path}"))
            else:
                etag = answered.get("etag")
                outcome.set_result(etag.strip('"') if etag else None)

        request = self._client.make_request(
            type=S3RequestType.PUT_OBJECT,
            request=self._request("PUT", path, headers),
            send_filepath=local_path,
            on_headers=on_headers,
        )
        outcome.request = request  # type: ignore[attr-defined]  # kept alive until it ends
        request.finished_future.add_done_callback(finished)
        return outcome

    def download(self, path: str, local_path: str) -> tuple[str, int] | None:
        """GET ``bucket/key`` into ``local_path``; blocks until done (see :meth:`start_download`)."""
        return self.start_download(path, local_path).result()

    def start_download(self, path: str, local_path: str) -> Future[tuple[str, int] | None]:
        """Start a GET of ``bucket/key`` into ``local_path`` (ranged parts in parallel), hashed as the bytes arrive.

        The CRT delivers the body in order, so the xxh3-128 is computed on the way and the file
        needs no second read. The returned future ends with ``(checksum, size)``, or None if the
        body ever arrived out of order (the caller then hashes the file), or with the error as
        the rest of Tierflow classifies it; its callbacks run on a CRT thread.

        Raises:
            OSError: ``local_path`` cannot be created (nothing was requested).
        """
        import threading

        from awscrt.s3 import S3RequestType

        from pipelines.core.checksum import Hasher
        from pipelines.core.fileio import pwrite_all

        hasher = Hasher()
        state: dict[str, Any] = {"next": 0, "in_order": True, "error": None}
        lock = threading.Lock()
        outcome: Future[tuple[str, int] | None] = Future()
        fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def on_body(chunk: bytes, offset: int, **_: Any) -> None:
            with lock:
                if state["error"] is not None:
                    return
                try:
                    pwrite_all(fd, chunk, offset)
                except OSError as exc:  # e.g. ENOSPC: raised once the request has ended
                    state["error"] = exc
                    return
                if offset != state["next"]:
                    state["in_order"] = False
                elif state["in_order"]:
                    hasher.update(chunk)
                state["next"] = max(state["next"], offset + len(chunk))

        def finished(done: Future[None]) -> None:
            outcome.request = None  # type: ignore[attr-defined]  # the cycle through it would hold the CRT's memory
            os.close(fd)
            failed = done.exception()
            if state["error"] is not None:
                outcome.set_exception(state["error"])
            elif failed is not None:  # translated to builtins for the engine's error classification
                outcome.set_exception(_translate(failed, f"download of {path}"))
            else:
                outcome.set_result((hasher.hexdigest(), hasher.size) if state["in_order"] else None)

        try:
            request = self._client.make_request(
                type=S3RequestType.GET_OBJECT, request=self._request("GET", path, []), on_body=on_body
            )
        except BaseException:
            os.close(fd)
            raise
        outcome.request = request  # type: ignore[attr-defined]  # kept alive until it ends
        request.finished_future.add_done_callback(finished)
        return outcome


_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


def http_date(text: str) -> datetime:
    """A ``Last-Modified`` header's date, in UTC.

    The form every S3 server sends (``Sun, 06 Nov 1994 08:49:37 GMT``) is read here; any other
    through :mod:`email.utils` (~5 ms to import, which a one-object copy would pay for its HEAD).
    """
    fields = text.split()
    if len(fields) == 6 and fields[5] == "GMT" and fields[2] in _MONTHS:
        try:
            hour, minute, second = (int(n) for n in fields[4].split(":"))
            return datetime(int(fields[3]), _MONTHS[fields[2]], int(fields[1]), hour, minute, second, tzinfo=UTC)
        except ValueError:
            pass
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(text)


def object_info(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """An s3fs-shaped info dict of ``bucket/key`` from its HEAD response headers."""
    modified = headers.get("last-modified")
    return {
        "name": path,
        "type": "file",
        "size": int(headers.get("content-length", 0)),
        "ETag": headers.get("etag"),
        "LastModified": http_date(modified) if modified else None,
    }


def read_list_page(page: bytes) -> tuple[Any, str | None, bool]:
    """One ``ListObjectsV2`` page: its parsed XML, the continuation token, and whether the listing goes on."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(page)
    token = root.findtext(f"{_S3_NS}NextContinuationToken")
    return root, token, root.findtext(f"{_S3_NS}IsTruncated") == "true"


def add_listed(root: Any, bucket: str, found: dict[str, dict[str, Any]]) -> None:
    """Add the objects of a parsed ``ListObjectsV2`` page (``encoding-type=url``) to ``found``, s3fs-shaped."""
    for item in root.iter(f"{_S3_NS}Contents"):
        name = unquote_plus(item.findtext(f"{_S3_NS}Key") or "")
        if not name or name.endswith("/"):
            continue  # a "directory" placeholder, not an object
        modified = item.findtext(f"{_S3_NS}LastModified")
        found[f"{bucket}/{name}"] = {
            "name": f"{bucket}/{name}",
            "type": "file",
            "size": int(item.findtext(f"{_S3_NS}Size") or 0),
            "ETag": item.findtext(f"{_S3_NS}ETag"),
            "LastModified": datetime.fromisoformat(modified) if modified else None,
        }
