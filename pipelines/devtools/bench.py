"""The benchmark runner behind ``tierflow bench`` / ``make bench``.

A benchmark is a module ``benchmarks/<name>.py`` with a ``DESCRIPTION`` and a function
``run(ctx: BenchContext) -> list[Comparison]`` (and ``IN_ALL = False`` if it runs only when
named). Each comparison holds per-run numbers for Tierflow
and for a reference tool measured in the same run, on the same machine, interleaved, so the
ratio of medians means something on a shared, noisy machine where absolute numbers do not.

Results are printed as a table and written as JSON under ``<state_dir>/bench-results/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipelines.core.config import TierflowConfig
from pipelines.devtools.airflow_env import checkout_dir
from pipelines.devtools.s3server import EmbeddedS3, S3Credentials, free_port

__all__ = ["BenchContext", "Comparison", "run_benchmarks", "timed", "write_files"]


@dataclass
class Comparison:
    """Tierflow against a reference tool on one measurement, one value per run."""

    measurement: str
    unit: str
    ours: list[float]
    reference: list[float]
    reference_tool: str
    higher_is_better: bool = True
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def ours_median(self) -> float:
        """Median of Tierflow's runs."""
        return statistics.median(self.ours)

    @property
    def reference_median(self) -> float:
        """Median of the reference tool's runs."""
        return statistics.median(self.reference)

    @property
    def ratio(self) -> float:
        """How Tierflow compares: above 1 means better than the reference, whatever the unit's direction."""
        ours, ref = self.ours_median, self.reference_median
        if self.higher_is_better:
            return ours / ref if ref else float("inf")
        return ref / ours if ours else float("inf")


@dataclass
class BenchContext:
    """What a benchmark gets: the config, the number of runs, a scratch directory, an S3 server on demand."""

    config: TierflowConfig
    runs: int
    workdir: Path
    _server: EmbeddedS3 | None = field(default=None, repr=False)
    _creds: S3Credentials | None = field(default=None, repr=False)

    def s3(self, bucket: str = "tierflow-bench") -> S3Credentials:
        """Credentials of a SeaweedFS server of the benchmark's own (started on first use, on a free port)."""
        if self._creds is None:
            self._server = EmbeddedS3(self.workdir / "s3", free_port(), buckets=(bucket,))
            self._creds = self._server.start()
        return self._creds

    def s3_env(self) -> dict[str, str]:
        """Environment for reference clients (s5cmd, rclone) pointed at the benchmark's server."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "RCLONE_"))}
        return clean | self.s3().env()

    def tool(self, name: str) -> str:
        """Path of a reference tool installed beside this interpreter (dev dependency group) or on PATH."""
        found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
        if not found:
            raise FileNotFoundError(f"reference tool {name!r} not found: install the dev group (make install)")
        return found

    def run_tool(self, args: list[str]) -> None:
        """Run a reference tool, raising with its output if it fails."""
        result = subprocess.run(args, env=self.s3_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {result.stderr.strip()[:500]}")

    def close(self) -> None:
        """Stop the server, if one was started."""
        if self._server is not None:
            self._server.stop(grace=2)


def write_files(root: Path, count: int, size: int, name: str = "part-{:05d}.bin") -> None:
    """Write ``count`` files of ``size`` pseudo-random bytes (each one different) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(min(size, 2**24))
    for i in range(count):
        with open(root / name.format(i), "wb") as fh:
            left = size
            while left:
                n = min(left, len(block))
                fh.write(os.urandom(16) + block[16:n] if n > 16 else os.urandom(n))
                left -= n


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tierflow_bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load benchmark {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling) look a module's classes up there
    spec.loader.exec_module(module)
    return module


def available() -> dict[str, Path]:
    """Benchmark name → file, from the checkout's ``benchmarks/``."""
    folder = checkout_dir() / "benchmarks"
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def run_benchmarks(config: TierflowConfig, names: list[str], runs: int = 3, list_only: bool = False) -> int:
    """Run benchmarks (all when ``names`` is empty), print the table, write the JSON; returns the exit status."""
    known = available()
    if list_only:
        for name, path in known.items():
            module = _load(path)
            only = "" if getattr(module, "IN_ALL", True) else " (only when named)"
            print(f"{name:<20} {module.DESCRIPTION}{only}")
        return 0
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"tierflow bench: unknown benchmark(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"runs": runs, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": {}}
    # A benchmark with IN_ALL = False (the soak) runs only when named.
    for name in names or [n for n, path in known.items() if getattr(_load(path), "IN_ALL", True)]:
        module = _load(known[name])
        print(f"== {name}: {module.DESCRIPTION} (median of {runs} runs)", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"tierflow-bench-{name}-") as tmp:
            ctx = BenchContext(config=config, runs=runs, workdir=Path(tmp))
            try:
                comparisons: list[Comparison] = module.run(ctx)
            finally:
                ctx.close()
        for c in comparisons:
            notes = "  ".join(f"{k} {v:g}" for k, v in c.notes.items())
            print(
                f"   {c.measurement:<30} tierflow {c.ours_median:9.1f} {c.unit:<5} "
                f"{c.reference_tool:>10} {c.reference_median:9.1f} {c.unit:<5} ratio {c.ratio:5.2f}  {notes}".rstrip()
            )
        results["benchmarks"][name] = [asdict(c) | {"ratio": c.ratio} for c in comparisons]
    out_dir = config.state_dir / "bench-results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0
