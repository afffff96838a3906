"""The storage-bandwidth Airflow plugin: macros, the listener, and a UI page with its JSON API.

Registered through the ``airflow.plugins`` entry point (a pip install brings it) and exposed in
``plugins/storage_bandwidth.py`` for deployments that copy the plugins folder instead.

* **Macros** — ``{{ macros.tierflow.plan_concurrency('object', 'pfs', 10**12, 5000) }}`` and
  friends give planner values in templates.
* **Listener** — :mod:`pipelines.operators.listener` records predicted vs achieved throughput of
  every transfer task; plans learn a correction per tier and direction from that record.
* **UI page** — ``/storage-bandwidth/`` (a "Storage bandwidth" entry under Browse) answers "what
  is where": each tier's capacity, used and free (per node for NVMe), the dataset versions on it
  (size, pins with their expiry, last use), checkpoints per run with each tier's copy's state,
  recent transfers (dataset, DAG run, predicted vs achieved, the error of a failed one), the tier
  profiles, and the cluster what-if of ``tierflow plan`` as a readable plan. It is rendered from
  :file:`templates/storage.html` (Jinja, autoescaped) and follows the UI's light or dark mode.
  Every route, the page included, requires Airflow authentication (401 without a token); the UI's
  iframe sends the session cookie.
* **Metrics** — ``/storage-bandwidth/metrics`` in Prometheus's text format
  (:mod:`pipelines.operators.metrics`), for a scraper holding an Airflow token.
"""

from __future__ import annotations

import functools
import html
import mimetypes
import time
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from pipelines.operators import deadlines, inventory, listener
from pipelines.operators.preparation import ValidationDocsLink

__all__ = ["StorageBandwidthPlugin", "app"]

URL_PREFIX = "/storage-bandwidth"

app = FastAPI(title="Tierflow storage bandwidth", description="Tier profiles, observed transfers, what-if plans")


def _config() -> Any:
    from pipelines.core.config import load_config
    from pipelines.model.calibration import calibrated

    return calibrated(load_config())


def _tiers() -> list[dict[str, Any]]:
    """Each tier's profile as plans use it: calibration, when it was made, what was learnt since and from what."""
    from pipelines.core.config import load_config
    from pipelines.model.calibration import calibrated, describe, learnt, load_candidate, load_profile
    from pipelines.model.observations import tail

    configured = load_config()
    observed = tail(configured)  # read once for the profiles and what they learnt
    config = calibrated(configured, observed)
    taught = learnt(configured, observed)
    stored = {t.name: load_profile(config, t.name) for t in config.tiers}
    out = []
    for tier in config.tiers:
        candidate = load_candidate(config, tier.name)
        out.append(
            {
                "name": tier.name,
                "kind": tier.kind,
                "url": tier.url,
                "capacity_bytes": tier.capacity_bytes,
                **describe(tier.bandwidth),
                "calibrated_at": found[1] if (found := stored[tier.name]) else None,
                "learnt": [taught[(tier.name, d)].to_json() for d in ("read", "write")],
                # A newer fit held back because it disagrees (plans keep the numbers above).
                "candidate": {
                    "calibrated_at": candidate.get("calibrated_at"),
                    "why": (candidate.get("agreement") or {}).get("line"),
                }
                if candidate
                else None,
            }
        )
    return out


def _observations(limit: int, found: list[Any] | None = None) -> list[dict[str, Any]]:
    """Recent observations as JSON rows; ``found`` reuses observations already read."""
    from pipelines.model.observations import recent

    return [
        {
            "at": o.at,
            "dag_id": o.dag_id,
            "run_id": o.run_id,
            "task_id": o.task_id,
            "node": o.node,
            "dataset": o.dataset,
            "hop": f"{o.source}->{o.target}",
            "bytes": o.bytes,
            "predicted_s": round(o.predicted_s, 3),
            "achieved_s": round(o.achieved_s, 3),
            "predicted_MBps": round(o.predicted_MBps, 1),
            "achieved_MBps": round(o.achieved_MBps, 1),
            "bottleneck": str(o.bottleneck),
            "error": o.error,
        }
        for o in (found if found is not None else recent(_config(), limit))
    ]


def _open(config: Any, name: str) -> Any:
    """Open a tier; an object tier's credentials come from its Airflow connection, else the embedded server's."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from pipelines.operators.context import options_from_connection
    from pipelines.storage.credentials import storage_options_for
    from pipelines.storage.tier import Tier

    tier = config.tier(name)
    if not tier.is_object:
        return Tier(tier)
    try:
        options = options_from_connection(Connection.get_connection_from_secrets(tier.conn_id)) if tier.conn_id else {}
    except AirflowNotFoundException:
        options = storage_options_for(config, tier)
    return Tier(tier, options)


_SURVEYS = inventory.SurveyCache()


def _survey(refresh: bool = False) -> tuple[float, list[inventory.Place]]:
    """Every tier's survey (per node for node-local tiers), reused for a while."""
    return _SURVEYS.get(lambda: inventory.survey_all(_config(), _open), refresh=refresh)


def _whatif(size: str, objects: int, nodes: int, replicate: bool, deadline: str = "") -> dict[str, Any]:
    """The cluster what-if of ``tierflow plan`` (one planner): object → PFS → NVMe for ``nodes`` nodes."""
    from pipelines.core.units import UnitError, parse_duration, parse_size
    from pipelines.model.whatif import Cluster, plan_cluster

    try:
        return plan_cluster(
            _config(),
            parse_size(size),
            objects,
            Cluster(nodes=nodes, replicate=replicate),
            deadline_s=parse_duration(deadline) if deadline else None,
        )
    except (UnitError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc).strip("'\"")) from None


def _feed(demand: str, nodes: int, object_size: str) -> dict[str, Any]:
    """Whether each tier can feed ``nodes`` nodes reading ``demand`` each (``tierflow plan --demand``)."""
    from pipelines.core.units import UnitError, parse_size
    from pipelines.model.whatif import Cluster, feed, parse_demand

    try:
        per_node, sample = parse_demand(demand)
        return feed(_config(), Cluster(nodes=nodes), per_node, sample or parse_size(object_size))
    except (UnitError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=f"demand: {str(exc).strip(chr(39))}") from None


def _plan(source: str, target: str, size: str, objects: int) -> dict[str, Any]:
    from pipelines.core.units import UnitError, parse_size
    from pipelines.model.bandwidth import Workload, plan_hop

    config = _config()
    try:
        total = parse_size(size)
        src, dst = config.tier(source), config.tier(target)
        work = Workload.uniform(max(1, objects), max(1, total // max(1, objects)))
        return plan_hop(src, dst, work).summary().to_json()
    except (UnitError, KeyError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc).strip("'\"")) from None


@app.get("/api/tiers")
def api_tiers(user: GetUserDep) -> list[dict[str, Any]]:
    """Each tier's profile (calibrated where measured)."""
    return _tiers()


@app.get("/metrics")
def metrics(user: GetUserDep) -> Response:
    """Prometheus metrics (:mod:`pipelines.operators.metrics`): transfers per hop, and what is on each tier."""
    from pipelines.model.observations import every
    from pipelines.operators.metrics import CONTENT_TYPE, every_event, exposition

    _, places = _survey()
    config = _config()
    return Response(exposition(every(config), places, every_event(config.state_dir)), media_type=CONTENT_TYPE)


@app.get("/api/observations")
def api_observations(user: GetUserDep, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Recent transfer tasks: predicted vs achieved MB/s."""
    return _observations(limit)


@app.get("/api/inventory")
def api_inventory(user: GetUserDep, refresh: bool = False) -> dict[str, Any]:
    """What is where: each tier (per node for NVMe) with capacity, used and free, its versions and checkpoints."""
    at, places = _survey(refresh)
    return {"surveyed_at": at, "places": [p.to_json() for p in places]}


@app.get("/api/whatif")
def api_whatif(
    user: GetUserDep,
    size: str = Query(..., description="dataset size with its unit, e.g. '2 TB'"),
    objects: int = Query(1000, ge=1),
    nodes: int = Query(1, ge=1),
    replicate: bool = False,
    deadline: str = Query("", description="finish within this long, e.g. '6h' (empty: no deadline)"),
) -> dict[str, Any]:
    """Staging ``size`` in ``objects`` objects to ``nodes`` nodes: the hops, time, bottleneck, cost and energy."""
    return _whatif(size, objects, nodes, replicate, deadline)


@app.get("/api/feed")
def api_feed(
    user: GetUserDep,
    demand: str = Query(..., description="what each node reads, e.g. '2 GB/s' or '3000/s x 1 MiB'"),
    nodes: int = Query(1, ge=1),
    object_size: str = Query("256 MiB", description="object size when the demand gives no sample size"),
) -> dict[str, Any]:
    """Whether each tier can feed ``nodes`` nodes reading ``demand`` each: headroom and what binds, per tier."""
    return _feed(demand, nodes, object_size)


@app.get("/api/plan")
def api_plan(
    user: GetUserDep,
    source: str,
    target: str,
    size: str = Query(..., description="total size with its unit, e.g. '2 TB'"),
    objects: int = Query(1, ge=1),
) -> dict[str, Any]:
    """What-if: the planner's choices for moving ``size`` in ``objects`` objects from ``source`` to ``target``."""
    return _plan(source, target, size, objects)


def _object_tier() -> Any:
    """The config's object tier, with credentials from its Airflow connection (else the embedded server's)."""
    config = _config()
    tier = next((t for t in config.tiers if t.is_object), None)
    if tier is None:
        raise HTTPException(status_code=404, detail="no object tier in the tier config")
    return _open(config, tier.name)


@app.get("/docs/{dataset}/{version}/{path:path}")
def validation_docs(user: GetUserDep, dataset: str, version: str, path: str) -> Response:
    """A file of a dataset version's GX Data Docs, read from object storage (the validation tasks' extra link)."""
    from pipelines.core.keys import safe_key
    from pipelines.core.manifest import ManifestError, dataset_prefix
    from pipelines.datasets.preparation.plan import DOCS_DIR

    try:
        key = f"{dataset_prefix(dataset, version)}/{DOCS_DIR}/{safe_key(path)}"
    except (ManifestError, ValueError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    try:
        data = _object_tier().read_bytes(key)
    except FileNotFoundError:
        raise HTTPException(status_code=404, detail=f"no such docs file: {key}") from None
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(content=data, media_type=kind)


def _chart(points: list[dict[str, Any]]) -> str:
    """Inline SVG bars: predicted (grey) and achieved (blue) MB/s per recent task, labelled (no external scripts)."""
    if not points:
        return "<p id='chart-empty'>No transfer tasks observed yet: run <code>dataset_staging</code>.</p>"
    points = points[-16:]
    bar, gap, left, top_pad, label_h = 22, 18, 56, 28, 96
    plot_h = 200
    width = max(left + len(points) * (2 * bar + gap) + 180, 480)  # room for the legend and the last label
    height = top_pad + plot_h + label_h
    top = max(max(p["predicted_MBps"], p["achieved_MBps"]) for p in points) or 1.0
    parts = []
    for frac in (0.0, 0.5, 1.0):  # y axis: 0, half, max
        y = top_pad + plot_h * (1 - frac)
        parts.append(
            f"<line x1='{left - 4}' x2='{width - 10}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e3e6ea'/>"
            f"<text x='{left - 8}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>{top * frac:.0f}</text>"
        )
    for i, p in enumerate(points):
        x = left + i * (2 * bar + gap)
        for j, (key, colour) in enumerate((("predicted_MBps", "#9aa5b1"), ("achieved_MBps", "#1f6feb"))):
            h = plot_h * p[key] / top
            title = html.escape(f"{p['dag_id']}.{p['task_id']} {p['hop']}: {key.split('_')[0]} {p[key]} MB/s")
            parts.append(
                f"<rect class='{key.split('_')[0]}' x='{x + j * bar:.1f}' y='{top_pad + plot_h - h:.1f}' "
                f"width='{bar - 2}' height='{max(h, 1):.1f}' fill='{colour}'><title>{title}</title></rect>"
            )
        label = html.escape(f"{p['dataset'] or ''} {p['hop']}".strip())
        lx, ly = x + bar / 2, top_pad + plot_h + 12
        parts.append(
            f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='11' text-anchor='start' "
            f"transform='rotate(30 {lx:.1f} {ly:.1f})'>{label}</text>"
        )
    legend = (
        f"<text x='{left}' y='14' font-size='12'>MB/s per task — "
        "<tspan fill='#6b7785'>■ predicted</tspan> <tspan fill='#1f6feb'>■ achieved</tspan></text>"
    )
    return (
        f"<svg id='chart' width='{width}' height='{height}' role='img' aria-label='predicted vs achieved MB/s'>"
        + legend
        + "".join(parts)
        + "</svg>"
    )


#: Colours of the prediction-error series (one per tier and direction).
SERIES_COLOURS = ("#1f6feb", "#d97706", "#16a34a", "#9333ea", "#dc2626", "#0891b2")


def _error_chart(observed: list[Any]) -> str:
    """Inline SVG: prediction error (achieved ÷ predicted − 1) of each finished transfer over time.

    One series per bottleneck tier and direction, with the ±10 % band the model aims for.
    """
    points = [o for o in observed if o.error is None and o.predicted_s > 0 and o.achieved_s > 0]
    if not points:
        return "<p id='error-chart-empty'>No finished transfers yet: the prediction error is drawn once there are.</p>"
    left, top_pad, plot_w, plot_h, limit = 56, 28, 640, 180, 1.0
    width, height = left + plot_w + 200, top_pad + plot_h + 30
    t0, t1 = min(o.at for o in points), max(o.at for o in points)

    def x(at: float) -> float:
        return left + (plot_w * (at - t0) / (t1 - t0) if t1 > t0 else plot_w / 2)

    def y(error: float) -> float:
        return top_pad + plot_h / 2 * (1 - max(-limit, min(limit, error)) / limit)

    parts = [
        f"<rect class='band' x='{left}' y='{y(0.1):.1f}' width='{plot_w}' height='{y(-0.1) - y(0.1):.1f}' "
        "fill='#16a34a' fill-opacity='0.12'><title>within ±10 %</title></rect>"
    ]
    for error in (-1.0, -0.5, 0.0, 0.5, 1.0):
        parts.append(
            f"<line x1='{left - 4}' x2='{left + plot_w}' y1='{y(error):.1f}' y2='{y(error):.1f}' stroke='#e3e6ea'/>"
            f"<text x='{left - 8}' y='{y(error) + 4:.1f}' font-size='11' text-anchor='end'>{error:+.0%}</text>"
        )
    series: dict[str, list[Any]] = {}
    for o in points:
        series.setdefault(f"{o.bottleneck.tier} {o.bottleneck.direction}", []).append(o)
    for i, (name, found) in enumerate(sorted(series.items())):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        coords = " ".join(f"{x(o.at):.1f},{y(o.achieved_s / o.predicted_s - 1):.1f}" for o in found)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{coords}'/>")
        for o in found:
            error = o.achieved_s / o.predicted_s - 1
            title = html.escape(f"{_when(o.at)} {o.dag_id}.{o.task_id} ({name}): {error:+.0%}")
            parts.append(
                f"<circle class='error-point' cx='{x(o.at):.1f}' cy='{y(error):.1f}' r='3' fill='{colour}'>"
                f"<title>{title}</title></circle>"
            )
        parts.append(
            f"<text x='{left + plot_w + 12}' y='{top_pad + 14 + 16 * i}' font-size='12' fill='{colour}'>"
            f"■ {html.escape(name)} ({len(found)})</text>"
        )
    parts.append(
        f"<text x='{left}' y='{top_pad + plot_h + 22}' font-size='11'>{_when(t0)}</text>"
        f"<text x='{left + plot_w}' y='{top_pad + plot_h + 22}' font-size='11' text-anchor='end'>{_when(t1)}</text>"
    )
    legend = (
        f"<text x='{left}' y='14' font-size='12'>prediction error (achieved ÷ predicted − 1) per bottleneck "
        "tier and direction; above 0: slower than predicted</text>"
    )
    return (
        f"<svg id='error-chart' width='{width}' height='{height}' role='img' aria-label='prediction error over time'>"
        + legend
        + "".join(parts)
        + "</svg>"
    )


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


@functools.cache
def _templates() -> Any:
    """The page's Jinja environment (autoescaped; templates ship in the package)."""
    import jinja2

    from pipelines.core.units import format_bandwidth, format_bytes, format_duration

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.operators", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters |= {
        "size": format_bytes,
        "binary": lambda n: f"{n / 2**20:g} MiB" if n >= 2**20 else format_bytes(n),  # part sizes are MiB
        "rate": format_bandwidth,
        "duration": format_duration,
        "when": _when,
    }
    return env


@app.get("/", response_class=HTMLResponse)
def page(
    user: GetUserDep,
    size: str = "1 TB",
    objects: int = Query(1000, ge=1),
    nodes: int = Query(1, ge=1),
    replicate: bool = False,
    refresh: bool = False,
    deadline: str = "",
    demand: str = "",
) -> str:
    """The storage page: capacity and contents per tier, checkpoints, recent transfers, profiles, what-if."""
    from pipelines.model.observations import recent

    at, places = _survey(refresh)
    plan, plan_error, fed = None, None, None
    try:  # the form is always answered: its defaults make a plan too
        plan = _whatif(size, objects, nodes, replicate, deadline)
        fed = _feed(demand, nodes, f"{max(1, round(plan['dataset_bytes'] / objects))} B") if demand else None
    except HTTPException as exc:
        plan_error = str(exc.detail)
    history = recent(_config(), 400)  # read once: the error chart, the table (newest first) and the bars
    observed = history[-40:]
    transfers = list(reversed(observed))
    return (
        _templates()
        .get_template("storage.html")
        .render(
            surveyed_at=_when(at),
            ttl=int(inventory.SURVEY_TTL_S),
            places=places,
            versions=[(p.label, v) for p in places for v in p.versions],
            checkpoints=inventory.checkpoint_matrix(places),
            transfers=transfers,
            chart=_chart([o for o in _observations(40, observed) if not o["error"]]),
            error_chart=_error_chart(history),
            tiers=_tiers(),
            form={
                "size": size,
                "objects": objects,
                "nodes": nodes,
                "replicate": replicate,
                "deadline": deadline,
                "demand": demand,
            },
            fed=fed,
            plan=plan,
            plan_error=plan_error,
            base=_ui_base(),
        )
    )


def _ui_base() -> str:
    """The path the Airflow UI is served under ('' at the root), for links to DAG runs."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def plan_concurrency(source: str, target: str, total_bytes: int, objects: int = 1) -> int:
    """Macro: the planner's concurrency for a hop."""
    return int(_plan(source, target, f"{max(1, int(total_bytes))} B", objects)["concurrency"])


def plan_shards(source: str, target: str, total_bytes: int, objects: int = 1) -> int:
    """Macro: the planner's number of mapped shards for a hop."""
    return int(_plan(source, target, f"{max(1, int(total_bytes))} B", objects)["shards"])


def plan_timeout_s(source: str, target: str, total_bytes: int, objects: int = 1) -> float:
    """Macro: the planner's execution timeout (seconds) for one shard of a hop."""
    return float(_plan(source, target, f"{max(1, int(total_bytes))} B", objects)["execution_timeout_s"])


class StorageBandwidthPlugin(AirflowPlugin):
    """Tierflow's storage-bandwidth plugin."""

    name = "tierflow"
    macros = [plan_concurrency, plan_shards, plan_timeout_s]
    listeners = [listener]
    # Airflow evaluates custom deadline references only when a plugin registers them.
    deadline_references = [deadlines.RunDeadlineParam]
    operator_extra_links = [ValidationDocsLink()]
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Tierflow storage bandwidth"}]
    external_views = [
        {
            "name": "Storage bandwidth",
            "href": "storage-bandwidth/",
            "destination": "nav",
            "category": "browse",
            "url_route": "storage-bandwidth",
        }
    ]
