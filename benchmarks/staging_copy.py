"""`tierflow copy` against s5cmd, rclone (and s3fs defaults) on the same SeaweedFS server, and against `cp -r`.

Shapes: one 1 MiB object (start-up: seconds, lower is better), 1 x 1 GiB, 1 x 8 GiB, 2,000 x
256 KiB and 20,000 x 16 KiB (the small-record regime of training data), each uploaded and
downloaded; 1 GiB and 20,000 x 16 KiB locally (local -> local, against ``cp -r``); and a rerun of
each upload, which must skip everything, against ``s5cmd sync`` and a second ``rclone copy``.
Every tool runs as a command (process start included, as a user runs it), on the same files,
interleaved run by run in an order that rotates (no tool always follows the heavy phase before
it); each run writes to a fresh destination so nothing is skipped but in the reruns. Peak RSS
comes from GNU time. ``TIERFLOW_BENCH_SHAPES`` picks shapes by name (comma-separated, e.g.
``"1 x 1 MiB,1 x 1 GiB"``); the 8 GiB shape needs ~40 GB of free disk and ~15 minutes.
Targets (issue 12): >= 1.1x s5cmd on every S3 case, >= 0.95x ``cp -r`` locally, a rerun faster
than ``s5cmd sync``, peak RSS <= 256 MiB, a one-object copy <= 0.2 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison, write_files

DESCRIPTION = (
    "tierflow copy vs s5cmd / rclone / cp: 1 MiB (start-up), 1 and 8 GiB, 2,000 x 256 KiB, 20,000 x 16 KiB; reruns"
)
BUCKET = "tierflow-bench"


@dataclass(frozen=True)
class Shape:
    """One shape of data: how many files of what size, and what is measured on it."""

    name: str
    count: int
    size: int
    s3fs: bool = False  # s3fs defaults too (slow: only where they finish in reasonable time)
    local: bool = False  # local -> local against cp -r
    rerun: bool = False  # a second upload that must skip everything
    seconds: bool = False  # report seconds per command (start-up), not MB/s


SHAPES = [
    Shape("1 x 1 MiB", 1, 2**20, seconds=True),
    Shape("1 x 1 GiB", 1, 2**30, s3fs=True, local=True, rerun=True),
    Shape("2000 x 256 KiB", 2000, 256 * 2**10, s3fs=True, rerun=True),
    Shape("20000 x 16 KiB", 20000, 16 * 2**10, local=True, rerun=True),
    Shape("1 x 8 GiB", 1, 8 * 2**30),
]

S3FS_SCRIPT = """
import sys, s3fs
fs = s3fs.S3FileSystem()
src, dst = sys.argv[1], sys.argv[2]
if src.startswith("s3://"):
    fs.get(src.rstrip("/") + "/", dst.rstrip("/") + "/", recursive=True)
else:
    fs.put(src.rstrip("/") + "/", dst.rstrip("/") + "/", recursive=True)
"""


def _timed(ctx: BenchContext, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one command, from GNU time."""
    stats = ctx.workdir / f"time-{uuid.uuid4().hex[:6]}"
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed: {(result.stderr or result.stdout).strip()[-800:]}")
    seconds, kib = stats.read_text().split()[-2:]
    stats.unlink()
    return max(float(seconds), 0.01), int(kib) / 1024


def _rotated(commands: dict[str, list[str]], run: int) -> list[tuple[str, list[str]]]:
    """The commands in an order that rotates run by run, so no tool always goes first after a heavy phase."""
    items = list(commands.items())
    shift = run % len(items)
    return items[shift:] + items[:shift]


def _chosen() -> list[Shape]:
    wanted = os.environ.get("TIERFLOW_BENCH_SHAPES")
    if not wanted:
        return SHAPES
    names = {w.strip() for w in wanted.split(",")}
    unknown = names - {s.name for s in SHAPES}
    if unknown:
        raise ValueError(f"TIERFLOW_BENCH_SHAPES: unknown {sorted(unknown)} (known: {[s.name for s in SHAPES]})")
    return [s for s in SHAPES if s.name in names]


class _Measured:
    """Per-tool values and peak RSS of one phase (upload, download, local, rerun) of one shape."""

    def __init__(self, ctx: BenchContext, env: dict[str, str], shape: Shape) -> None:
        self.ctx, self.env, self.shape = ctx, env, shape
        self.values: dict[str, dict[str, list[float]]] = {}
        self.rss: dict[str, dict[str, float]] = {}

    def run(self, phase: str, commands: dict[str, list[str]], round_: int, rate: bool = True) -> None:
        for tool, args in _rotated(commands, round_):
            seconds, peak = _timed(self.ctx, args, self.env)
            value = seconds if self.shape.seconds or not rate else self.shape.count * self.shape.size / seconds / 1e6
            self.values.setdefault(phase, {}).setdefault(tool, []).append(value)
            peaks = self.rss.setdefault(phase, {})
            peaks[tool] = max(peaks.get(tool, 0.0), peak)

    def compare(self, phase: str, label: str, refs: list[str], rate: bool = True) -> list[Comparison]:
        data, peaks = self.values.get(phase, {}), self.rss.get(phase, {})
        per_second = rate and not self.shape.seconds
        out = []
        for ref in refs:
            if ref not in data:
                continue
            notes = {"tierflow RSS MiB": round(peaks["tierflow"]), f"{ref} RSS MiB": round(peaks[ref])}
            out.append(
                Comparison(
                    label,
                    "MB/s" if per_second else "s",
                    data["tierflow"],
                    data[ref],
                    ref,
                    higher_is_better=per_second,
                    notes=notes,
                )
            )
        return out


def run(ctx: BenchContext) -> list[Comparison]:
    creds = ctx.s3(BUCKET)
    env = ctx.s3_env() | {"TIERFLOW_CONFIG": str(ctx.workdir / "tiers.toml")}
    ctx.workdir.joinpath("tiers.toml").write_text(Path(ctx.config.source).read_text())
    tierflow = [str(Path(sys.executable).with_name("tierflow")), "copy", "--endpoint-url", creds.endpoint_url]
    s5cmd, rclone = ctx.tool("s5cmd"), ctx.tool("rclone")
    s3fs_cmd = [sys.executable, "-c", S3FS_SCRIPT]
    results: list[Comparison] = []
    for shape in _chosen():
        src = ctx.workdir / f"src-{shape.count}-{shape.size}"
        write_files(src, shape.count, shape.size)
        seed_name = f"seed-{shape.count}-{shape.size}"
        seed = f"s3://{BUCKET}/{seed_name}"
        subprocess.run([s5cmd, "cp", f"{src}/*", f"{seed}/"], env=env, check=True, capture_output=True)
        measured = _Measured(ctx, env, shape)
        runs = max(ctx.runs, 5) if shape.seconds else ctx.runs  # start-up is short and noisy: more runs
        for round_ in range(runs):
            run_id = uuid.uuid4().hex[:8]
            up_to = {t: f"s3://{BUCKET}/{run_id}/{t}" for t in ("tierflow", "s5cmd", "rclone", "s3fs")}
            uploads = {
                "tierflow": [*tierflow, str(src), up_to["tierflow"]],
                "s5cmd": [s5cmd, "cp", f"{src}/*", f"{up_to['s5cmd']}/"],
                "rclone": [rclone, "copy", str(src), f"tierflow:{up_to['rclone'].removeprefix('s3://')}"],
            }
            if shape.s3fs:
                uploads["s3fs"] = [*s3fs_cmd, str(src), up_to["s3fs"]]
            measured.run("up", uploads, round_)
            if shape.rerun:  # everything is there already: the time to find that out
                reruns = {
                    "tierflow": uploads["tierflow"],
                    "s5cmd sync": [s5cmd, "sync", f"{src}/", f"{up_to['s5cmd']}/"],
                    "rclone": uploads["rclone"],
                }
                measured.run("rerun", reruns, round_, rate=False)
            down_to = ctx.workdir / run_id
            downloads = {
                "tierflow": [*tierflow, seed, str(down_to / "tf")],
                "s5cmd": [s5cmd, "cp", f"{seed}/*", f"{down_to / 's5'}/"],
                "rclone": [rclone, "copy", f"tierflow:{BUCKET}/{seed_name}", str(down_to / "rc")],
            }
            if shape.s3fs:
                downloads["s3fs"] = [*s3fs_cmd, seed, str(down_to / "fs")]
            measured.run("down", downloads, round_)
            shutil.rmtree(down_to, ignore_errors=True)  # before the local copies: the disk holds both
            if shape.local:
                down_to.mkdir()
                copies = {
                    "tierflow": [*tierflow, str(src), str(down_to / "ltf")],
                    "cp -r": ["cp", "-r", str(src), str(down_to / "lcp")],
                }
                measured.run("local", copies, round_)
            shutil.rmtree(down_to, ignore_errors=True)
            for target in up_to.values():  # the server's disk holds one round at a time
                subprocess.run([s5cmd, "rm", f"{target}/*"], env=env, capture_output=True, check=False)
        refs = ["s5cmd", "rclone", "s3fs"]
        results += measured.compare("up", f"upload {shape.name}", refs)
        results += measured.compare("down", f"download {shape.name}", refs)
        skipped = f"rerun upload {shape.name} (all skipped)"
        results += measured.compare("rerun", skipped, ["s5cmd sync", "rclone"], rate=False)
        results += measured.compare("local", f"local {shape.name}", ["cp -r"])
        shutil.rmtree(src)
        subprocess.run([s5cmd, "rm", f"{seed}/*"], env=env, capture_output=True, check=False)
    return results
