"""The tier configuration: one TOML file that declares the storage tiers and the embedded S3 server.

The file is loaded into frozen dataclasses and validated as it is read. Any problem raises
:class:`ConfigError`, whose message is a single line naming the file, the field and the value::

    tiers.toml: tier 'pfs'.bandwidth.read: bandwidth must be greater than zero (got '0 MB/s')

Credentials never live in this file: an object tier names an Airflow connection id, and the
endpoint and keys come from that connection (or, outside Airflow, from the environment).

Which file is read: an explicit path, else ``$TIERFLOW_CONFIG``, else the packaged default that
serves the embedded setup (SeaweedFS on 127.0.0.1 and local directories under the state directory).

Which node this process runs on: ``$TIERFLOW_NODE`` names one of the file's ``[[node]]`` tables, and
:func:`load_config` applies that node's own values for its node-local tiers (the NVMe cache's URL
and capacity), so the ``nvme`` tier means this node's NVMe wherever the same file is read.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pipelines.core.units import UnitError, parse_bandwidth, parse_duration, parse_rate, parse_size

__all__ = [
    "DEFAULT_CONFIG",
    "NODE_ENV",
    "OBJECT_SCHEMES",
    "BandwidthProfile",
    "ConfigError",
    "KubernetesConfig",
    "LineageConfig",
    "NodeConfig",
    "NodeTier",
    "S3ServerConfig",
    "TierConfig",
    "TierKind",
    "TierflowConfig",
    "UnknownTierError",
    "load_config",
    "parse_config",
    "state_dir",
]

TierKind = Literal["object", "pfs", "nvme"]
TIER_KINDS: tuple[TierKind, ...] = ("object", "pfs", "nvme")
#: Durability order, most durable first: data may only be evicted from a tier when it is
#: committed on a tier earlier in this list.
DURABILITY: dict[str, int] = {"object": 0, "pfs": 1, "nvme": 2}

DEFAULT_CONFIG = Path(__file__).with_name("default_tiers.toml")
#: The environment variable naming the ``[[node]]`` a process runs on (set on each node's worker).
NODE_ENV = "TIERFLOW_NODE"

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

#: URL schemes of object tiers: S3 and S3-compatible stores, Google Cloud Storage, Azure Blob Storage.
OBJECT_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")
_OBJECT_URLS = "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"

T = TypeVar("T")


class ConfigError(ValueError):
    """A tier configuration that cannot be used; the message is one line naming file, field and value."""


class UnknownTierError(ConfigError, KeyError):
    """No tier of the config has the name asked for (a ``KeyError`` too, for lookups)."""

    __str__ = ValueError.__str__  # the message as it is, not quoted as a KeyError's


#: Uncertainty of hand-written bandwidth numbers that no calibration has checked: a factor of two.
CONFIGURED_UNCERTAINTY = 1.0


@dataclass(frozen=True)
class BandwidthProfile:
    """What a tier can sustain; the bandwidth model reads these numbers and calibration replaces them.

    Attributes:
        read_bps: Aggregate read bandwidth, bytes per second.
        write_bps: Aggregate write bandwidth, bytes per second.
        stream_read_bps: Bandwidth one stream (one connection or file handle) reaches when reading.
        stream_write_bps: Bandwidth one stream reaches when writing.
        latency_s: Time to first byte of one request, seconds (reads; writes too unless ``write_latency_s``).
        metadata_ops: Metadata operations (list, stat, create, delete) per second; on object stores,
            requests per second (reads; writes too unless ``write_ops``).
        max_streams: Most concurrent streams the tier should be given.
        write_latency_s: Time to first byte of one write request, when it differs from a read's
            (an object store's PUT and GET, calibration measures both).
        write_ops: Write operations per second (PUT, or create+rename), when they differ from reads.
        request_limit: The store's request-rate limit per key prefix beyond which it throttles
            (``503 SlowDown``; AWS S3: 5,500 GET/s), reads; None where there is none.
        write_request_limit: The same for writes (AWS S3: 3,500 PUT/s per prefix).
        read_correction: Learnt read speed-up over the calibrated numbers (1 until learnt).
        write_correction: Learnt write speed-up over the calibrated numbers (1 until learnt).
        uncertainty: Relative uncertainty of predictions from this profile.
    """

    #: The fields calibration measures (stored in profile files); the others are learnt or derived.
    MEASURED = (
        "read_bps",
        "write_bps",
        "stream_read_bps",
        "stream_write_bps",
        "latency_s",
        "metadata_ops",
        "max_streams",
        "write_latency_s",
        "write_ops",
        "read_curve",
        "write_curve",
        "cached_read_curve",
        "read_by_streams",
        "write_by_streams",
        "cached_read_by_streams",
        "synced_write_bps",
    )

    read_bps: float
    write_bps: float
    stream_read_bps: float
    stream_write_bps: float
    latency_s: float
    metadata_ops: float
    max_streams: int
    write_latency_s: float | None = None
    write_ops: float | None = None
    #: What calibration measured through the engine at its widest: (object size, aggregate bytes/s)
    #: per direction, smallest size first. Where present, the model reads a workload's capacity
    #: time off this curve instead of the larger of bytes/bandwidth and objects/operation rate.
    read_curve: tuple[tuple[int, float], ...] = ()
    write_curve: tuple[tuple[int, float], ...] = ()
    #: Reads of data already in the page cache (file tiers; ``read_curve`` is then the cold reads).
    cached_read_curve: tuple[tuple[int, float], ...] = ()
    #: The same measurements at each width calibration ran: (object size, streams, aggregate bytes/s).
    #: Where present, the model reads a workload's capacity at the streams a plan runs with off
    #: these (how the aggregate grows with streams, measured, rather than a straight line up to
    #: the best): a store whose rate grows slowly with streams is planned with more of them.
    read_by_streams: tuple[tuple[int, int, float], ...] = ()
    write_by_streams: tuple[tuple[int, int, float], ...] = ()
    cached_read_by_streams: tuple[tuple[int, int, float], ...] = ()
    #: A file tier's writes that reach its disk (fsynced), bytes/s: the pace of writes once the
    #: machine's page cache holds all the dirty data it takes (0: not measured).
    synced_write_bps: float = 0.0
    request_limit: float | None = None
    write_request_limit: float | None = None
    #: Learnt from observed transfers, never configured nor calibrated: how much faster (above 1) or
    #: slower (below 1) the tier ran than its calibrated numbers predict, per direction; every term of
    #: that end of a hop is divided by it (:func:`pipelines.model.observations.corrections`).
    read_correction: float = 1.0
    write_correction: float = 1.0
    #: Relative uncertainty of a prediction from this profile: half the calibration's spread, or of
    #: the learnt correction's samples, whichever is larger (1.0 for configured, uncalibrated numbers).
    uncertainty: float = 0.0

    def latency(self, direction: str) -> float:
        """Time to first byte of one request in ``direction`` (``read`` or ``write``)."""
        return self.write_latency_s if direction == "write" and self.write_latency_s is not None else self.latency_s

    def ops(self, direction: str) -> float:
        """Requests (object stores) or metadata operations (file tiers) per second in ``direction``.

        Never above the store's request-rate limit, where it has one: past it the store throttles.
        """
        ops = self.write_ops if direction == "write" and self.write_ops is not None else self.metadata_ops
        limit = self.limit(direction)
        return min(ops, limit) if limit is not None else ops

    def curve(self, direction: str) -> tuple[tuple[int, float], ...]:
        """The measured (object size, best aggregate bytes/s) points in ``direction`` (empty: none measured).

        ``direction`` is ``read``, ``write`` or ``cached_read``.
        """
        return {"write": self.write_curve, "cached_read": self.cached_read_curve}.get(direction, self.read_curve)

    def by_streams(self, direction: str) -> tuple[tuple[int, int, float], ...]:
        """The measured (object size, streams, aggregate bytes/s) points in ``direction`` (empty: none measured)."""
        return {"write": self.write_by_streams, "cached_read": self.cached_read_by_streams}.get(
            direction, self.read_by_streams
        )

    def limit(self, direction: str) -> float | None:
        """The store's request-rate limit per prefix in ``direction`` (None: none)."""
        return self.write_request_limit if direction == "write" else self.request_limit


@dataclass(frozen=True)
class TierConfig:
    """One storage tier.

    Attributes:
        name: Short identifier, also used for pool names (``tierflow_<name>``).
        kind: ``object`` (S3-compatible), ``pfs`` (shared parallel file system) or ``nvme`` (node-local).
        url: ``s3://bucket/prefix`` for object tiers, ``file:///absolute/path`` for file tiers.
        conn_id: Airflow connection id holding the endpoint and credentials (object tiers only).
        capacity_bytes: Usable capacity in bytes.
        bandwidth: The tier's bandwidth profile.
        create: Whether a file tier's root may be created when it does not exist. Off by default:
            a missing root is more often an unmounted file system than a new directory, and
            writing into the mount point would fill the disk under it.
    """

    name: str
    kind: TierKind
    url: str
    conn_id: str | None
    capacity_bytes: int
    bandwidth: BandwidthProfile
    create: bool = False

    @property
    def is_object(self) -> bool:
        """Whether the tier is an object store (S3, GCS or Azure Blob)."""
        return self.kind == "object"

    @property
    def scheme(self) -> str:
        """The URL scheme: ``s3``, ``gs``, ``az`` (see :data:`OBJECT_SCHEMES`) or ``file``."""
        return self.url.partition("://")[0]

    @property
    def root(self) -> str:
        """The tier's root as an fsspec path: ``bucket/prefix`` or ``/absolute/path``, no trailing slash."""
        if self.is_object:
            return self.url.partition("://")[2].rstrip("/")
        return self.url[len("file://") :].rstrip("/") or "/"

    @property
    def bucket(self) -> str | None:
        """The bucket of an object tier."""
        return self.root.split("/", 1)[0] if self.is_object else None

    @property
    def pool(self) -> str:
        """Name of the Airflow pool that bounds concurrent work on this tier."""
        return f"tierflow_{self.name}"


@dataclass(frozen=True)
class S3ServerConfig:
    """The embedded S3 server (SeaweedFS) that ``tierflow s3 serve`` runs on loopback.

    Attributes:
        host: Address to bind; only loopback addresses are accepted.
        port: S3 API port.
        conn_id: Connection id the server's credentials are handed to Airflow under.
        region: Region name clients sign requests for.
    """

    host: str
    port: int
    conn_id: str
    region: str

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, e.g. ``http://127.0.0.1:8533``."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeTier:
    """One node's own values for a node-local (``nvme``) tier: where that node mounts it, how big it is.

    Attributes:
        tier: The tier's name.
        url: The node's ``file:///...`` root for the tier, or ``None`` to keep the tier's.
        capacity_bytes: The node's capacity for the tier, or ``None`` to keep the tier's.
    """

    tier: str
    url: str | None = None
    capacity_bytes: int | None = None


@dataclass(frozen=True)
class NodeConfig:
    """A compute node with its own NVMe cache, reached through its own Celery queue.

    NVMe caches are node-local: a task that fills one must run on that node. Each node's worker
    consumes ``queue`` (``airflow celery worker --queues default,<queue>``) and runs with
    ``TIERFLOW_NODE=<name>``; staging runs one NVMe hop per node on its queue. ``tiers`` holds the
    node's own URL or capacity for node-local tiers (``[node.tiers.<tier>]``), for nodes that mount
    their NVMe elsewhere, or several "nodes" sharing one machine.
    """

    name: str
    queue: str
    tiers: tuple[NodeTier, ...] = ()
    #: The Kubernetes node's label value that pins this node's pods (``[node.kubernetes] hostname``).
    hostname: str | None = None


@dataclass(frozen=True)
class KubernetesConfig:
    """How per-node tasks run as Kubernetes pods (``[kubernetes]``); see :mod:`pipelines.operators.kubernetes`.

    Attributes:
        pfs_claim: The PersistentVolumeClaim (ReadWriteMany) of the shared PFS, mounted in every
            pod at the pfs tier's root.
        executor: The executor per-node tasks name (``executor=``, for Airflow's multiple
            executors, e.g. ``KubernetesExecutor`` beside Celery), ``None`` for the default one.
        node_label: The node label a pod is pinned by; its value is the node's ``hostname``,
            else its name.
        nvme_volume: ``hostPath`` (the node's NVMe root on the host) or ``claim`` (a local
            PersistentVolume's claim per node, named by ``nvme_claim``).
        nvme_claim: The claim's name; ``{node}`` is replaced by the node's name.
        streams: Most streams a per-node task plans (default: the lower ``max_streams`` of the
            hop's tiers); the pod's CPU request is ``streams × cpu_per_stream``.
        cpu_per_stream: CPU cores requested per stream (hashing and copying).
        memory_base: Memory of the task process itself; the part buffers (the planner's memory
            budget) come on top.
    """

    pfs_claim: str
    executor: str | None = None
    node_label: str = "kubernetes.io/hostname"
    nvme_volume: Literal["hostPath", "claim"] = "hostPath"
    nvme_claim: str = "tierflow-nvme-{node}"
    streams: int | None = None
    cpu_per_stream: float = 0.25
    memory_base: int = 512 * 2**20


@dataclass(frozen=True)
class LineageConfig:
    """Where committed dataset versions and promoted checkpoints are reported (``[lineage]``).

    Attributes:
        mlflow_tracking_uri: The MLflow tracking server or store (``http://mlflow:5000``,
            ``sqlite:///mlflow.db``, ``databricks``); MLflow's own environment supplies its credentials.
        mlflow_experiment: The experiment that dataset versions are logged in, as runs of their own.
    """

    mlflow_tracking_uri: str
    mlflow_experiment: str = "tierflow"


@dataclass(frozen=True)
class TierflowConfig:
    """A loaded, validated tier configuration."""

    source: str
    state_dir: Path
    tiers: tuple[TierConfig, ...]
    s3_server: S3ServerConfig | None
    nodes: tuple[NodeConfig, ...] = ()
    #: The node whose own tier values are applied (:meth:`for_node`), ``None`` for none.
    node: str | None = None
    #: Per-node tasks as Kubernetes pods (``[kubernetes]``), ``None`` when not declared.
    kubernetes: KubernetesConfig | None = None
    #: Lineage reporting (``[lineage]``), ``None`` when not declared (nothing is reported).
    lineage: LineageConfig | None = None
    #: The tiers as the file declares them, once :meth:`for_node` gave ``tiers`` a node's values.
    declared_tiers: tuple[TierConfig, ...] = field(default=(), repr=False, compare=False)

    def tier(self, name: str) -> TierConfig:
        """Return the tier called ``name``.

        Raises:
            UnknownTierError: No tier has that name; the message lists the tiers there are.
        """
        for tier in self.tiers:
            if tier.name == name:
                return tier
        known = ", ".join(t.name for t in self.tiers)
        raise UnknownTierError(f"{self.source}: no tier named {name!r} (tiers: {known})")

    def node_config(self, name: str) -> NodeConfig:
        """Return the ``[[node]]`` called ``name``.

        Raises:
            ConfigError: No node has that name; the message lists the nodes there are.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes) or "none declared"
        raise ConfigError(f"{self.source}: no [[node]] named {name!r} (nodes: {known})")

    def for_node(self, name: str) -> TierflowConfig:
        """This config as node ``name`` sees it: its node-local tiers at the node's URL and capacity.

        Works from any node's view too (the tiers as the file declares them are kept).

        Raises:
            ConfigError: No node has that name.
        """
        own = {t.tier: t for t in self.node_config(name).tiers}
        declared = self.declared_tiers or self.tiers
        tiers = tuple(
            replace(
                tier,
                url=own[tier.name].url or tier.url,
                capacity_bytes=own[tier.name].capacity_bytes or tier.capacity_bytes,
            )
            if tier.name in own
            else tier
            for tier in declared
        )
        return replace(self, tiers=tiers, node=name, declared_tiers=declared)

    def of_kind(self, kind: TierKind) -> tuple[TierConfig, ...]:
        """Return the tiers of one kind, in file order."""
        return tuple(t for t in self.tiers if t.kind == kind)

    def primary(self, kind: TierKind) -> TierConfig:
        """The one tier playing the role ``kind`` (object, pfs or nvme), whatever it is called.

        DAG defaults, pools, retention and the checkpoint chain find their tiers this way, so a
        config may name its tiers as it likes. With several tiers of one kind, which one is meant
        is not guessed: name it (a DAG param, an operator argument, ``--tier``).

        Raises:
            ConfigError: No tier, or more than one, of that kind (named).
        """
        found = self.of_kind(kind)
        if len(found) == 1:
            return found[0]
        if not found:
            raise ConfigError(f"{self.source}: no tier of kind {kind!r} (tiers: {', '.join(self.names())})")
        names = ", ".join(repr(t.name) for t in found)
        raise ConfigError(f"{self.source}: tiers {names} are all of kind {kind!r}: name the one to use")

    def names(self) -> tuple[str, ...]:
        """Every tier's name, in file order."""
        return tuple(t.name for t in self.tiers)

    def buckets_for(self, conn_id: str) -> tuple[str, ...]:
        """Return the buckets of the object tiers reached through ``conn_id``."""
        return tuple(sorted({cast(str, t.bucket) for t in self.tiers if t.is_object and t.conn_id == conn_id}))


def state_dir(config_value: str | None = None, base: Path | None = None) -> Path:
    """Resolve the state directory: ``$TIERFLOW_HOME``, else the config's value, else ``~/.local/state/tierflow``.

    A relative config value is taken relative to ``base`` (the config file's directory).
    """
    env = os.environ.get("TIERFLOW_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if config_value:
        path = Path(config_value).expanduser()
        return (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "tierflow"


def load_config(path: str | os.PathLike[str] | None = None) -> TierflowConfig:
    """Load and validate a tier config: ``path``, else ``$TIERFLOW_CONFIG``, else the packaged default.

    With ``$TIERFLOW_NODE`` set, the config is that node's (:meth:`TierflowConfig.for_node`).

    Raises:
        ConfigError: The file is missing, is not TOML, declares something invalid, or has no
            ``[[node]]`` of the name ``$TIERFLOW_NODE`` gives.
    """
    chosen = Path(path or os.environ.get("TIERFLOW_CONFIG") or DEFAULT_CONFIG)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read config file ({exc.strerror})") from None
    config = parse_config(text, source=str(chosen), base=chosen.resolve().parent)
    node = os.environ.get(NODE_ENV, "").strip()
    if not node:
        return config
    try:
        return config.for_node(node)
    except ConfigError as exc:
        raise ConfigError(f"{NODE_ENV}={node!r}: {exc}") from None


def parse_config(text: str, source: str = "<string>", base: Path | None = None) -> TierflowConfig:
    """Parse and validate the text of a tier config; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _Reader(source, base).config(data)


class _Reader:
    """Validates the parsed TOML, raising one-line errors that carry the file and field names."""

    def __init__(self, source: str, base: Path | None) -> None:
        self.source = source
        self.base = base

    def fail(self, field: str, problem: str, value: object = None) -> ConfigError:
        got = "" if value is None else f" (got {value!r})"
        return ConfigError(f"{self.source}: {field}: {problem}{got}")

    def table(self, data: object, field: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(field, "expected a table", data)
        for key in data:
            if key not in allowed:
                raise self.fail(
                    f"{field}.{key}" if field else key, f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        for key in sorted(required):
            if key not in data:
                raise self.fail(f"{field}.{key}" if field else key, "missing required field")
        return data

    def parse(self, field: str, value: object, parser: Callable[[object], T]) -> T:
        try:
            return parser(value)
        except UnitError as exc:
            raise self.fail(field, str(exc), value) from None

    def string(self, field: str, value: object, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, "expected a non-empty string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(field, f"not a valid {what}", value)
        return value

    def integer(self, field: str, value: object, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, "expected an integer", value)
        if not low <= value <= high:
            raise self.fail(field, f"must be between {low} and {high}", value)
        return value

    def config(self, data: dict[str, Any]) -> TierflowConfig:
        self.table(data, "", {"tierflow", "s3_server", "tier", "node", "kubernetes", "lineage"}, {"tier"})
        settings = self.table(data.get("tierflow", {}), "tierflow", {"state_dir"}, set())
        raw_state = settings.get("state_dir")
        if raw_state is not None:
            self.string("tierflow.state_dir", raw_state)
        state = state_dir(raw_state, self.base)
        server = self.s3_server(data["s3_server"]) if "s3_server" in data else None
        raw_tiers = data["tier"]
        if not isinstance(raw_tiers, list) or not raw_tiers:
            raise self.fail("tier", "declare at least one [[tier]] table", raw_tiers)
        tiers = tuple(self.tier(i, raw, state) for i, raw in enumerate(raw_tiers))
        seen: set[str] = set()
        for tier in tiers:
            if tier.name in seen:
                raise self.fail(f"tier '{tier.name}'.name", "duplicate tier name", tier.name)
            seen.add(tier.name)
        nodes = self.nodes(data.get("node", []), tiers, state)
        kube = self.kubernetes(data["kubernetes"]) if "kubernetes" in data else None
        lineage = None
        if "lineage" in data:
            table = self.table(
                data["lineage"], "lineage", {"mlflow_tracking_uri", "mlflow_experiment"}, {"mlflow_tracking_uri"}
            )
            lineage = LineageConfig(
                mlflow_tracking_uri=self.string("lineage.mlflow_tracking_uri", table["mlflow_tracking_uri"]),
                mlflow_experiment=self.string("lineage.mlflow_experiment", table.get("mlflow_experiment", "tierflow")),
            )
        return TierflowConfig(
            source=self.source,
            state_dir=state,
            tiers=tiers,
            s3_server=server,
            nodes=nodes,
            kubernetes=kube,
            lineage=lineage,
        )

    def kubernetes(self, raw: object) -> KubernetesConfig:
        field = "kubernetes"
        keys = {"pfs_claim", "executor", "node_label", "nvme_volume", "nvme_claim", "streams", "cpu_per_stream"}
        table = self.table(raw, field, keys | {"memory_base"}, {"pfs_claim"})
        volume = table.get("nvme_volume", "hostPath")
        if volume not in ("hostPath", "claim"):
            raise self.fail(f"{field}.nvme_volume", "must be hostPath or claim", volume)
        cpu = table.get("cpu_per_stream", 0.25)
        if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 < cpu <= 64:
            raise self.fail(f"{field}.cpu_per_stream", "must be a number of cores above 0 (e.g. 0.25)", cpu)
        executor = table.get("executor")
        return KubernetesConfig(
            pfs_claim=self.string(f"{field}.pfs_claim", table["pfs_claim"], _K8S_NAME, "claim name"),
            executor=None if executor is None else self.string(f"{field}.executor", executor),
            node_label=self.string(f"{field}.node_label", table.get("node_label", "kubernetes.io/hostname")),
            nvme_volume=cast(Literal["hostPath", "claim"], volume),
            nvme_claim=self.string(f"{field}.nvme_claim", table.get("nvme_claim", "tierflow-nvme-{node}")),
            streams=self.integer(f"{field}.streams", table["streams"], 1, 4096) if "streams" in table else None,
            cpu_per_stream=float(cpu),
            memory_base=self.parse(f"{field}.memory_base", table.get("memory_base", "512 MiB"), parse_size),
        )

    def nodes(self, raw: object, tiers: tuple[TierConfig, ...], state: Path) -> tuple[NodeConfig, ...]:
        if not isinstance(raw, list):
            raise self.fail("node", "declare nodes as [[node]] tables", raw)
        out: list[NodeConfig] = []
        for i, item in enumerate(raw):
            table = self.table(item, f"node[{i}]", {"name", "queue", "tiers", "kubernetes"}, {"name"})
            name = self.string(f"node[{i}].name", table["name"], _NAME, "node name")
            queue = self.string(f"node[{i}].queue", table.get("queue", name), _CONN_ID, "queue name")
            if any(n.name == name for n in out):
                raise self.fail(f"node[{i}].name", "duplicate node name", name)
            if any(n.queue == queue for n in out):
                raise self.fail(f"node[{i}].queue", "two nodes cannot share a queue", queue)
            own = self.node_tiers(f"node '{name}'.tiers", table.get("tiers", {}), tiers, state)
            kube = self.table(table.get("kubernetes", {}), f"node '{name}'.kubernetes", {"hostname"}, set())
            host = kube.get("hostname")
            if host is not None:
                host = self.string(f"node '{name}'.kubernetes.hostname", host, _K8S_NAME, "node label value")
            out.append(NodeConfig(name, queue, own, host))
        return tuple(out)

    def node_tiers(self, field: str, raw: object, tiers: tuple[TierConfig, ...], state: Path) -> tuple[NodeTier, ...]:
        by_name = {t.name: t for t in tiers}
        out: list[NodeTier] = []
        for tier_name, values in self.table(raw, field, set(by_name), set()).items():
            tier = by_name[tier_name]
            where = f"{field}.{tier_name}"
            if tier.kind != "nvme":
                raise self.fail(where, f"only nvme tiers are node-local; a {tier.kind} tier is shared by every node")
            own = self.table(values, where, {"url", "capacity"}, set())
            url = self.url(f"{where}.url", tier.kind, own["url"], state) if "url" in own else None
            capacity = self.parse(f"{where}.capacity", own["capacity"], parse_size) if "capacity" in own else None
            out.append(NodeTier(tier_name, url, capacity))
        return tuple(out)

    def s3_server(self, raw: object) -> S3ServerConfig:
        table = self.table(raw, "s3_server", {"host", "port", "conn_id", "region"}, {"port", "conn_id"})
        host = self.string("s3_server.host", table.get("host", "127.0.0.1"))
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise self.fail("s3_server.host", "the embedded server binds loopback only", host)
        return S3ServerConfig(
            host=host,
            port=self.integer("s3_server.port", table["port"], 1024, 65535),
            conn_id=self.string("s3_server.conn_id", table["conn_id"], _CONN_ID, "connection id"),
            region=self.string("s3_server.region", table.get("region", "us-east-1")),
        )

    def tier(self, index: int, raw: object, state: Path) -> TierConfig:
        allowed = {"name", "kind", "url", "conn_id", "capacity", "bandwidth", "create"}
        table = self.table(raw, f"tier[{index}]", allowed, set())
        name = self.string(f"tier[{index}].name", table.get("name"), _NAME, "tier name ([a-z][a-z0-9_-]*)")
        field = f"tier '{name}'"
        self.table(table, field, allowed, allowed - {"conn_id", "create"})
        create = table.get("create", False)
        if not isinstance(create, bool):
            raise self.fail(f"{field}.create", "must be true or false", create)
        if create and table.get("kind") == "object":
            raise self.fail(f"{field}.create", "only file tiers have a root directory to create", create)
        kind = table["kind"]
        if kind not in TIER_KINDS:
            raise self.fail(f"{field}.kind", f"must be one of {', '.join(TIER_KINDS)}", kind)
        url = self.url(f"{field}.url", cast(TierKind, kind), table["url"], state)
        conn_id = table.get("conn_id")
        if kind == "object":
            if conn_id is None:
                raise self.fail(f"{field}.conn_id", "missing required field (object tiers name an Airflow connection)")
            conn_id = self.string(f"{field}.conn_id", conn_id, _CONN_ID, "connection id")
        elif conn_id is not None:
            raise self.fail(f"{field}.conn_id", "only object tiers take a connection id", conn_id)
        return TierConfig(
            name=name,
            kind=cast(TierKind, kind),
            url=url,
            conn_id=conn_id,
            capacity_bytes=self.parse(f"{field}.capacity", table["capacity"], parse_size),
            bandwidth=self.bandwidth(f"{field}.bandwidth", table["bandwidth"]),
            create=create,
        )

    def url(self, field: str, kind: TierKind, value: object, state: Path) -> str:
        url = self.string(field, value)
        if kind == "object":
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in OBJECT_SCHEMES:
                raise self.fail(field, f"an object tier needs a URL like {_OBJECT_URLS}", url)
            bucket, _, prefix = rest.partition("/")
            if not _BUCKET.match(bucket) or ".." in bucket:
                raise self.fail(field, "bucket names are 3-63 characters of a-z, 0-9, '.' and '-'", bucket)
            if any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/")) and prefix.strip("/"):
                raise self.fail(field, "the prefix has an empty, '.' or '..' segment", url)
            return f"{scheme}://{bucket}/{prefix.strip('/')}".rstrip("/") + "/"
        if not url.startswith("file://"):
            raise self.fail(field, f"a {kind} tier needs a file:///absolute/path URL", url)
        path_text = url[len("file://") :].replace("{state_dir}", str(state))
        path = Path(path_text)
        if not path.is_absolute():
            raise self.fail(field, "the path must be absolute (file:///... or file://{state_dir}/...)", url)
        if ".." in path.parts:
            raise self.fail(field, "the path has a '..' segment", url)
        return "file://" + str(path)

    def optional(
        self, field: str, table: Mapping[str, Any], key: str, parse: Callable[[object], float]
    ) -> float | None:
        """``table[key]`` parsed (an error names ``field.key``), or None when the key is absent."""
        return self.parse(f"{field}.{key}", table[key], parse) if key in table else None

    def bandwidth(self, field: str, raw: object) -> BandwidthProfile:
        required = {"read", "write", "latency", "metadata_ops"}
        optional = {
            "stream_read",
            "stream_write",
            "max_streams",
            "write_latency",
            "write_metadata_ops",
            "request_limit",
            "write_request_limit",
        }
        table = self.table(raw, field, required | optional, required)
        read = self.parse(f"{field}.read", table["read"], parse_bandwidth)
        write = self.parse(f"{field}.write", table["write"], parse_bandwidth)
        stream_read = self.parse(f"{field}.stream_read", table.get("stream_read", table["read"]), parse_bandwidth)
        stream_write = self.parse(f"{field}.stream_write", table.get("stream_write", table["write"]), parse_bandwidth)
        if stream_read > read or stream_write > write:
            raise self.fail(field, "a stream cannot be faster than the tier's aggregate bandwidth")
        profile = BandwidthProfile(
            read_bps=read,
            write_bps=write,
            stream_read_bps=stream_read,
            stream_write_bps=stream_write,
            latency_s=self.parse(f"{field}.latency", table["latency"], parse_duration),
            metadata_ops=self.parse(f"{field}.metadata_ops", table["metadata_ops"], parse_rate),
            max_streams=self.integer(f"{field}.max_streams", table.get("max_streams", 64), 1, 100_000),
            write_latency_s=self.optional(field, table, "write_latency", parse_duration),
            write_ops=self.optional(field, table, "write_metadata_ops", parse_rate),
            request_limit=self.optional(field, table, "request_limit", parse_rate),
            write_request_limit=self.optional(field, table, "write_request_limit", parse_rate),
            uncertainty=CONFIGURED_UNCERTAINTY,
        )
        return profile
