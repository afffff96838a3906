"""Prometheus metrics: what moved, how fast against the plan, and what is where, as of the last scrape.

Served by the plugin at ``/storage-bandwidth/metrics`` (Airflow authentication, like every route
of the plugin: Prometheus sends a bearer token). The values are read from what Tierflow already
keeps, not from counters in one process's memory, so every worker's transfers count and a restart
loses nothing:

* transfers: the observation log (``<state_dir>/observations.jsonl``, appended by the listener on
  every worker) gives counters of bytes, objects, seconds achieved and predicted, and failures, per
  hop; and the last transfer's throughput and prediction error per hop, as gauges;
* tiers: the plugin's survey (the storage page's) gives capacity, used bytes, reachability,
  dataset versions and checkpoints per tier (and node, for node-local tiers).

Series names and labels are listed in the README ("Metrics").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["CONTENT_TYPE", "every_event", "exposition", "record_event"]

#: The Prometheus text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: What the counters of evictions, validations and quarantines are summed from, beside the observation log.
EVENTS_FILE = "metric-events.jsonl"
#: The kinds of event, and the numbers each carries.
EVENT_KINDS = {"eviction": ("bytes",), "validation": (), "quarantine": ("shards",)}


def record_event(state_dir: Any, kind: str, labels: dict[str, str], **values: float) -> None:
    """Append one event (an eviction, a shard's validation, a quarantine) for the metrics to count.

    One JSON line per event; every worker appends to the same file in the state directory. A
    failure to record is logged, never raised: metrics never fail the work they count.
    """
    import json
    import logging
    from pathlib import Path

    try:
        path = Path(state_dir) / EVENTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "labels": labels, **values}) + "\n")
    except OSError as exc:
        logging.getLogger(__name__).warning("metrics: could not record a %s event: %s", kind, exc)


def every_event(state_dir: Any) -> list[dict[str, Any]]:
    """Every recorded event, oldest first (unreadable lines skipped)."""
    import json
    from pathlib import Path

    path = Path(state_dir) / EVENTS_FILE
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("kind") in EVENT_KINDS:
                out.append(event)
    return out


def exposition(observations: Iterable[Any], places: Iterable[Any], events: Iterable[dict[str, Any]] = ()) -> bytes:
    """The metrics in Prometheus's text format.

    Args:
        observations: Every :class:`~pipelines.model.observations.Observation`, oldest first.
        places: The survey's :class:`~pipelines.operators.inventory.Place` per tier (and node).
        events: Every event of :func:`record_event` (evictions, validations, quarantines).
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    hop = ["source", "target"]
    moved = CounterMetricFamily("tierflow_transfer_bytes", "Bytes copied and verified, per hop", labels=hop)
    objects = CounterMetricFamily("tierflow_transfer_objects", "Objects copied and verified, per hop", labels=hop)
    seconds = CounterMetricFamily(
        "tierflow_transfer_seconds", "Seconds of transfers, achieved and as predicted", labels=[*hop, "kind"]
    )
    tasks = CounterMetricFamily("tierflow_transfer_tasks", "Transfer tasks finished, per hop", labels=hop)
    failures = CounterMetricFamily(
        "tierflow_transfer_failures",
        "Failed tries of transfer tasks, per hop and outcome (transient: retried; fatal: not)",
        labels=[*hop, "outcome"],
    )
    rate = GaugeMetricFamily(
        "tierflow_transfer_last_throughput_bytes_per_second",
        "The last finished transfer's throughput, achieved and predicted",
        labels=[*hop, "kind"],
    )
    error = GaugeMetricFamily(
        "tierflow_prediction_error_ratio",
        "The last finished transfer's achieved time over its predicted time, minus one (0: on time)",
        labels=hop,
    )
    totals: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failed: dict[tuple[str, str, str], int] = defaultdict(int)
    last: dict[tuple[str, str], Any] = {}
    for o in observations:
        key = (o.source, o.target)
        if o.error is not None:
            failed[(o.source, o.target, o.outcome or "unknown")] += 1
            continue
        t = totals[key]
        t["bytes"] += o.bytes
        t["objects"] += o.objects
        t["achieved"] += o.achieved_s
        t["predicted"] += o.predicted_s
        t["tasks"] += 1
        last[key] = o
    for key, t in sorted(totals.items()):
        labels = list(key)
        moved.add_metric(labels, t["bytes"])
        objects.add_metric(labels, t["objects"])
        seconds.add_metric([*labels, "achieved"], t["achieved"])
        seconds.add_metric([*labels, "predicted"], t["predicted"])
        tasks.add_metric(labels, t["tasks"])
    for (source, target, outcome), n in sorted(failed.items()):
        failures.add_metric([source, target, outcome], n)
    for key, o in sorted(last.items()):
        labels = list(key)
        if o.achieved_s > 0:
            rate.add_metric([*labels, "achieved"], o.bytes / o.achieved_s)
        if o.predicted_s > 0:
            rate.add_metric([*labels, "predicted"], o.bytes / o.predicted_s)
            error.add_metric(labels, o.achieved_s / o.predicted_s - 1)

    where = ["tier", "node"]
    capacity = GaugeMetricFamily("tierflow_tier_capacity_bytes", "The budget Tierflow may use on a tier", labels=where)
    used = GaugeMetricFamily("tierflow_tier_used_bytes", "Bytes of Tierflow's data on a tier", labels=where)
    reachable = GaugeMetricFamily("tierflow_tier_reachable", "1 if the tier could be surveyed", labels=where)
    versions = GaugeMetricFamily(
        "tierflow_dataset_versions", "Dataset versions on a tier, by state", labels=[*where, "state"]
    )
    checkpoints = GaugeMetricFamily("tierflow_checkpoints", "Checkpoints on a tier, by state", labels=[*where, "state"])
    for place in places:
        labels = [place.tier, place.node or ""]
        capacity.add_metric(labels, place.capacity_bytes)
        used.add_metric(labels, place.used_bytes)
        reachable.add_metric(labels, 1 if place.reachable else 0)
        version_states = (
            "committed" if v.committed else "abandoned" if v.abandoned else "uncommitted" for v in place.versions
        )
        for state, n in _count(version_states).items():
            versions.add_metric([*labels, state], n)
        for state, n in _count(c.status for c in place.checkpoints).items():  # committed, damaged, uncommitted, ...
            checkpoints.add_metric([*labels, state], n)

    evictions = CounterMetricFamily(
        "tierflow_cache_evictions", "Dataset versions evicted from a cache tier", labels=where
    )
    evicted = CounterMetricFamily("tierflow_cache_evicted_bytes", "Bytes evicted from a cache tier", labels=where)
    validations = CounterMetricFamily(
        "tierflow_validations", "Shards validated, by result (passed, failed)", labels=["result"]
    )
    quarantined = CounterMetricFamily("tierflow_quarantined_shards", "Shards quarantined when a version was published")
    counted: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        tags: dict[str, Any] = event.get("labels") or {}
        if event["kind"] == "eviction":
            where_evicted = ("eviction", str(tags.get("tier", "")), str(tags.get("node", "")))
            counted[where_evicted]["n"] += 1
            counted[where_evicted]["bytes"] += float(event.get("bytes", 0))
        elif event["kind"] == "validation":
            counted[("validation", str(tags.get("result", "")))]["n"] += 1
        else:
            counted[("quarantine",)]["n"] += float(event.get("shards", 0))
    counted[("quarantine",)]["n"] += 0  # a counter that exists from the first scrape
    for what, value in sorted(counted.items()):
        if what[0] == "eviction":
            evictions.add_metric(list(what[1:]), value["n"])
            evicted.add_metric(list(what[1:]), value["bytes"])
        elif what[0] == "validation":
            validations.add_metric([what[1]], value["n"])
        else:
            quarantined.add_metric([], value["n"])

    families = [
        moved,
        objects,
        seconds,
        tasks,
        failures,
        rate,
        error,
        capacity,
        used,
        reachable,
        versions,
        checkpoints,
        evictions,
        evicted,
        validations,
        quarantined,
    ]

    class _Snapshot:
        def collect(self) -> Iterable[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return bytes(generate_latest(registry))


def _count(states: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for state in states:
        out[state] += 1
    return dict(out)
