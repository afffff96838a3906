"""Model fidelity: calibrate, predict each staging shape with the planner, then measure it.

Shapes (issue 4): 1 x 1 GiB and 2,000 x 256 KiB, to and from SeaweedFS, and local -> local. The
tiers are calibrated first (within a small budget) and the plan's concurrency and part size are
used for the measured copy, in-process through the transfer engine. The "ratio" column is
measured / predicted duration; the target is every ratio within 0.8-1.25 (+-25 %).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from pipelines.core.manifest import Entry
from pipelines.devtools.bench import BenchContext, Comparison, write_files
from pipelines.model.bandwidth import Workload, plan_hop
from pipelines.model.calibration import calibrate_tier
from pipelines.storage.tier import Tier
from pipelines.transfer import TransferSettings, copy_entries

DESCRIPTION = "predicted vs measured staging durations after calibration (ratio = measured / predicted), s"
BUCKET = "tierflow-bench"
SHAPES = {"1 x 1 GiB": (1, 2**30), "2000 x 256 KiB": (2000, 256 * 2**10)}


def run(ctx: BenchContext) -> list[Comparison]:
    creds = ctx.s3(BUCKET)
    obj = Tier(
        replace(ctx.config.of_kind("object")[0], url=f"s3://{BUCKET}/fidelity/", conn_id="bench"),
        creds.storage_options(),
    )
    local_cfg = replace(ctx.config.of_kind("pfs")[0], name="local")
    local = Tier(replace(local_cfg, url=f"file://{ctx.workdir / 'local'}"))
    print("   calibrating object and local tiers ...", flush=True)
    obj_profile, _ = calibrate_tier(obj, budget_bytes=128 * 2**20, budget_s=60)
    local_profile, _ = calibrate_tier(local, budget_bytes=128 * 2**20, budget_s=60)
    obj = Tier(replace(obj.config, bandwidth=obj_profile), obj.storage_options)
    local = Tier(replace(local.config, bandwidth=local_profile))
    results: list[Comparison] = []
    for shape, (count, size) in SHAPES.items():
        src_dir = ctx.workdir / "local" / f"src-{count}"
        write_files(src_dir, count, size, name="f{:05d}.bin")
        entries = [Entry(f"f{i:05d}.bin", size) for i in range(count)]
        work = Workload.uniform(count, size)
        cases = {
            "upload": (local, f"src-{count}", obj, None),
            "download": (obj, None, local, None),
            "local": (local, f"src-{count}", local, None),
        }
        predicted: dict[str, list[float]] = {k: [] for k in cases}
        measured: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(ctx.runs):
            run_id = uuid.uuid4().hex[:8]
            uploaded = f"{run_id}/up"
            for case, (src, src_prefix, dst, _) in cases.items():
                plan = plan_hop(src.config, dst.config, work)
                settings = TransferSettings.from_plan(plan)
                if case == "download":
                    report = copy_entries(obj, uploaded, local, f"{run_id}/down", entries, settings)
                else:
                    target = uploaded if case == "upload" else f"{run_id}/copy"
                    report = copy_entries(src, src_prefix, dst, target, entries, settings)
                predicted[case].append(plan.predicted_s)
                measured[case].append(report.seconds)
        for case in cases:
            results.append(
                Comparison(f"{case} {shape}", "s", predicted[case], measured[case], "measured", higher_is_better=False)
            )
    return results
