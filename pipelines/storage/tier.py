"""The tier interface: one handle per storage tier, one backend module per kind of store.

:class:`Tier` is what every hop, cache and checkpoint operation talks to. It adds what every hop
needs and a raw filesystem leaves to the caller:

* relative keys are validated, so no key can escape the tier's root (``..``, absolute paths);
* writes are atomic on every tier: a local file is written under a temporary name and renamed, an
  object is uploaded from a finished local file (s3fs publishes a partial object when a streamed
  write fails) — nothing partial is ever visible under a final name;
* listings are recursive, sorted, relative and ignore Tierflow's own temporaries;
* checksums are computed by streaming (bounded memory) with :mod:`pipelines.core.checksum`.

Backends, chosen by the URL scheme of the tier (:mod:`pipelines.storage.registry`):
:class:`pipelines.storage.local.LocalTier` (``file://``: PFS and NVMe, POSIX) and the object
stores, :class:`pipelines.storage.objects.ObjectTier`'s subclasses: :class:`pipelines.storage.s3.S3Tier`
(``s3://``, through s3fs, with the CRT bulk path in :mod:`pipelines.storage.s3crt`),
:class:`pipelines.storage.gcs.GcsTier` (``gs://``, gcsfs) and :class:`pipelines.storage.azure.AzureTier`
(``az://``, adlfs). ``Tier(config, ...)`` returns the backend for the config's URL.

Object-store credentials come from the caller's storage options (the Airflow operators turn a
connection into them), else from the embedded server's credentials when the tier uses its
connection id, else from the environment (``AWS_*``), as botocore reads it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from pipelines.core.checksum import checksum_stream
from pipelines.core.config import OBJECT_SCHEMES, TierConfig, TierflowConfig
from pipelines.core.keys import safe_key
from pipelines.core.temporaries import TMP_MARKER, temporary_name
from pipelines.storage.credentials import storage_options_for

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = [
    "TMP_MARKER",
    "ObjectInfo",
    "Tier",
    "open_tier",
    "tier_for_url",
]


@dataclass(frozen=True)
class ObjectInfo:
    """One object (file) on a tier: its key relative to the tier root, its size and modification time."""

    key: str
    size: int
    mtime: float | None = None
    #: What changes whenever the object is written again: its ETag, or a file's inode, mtime and ctime.
    version: str | None = None


def tier_for_url(config: TierflowConfig, url: str) -> tuple[TierConfig, str]:
    """The tier a URL or local path lies in, and the key prefix within it.

    A URL under a configured tier's root resolves to that tier (and its credentials); any other
    object URL (``s3://``, ``gs://``, ``az://``: bucket and prefix) becomes an ad-hoc tier rooted at
    its bucket (the rest is the prefix, or one object's key), any other local path an ad-hoc tier
    rooted there; each with the bandwidth profile of the first configured tier of the same kind
    (for planning).

    Raises:
        ValueError: The URL is neither an object URL with a bucket nor a local path.
    """
    from dataclasses import replace

    scheme, sep, rest = url.partition("://")
    if sep and scheme in OBJECT_SCHEMES:
        kind, root = "object", rest.strip("/")
    elif sep and scheme != "file":
        raise ValueError(f"unsupported URL {url!r}: use s3://, gs:// or az://bucket/prefix, or a local path")
    else:
        kind, root = "file", os.path.abspath(url.removeprefix("file://"))
        if os.path.isfile(root):
            raise ValueError(f"{root} is a file: copy works on directories and prefixes (give its directory)")
    for tier in config.tiers:
        if (tier.is_object) != (kind == "object"):
            continue
        if kind == "object" and _STORE.get(tier.scheme, tier.scheme) != _STORE.get(scheme, scheme):
            continue
        if root == tier.root or root.startswith(tier.root.rstrip("/") + "/"):
            return tier, root[len(tier.root) :].strip("/")
    if kind == "object" and not root:
        raise ValueError(f"unsupported URL {url!r}: name a bucket")
    same_kind = [t for t in config.tiers if t.is_object == (kind == "object")]
    like = same_kind[0] if same_kind else config.tiers[0]
    if kind == "object":  # rooted at the bucket: the rest is a prefix, or the key of one object
        bucket, _, prefix = root.partition("/")
        adhoc = replace(like, name="adhoc-object", kind="object", url=f"{scheme}://{bucket}/", conn_id="adhoc")
        return adhoc, prefix.strip("/")
    adhoc = replace(  # a copy creates its destination directory, as cp -r does
        like,
        name="adhoc-file",
        kind=like.kind if same_kind else "pfs",
        url=f"file://{root}",
        conn_id=None,
        create=True,
    )
    return adhoc, ""


#: Schemes that name the same store (gcsfs takes gs:// and gcs://, adlfs az:// and abfs://).
_STORE = {"gcs": "gs", "abfs": "az"}


def open_tier(config: TierflowConfig, name: str, storage_options: dict[str, Any] | None = None) -> Tier:
    """Open the tier called ``name``; object tiers use ``storage_options`` or :func:`storage_options_for`."""
    tier = config.tier(name)
    if tier.is_object and storage_options is None:
        storage_options = storage_options_for(config, tier)
    return Tier(tier, storage_options or {})


class Tier:
    """A tier's storage rooted at its URL; ``Tier(config, ...)`` returns the backend for the URL's scheme.

    Args:
        config: The tier's configuration.
        storage_options: Options for the backend's filesystem (s3fs: key, secret, endpoint_url, ...).
        spool_dir: Where uploads to object storage are staged before they are sent whole.
    """

    #: URL scheme of the backend (``file``, ``s3``); set by each backend class.
    scheme = ""
    fs: AbstractFileSystem
    storage_options: dict[str, Any]

    def __new__(cls, config: TierConfig, *args: Any, **kwargs: Any) -> Tier:  # noqa: D102
        if cls is Tier:
            from pipelines.storage.registry import backend_for

            cls = backend_for(config.url)
        return super().__new__(cls)

    def __init__(
        self,
        config: TierConfig,
        storage_options: dict[str, Any] | None = None,
        spool_dir: str | None = None,
    ) -> None:
        self.config = config
        self.root = config.root
        self.spool_dir = spool_dir
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"Tier({self.config.name!r}, {self.config.url!r})"

    @property
    def name(self) -> str:
        """The tier's name."""
        return self.config.name

    # -- naming -------------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """The filesystem path of a relative key."""
        return f"{self.root}/{safe_key(key)}"

    def url(self, key: str = "") -> str:
        """The URL of a key (or of the root): ``s3://bucket/prefix/key`` or ``file:///path/key``."""
        return f"{self.scheme}://" + (self.path(key) if key else self.root)

    def _key_of(self, path: str) -> str:
        path = path.removeprefix(f"{self.scheme}://")
        return posixpath.relpath(path, self.root)

    # -- reading ------------------------------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursive), sorted by key, without Tierflow temporaries.

        A prefix that does not exist lists as empty. Listing errors propagate: a failed listing
        must never look like an empty one.
        """
        found = self._find(self.path(prefix) if prefix else self.root)
        out = []
        for path, info in found.items():
            if info.get("type") == "directory" or TMP_MARKER in path:
                continue
            out.append(ObjectInfo(self._key_of(path), int(info["size"]), _mtime(info), _version(info)))
        return sorted(out, key=lambda o: o.key)

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        return cast(dict[str, dict[str, Any]], self.fs.find(base, detail=True))

    def resident_share(self, keys: Sequence[str]) -> float:
        """The share of these objects' bytes a read would find in this machine's page cache (0: none known)."""
        return 0.0

    def write_headroom(self) -> int | None:
        """Bytes a write here lands in this machine's page cache before it goes at the disk's pace (None: not known)."""
        return None

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of one object.

        Raises:
            FileNotFoundError: No such object.
        """
        info = self.fs.info(self.path(key))
        if info.get("type") == "directory":
            raise FileNotFoundError(f"{self.url(key)} is a directory, not an object")
        return ObjectInfo(safe_key(key), int(info["size"]), _mtime(info))

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        return True

    def open_read(self, key: str) -> BinaryIO:
        """Open an object for streaming reads."""
        return cast(BinaryIO, self.fs.open(self.path(key), "rb"))

    def read_bytes(self, key: str) -> bytes:
        """Read a whole (small) object."""
        return cast(bytes, self.fs.cat_file(self.path(key)))

    def checksum(self, key: str) -> tuple[str, int]:
        """Checksum (xxh3-128) and size of an object, streamed in bounded blocks."""
        with self.open_read(key) as fh:
            return checksum_stream(fh)

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Download an object to a local path atomically (temporary name, then rename)."""
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)  # any local path, not necessarily in a tier
        tmp = Path(temporary_name(str(dest)))
        try:
            self.fs.get_file(self.path(key), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- writing (each backend) -------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str, fsync: bool = False) -> Iterator[BinaryIO]:
        """Write an object atomically: it appears under ``key`` only if the block exits cleanly."""
        raise NotImplementedError
        yield  # pragma: no cover

    def write_bytes(self, key: str, data: bytes, fsync: bool = False) -> None:
        """Write a small object atomically."""
        with self.writer(key, fsync=fsync) as fh:
            fh.write(data)

    def put_file(self, local_path: str | os.PathLike[str], key: str, fsync: bool = False) -> None:
        """Upload or copy a finished local file to ``key`` atomically."""
        raise NotImplementedError

    def copy_key(self, src_key: str, dst_key: str) -> None:
        """Copy one object to another key of this tier (server-side on object stores)."""
        self.fs.copy(self.path(src_key), self.path(dst_key))

    def delete(self, keys: Iterable[str]) -> int:
        """Delete objects. Returns how many were asked."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix``. Returns the objects removed."""
        keys = [o.key for o in self.list(prefix)]
        self.delete(keys)
        return len(keys)


def _version(info: dict[str, Any]) -> str | None:
    """An object's ETag; a local file's :func:`file_version`."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    version = info.get(FILE_VERSION)
    return str(version) if version is not None else None


#: The key of a local listing's entries that holds the file's :func:`file_version`.
FILE_VERSION = "tierflow_version"


def file_version(st: os.stat_result) -> str:
    """What changes whenever a local file is written or replaced: its inode, mtime and ctime (from its ``lstat``).

    Any change to the inode moves its ctime, which no one can set back; a rename makes a new inode appear.
    """
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
