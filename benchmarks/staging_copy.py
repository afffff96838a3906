"""`tierflow copy` against s5cmd, rclone and s3fs defaults on the same SeaweedFS server, and against `cp -r`.

Shapes: 1 x 1 GiB and 2,000 x 256 KiB, uploaded and downloaded; the same two locally (local ->
local). Every tool runs as a command (process start included, as a user would run it), on the
same files, interleaved run by run in an order that rotates (no tool always follows the heavy
phase before it); each run writes to a fresh destination so nothing is skipped.
Peak RSS comes from GNU time. Targets (issue 3): >= 1.0x s5cmd on the four S3 cases, >= 0.9x cp
locally, peak RSS <= 512 MiB for the 1 GiB object.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from pipelines.devtools.bench import BenchContext, Comparison, write_files

DESCRIPTION = "tierflow copy vs s5cmd / rclone / s3fs / cp: 1 x 1 GiB and 2,000 x 256 KiB, MB/s"
BUCKET = "tierflow-bench"
SHAPES = {"1 x 1 GiB": (1, 2**30), "2000 x 256 KiB": (2000, 256 * 2**10)}

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


def run(ctx: BenchContext) -> list[Comparison]:
    creds = ctx.s3(BUCKET)
    env = ctx.s3_env() | {"TIERFLOW_CONFIG": str(ctx.workdir / "tiers.toml")}
    default = ctx.config.source
    ctx.workdir.joinpath("tiers.toml").write_text(Path(default).read_text())
    tierflow = [str(Path(sys.executable).with_name("tierflow")), "copy", "--endpoint-url", creds.endpoint_url]
    s5cmd, rclone = ctx.tool("s5cmd"), ctx.tool("rclone")
    s3fs_cmd = [sys.executable, "-c", S3FS_SCRIPT]
    results: list[Comparison] = []
    for shape, (count, size) in SHAPES.items():
        src = ctx.workdir / f"src-{count}"
        write_files(src, count, size)
        total = count * size
        up: dict[str, list[float]] = {}
        down: dict[str, list[float]] = {}
        local: dict[str, list[float]] = {}
        rss: dict[str, float] = {}
        seed = f"s3://{BUCKET}/seed-{count}"
        subprocess.run([s5cmd, "cp", f"{src}/*", f"{seed}/"], env=env, check=True, capture_output=True)
        for round_ in range(ctx.runs):
            run_id = uuid.uuid4().hex[:8]
            uploads = {
                "tierflow": [*tierflow, str(src), f"s3://{BUCKET}/{run_id}/tf"],
                "s5cmd": [s5cmd, "cp", f"{src}/*", f"s3://{BUCKET}/{run_id}/s5/"],
                "rclone": [rclone, "copy", str(src), f"tierflow:{BUCKET}/{run_id}/rc"],
                "s3fs": [*s3fs_cmd, str(src), f"s3://{BUCKET}/{run_id}/fs"],
            }
            for tool, args in _rotated(uploads, round_):
                seconds, peak = _timed(ctx, args, env)
                up.setdefault(tool, []).append(total / seconds / 1e6)
                rss[f"{tool} up"] = max(rss.get(f"{tool} up", 0), peak)
            downloads = {
                "tierflow": [*tierflow, seed, str(ctx.workdir / run_id / "tf")],
                "s5cmd": [s5cmd, "cp", f"{seed}/*", f"{ctx.workdir / run_id / 's5'}/"],
                "rclone": [rclone, "copy", f"tierflow:{BUCKET}/seed-{count}", str(ctx.workdir / run_id / "rc")],
                "s3fs": [*s3fs_cmd, seed, str(ctx.workdir / run_id / "fs")],
            }
            for tool, args in _rotated(downloads, round_):
                seconds, peak = _timed(ctx, args, env)
                down.setdefault(tool, []).append(total / seconds / 1e6)
                rss[f"{tool} down"] = max(rss.get(f"{tool} down", 0), peak)
            copies = {
                "tierflow": [*tierflow, str(src), str(ctx.workdir / run_id / "ltf")],
                "cp": ["cp", "-r", str(src), str(ctx.workdir / run_id / "lcp")],
            }
            for tool, args in _rotated(copies, round_):
                seconds, peak = _timed(ctx, args, env)
                local.setdefault(tool, []).append(total / seconds / 1e6)
            shutil.rmtree(ctx.workdir / run_id)
        for direction, data in (("up", up), ("down", down)):
            for ref in ("s5cmd", "rclone", "s3fs"):
                notes = {
                    "tierflow RSS MiB": round(rss[f"tierflow {direction}"]),
                    f"{ref} RSS MiB": round(rss[f"{ref} {direction}"]),
                }
                results.append(
                    Comparison(f"{direction} {shape}", "MB/s", data["tierflow"], data[ref], ref, notes=notes)
                )
        results.append(Comparison(f"local {shape}", "MB/s", local["tierflow"], local["cp"], "cp -r"))
        shutil.rmtree(src)
    return results
