"""End to end in a real browser: the local stack (`tierflow airflow up`), Debian's Chromium, Playwright.

Logs in, sees every Tierflow DAG and no import errors, triggers ``dataset_staging`` through its
params form, waits for the run to succeed, and reads the storage page inside the Airflow UI
(capacity, the version just staged, the transfers and chart, the what-if; light and dark). Then
opens every DAG's form, triggers those the stack has inputs for, and finds the checkpoints the
lifecycle committed on the storage page. Screenshots go to ``tests/artifacts/`` (ignored by git).

The stack runs in its own state directory, with the API server and the S3 server on free
loopback ports, and is stopped at the end. Chromium is installed with apt-get when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debian import installed

from pipelines.core.config import DEFAULT_CONFIG
from pipelines.devtools.s3server import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
DAGS = sorted(p.stem for p in (REPO / "dags").glob("*.py"))
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when absent (the test setup needs root for that)."""
    return installed("chromium", "chromium")


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"tierflow {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``tierflow airflow up`` on free ports in a fresh state directory, with synthetic/v1 published."""
    home = tmp_path_factory.mktemp("e2e-stack")
    config = home / "tiers.toml"
    config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {free_port()}", DEFAULT_CONFIG.read_text(), count=1))
    # The stack's own environment: none of the test session's Airflow or Tierflow settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TIERFLOW", "AWS_"))}
    env |= {"TIERFLOW_HOME": str(home / "state"), "TIERFLOW_CONFIG": str(config), "TIERFLOW_CHECKOUT": str(REPO)}
    port = free_port()
    try:
        _cli(["airflow", "up", "--port", str(port)], env, timeout=400)  # seeds what every DAG's defaults read
        password = json.loads((home / "state" / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
        yield {"url": f"http://127.0.0.1:{port}", "password": password, "home": home}
    finally:
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "airflow", "down"], env=env, cwd=REPO, capture_output=True
        )
        logs = home / "state" / "airflow" / "logs"
        if logs.is_dir():  # keep the components' output with the screenshots
            shutil.copytree(logs, ARTIFACTS / "airflow-logs", dirs_exist_ok=True)


def _api(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def _finished_run(url: str, token: str, dag_id: str) -> dict[str, Any]:
    """The DAG's latest run once it has finished (or as it stands after RUN_TIMEOUT_S)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runs = _api(f"{url}/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1", token)
        run = runs["dag_runs"][0] if runs["dag_runs"] else {}
        if run.get("state") in ("success", "failed"):
            break
        time.sleep(2)
    return run


@contextlib.contextmanager
def _browser_page(chromium: str) -> Iterator[Any]:
    """A page of headless Chromium, closed at the end; screenshots go to ARTIFACTS."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def _log_in(page: Any, url: str, password: str, screenshot: str | None = None) -> str:
    """Sign in as admin; returns the API token the UI holds."""
    page.goto(f"{url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    if screenshot:
        page.screenshot(path=ARTIFACTS / screenshot)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/", timeout=30_000)
    return str(next(c["value"] for c in page.context.cookies() if c["name"] == "_token"))


def test_ui_trigger_staging_and_read_the_plugin_page(stack: dict[str, Any], chromium: str) -> None:
    from playwright.sync_api import expect

    url = stack["url"]
    with _browser_page(chromium) as page:
        token = _log_in(page, url, stack["password"], screenshot="01-login.png")

        # Every Tierflow DAG is listed; no import errors.
        page.goto(f"{url}/dags")
        for dag_id in DAGS:
            expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "02-dags.png")
        errors = _api(f"{url}/api/v2/importErrors", token)
        assert errors["total_entries"] == 0, errors

        # Trigger dataset_staging through its params form (verify switched on).
        page.goto(f"{url}/dags/dataset_staging")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator("#element_dataset")).to_have_value("synthetic")
        dialog.locator("#element_version").fill("v1")
        dialog.locator("label:has(input[name=element_verify])").click()
        expect(dialog.locator("input[name=element_verify]")).to_be_checked()
        page.screenshot(path=ARTIFACTS / "03-trigger-form.png")
        dialog.get_by_test_id("trigger-dag-submit").click()

        # Wait for the run to finish; it must succeed with the form's values.
        run = _finished_run(url, token, "dataset_staging")
        page.goto(f"{url}/dags/dataset_staging/runs/{run.get('dag_run_id')}")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=ARTIFACTS / "04-run.png")
        assert run.get("state") == "success", run
        assert run["conf"]["verify"] is True and run["conf"]["version"] == "v1"
        tasks = _api(f"{url}/api/v2/dags/dataset_staging/dagRuns/{run['dag_run_id']}/taskInstances", token)
        states = {(t["task_id"], t["map_index"]): t["state"] for t in tasks["task_instances"]}
        assert states[("commit_hop2", -1)] == "success", states

        # The storage page, through the UI's Browse menu: what is where, and the transfers just made.
        page.goto(f"{url}/")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Storage bandwidth").click()
        frame = page.frame_locator("iframe")
        table = frame.locator("table#tiers")
        expect(table).to_be_visible(timeout=30_000)
        rows = table.locator("tr").all_inner_texts()
        assert [r.split("\t")[0] for r in rows[1:]] == ["object", "pfs", "nvme"], rows
        space = frame.locator("table#space tr.place")
        assert [r.split("\t")[0] for r in space.all_inner_texts()] == ["object", "pfs", "nvme"]
        expect(frame.locator("table#space td.used").first).to_be_visible()
        versions = frame.locator("table#versions tr").all_inner_texts()
        assert any(r.split("\t")[:3] == ["nvme", "synthetic", "v1"] for r in versions), versions
        chart = frame.locator("svg#chart")
        expect(chart).to_be_visible()
        assert chart.locator("rect.achieved").count() >= 1  # the staging run's copy tasks were observed
        transfers = frame.locator("table#transfers tr.ok").all_inner_texts()
        assert any("synthetic/v1" in r and run["dag_run_id"] in r for r in transfers), transfers
        expect(frame.locator("div#plan table#plan-hops")).to_be_visible()  # the what-if answers its defaults
        page.screenshot(path=ARTIFACTS / "05-storage-bandwidth.png")
        page.goto(f"{url}/storage-bandwidth/")
        page.screenshot(path=ARTIFACTS / "05-storage-page-light.png", full_page=True)
        page.emulate_media(color_scheme="dark")
        page.reload()
        assert page.locator("html").get_attribute("data-theme") == "dark"
        page.screenshot(path=ARTIFACTS / "05-storage-page-dark.png", full_page=True)


#: DAGs triggered from their forms with the defaults, in order (restore reads what the lifecycle
#: committed); staging is triggered above with a changed form, calibration only opened (it would
#: rewrite the tiers' profiles that the other tests plan with).
TRIGGERED = ("tier_health", "dataset_preparation", "checkpoint_lifecycle", "checkpoint_restore")


def test_every_dag_triggers_from_its_form_with_its_defaults(stack: dict[str, Any], chromium: str) -> None:
    """Each DAG's trigger form opens with its defaults valid (the button enabled); four run to success."""
    from playwright.sync_api import expect

    url = stack["url"]
    with _browser_page(chromium) as page:
        token = _log_in(page, url, stack["password"])
        for dag_id in DAGS:
            page.goto(f"{url}/dags/{dag_id}")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            submit = dialog.get_by_test_id("trigger-dag-submit")
            expect(submit).to_be_enabled(timeout=30_000)
            page.screenshot(path=ARTIFACTS / f"06-form-{dag_id}.png")
            if dag_id not in TRIGGERED:
                page.keyboard.press("Escape")
                expect(dialog).to_be_hidden()
                continue
            submit.click()
            expect(dialog).to_be_hidden(timeout=30_000)
            run = _finished_run(url, token, dag_id)
            assert run.get("state") == "success", (dag_id, run)

        # What the lifecycle committed shows on the storage page, per run and tier.
        page.goto(f"{url}/storage-bandwidth/?refresh=1")
        checkpoints = page.locator("table#checkpoints")
        expect(checkpoints).to_be_visible(timeout=30_000)
        header = checkpoints.locator("tr").first.inner_text().split("\t")
        assert "object" in header, header
        assert checkpoints.locator("td.committed").count() >= 1
        page.screenshot(path=ARTIFACTS / "07-storage-checkpoints.png", full_page=True)


def _post(url: str, token: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def test_a_run_with_a_deadline_carries_an_airflow_deadline(stack: dict[str, Any], chromium: str) -> None:
    """Triggered with ``deadline``, the real scheduler gives the run Airflow's deadline: queued-at + the param."""
    import datetime as dt

    url = stack["url"]
    with _browser_page(chromium) as page:
        token = _log_in(page, url, stack["password"])
    alerts = _api(f"{url}/ui/dags/dataset_staging/deadlineAlerts", token)
    assert [a["name"] for a in alerts["deadline_alerts"]] == ["tierflow"], alerts
    conf = {"dataset": "synthetic", "version": "v1", "deadline": "1h"}
    run = _post(f"{url}/api/v2/dags/dataset_staging/dagRuns", token, {"logical_date": None, "conf": conf})
    found = _api(f"{url}/ui/dags/dataset_staging/dagRuns/{run['dag_run_id']}/deadlines", token)
    (deadline,) = found["deadlines"]
    queued = dt.datetime.fromisoformat(run["queued_at"])
    assert abs((dt.datetime.fromisoformat(deadline["deadline_time"]) - queued).total_seconds() - 3600) < 5
    assert deadline["alert_name"] == "tierflow" and deadline["missed"] is False
    finished = _finished_run(url, token, "dataset_staging")
    assert finished["dag_run_id"] == run["dag_run_id"] and finished["state"] == "success", finished
