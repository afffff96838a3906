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
from typing import Any
from urllib.parse import quote, urlparse

from pipelines.core.errors import Outcome, TierflowError
from pipelines.storage.credentials import CRT_CREDENTIALS

__all__ = ["CrtMover", "crt_available"]


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


class CrtMover:
    """Upload and download whole objects between local files and one S3 endpoint.

    Args:
        storage_options: The tier's options (``key``, ``secret``, ``token``, ``endpoint_url``,
            ``client_kwargs.region_name``, or refreshing credentials under ``tierflow_credentials``);
            without credentials the default AWS credential chain is used.
        concurrency: Connections the client may open.
        part_size: Multipart part size (upload parts and ranged GETs).
        memory_limit: Buffer memory the client may use (at least 1 GiB is the CRT's floor on
            64-bit; parts in flight are bounded by ``concurrency`` anyway).
    """

    def __init__(
        self, storage_options: dict[str, Any], concurrency: int, part_size: int, memory_limit: int = 2**30
    ) -> None:
        from awscrt.auth import AwsCredentials, AwsCredentialsProvider
        from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
        from awscrt.s3 import S3Client, S3RequestTlsMode

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
            credentials = AwsCredentialsProvider.new_default_chain()
        loop_group = EventLoopGroup()
        self._client = S3Client(
            bootstrap=ClientBootstrap(loop_group, DefaultHostResolver(loop_group)),
            region=region,
            tls_mode=tls,
            credential_provider=credentials,
            part_size=part_size,
            multipart_upload_threshold=2 * part_size,
            throughput_target_gbps=10.0,
            memory_limit=max(memory_limit, 2**30),
            max_active_connections_override=max(1, concurrency),
        )

    def _request(self, method: str, path: str, headers: list[tuple[str, str]]) -> Any:
        from awscrt.http import HttpHeaders, HttpRequest

        bucket, _, key = path.partition("/")
        if self._host is not None:
            host, target = self._host, f"{self._path_prefix}/{bucket}/{quote(key, safe='/~')}"
        else:
            host, target = f"{bucket}.s3.{self._region}.amazonaws.com", f"/{quote(key, safe='/~')}"
        return HttpRequest(method, target, HttpHeaders([("Host", host), *headers]))

    def upload(self, local_path: str, path: str, metadata: dict[str, str] | None = None) -> None:
        """PUT a finished local file to ``bucket/key`` (multipart above two parts). Blocks until done."""
        from awscrt.s3 import S3RequestType

        size = os.path.getsize(local_path)
        headers = [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]
        headers += [(f"x-amz-meta-{k}", v) for k, v in (metadata or {}).items()]
        request = self._client.make_request(
            type=S3RequestType.PUT_OBJECT, request=self._request("PUT", path, headers), send_filepath=local_path
        )
        try:
            request.finished_future.result()
        except Exception as exc:  # translated to builtins for the engine's error classification
            raise _translate(exc, f"upload to {path}") from exc

    def download(self, path: str, local_path: str) -> tuple[str, int] | None:
        """GET ``bucket/key`` into ``local_path`` (ranged parts in parallel), hashing the bytes as they arrive.

        The CRT delivers the body in order, so the xxh3-128 is computed on the way and the file
        needs no second read; returns ``(checksum, size)``, or None if the body ever arrived out
        of order (the caller then hashes the file). Blocks until done.
        """
        import threading

        from awscrt.s3 import S3RequestType

        from pipelines.core.checksum import Hasher

        hasher = Hasher()
        state: dict[str, Any] = {"next": 0, "in_order": True, "error": None}
        lock = threading.Lock()
        fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def on_body(chunk: bytes, offset: int, **_: Any) -> None:
            with lock:
                if state["error"] is not None:
                    return
                try:
                    view, at = memoryview(chunk), offset
                    while view:  # pwrite may write less than asked (a nearly full disk)
                        written = os.pwrite(fd, view, at)
                        view, at = view[written:], at + written
                except OSError as exc:  # e.g. ENOSPC: raised below, once the request has ended
                    state["error"] = exc
                    return
                if offset != state["next"]:
                    state["in_order"] = False
                elif state["in_order"]:
                    hasher.update(chunk)
                state["next"] = max(state["next"], offset + len(chunk))

        try:
            request = self._client.make_request(
                type=S3RequestType.GET_OBJECT, request=self._request("GET", path, []), on_body=on_body
            )
            try:
                request.finished_future.result()
            except Exception as exc:  # translated to builtins for the engine's error classification
                if state["error"] is not None:
                    raise state["error"] from exc
                raise _translate(exc, f"download of {path}") from exc
        finally:
            os.close(fd)
        if state["error"] is not None:
            raise state["error"]
        return (hasher.hexdigest(), hasher.size) if state["in_order"] else None
