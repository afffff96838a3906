"""Model fidelity: recalibrate, predict each shape with the planner, measure it; three runs back to back.

Shapes: 1 x 1 GiB and 2,000 x 256 KiB uploaded to and downloaded from SeaweedFS and copied local ->
local (six copies, in-process through the transfer engine at the plan's concurrency and part
size), ``tierflow compress`` of a 256 MiB JSONL shard at the level the planner picks, and a whole
``dataset_staging`` run object -> PFS -> NVMe of 1 GiB in 64 files as users run it
(``airflow dags test``, its own process). The run's prediction is its two hops as its own plan
tasks predicted them when each hop started (read from the commit lines of its log) plus the run's
fixed cost — process start, parsing, every task's start-up — measured in the same run on a
one-file version. Each run
recalibrates the object and the local tier first (so each run's predictions stand on their own
calibration), then measures the shapes in a rotated order. The "ratio" column is measured /
predicted (1.0 = exact); the target is every ratio within 0.8-1.2 in each run and a median
absolute error of at most 10 %.

Printed after the table: each run's ratios, its median absolute error and how many shapes are
within ±20 %, and the **noise floor** of each shape — the spread ((max - min) / median) of its
measured times across the runs, which no model can beat.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.core.manifest import Entry
from pipelines.devtools.bench import BenchContext, Comparison, write_files
from pipelines.devtools.corpus import write_jsonl
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
    write_jsonl(shard, SHARD_BYTES, seed=29)
    shapes["compress 256 MiB JSONL"] = lambda obj, local, run_id: _compress(ctx, shard, obj, local)
    staging = _DagRun(ctx, creds)
    shapes["dataset_staging 64 x 16 MiB"] = staging.shape

    predicted: dict[str, list[float]] = {k: [] for k in shapes}
    measured: dict[str, list[float]] = {k: [] for k in shapes}
    names = list(shapes)
    # What runs in a rotating order: a download stays right after the upload it reads.
    units = [[f"upload {label}", f"download {label}"] for label in COPIES]
    units += [[n] for n in names if not n.startswith(("upload", "download"))]
    try:
        _runs(ctx, obj_base, local_base, shapes, predicted, measured, units)
    finally:
        staging.close()
    results = [
        Comparison(name, "s", predicted[name], measured[name], "measured", higher_is_better=False) for name in names
    ]
    _report(names, predicted, measured, ctx.runs)
    return results


def _runs(
    ctx: BenchContext,
    obj_base: Tier,
    local_base: Tier,
    shapes: dict[str, Callable[[Tier, Tier, str], tuple[float, float]]],
    predicted: dict[str, list[float]],
    measured: dict[str, list[float]],
    units: list[list[str]],
) -> None:
    """Each run: calibrate both tiers, then every shape in this run's turn of the rotating order."""
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
            dirty = _dirty_mb()
            p, m = shapes[name](obj, local, run_id)
            predicted[name].append(p)
            measured[name].append(m)
            print(
                f"   run {r + 1}: {name}: predicted {p:.2f} s, measured {m:.2f} s "
                f"(dirty pages before {dirty:,.0f} MB, after {_dirty_mb():,.0f} MB)",
                flush=True,
            )
        shutil.rmtree(ctx.workdir / "local" / run_id, ignore_errors=True)  # this run's copies: disk for the next
        obj_base.delete_prefix(run_id)


def _copy_shape(case: str, count: int, entries: list[Entry]) -> Callable[..., tuple[float, float]]:
    def shape(obj: Tier, local: Tier, run_id: str) -> tuple[float, float]:
        src, dst = {"upload": (local, obj), "download": (obj, local), "local": (local, local)}[case]
        uploaded = f"{run_id}/up-{count}"
        # the sources were just written (or read): the planner sees what the page cache holds of them
        src_prefix = uploaded if case == "download" else f"src-{count}"
        work = workload_of(src, src_prefix, entries, dst)
        plan = plan_hop(src.config, dst.config, work)
        ends = (plan.predicted.source, plan.predicted.destination)
        print(
            f"   {case} {count}: source {work.resident:.0%} in the page cache; {plan.concurrency} streams; "
            + ", ".join(f"{e.tier} {e.direction} {e.seconds:.2f} s ({e.bound})" for e in ends),
            flush=True,
        )
        settings = TransferSettings.from_plan(plan, progress_interval_s=3600)
        if case == "download":
            report = copy_entries(obj, uploaded, local, f"{run_id}/down-{count}", entries, settings)
        else:
            target = uploaded if case == "upload" else f"{run_id}/copy-{count}"
            report = copy_entries(src, f"src-{count}", dst, target, entries, settings)
        return plan.predicted_s, report.seconds

    return shape


def _dirty_mb() -> float:
    """Megabytes of this machine's page cache waiting to be written (``Dirty`` + ``Writeback``; 0 off Linux)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return 0.0
    fields = {k: v for k, _, v in (line.partition(":") for line in lines)}
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("Dirty", "Writeback")) / 1e3


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


class _DagRun:
    """``dataset_staging`` through ``airflow dags test`` on the benchmark's own tiers and Airflow home."""

    FILES, SIZE = 64, 16 * 2**20

    def __init__(self, ctx: BenchContext, creds: Any) -> None:
        from pipelines.core.config import load_config
        from pipelines.devtools.airflow_env import airflow_env

        self.home = ctx.workdir / "dagrun"
        port = int(creds.endpoint_url.rsplit(":", 1)[1].strip("/"))
        path = self.home / "tiers.toml"
        self.home.mkdir(parents=True, exist_ok=True)
        path.write_text(DAG_TIERS.format(home=self.home, port=port, bucket=BUCKET))
        # The state directory the DAG run sees ($TIERFLOW_HOME below): the run's calibration is
        # stored there, where its plan tasks read it (not under this process's $TIERFLOW_HOME).
        self.config = replace(load_config(str(path)), state_dir=self.home / "state")
        self.creds = creds
        self.env = airflow_env(self.config, creds) | {"TIERFLOW_HOME": str(self.home / "state")}
        self.env["AIRFLOW_HOME"] = str(self.home / "airflow")
        # Airflow's metadata database in memory where the machine has a tmpfs: in a deployment it is a
        # server of its own, not a file on the disk the data moves through. Here, as a SQLite file on
        # that disk, each task's commit (an fsync) waited for the gigabyte the hop before had left
        # dirty: a shard task took 1.4 s more than its copy in the 1 GiB run, 0.1 s in the one-file
        # run, and the DAG's fixed cost measured on the latter missed it (with the file on /dev/shm:
        # 0.1 s in both).
        shm = Path("/dev/shm")
        self.db_dir = Path(tempfile.mkdtemp(prefix="tierflow-bench-db-", dir=shm)) if os.access(shm, os.W_OK) else None
        db = (self.db_dir or self.home / "airflow") / "airflow.db"
        self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db}"
        self.migrated = False
        self.runs = 0

    def close(self) -> None:
        """Remove the metadata database kept in memory."""
        if self.db_dir is not None:
            shutil.rmtree(self.db_dir, ignore_errors=True)

    def _airflow(self, *args: str) -> tuple[float, str]:
        """Seconds of one ``airflow`` command (the whole command) and what it printed."""
        start = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        finished = re.findall(r"DagRun Finished: .*?, state=(\w+)", done.stdout + done.stderr)
        if done.returncode != 0 or (args[:2] == ("dags", "test") and finished[-1:] != ["success"]):
            tail = (done.stdout + done.stderr)[-2000:]
            raise RuntimeError(f"airflow {' '.join(args[:3])} failed:\n{tail}")
        return time.perf_counter() - start, done.stdout + done.stderr

    def _stage(self, version: str) -> tuple[float, list[tuple[str, float, float]]]:
        """Seconds of ``airflow dags test dataset_staging`` for one version (the whole command), and its hops.

        Each hop as its commit task logged it: the tier, the slowest shard's seconds and what the
        hop's plan task predicted — the DAG's own plan, made when the hop starts, from what the
        machine holds then (the page cache after hop 1, the learnt corrections).
        """
        conf = json.dumps({"dataset": "fidelity", "version": version})
        seconds, output = self._airflow("dags", "test", "dataset_staging", "-c", conf)
        hops = [(tier, float(took), float(predicted)) for tier, took, predicted in COMMITTED.findall(output)]
        if len(hops) != 2:
            raise RuntimeError(f"dataset_staging of {version}: {len(hops)} committed hops in its log, not 2")
        return seconds, hops

    def _publish(self, name: str, files: int, size: int) -> None:
        from pipelines.datasets.staging import publish_directory
        from pipelines.storage.tier import open_tier

        src = self.home / "src" / name
        write_files(src, files, size, name="f{:05d}.bin")
        obj = open_tier(self.config, "object", self.creds.storage_options())
        publish_directory(str(src), obj, "fidelity", name)

    def shape(self, obj: Tier, local: Tier, run_id: str) -> tuple[float, float]:
        from pipelines.model.calibration import TERMS, Fit, store_fit

        if not self.migrated:
            self._airflow("db", "migrate")
            self.migrated = True
        self.runs += 1
        # This run's calibration is what the DAG plans with (the object tier's and the local one's).
        for name, tier in (("object", obj), ("pfs", local), ("nvme", local)):
            store_fit(self.config, name, Fit(tier.config.bandwidth, dict.fromkeys(TERMS, 0.0), 1, []), apply=True)
        tiny, big = f"tiny{self.runs}-{run_id}", f"big{self.runs}-{run_id}"
        self._publish(tiny, 1, 4096)
        self._publish(big, self.FILES, self.SIZE)
        fixed, _ = self._stage(tiny)
        measured, hops = self._stage(big)
        for staged in ("pfs", "nvme", "src"):  # this run's copies: disk for the next
            shutil.rmtree(self.home / staged, ignore_errors=True)
        print(
            f"   dataset_staging: fixed cost {fixed:.1f} s (one-file run); hops as the DAG planned them: "
            + ", ".join(f"to {tier} {took:.2f} s, predicted {predicted:.2f} s" for tier, took, predicted in hops),
            flush=True,
        )
        return fixed + sum(predicted for _, _, predicted in hops), measured


#: A hop's commit line in the task log: its tier, the slowest shard's seconds and the plan's prediction.
COMMITTED = re.compile(r"committed fidelity/\S+ on (\w+): .*?slowest ([\d.]+) s.*?; predicted ([\d.]+) s")

#: The tiers of the DAG run: the benchmark's SeaweedFS and two local directories.
DAG_TIERS = """
[tierflow]
state_dir = "{home}/state"

[s3_server]
host = "127.0.0.1"
port = {port}
conn_id = "tierflow_s3"

[[tier]]
name = "object"
kind = "object"
url = "s3://{bucket}/dagrun/"
conn_id = "tierflow_s3"
capacity = "50 GB"
[tier.bandwidth]
read = "800 MB/s"
write = "140 MB/s"
latency = "2 ms"
metadata_ops = "3000/s"
max_streams = 32

[[tier]]
name = "pfs"
kind = "pfs"
url = "file://{home}/pfs"
create = true
capacity = "20 GB"
[tier.bandwidth]
read = "850 MB/s"
write = "800 MB/s"
latency = "0.2 ms"
metadata_ops = "20000/s"
max_streams = 16

[[tier]]
name = "nvme"
kind = "nvme"
url = "file://{home}/nvme"
create = true
capacity = "10 GB"
[tier.bandwidth]
read = "850 MB/s"
write = "800 MB/s"
latency = "0.1 ms"
metadata_ops = "20000/s"
max_streams = 16
"""
