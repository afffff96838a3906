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

__all__ = ["CONTENT_TYPE", "exposition"]

#: The Prometheus text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(observations: Iterable[Any], places: Iterable[Any]) -> bytes:
    """The metrics in Prometheus's text format.

    Args:
        observations: Every :class:`~pipelines.model.observations.Observation`, oldest first.
        places: The survey's :class:`~pipelines.operators.inventory.Place` per tier (and node).
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
    failures = CounterMetricFamily("tierflow_transfer_failures", "Transfer tasks that failed, per hop", labels=hop)
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
    last: dict[tuple[str, str], Any] = {}
    for o in observations:
        key = (o.source, o.target)
        if o.error is not None:
            totals[key]["failures"] += 1
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
        failures.add_metric(labels, t["failures"])
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

    families = [moved, objects, seconds, tasks, failures, rate, error, capacity, used, reachable, versions, checkpoints]

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
