"""`neptune-exporter serve --port P` + `neptune-exporter schedule`: schedules fire with their parameters, export only
what changed, never overlap or run out of order (flows/guard.py); the UI asks its own API; no token in the server;
flow runs read NEPTUNE_PROJECT and refuse relative paths; the served runner still runs what `prefect deploy` moved
to a work pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled

from deployments.server import free_port, stop_process
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from tests.e2e.conftest import REPO_ROOT, cli_command, cli_env, run_cli
from tests.e2e.test_deployment import wait_for_deployments
from tests.prefect_reading import artifacts_by_key

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
RUN_IDS = ["run-00000", "run-00001", "run-00002"]
CHANGED_RUN, CHANGED_SYS_ID, CHANGED_SERIES = "run-00001", "SANDBOX-2", "metrics/m000"
WAIT_SECONDS = 400


@dataclass
class Serving:
    process: subprocess.Popen
    port: int
    env: dict[str, str]  # a client's environment: PREFECT_API_URL of the served server
    cwd: Path  # where `neptune-exporter serve` was started
    log: Path


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeNeptune]:
    with FakeNeptune(generate_workspace(runs=3, points=100, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def serving(fake, tmp_path_factory) -> Iterator[Serving]:
    """`neptune-exporter serve --port P` (its own server and runner) with the token and project in its environment."""
    root, port = tmp_path_factory.mktemp("serve"), free_port()
    cwd = root / "cwd"
    cwd.mkdir()
    env = cli_env(
        {
            **fake.env(PROJECT),
            "WANDB_API_KEY": "wandb-key-for-the-runner-only",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        },
        root / "client-home",
    )
    log = root / "serve.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            cli_command("serve", "--home", str(root / "prefect"), "--port", str(port)),
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: healthy(api_url) or process.poll() is not None, log)
        with temporary_settings({PREFECT_API_URL: api_url}):
            wait_for_deployments(["export/neptune3", "export/neptune2"], process, log)
            yield Serving(process, port, {**env, "PREFECT_API_URL": api_url}, cwd, log)
    finally:
        stop_process(process)


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(api_url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(condition: Callable[[], object], log: Path, timeout: float = WAIT_SECONDS):
    """Poll `condition` every second until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting; serve log: {log.read_text()[-3000:]}"
        time.sleep(1)
    return value


def export_runs(data_path: Path) -> list[FlowRun]:
    """Runs of the export flow writing to `data_path`, in schedule order."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["export"])), limit=200)
    mine = [run for run in runs if (run.parameters.get("paths") or {}).get("data_path") == str(data_path)]
    return sorted(mine, key=lambda run: run.expected_start_time)


def ran(runs: list[FlowRun]) -> list[FlowRun]:
    """The runs that ended Completed and exported (not the Skipped ones)."""
    return [run for run in runs if run.state.is_completed() and run.state.name != "Skipped"]


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as the kernel holds it (/proc/<pid>/environ)."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)


def schedule(serving: Serving, *args: str) -> str:
    result = run_cli(["schedule", *args], serving.env, serving.cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_serve_port_sets_the_ui_api_and_keeps_secrets_out_of_the_server(serving, fake):
    with urllib.request.urlopen(f"http://127.0.0.1:{serving.port}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == f"http://127.0.0.1:{serving.port}/api"
    children = psutil.Process(serving.process.pid).children()  # its own: a flow run the runner forks is the runner's
    server = [p for p in children if p.cmdline()[1:5] == ["-m", "prefect", "server", "start"]]
    runner = [p for p in children if p.cmdline()[1:3] == ["-m", "deployments.serve"]]
    assert len(server) == 1 and len(runner) == 1, [p.cmdline() for p in children]
    server_env, runner_env = environ_of(server[0].pid), environ_of(runner[0].pid)
    assert "NEPTUNE_API_TOKEN" not in server_env and "WANDB_API_KEY" not in server_env
    assert server_env["PREFECT_UI_API_URL"] == f"http://127.0.0.1:{serving.port}/api"
    assert runner_env["NEPTUNE_API_TOKEN"] == fake.api_token  # only the process that runs flows holds it


def test_a_schedule_runs_with_its_parameters_and_the_next_run_exports_only_the_changed_run(serving, fake, tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    shown = schedule(
        serving, "every-20s", "-p", PROJECT, "-d", str(data), "-f", str(files), "--interval", "20", "--workers", "2"
    )
    assert "export/neptune3 · schedule 'every-20s' · every 20 s" in shown and "next runs: " in shown
    listed = schedule(serving, "--list")
    assert "schedule 'every-20s'" in listed and f'"data_path": "{data}"' in listed

    with temporary_settings({PREFECT_API_URL: serving.env["PREFECT_API_URL"]}):
        first = wait_until(lambda: ran(export_runs(data))[:1], serving.log)[0]
        fake.requests.clear()
        changed_at = datetime.now(UTC)
        fake.append_points(PROJECT, CHANGED_RUN, CHANGED_SERIES, list(range(100, 105)), [0.5] * 5)
        second = wait_until(lambda: [r for r in ran(export_runs(data)) if r.start_time > changed_at][:1], serving.log)[
            0
        ]
        fetched = fake.requests.runs_fetched()
        schedule(serving, "every-20s", "--delete")
        summary_rows = artifacts_by_key(second.id)["export-summary"][0].data

    expected = {
        "source": "neptune3",
        "projects": [PROJECT],
        "paths": {"data_path": str(data), "files_path": str(files)},
        "workers": 2,
    }
    for run in (first, second):
        assert {key: run.parameters[key] for key in expected} == expected
        assert run.auto_scheduled and run.state.name == "Completed"
    assert second.expected_start_time > first.expected_start_time
    assert fetched == {CHANGED_SYS_ID}  # the second run read the changed run's data only
    rows = json.loads(summary_rows) if isinstance(summary_rows, str) else summary_rows
    assert (rows[0]["runs_complete"], rows[0]["runs_skipped"], rows[0]["runs_failed"]) == (1, 2, 0)
    manifest = read_manifest(manifest_path(data, PROJECT, CHANGED_RUN))
    assert manifest.is_complete() and manifest.attributes[CHANGED_SERIES]["last_step"] == 104
    assert manifest.attributes[CHANGED_SERIES]["count"] == 105


def test_a_slow_run_and_due_runs_never_overlap_nor_run_out_of_order(serving, fake, tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    fake.faults.update(latency_ms=2000)  # 2 s per request: a run outlasts the 15 s interval, the next ones fall due
    schedule(serving, "slow", "-p", PROJECT, "-d", str(data), "-f", str(files), "--interval", "15", "--workers", "1")
    with temporary_settings({PREFECT_API_URL: serving.env["PREFECT_API_URL"]}):
        wait_until(lambda: any(r.state.name == "Skipped" for r in export_runs(data)), serving.log)
        schedule(serving, "slow", "--delete")  # its planned runs go; runs the serving process took still start
        fake.faults.update(latency_ms=0)
        wait_until(lambda: settled(export_runs(data)), serving.log)
        one_more = create_run(export_runs(data)[0].parameters)  # due now, nothing running: it exports
        wait_until(lambda: settled([read_flow_run(one_more)]), serving.log)
        runs = export_runs(data)

        completed, skipped = ran(runs), [r for r in runs if r.state.name == "Skipped"]
        assert len(completed) >= 2 and skipped and len(completed) + len(skipped) == len(runs)
        for earlier, later in pairwise(completed):  # in schedule order, one after the other
            assert earlier.end_time <= later.start_time
        for run in skipped:  # each was due while another wrote, or after a newer one ran, and says so
            writing = f"is writing to {data} since" in run.state.message
            assert writing or "would run out of order" in run.state.message, run.state.message
            assert not writing or any(c.start_time <= run.start_time <= c.end_time for c in completed)

        overdue = create_run(runs[0].parameters, completed[-1].expected_start_time - timedelta(seconds=30))
        late = wait_until(lambda: settled([read_flow_run(overdue)]), serving.log)[0]
    assert late.state.name == "Skipped" and "would run out of order" in late.state.message
    assert any(
        run.name in late.state.message for run in completed if run.expected_start_time > late.expected_start_time
    )


def settled(runs: list[FlowRun]) -> list[FlowRun] | None:
    """The runs when every one has ended, else None."""
    return runs if runs and all(run.state.is_final() for run in runs) else None


def create_run(parameters: dict, expected: datetime | None = None):
    """A run of export/neptune3 due now, or overdue since `expected`; its id."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("export/neptune3")
        state = Scheduled(scheduled_time=expected or datetime.now(UTC))
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters, state=state).id


def read_deployment(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def read_flow_run(flow_run_id) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_flow_runs_read_neptune_project_of_the_serving_process_and_refuse_relative_paths(serving, tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    with temporary_settings({PREFECT_API_URL: serving.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("export/neptune3")
        relative = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"projects": [PROJECT], "paths": {"data_path": "rel/data", "files_path": str(files)}},
        )
        no_project = client.create_flow_run_from_deployment(
            deployment.id, parameters={"paths": {"data_path": str(data), "files_path": str(files)}, "workers": 2}
        )
        relative, no_project = wait_until(
            lambda: settled([read_flow_run(relative.id), read_flow_run(no_project.id)]), serving.log
        )
    assert relative.state.is_failed()
    assert (
        f"paths.data_path 'rel/data' is relative: this flow run would write to {serving.cwd / 'rel' / 'data'}"
        in relative.state.message
    )
    assert not (serving.cwd / "rel").exists() and not (REPO_ROOT / "rel").exists()
    assert no_project.state.is_completed() and "projects" not in no_project.parameters
    manifests = [read_manifest(manifest_path(data, PROJECT, run_id)) for run_id in RUN_IDS]
    assert all(m is not None and m.is_complete() for m in manifests)


def test_the_serving_process_still_runs_the_deployments_after_prefect_deploy_moved_them_to_a_work_pool(
    serving, tmp_path
):
    """Last: it turns the served deployments into work-pool deployments (what they store: tests/e2e/test_work_pool.py).
    The served runner keeps claiming their runs (it polls by deployment id) and runs them: entrypoints are module
    paths, never `module:function`, which Prefect reads as a file to fetch from deploy-time storage."""
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    for command in (
        ["work-pool", "create", "neptune-exporter", "--type", "process"],
        ["deploy", "--all", "--prefect-file", str(REPO_ROOT / "deployments" / "prefect.yaml")],
    ):
        result = subprocess.run(
            prefect + command, env=serving.env, cwd=tmp_path, capture_output=True, text=True, timeout=400
        )
        assert result.returncode == 0, result.stdout + result.stderr
    data, files = tmp_path / "data", tmp_path / "files"
    with temporary_settings({PREFECT_API_URL: serving.env["PREFECT_API_URL"]}):
        assert read_deployment("export/neptune3").work_pool_name == "neptune-exporter"
        flow_run = create_run({"projects": [PROJECT], "paths": {"data_path": str(data), "files_path": str(files)}})
        (flow_run,) = wait_until(lambda: settled([read_flow_run(flow_run)]), serving.log)
    assert flow_run.state.name == "Completed", (flow_run.state, serving.log.read_text()[-3000:])
    assert all(read_manifest(manifest_path(data, PROJECT, run_id)).is_complete() for run_id in RUN_IDS)
