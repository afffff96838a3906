"""Soak: mixed DAG runs through the real scheduler for 20 minutes, with the S3 server restarted and tasks killed.

The local stack (``tierflow airflow up``: api-server, scheduler, dag-processor, triggerer,
LocalExecutor, the embedded SeaweedFS) runs in its own state directory. For ``TIERFLOW_SOAK_MINUTES``
(default 20) the soak keeps it busy as a platform would:

* several dataset versions published and staged at once (object → PFS → NVMe);
* ``dataset_preparation`` of the raw corpus;
* a simulated trainer writing a DCP-like checkpoint to NVMe every 20 s, and ``checkpoint_lifecycle``
  (promotion and retention) triggered every minute;

and faults at random every few minutes (seeded; the seed is printed): the S3 server stopped and
started again, or a running task's process killed with SIGKILL. Then it waits for every run to
finish, triggers one last lifecycle and staging of each version (the reruns that must finish),
and the independent checker of the fault suite (its own listing and xxh3) checks every tier: every
commit marker's manifest verifies, no temporary and no unfinished multipart upload is left, and
object storage holds the newest checkpoint the trainer finished before the last lifecycle run.

Not in ``make test`` and not in ``make bench``'s default set: ``tierflow bench soak``. There is no
reference tool, so it returns no comparison; it prints its report (runs by DAG and state, retries,
bytes verified, faults survived) and fails loudly if the checker finds anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.core.config import DEFAULT_CONFIG, load_config
from pipelines.devtools.airflow_env import checkout_dir
from pipelines.devtools.bench import BenchContext, Comparison, write_files
from pipelines.devtools.s3server import free_port

DESCRIPTION = "20 min of mixed DAG runs under the scheduler, S3 restarts and task kills; the checker at the end"
#: Not run by ``make bench`` unless named (it takes 20 minutes and the whole machine).
IN_ALL = False
MINUTES = float(os.environ.get("TIERFLOW_SOAK_MINUTES", "20"))
SEED = int(os.environ.get("TIERFLOW_SOAK_SEED", str(int(time.time()))))
VERSIONS = ("s1", "s2", "s3")
TRAINER_EVERY_S = 20.0
LIFECYCLE_EVERY_S = 60.0
#: Seconds between faults: uniform in this range (``TIERFLOW_SOAK_FAULTS_EVERY=min,max``).
FAULT_EVERY_S = tuple(float(x) for x in os.environ.get("TIERFLOW_SOAK_FAULTS_EVERY", "120,240").split(","))
RUN = "soak-run"


class Stack:
    """The local stack in its own state directory, driven through the REST API as a user's scripts would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        config = home / "tiers.toml"
        text = re.sub(r"(?m)^port = \d+$", f"port = {free_port()}", DEFAULT_CONFIG.read_text(), count=1)
        config.write_text(text)
        keep = ("AIRFLOW", "TIERFLOW", "AWS_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        self.env |= {"TIERFLOW_HOME": str(home / "state"), "TIERFLOW_CONFIG": str(config)}
        self.env |= {"TIERFLOW_CHECKOUT": str(checkout_dir())}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        previous = os.environ.get("TIERFLOW_HOME")
        os.environ["TIERFLOW_HOME"] = self.env["TIERFLOW_HOME"]
        try:
            self.config = load_config(config)
        finally:
            if previous is None:
                os.environ.pop("TIERFLOW_HOME", None)
            else:
                os.environ["TIERFLOW_HOME"] = previous

    def cli(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=checkout_dir(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"tierflow {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def up(self) -> None:
        self.cli("airflow", "up", "--port", str(self.port))
        home = Path(self.env["TIERFLOW_HOME"]) / "airflow"
        password = json.loads((home / "simple_auth_manager_passwords.json").read_text())["admin"]
        self.token = self.api("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def down(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "airflow", "down"], env=self.env, capture_output=True, timeout=120
        )

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def _all(self, path: str, field: str) -> list[dict[str, Any]]:
        """Every item of a paged list (the API returns at most 100 a page)."""
        items: list[dict[str, Any]] = []
        while True:
            sep = "&" if "?" in path else "?"
            page = self.api("GET", f"{path}{sep}limit=100&offset={len(items)}")
            items += page[field]
            if not page[field] or len(items) >= page["total_entries"]:
                return items

    def runs(self) -> list[dict[str, Any]]:
        return self._all("/api/v2/dags/~/dagRuns", "dag_runs")

    def task_instances(self, state: str | None = None) -> list[dict[str, Any]]:
        query = f"?state={state}" if state else ""
        return self._all(f"/api/v2/dags/~/dagRuns/~/taskInstances{query}", "task_instances")


def _trainer(root: Path, stop: threading.Event, finished: list[int]) -> None:
    """A training job: a checkpoint (shards, metrics, then .metadata) every TRAINER_EVERY_S."""
    from pipelines.devtools.corpus import write_checkpoint

    step = 0
    while not stop.wait(TRAINER_EVERY_S):
        step += 100
        write_checkpoint(root, RUN, step, shards=4, shard_bytes=2 * 2**20, metrics={"loss": 10.0 / step})
        finished.append(step)


def _fault(stack: Stack, rng: random.Random, log: list[str]) -> None:
    """Restart the S3 server or SIGKILL a running task's process, chosen at random.

    A kill waits up to a minute for a task to be running; if none is, the server is restarted instead.
    """
    running: list[tuple[dict[str, Any], int]] = []
    if rng.random() < 0.5:
        deadline = time.monotonic() + 60
        while not running and time.monotonic() < deadline:
            running = [(ti, pid) for ti in stack.task_instances("running") if (pid := _task_pid(str(ti["id"])))]
            if not running:
                time.sleep(1)
    if running:
        victim, pid = rng.choice(running)
        try:
            os.kill(pid, signal.SIGKILL)
            log.append(f"killed {victim['dag_id']}.{victim['task_id']} (pid {pid})")
        except ProcessLookupError:
            log.append(f"{victim['dag_id']}.{victim['task_id']} had finished before the kill")
        return
    stack.cli("s3", "stop")
    time.sleep(rng.uniform(2, 10))
    stack.cli("s3", "serve")
    log.append("restarted the S3 server")


def _task_pid(ti_id: str) -> int | None:
    """The process running a task instance: Airflow's task runner titles itself ``airflow worker -- <ti id>``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"airflow worker -- {ti_id}" in title:
            return int(proc.name)
    return None


def _wait_idle(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [r for r in stack.runs() if r["state"] in ("queued", "running")]:
            return
        time.sleep(5)
    raise RuntimeError(f"runs still active after {timeout:.0f} s")


def _checker() -> Any:
    path = checkout_dir() / "tests" / "faults" / "checker.py"
    spec = importlib.util.spec_from_file_location("tierflow_fault_checker", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _check(stack: Stack, trained: list[int]) -> tuple[Any, list[str]]:
    """The fault suite's checker over every tier, and whether the newest finished checkpoint reached object storage."""
    checker = _checker()
    creds = json.loads((Path(stack.env["TIERFLOW_HOME"]) / "s3" / "credentials.json").read_text())
    server = stack.config.s3_server
    assert server is not None
    obj = stack.config.primary("object")
    bucket, _, root = obj.url.removeprefix("s3://").strip("/").partition("/")
    s3 = checker.S3Store(
        f"http://{server.host}:{server.port}", creds["access_key"], creds["secret_key"], server.region, bucket, root
    )
    result = checker.check_markers(s3)
    problems = [f"unfinished multipart upload: {key}" for key in s3.pending_uploads()]
    for kind in ("pfs", "nvme"):
        local = stack.config.primary(kind).root
        result.add(checker.check_markers(checker.LocalStore(local)))
        problems += [f"temporary left: {p}" for p in checker.temporaries(local)]
    committed = {
        int(m.group(1))
        for key in checker.markers(s3, "checkpoints")
        if (m := re.search(rf"checkpoints/{RUN}/step_(\d+)/", key))
    }
    if trained and max(trained) not in committed:
        problems.append(f"step {max(trained)} finished before the last lifecycle run but is not on object storage")
    return result, problems + list(result.problems)


def run(ctx: BenchContext) -> list[Comparison]:
    rng = random.Random(SEED)
    print(f"   soak: {MINUTES:g} min, seed {SEED} (TIERFLOW_SOAK_SEED to repeat)", flush=True)
    stack = Stack(ctx.workdir)
    faults: list[str] = []
    trained: list[int] = []
    stop = threading.Event()
    started = time.monotonic()
    try:
        stack.up()
        for i, version in enumerate(VERSIONS):
            write_files(ctx.workdir / "corpus" / version, 16 + 8 * i, 4 * 2**20)
            stack.cli(
                "datasets", "publish", str(ctx.workdir / "corpus" / version), "--name", "soak", "--version", version
            )
        nvme = Path(stack.config.primary("nvme").root)
        trainer = threading.Thread(target=_trainer, args=(nvme, stop, trained), daemon=True)
        trainer.start()
        for version in VERSIONS:
            stack.trigger("dataset_staging", {"dataset": "soak", "version": version})
        stack.trigger("dataset_preparation", {"version": "soak-prepared"})
        end = started + MINUTES * 60
        next_lifecycle = time.monotonic() + LIFECYCLE_EVERY_S
        next_fault = time.monotonic() + rng.uniform(*FAULT_EVERY_S)
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_lifecycle:
                stack.trigger("checkpoint_lifecycle", {"run": RUN})
                next_lifecycle = now + LIFECYCLE_EVERY_S
            if now >= next_fault:
                _fault(stack, rng, faults)
                print(f"   {(now - started) / 60:5.1f} min: {faults[-1]}", flush=True)
                next_fault = now + rng.uniform(*FAULT_EVERY_S)
            time.sleep(1)
        stop.set()
        trainer.join()
        _wait_idle(stack, 900)
        # The reruns that must finish after every fault: one more lifecycle, each version staged again.
        finished_steps = list(trained)
        reruns = [stack.trigger("checkpoint_lifecycle", {"run": RUN})]
        reruns += [stack.trigger("dataset_staging", {"dataset": "soak", "version": v}) for v in VERSIONS]
        _wait_idle(stack, 900)
        result, problems = _check(stack, finished_steps)
        states = {r["dag_run_id"]: r["state"] for r in stack.runs()}
        problems += [
            f"the rerun {run_id} ended {states.get(run_id)}" for run_id in reruns if states.get(run_id) != "success"
        ]
        _report(stack, result, problems, faults, time.monotonic() - started)
    finally:
        stop.set()
        stack.down()
        logs = Path(stack.env["TIERFLOW_HOME"]) / "airflow" / "logs"
        if logs.is_dir():  # the task logs stay for reading, beside the bench results
            kept = ctx.config.state_dir / "bench-results" / f"soak-logs-{SEED}"
            shutil.copytree(logs, kept, dirs_exist_ok=True)
            print(f"   task logs: {kept}")
    if problems:
        raise AssertionError(f"soak: {len(problems)} problem(s): " + "; ".join(problems[:10]))
    return []


def _report(stack: Stack, result: Any, problems: list[str], faults: list[str], seconds: float) -> None:
    by_state: dict[tuple[str, str], int] = {}
    for r in stack.runs():
        by_state[(r["dag_id"], r["state"])] = by_state.get((r["dag_id"], r["state"]), 0) + 1
    tis = stack.task_instances()
    retries = sum(max(0, int(ti.get("try_number") or 1) - 1) for ti in tis)
    print(f"   soak finished in {seconds / 60:.1f} min")
    for (dag_id, state), n in sorted(by_state.items()):
        print(f"   runs  {dag_id:<24} {state:<8} {n}")
    print(f"   tasks {len(tis)}, retries {retries}")
    kills = sum(f.startswith("killed") for f in faults)
    restarts = sum(f.startswith("restarted") for f in faults)
    print(f"   faults survived: {kills} task kills, {restarts} S3 restarts ({len(faults)} in all)")
    print(f"   checker: {result.markers} commit markers, {result.objects} objects, {result.bytes:,} bytes verified")
    print(f"   problems: {len(problems)}" + "".join(f"\n     {p}" for p in problems[:20]))
