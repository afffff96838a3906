"""The storage-bandwidth Airflow plugin: macros, the listener, and a UI page with its JSON API.

Registered through the ``airflow.plugins`` entry point (a pip install brings it) and exposed in
``plugins/storage_bandwidth.py`` for deployments that copy the plugins folder instead.

* **Macros** — ``{{ macros.tierflow.plan_concurrency('object', 'pfs', 10**12, 5000) }}`` and
  friends give planner values in templates.
* **Listener** — :mod:`pipelines.operators.listener` records predicted vs achieved throughput of
  every transfer task and folds it into the tier profiles.
* **UI page** — ``/storage-bandwidth/`` (a "Storage bandwidth" entry under Browse): each tier's
  profile, recent tasks' predicted vs achieved MB/s as a chart, and a what-if form. Every route,
  the page included, requires Airflow authentication (401 without a token); the UI's iframe sends
  the session cookie.
"""

from __future__ import annotations

import html
import mimetypes
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from pipelines.operators import listener
from pipelines.operators.preparation import ValidationDocsLink

__all__ = ["StorageBandwidthPlugin", "app"]

URL_PREFIX = "/storage-bandwidth"

app = FastAPI(title="Tierflow storage bandwidth", description="Tier profiles, observed transfers, what-if plans")


def _config() -> Any:
    from pipelines.core.config import load_config
    from pipelines.model.calibration import calibrated

    return calibrated(load_config())


def _tiers() -> list[dict[str, Any]]:
    from pipelines.model.calibration import describe, load_profile

    config = _config()
    out = []
    for tier in config.tiers:
        stored = load_profile(config, tier.name)
        out.append(
            {
                "name": tier.name,
                "kind": tier.kind,
                "url": tier.url,
                "capacity_bytes": tier.capacity_bytes,
                **describe(tier.bandwidth),
                "calibrated_at": stored[1] if stored else None,
            }
        )
    return out


def _observations(limit: int) -> list[dict[str, Any]]:
    from pipelines.model.observations import recent

    return [
        {
            "at": o.at,
            "dag_id": o.dag_id,
            "task_id": o.task_id,
            "hop": f"{o.source}->{o.target}",
            "bytes": o.bytes,
            "predicted_MBps": round(o.predicted_MBps, 1),
            "achieved_MBps": round(o.achieved_MBps, 1),
            "bottleneck": str(o.bottleneck),
        }
        for o in recent(_config(), limit)
    ]


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


@app.get("/api/observations")
def api_observations(user: GetUserDep, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Recent transfer tasks: predicted vs achieved MB/s."""
    return _observations(limit)


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
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from pipelines.operators.context import options_from_connection
    from pipelines.storage.credentials import storage_options_for
    from pipelines.storage.tier import Tier

    config = _config()
    tier = next((t for t in config.tiers if t.is_object), None)
    if tier is None:
        raise HTTPException(status_code=404, detail="no object tier in the tier config")
    try:
        options = options_from_connection(Connection.get_connection_from_secrets(tier.conn_id)) if tier.conn_id else {}
    except AirflowNotFoundException:
        options = storage_options_for(config, tier)
    return Tier(tier, options)


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
    bar, gap, left, top_pad, label_h = 22, 18, 56, 28, 64
    plot_h = 200
    width = max(left + len(points) * (2 * bar + gap) + 20, 480)  # room for the legend with few tasks
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
        label = html.escape(f"{p['hop']}")
        lx, ly = x + bar, top_pad + plot_h + 12
        parts.append(
            f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='11' text-anchor='end' "
            f"transform='rotate(-35 {lx:.1f} {ly:.1f})'>{label}</text>"
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


@app.get("/", response_class=HTMLResponse)
def page(
    user: GetUserDep, source: str | None = None, target: str | None = None, size: str = "1 TB", objects: int = 1000
) -> str:
    """The plugin page: tier table, chart, what-if form."""
    tiers = _tiers()
    columns = {
        "name": "tier",
        "kind": "kind",
        "read_MBps": "read MB/s",
        "write_MBps": "write MB/s",
        "stream_read_MBps": "per-stream read",
        "stream_write_MBps": "per-stream write",
        "latency_ms": "latency ms",
        "metadata_ops": "metadata ops/s",
        "max_streams": "streams",
        "calibrated_at": "calibrated",
    }
    head = "".join(f"<th>{label}</th>" for label in columns.values())

    def cell(tier: dict[str, Any], key: str) -> str:
        value = tier[key]
        if key == "calibrated_at":
            value = str(value).replace("T", " ")[:16] if value else "configured"
        return f"<td class='{key}'>{html.escape(str(value))}</td>"

    rows = "".join("<tr>" + "".join(cell(t, c) for c in columns) + "</tr>" for t in tiers)
    names = [t["name"] for t in tiers]

    def options(selected: str | None) -> str:
        return "".join(f"<option{' selected' if n == selected else ''}>{html.escape(n)}</option>" for n in names)

    result = ""
    if source and target:
        try:
            plan = _plan(source, target, size, objects)
            items = "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in plan.items() if k != "reasons"
            )
            reasons = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in plan["reasons"].items())
            result = f"<div id='plan'><ul>{items}</ul><p>Why:</p><ul>{reasons}</ul></div>"
        except HTTPException as exc:
            result = f"<p id='plan-error'>{html.escape(str(exc.detail))}</p>"
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>Tierflow storage bandwidth</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.2em;color:#1f2933}}h1{{font-size:1.5em}}
h2{{font-size:1.15em;margin-top:1.4em}}table{{border-collapse:collapse;font-size:.9em}}
td,th{{border:1px solid #d9dde2;padding:4px 8px;text-align:right}}th{{background:#f3f5f7;font-weight:600}}
td.name,td.kind{{text-align:left}}form{{font-size:.95em}}#plan li{{margin:2px 0}}</style></head><body>
<h1>Storage bandwidth</h1>
<h2>Tiers</h2><table id='tiers'><tr>{head}</tr>{rows}</table>
<h2>Recent transfer tasks: predicted vs achieved</h2>{_chart(_observations(40))}
<h2>What if</h2>
<form id='whatif' method='get'>
 from <select name='source'>{options(source or (names[0] if names else None))}</select>
 to <select name='target'>{options(target or (names[1] if len(names) > 1 else None))}</select>
 size <input name='size' value='{html.escape(size)}' size='8'>
 objects <input name='objects' type='number' min='1' value='{objects}'>
 <button type='submit'>Plan</button>
</form>{result}
</body></html>"""


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
