"""Model fidelity: recalibrate, predict each shape with the planner, measure it; three runs back to back.

Shapes: 1 x 1 GiB and 2,000 x 256 KiB uploaded to and downloaded from SeaweedFS and copied local ->
local (six copies, in-process through the transfer engine at the plan's concurrency and part
size), and ``tierflow compress`` of a 256 MiB JSONL shard at the level the planner picks. Each run
recalibrates the object and the local tier first (so each run's predictions stand on their own
calibration), then measures the shapes in a rotated order. The "ratio" column is measured /
predicted (1.0 = exact); the target is every ratio within 0.8-1.2 in each run and a median
absolute error of at most 10 %.

Printed after the table: each run's ratios, its median absolute error and how many shapes are
within ±20 %, and the **noise floor** of each shape — the spread ((max - min) / median) of its
measured times across the runs, which no model can beat.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pipelines.core.manifest import Entry
from pipelines.devtools.bench import BenchContext, Comparison, write_files
from pipelines.model.bandwidth import Workload, plan_hop
from pipelines.model.calibration import calibrate_tier, describe
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries, workload_of

DESCRIPTION = "predicted vs measured durations, each run recalibrated (ratio = measured / predicted), s"
BUCKET = "tierflow-bench"
COPIES = {"1 x 1 GiB": (1, 2**30), "2000 x 256 KiB": (2000, 256 * 2**10)}
CASES = ("upload", "download", "local")
SHARD_BYTES = 256 * 2**20
CALIBRATION_BYTES = 256 * 2**20  # what tierflow calibrate moves by default


def _shard(path: Path) -> int:
    from pipelines.devtools.corpus import jsonl, records

    written, start = 0, 0
    with open(path, "wb") as fh:
        while written < SHARD_BYTES:
            rows = list(records(29, start, 5000))
            start += len(rows)
            data = jsonl(rows)
            fh.write(data)
            written += len(data)
    return written


def _compress(ctx: BenchContext, src: Path, obj: Tier, local: Tier) -> tuple[float, float]:
    """Predicted and measured seconds of compressing the shard at the level the planner picks for its upload."""
    from pipelines.datasets.compression import compress_file, measure_levels, read_sample
    from pipelines.model.codecs import choose_compression

    size = src.stat().st_size
    samples = measure_levels(read_sample(str(src)), levels=(1, 3, 9))
    work = Workload.uniform(1, size)
    plan = plan_hop(local.config, obj.config, work)
    level = choose_compression(local.config, obj.config, work, plan.concurrency, samples).level or 3
    predicted = size / next(s.compress_bps for s in samples if s.level == level)
    start = time.perf_counter()
    compress_file(str(src), str(ctx.workdir / "shard.jsonl.zst"), level=level)
    return predicted, time.perf_counter() - start


def run(ctx: BenchContext) -> list[Comparison]:
    creds = ctx.s3(BUCKET)
    obj_base = Tier(
        replace(ctx.config.of_kind("object")[0], url=f"s3://{BUCKET}/fidelity/", conn_id="bench"),
        creds.storage_options(),
    )
    local_cfg = replace(ctx.config.of_kind("pfs")[0], name="local")
    local_base = Tier(replace(local_cfg, url=f"file://{ctx.workdir / 'local'}"))
    shapes: dict[str, Callable[[Tier, Tier, str], tuple[float, float]]] = {}
    for label, (count, size) in COPIES.items():
        write_files(ctx.workdir / "local" / f"src-{count}", count, size, name="f{:05d}.bin")
        entries = [Entry(f"f{i:05d}.bin", size) for i in range(count)]
        for case in CASES:
            shapes[f"{case} {label}"] = _copy_shape(case, count, entries)
    shard = ctx.workdir / "shard.jsonl"
    _shard(shard)
    shapes["compress 256 MiB JSONL"] = lambda obj, local, run_id: _compress(ctx, shard, obj, local)

    predicted: dict[str, list[float]] = {k: [] for k in shapes}
    measured: dict[str, list[float]] = {k: [] for k in shapes}
    names = list(shapes)
    # What runs in a rotating order: a download stays right after the upload it reads.
    units = [[f"upload {label}", f"download {label}"] for label in COPIES]
    units += [[n] for n in names if not n.startswith(("upload", "download"))]
    for r in range(ctx.runs):
        print(f"   run {r + 1}: calibrating the object and local tiers ...", flush=True)
        obj_profile, _ = calibrate_tier(obj_base, budget_bytes=CALIBRATION_BYTES, budget_s=60)
        local_profile, _ = calibrate_tier(local_base, budget_bytes=CALIBRATION_BYTES, budget_s=60)
        obj = Tier(replace(obj_base.config, bandwidth=obj_profile), obj_base.storage_options)
        local = Tier(replace(local_base.config, bandwidth=local_profile))
        for tier in (obj, local):
            curves = {
                d: [f"{size >> 10} KiB: {bps / 1e6:.0f} MB/s" for size, bps in tier.config.bandwidth.curve(d)]
                for d in ("read", "write")
            }
            print(f"   run {r + 1}: {tier.name} profile {describe(tier.config.bandwidth)} curves {curves}", flush=True)
        run_id = uuid.uuid4().hex[:8]
        turn = r % len(units)
        for name in [n for unit in units[turn:] + units[:turn] for n in unit]:
            p, m = shapes[name](obj, local, run_id)
            predicted[name].append(p)
            measured[name].append(m)
    results = [
        Comparison(name, "s", predicted[name], measured[name], "measured", higher_is_better=False) for name in names
    ]
    _report(names, predicted, measured, ctx.runs)
    return results


def _copy_shape(case: str, count: int, entries: list[Entry]) -> Callable[..., tuple[float, float]]:
    def shape(obj: Tier, local: Tier, run_id: str) -> tuple[float, float]:
        src, dst = {"upload": (local, obj), "download": (obj, local), "local": (local, local)}[case]
        uploaded = f"{run_id}/up-{count}"
        # the sources were just written (or read): the planner sees what the page cache holds of them
        src_prefix = uploaded if case == "download" else f"src-{count}"
        plan = plan_hop(src.config, dst.config, workload_of(src, src_prefix, entries))
        settings = TransferSettings.from_plan(plan, progress_interval_s=3600)
        if case == "download":
            report = copy_entries(obj, uploaded, local, f"{run_id}/down-{count}", entries, settings)
        else:
            target = uploaded if case == "upload" else f"{run_id}/copy-{count}"
            report = copy_entries(src, f"src-{count}", dst, target, entries, settings)
        return plan.predicted_s, report.seconds

    return shape


def _report(names: list[str], predicted: dict[str, list[float]], measured: dict[str, list[float]], runs: int) -> None:
    """Each run's ratios, median absolute error and count within ±20 %; each shape's noise floor."""
    for r in range(runs):
        ratios = {n: measured[n][r] / predicted[n][r] for n in names}
        errors = [abs(x - 1) for x in ratios.values()]
        within = sum(1 for e in errors if e <= 0.2)
        print(
            f"   run {r + 1}: median |error| {statistics.median(errors):.0%}, {within}/{len(names)} within ±20 %: "
            + ", ".join(f"{n} {x:.2f}" for n, x in ratios.items())
        )
    for n in names:
        m = measured[n]
        spread = (max(m) - min(m)) / statistics.median(m) if len(m) > 1 else 0.0
        print(
            f"   {n:<26} measured {', '.join(f'{x:.2f}' for x in m)} s (noise floor {spread:.0%}); "
            f"predicted {', '.join(f'{x:.2f}' for x in predicted[n])} s"
        )
