"""The Prefect UI in headless Chromium: an export flow run (one run failing) started through its deployment shows
its graph, task runs, subflow runs and artifacts, and the deployment page renders, without console errors.

Screenshots go to $UI_SCREENSHOTS_DIR (default tests/artifacts/ui/). `README_SCREENSHOT=docs/prefect-ui-export.png`
also saves the README's picture (the export flow run's graph and Task Runs tab)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import serve_deployments, stop_process
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from tests.browser import Chromium, ConsoleError, Page, find_chromium
from tests.e2e.conftest import REPO_ROOT
from tests.e2e.test_deployment import wait_for_deployments
from tests.prefect_reading import subflow_runs

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
RUNS = 3
SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS_DIR") or REPO_ROOT / "tests/artifacts/ui")
VIEWPORT = (1440, 900)
README_SIZE = (1280, 800)
README_UI = "v1"
# The Prefect UI's own missing icons (the favicon it never ships, a state icon asked for before the state is
# known) and requests to hosts other than the Prefect server (unreachable offline) are not errors of the page.
# (V1: /favicon.ico, /ico/undefined.svg; V2: /failed.svg and the like, shipped under /v2/ instead)
PREFECT_ICON = re.compile(r"/(favicon\.ico|ico/[\w-]+\.svg|[a-z]+\.svg)$")


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (`apt-get install chromium`; .ci/run installs it when apt-get works)")
    return path


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """The deployments served against the Prefect server, exporting from a fake Neptune server."""
    with FakeNeptune(generate_workspace(runs=RUNS, points=100, files=1)) as fake:
        env = prefect_server.client_env({**fake.env(PROJECT), "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
        log = tmp_path_factory.mktemp("serve-ui") / "serve.log"
        process = serve_deployments(env, log)
        try:
            with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
                wait_for_deployments(["export/neptune3", "load/mlflow", "validate/mlflow"], process, log)
                yield fake
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def export_run(served, tmp_path_factory):
    """An export flow run of the export/neptune3 deployment in which the first run fails (HTTP 400 on a series)."""
    served.faults.update(endpoints="float_series", scripted=[400, 400])  # the shared request, then one series alone
    out = tmp_path_factory.mktemp("ui-export")
    parameters = {
        "projects": [PROJECT],
        "workers": 1,
        "paths": {"data_path": str(out / "data"), "files_path": str(out / "files")},
    }
    flow_run = run_deployment("export/neptune3", parameters=parameters, timeout=300)
    served.faults.update(endpoints=None, scripted=[])
    assert flow_run.state.is_final(), flow_run.state
    return flow_run


@pytest.fixture(scope="module")
def target_runs(export_run, tmp_path_factory) -> dict:
    """A load/mlflow flow run (it validates too) and a validate/mlflow flow run of the export, into a SQLite MLflow."""
    paths = export_run.parameters["paths"]
    reports = tmp_path_factory.mktemp("ui-reports")
    options = {
        "target": "mlflow",
        "mlflow_tracking_uri": f"sqlite:///{reports / 'mlflow.db'}",
        "data_path": paths["data_path"],
        "files_path": paths["files_path"],
        "report_path": str(reports),
    }
    runs = {
        name: run_deployment(f"{name}/mlflow", parameters={"options": options}, timeout=300)
        for name in ("load", "validate")
    }
    assert all(run.state.is_final() for run in runs.values()), {name: run.state for name, run in runs.items()}
    return runs


@pytest.fixture(scope="module")
def browser_page(chromium_path) -> Page:
    with Chromium(chromium_path, *VIEWPORT) as browser:
        yield browser.page()


@pytest.fixture(scope="module", params=["v1", "v2"])
def ui(request, browser_page, prefect_server) -> UI:
    """The Prefect UI in one browser tab: V1 (where /runs/... links lead) and V2 (where the UI's home page leads)."""
    return UI(browser_page, prefect_server.api_url.removesuffix("/api"), request.param)


class UI:
    """One version of the Prefect UI, served by the Prefect server at base_url, in a browser tab."""

    def __init__(self, page: Page, base_url: str, version: str) -> None:
        self.page, self.base_url, self.version = page, base_url, version
        self.root = base_url if version == "v1" else f"{base_url}/{version}"

    def open(self, path: str, expected: list[str]) -> str:
        """Open a UI page and wait until it shows every expected text; the page's text."""
        self.page.open(self.root + path)
        self.page.wait_for_text(expected)
        self.page.wait_until_idle()
        return self.page.text()

    def tab(self, name: str, expected: list[str], timeout: float = 30.0) -> str:
        """Switch the open page to a tab and wait for its expected texts."""
        self.page.select_tab("li.p-tab, [role=tab]", name)
        return self.page.wait_for_text(expected, timeout=timeout)

    def errors(self) -> list[ConsoleError]:
        """The open page's console errors and exceptions, without the UI's missing icons and offline third parties."""
        return [
            error
            for error in self.page.errors
            if not (
                error.source == "log"
                and (
                    PREFECT_ICON.match(error.url.removeprefix(self.base_url)) or not error.url.startswith(self.base_url)
                )
            )
        ]

    def screenshot(self, name: str) -> Path:
        """A PNG of the page once it has loaded what it shows (or waited 30 s for it)."""
        self.page.wait_until_idle()
        return self.page.screenshot(SCREENSHOTS / f"{self.version}-{name}.png")


def task_run_names(flow_run_id) -> list[str]:
    """Names of the flow run's own task runs (not the placeholders of its subflows)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )
    return sorted(run.name for run in runs if run.state.state_details.child_flow_run_id is None)


def artifact_keys(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return sorted({artifact.key for artifact in artifacts})


def assert_no_console_errors(ui: UI) -> None:
    """The open page, once it has fetched what it shows, reported no errors."""
    assert ui.page.wait_until_idle(), (
        f"{ui.page.url}: requests still running: {list(ui.page.requests_in_flight.values())}"
    )
    errors = ui.errors()
    assert not errors, f"{ui.page.url}: console errors:\n" + "\n".join(map(str, errors))


def graph_size(ui: UI) -> list[int]:
    """Width and height of the flow run graph's canvas ([0, 0] when there is none)."""
    script = "(() => { const c = document.querySelector('canvas'); return c ? [c.width, c.height] : [0, 0]; })()"
    return list(ui.page.evaluate(script))


def test_flow_run_page_shows_the_graph(ui, export_run):
    ui.open(f"/runs/flow-run/{export_run.id}", [export_run.name, "Task Runs", "Subflow Runs", "Artifacts"])
    ui.screenshot("export-flow-run-graph")
    width, height = graph_size(ui)
    assert width > 300 and height > 100, (width, height)
    assert_no_console_errors(ui)


def test_task_runs_tab_lists_the_task_runs(ui, export_run):
    names = task_run_names(export_run.id)
    assert {name.rsplit("-", 1)[0] for name in names} >= {"preflight", "discover-and-plan", "write-export-summary"}
    ui.open(f"/runs/flow-run/{export_run.id}", [export_run.name, "Task Runs"])
    try:
        ui.tab("Task Runs", [f"{len(names)} Task run"])
        ui.page.wait_for_text(names, timeout=30)
    finally:
        ui.screenshot("export-task-runs")
        readme_screenshot(ui)
    assert_no_console_errors(ui)


def readme_screenshot(ui: UI) -> None:
    """With README_SCREENSHOT set: the open page at the README's size, saved there."""
    target = os.environ.get("README_SCREENSHOT")
    if target and ui.version == README_UI:
        ui.page.set_viewport(*README_SIZE)
        try:
            ui.page.screenshot(REPO_ROOT / target)  # an absolute target stays as it is
        finally:
            ui.page.set_viewport(*VIEWPORT)


def test_subflow_runs_tab_lists_the_chunks(ui, export_run):
    chunks = subflow_runs(export_run.id)
    assert chunks
    ui.open(f"/runs/flow-run/{export_run.id}", [export_run.name, "Subflow Runs"])
    try:
        ui.tab("Subflow Runs", [chunk.name for chunk in chunks])
    finally:
        ui.screenshot("export-subflow-runs")
    assert_no_console_errors(ui)


def test_chunk_page_lists_its_per_run_tasks(ui, export_run):
    chunk = subflow_runs(export_run.id)[0]
    names = task_run_names(chunk.id)
    assert len(names) >= RUNS
    ui.open(f"/runs/flow-run/{chunk.id}", [chunk.name, "Task Runs"])
    try:
        ui.tab("Task Runs", names)
    finally:
        ui.screenshot("export-chunk-task-runs")
    assert_no_console_errors(ui)


def test_artifacts_tab_shows_the_artifact_keys(ui, export_run):
    keys = artifact_keys(export_run.id)
    assert {"export-progress", "export-summary", "export-report"} <= set(keys)
    ui.open(f"/runs/flow-run/{export_run.id}", [export_run.name, "Artifacts"])
    try:
        ui.tab("Artifacts", keys)
    finally:
        ui.screenshot("export-artifacts")
    assert_no_console_errors(ui)


def test_deployment_page_shows_its_flow_run(ui, export_run):
    ui.open(f"/deployments/deployment/{export_run.deployment_id}", ["neptune3", "export", export_run.name])
    ui.screenshot("deployment")
    assert_no_console_errors(ui)


@pytest.mark.parametrize("flow", ["load", "validate"])
def test_load_and_validate_flow_runs_render_their_graph_and_every_tab(ui, target_runs, flow):
    flow_run = target_runs[flow]
    tabs = {"Task Runs": task_run_names(flow_run.id), "Subflow Runs": [c.name for c in subflow_runs(flow_run.id)]}
    tabs["Artifacts"] = artifact_keys(flow_run.id)
    assert all(tabs.values()), tabs
    ui.open(f"/runs/flow-run/{flow_run.id}", [flow_run.name, *tabs])
    assert graph_size(ui)[0] > 300
    for tab, expected in tabs.items():
        try:
            ui.tab(tab, expected)
        finally:
            ui.screenshot(f"{flow}-{tab.lower().replace(' ', '-')}")
        assert_no_console_errors(ui)
