"""Prefect tells the truth about served flow runs: final states of flows, chunk subflows and per-run tasks, task-run
names and messages, task inputs the UI renders, no traceback in the logs, live progress and per-run table artifacts.

A real `prefect server start` serves the deployments (`python -m deployments.serve`); the fake Neptune server fails
chosen runs' data requests with HTTP 422 (a terminal error), and a real `mlflow server` is the load target.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import serve_deployments, stop_process
from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import run_part_paths
from tests.e2e.test_deployment import wait_for_deployments
from tests.integration.mlflow_server import start_mlflow_server
from tests.prefect_reading import artifacts_by_key, flow_run_logs, subflow_runs, task_runs

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
RUN_IDS = [f"run-{i:05d}" for i in range(5)]
SYS_IDS = {run_id: f"SANDBOX-{i + 1}" for i, run_id in enumerate(RUN_IDS)}
UI_INPUT_TYPES = {"parameter", "constant", "task_run"}
FAILURE_TEXT = ("HTTP 422", "fix: check the server version and the options")
PER_RUN_VERBS = ("export ", "load ", "validate ")


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=len(RUN_IDS), points=60, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def served(prefect_server, fake, tmp_path_factory):
    """The deployments served against the real server; chunks of 2 runs (3 chunk subflows for 5 runs); flow logs at
    INFO as a user's `serve` has them (this session's quiet default would keep only warnings)."""
    env = prefect_server.client_env(
        {
            **fake.env(PROJECT),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "NEPTUNE_EXPORTER_RUNS_PER_TASK_BATCH": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = serve_deployments(env, log)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            wait_for_deployments(["export/neptune3", "load/mlflow", "validate/mlflow"], process, log)
            yield env
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    url, process = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield url
    finally:
        stop_process(process)


def run_and_wait(name: str, parameters: dict):
    """Run a deployment to its final state, then wait until its logs reached the server (they are shipped in batches)."""
    flow_run = run_deployment(name, parameters=parameters, timeout=600, poll_interval=2)
    assert flow_run.state.is_final(), flow_run.state
    deadline = time.monotonic() + 60
    while not any(ends_the_flow_run(log) for log in flow_run_logs([flow_run.id])):
        assert time.monotonic() < deadline, [log.message for log in flow_run_logs([flow_run.id])]
        time.sleep(1)
    return flow_run


def ends_the_flow_run(log) -> bool:
    """The flow run's own last line (its task runs say "Finished in state" earlier, with a task run id)."""
    return log.task_run_id is None and "Finished in state" in log.message


def export(fake, tmp_path: Path, failing: list[str]):
    fake.faults.update(failing_runs={SYS_IDS[run_id]: 422 for run_id in failing})
    try:
        paths = {"data_path": str(tmp_path / "data"), "files_path": str(tmp_path / "files")}
        return run_and_wait("export/neptune3", {"projects": [PROJECT], "paths": paths, "workers": 2})
    finally:
        fake.faults.update(failing_runs={})


def per_run(runs: list) -> dict[str, object]:
    """Per-run task runs by the run they name (`export workspace/sandbox/run-00001` → run-00001)."""
    found = {run.name.split("/")[-1]: run for run in runs if run.name.startswith(PER_RUN_VERBS)}
    assert len(found) == len([run for run in runs if run.name.startswith(PER_RUN_VERBS)])
    return found


def assert_ui_renders_inputs(runs: list) -> None:
    """Only input types the UI renders; a per-run task takes no task_run input at all (no false dependencies)."""
    for run in runs:
        kinds = {item.input_type for items in run.task_inputs.values() for item in items}
        assert kinds <= UI_INPUT_TYPES, (run.name, run.task_inputs)
        if run.name.startswith(PER_RUN_VERBS):
            assert "task_run" not in kinds, (run.name, run.task_inputs)


def assert_logs_clean(flow_run_ids: list) -> list[str]:
    """No traceback anywhere in the flow runs' logs; their messages."""
    messages = [log.message for log in flow_run_logs(flow_run_ids)]
    assert messages and not [m for m in messages if "Traceback" in m], [m for m in messages if "Traceback" in m]
    return messages


def table_rows(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def assert_export_told_truthfully(flow_run, failing: list[str]) -> None:
    ok = [run_id for run_id in RUN_IDS if run_id not in failing]
    if failing:
        assert flow_run.state.is_failed() and flow_run.state.message == f"{len(failing)} of {len(RUN_IDS)} runs failed"
    else:
        assert flow_run.state.is_completed(), flow_run.state
    chunks = subflow_runs(flow_run.id)
    assert len(chunks) == 3
    for chunk in chunks:
        in_chunk = per_run(task_runs([chunk.id]))
        failed_here = [run_id for run_id in in_chunk if run_id in failing]
        assert chunk.state.is_failed() == bool(failed_here), (chunk.name, chunk.state)
        if failed_here:
            assert chunk.state.message == f"{len(failed_here)} of {len(in_chunk)} runs failed"

    every_task = task_runs([flow_run.id, *[chunk.id for chunk in chunks]])
    runs = per_run(every_task)
    assert sorted(runs) == RUN_IDS
    assert {run.name for run in runs.values()} == {f"export {PROJECT}/{run_id}" for run_id in RUN_IDS}
    assert sorted(r for r, run in runs.items() if run.state.is_failed()) == sorted(failing)
    assert sorted(r for r, run in runs.items() if run.state.is_completed()) == ok
    for run_id in failing:
        assert all(text in runs[run_id].state.message for text in FAILURE_TEXT), runs[run_id].state.message
    flow_tasks = task_runs([flow_run.id])  # its steps and one task run per chunk subflow
    steps = {run.name.rsplit("-", 1)[0]: run for run in flow_tasks if not run.name.startswith("export-chunk")}
    assert sorted(steps) == ["discover-and-plan", "preflight", "write-export-summary"]
    assert all(run.state.is_completed() for run in steps.values())
    assert len(every_task) == len(RUN_IDS) + len(steps) + len(chunks)  # the chunks hold one task per run, nothing else
    assert_ui_renders_inputs(every_task)

    messages = assert_logs_clean([flow_run.id, *[chunk.id for chunk in chunks]])
    assert (
        "5 run(s) planned in 1 project(s): 5 new, 0 changed, 0 unchanged, 0 to redo (failed or incomplete before)"
        in messages
    )
    finished = [m for m in messages if m.startswith("export finished in")]
    assert len(finished) == 1 and f"{len(ok)} exported, 0 unchanged, {len(failing)} failed" in finished[0]

    artifacts = artifacts_by_key(flow_run.id)
    progress = artifacts["export-progress"][0]
    assert progress.data == 100.0
    assert (
        progress.description.startswith(f"5/5 runs done, {len(failing)} failed · ")
        and "done in" in progress.description
    )
    rows = table_rows(artifacts["export-runs"][0])  # the newest version: every run ended
    assert [row["run"] for row in rows] == [f"{PROJECT}/{run_id}" for run_id in RUN_IDS]
    assert {row["run"].split("/")[-1]: row["status"] for row in rows} == {
        run_id: "failed" if run_id in failing else "complete" for run_id in RUN_IDS
    }
    assert all(
        row["points"] > 0 and row["files"] == 1 and row["error"] == "" for row in rows if row["status"] == "complete"
    )
    for row in rows:
        if row["status"] == "failed":
            assert all(text in row["error"] for text in FAILURE_TEXT) and row["points"] == 0
    report = artifacts["export-report"][0].data
    assert f"failed: **{len(failing)}**" in report
    for run_id in failing:
        assert f"`{PROJECT}/{run_id}`" in report and all(text in report for text in FAILURE_TEXT)


def test_successful_export_is_completed_everywhere(served, fake, tmp_path):
    assert_export_told_truthfully(export(fake, tmp_path, failing=[]), failing=[])


def test_partly_failing_export_fails_exactly_the_failing_run(served, fake, tmp_path):
    assert_export_told_truthfully(export(fake, tmp_path, failing=["run-00003"]), failing=["run-00003"])


def test_all_failing_export_fails_every_run_task_and_chunk(served, fake, tmp_path):
    assert_export_told_truthfully(export(fake, tmp_path, failing=RUN_IDS), failing=RUN_IDS)


def exported(fake, tmp_path: Path) -> dict:
    data, files = tmp_path / "data", tmp_path / "files"
    options = ExportOptions(projects=(PROJECT,), data_path=str(data), files_path=str(files), api_token=fake.api_token)
    assert {r.status for r in run_export(options, Settings())} == {"complete"}
    return {"data_path": str(data), "files_path": str(files), "report_path": str(tmp_path / "reports")}


def test_load_with_a_corrupt_run_and_validate_with_a_difference_end_failed_without_traceback(
    served, fake, mlflow_url, tmp_path
):
    paths = exported(fake, tmp_path)
    manifest = read_manifest(manifest_path(Path(paths["data_path"]), PROJECT, "run-00002"))
    part = Path(paths["data_path"]) / manifest.parts[0].path
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    options = {"target": "mlflow", "mlflow_tracking_uri": mlflow_url, **paths}

    flow_run = run_and_wait("load/mlflow", {"options": options})
    assert flow_run.state.is_failed() and flow_run.state.message == "1 run(s) failed, 1 run(s) differ"
    chunks = subflow_runs(flow_run.id)
    every_task = task_runs([flow_run.id, *[chunk.id for chunk in chunks]])
    loads = per_run([run for run in every_task if run.name.startswith("load ")])
    validations = per_run([run for run in every_task if run.name.startswith("validate ")])
    assert sorted(loads) == sorted(validations) == RUN_IDS
    assert [r for r, run in loads.items() if run.state.is_failed()] == ["run-00002"]
    assert "DamagedExportError" in loads["run-00002"].state.message and "— fix: " in loads["run-00002"].state.message
    assert [r for r, run in validations.items() if run.state.is_failed()] == ["run-00002"]
    assert sum(chunk.state.is_failed() for chunk in chunks) == 2  # the chunk loading run-00002, the one validating it
    assert_ui_renders_inputs(every_task)
    messages = assert_logs_clean([flow_run.id, *[chunk.id for chunk in chunks]])
    assert "5 run(s) to load in 1 fork wave(s)" in messages
    assert any(
        m.startswith("load into mlflow finished in") and "4 loaded, 0 already complete, 1 failed" in m for m in messages
    )
    artifacts = artifacts_by_key(flow_run.id)
    assert artifacts["load-progress"][0].description.startswith("5/5 runs done, 1 failed · ")
    assert artifacts["validate-progress"][0].description.startswith("5/5 runs done, 1 failed · ")
    rows = {row["run"]: row for row in table_rows(artifacts["load-runs"][0])}
    assert (
        rows[f"{PROJECT}/run-00002"]["status"] == "failed"
        and "DamagedExportError" in rows[f"{PROJECT}/run-00002"]["error"]
    )
    assert sorted(row["status"] for row in rows.values()) == ["failed", "loaded", "loaded", "loaded", "loaded"]

    client = MlflowClient(mlflow_url)
    target = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="tags.`neptune.run_id` = 'run-00004'"
    )[0]
    client.log_param(target.info.run_id, "extra", "not in the export")
    for path in run_part_paths(Path(paths["data_path"]), PROJECT, "run-00002"):  # the corrupt run leaves the export:
        path.unlink()  # only run-00004 differs now
    manifest_path(Path(paths["data_path"]), PROJECT, "run-00002").unlink()
    flow_run = run_and_wait("validate/mlflow", {"options": options})
    assert flow_run.state.is_failed() and flow_run.state.message == "1 difference(s) in 1 run(s)"
    chunks = subflow_runs(flow_run.id)
    every_task = task_runs([flow_run.id, *[chunk.id for chunk in chunks]])
    validations = per_run(every_task)
    assert sorted(validations) == ["run-00000", "run-00001", "run-00003", "run-00004"]
    assert [r for r, run in validations.items() if run.state.is_failed()] == ["run-00004"]
    assert (
        "1 difference(s): param" in validations["run-00004"].state.message
        and "extra" in validations["run-00004"].state.message
    )
    assert_ui_renders_inputs(every_task)
    assert_logs_clean([flow_run.id, *[chunk.id for chunk in chunks]])
