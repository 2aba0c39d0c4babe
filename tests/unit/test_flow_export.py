"""The export flow under Prefect (one test server per session) against the fake Neptune server in a thread."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.export import export, flow_parameters, options_from_parameters
from flows.runtime import result_of
from neptune_exporter.export import ExportOptions
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from tests.prefect_reading import artifacts_by_key, export_task_states, flow_run_logs, subflow_runs, task_runs

PROJECT = "workspace/sandbox"
RUN_IDS = [f"run-{i:05d}" for i in range(4)]


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=4, points=50, files=1)) as server:
        yield server
    assert not server.server_errors


@pytest.fixture
def options(fake, tmp_path, monkeypatch):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEPTUNE_EXPORTER_RUNS_PER_TASK_BATCH", "3")
    fake.requests.clear()
    return ExportOptions(
        projects=(PROJECT,), data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"), workers=1
    )


def run_flow(options: ExportOptions):
    state = export(**flow_parameters(options), return_state=True)
    return state, result_of(state)


def stored_rows(options: ExportOptions, run_id: str) -> int:
    manifest = read_manifest(manifest_path(Path(options.data_path), PROJECT, run_id))
    assert manifest is not None and manifest.is_complete()
    return sum(pq.read_metadata(Path(options.data_path) / part.path).num_rows for part in manifest.parts)


def test_flow_parameters_are_json_and_round_trip(options):
    parameters = flow_parameters(options)
    assert set(parameters) == {"source", "projects", "selection", "paths", "workers", "processes"}
    assert options_from_parameters(**parameters) == options  # processes included (None: chosen where the flow runs)
    assert json.loads(json.dumps(parameters)) == parameters
    assert "api_token" not in json.dumps(parameters)


def test_a_bad_project_fails_the_flow_run_with_its_fix_before_any_folder_is_made(prefect_harness, options, tmp_path):
    bad = ExportOptions(
        projects=("workspace/no-such-project",),
        data_path=str(tmp_path / "out/data"),
        files_path=str(tmp_path / "out/files"),
        workers=1,
    )
    state, result = run_flow(bad)
    assert state.is_failed() and state.message.startswith("ProjectNotFoundError: project 'workspace/no-such-project'")
    assert "— fix: check the workspace/project name" in state.message and result == {"rejected": state.message}
    assert not (tmp_path / "out").exists()  # the lock file, and so the data path, come after preflight
    errors = [log.message for log in flow_run_logs([state.state_details.flow_run_id]) if log.level >= 40]
    assert errors and not [message for message in errors if "Traceback" in message], errors  # a state, not a crash


def test_failed_run_is_reported_others_complete_then_rerun_redoes_only_it(prefect_harness, fake, options):
    # the first run's first series read fails, and again when that series is asked for alone (a shared request
    # refused is asked again series by series: only the series refused alone fails)
    fake.faults.update(endpoints="float_series", scripted=[400, 400])
    state, summary = run_flow(options)
    fake.faults.update(endpoints=None, scripted=[])
    assert state.is_failed() and state.message == "1 of 4 runs failed"
    assert (summary["runs_complete"], summary["runs_failed"], summary["runs_skipped"]) == (3, 1, 0)
    failed = summary["failures"][0]
    assert failed["run_id"] == RUN_IDS[0] and "HTTP 400" in failed["message"]
    report = Path(summary["error_reports"][0]).read_text().splitlines()
    assert [json.loads(line)["run"] for line in report] == [RUN_IDS[0]]

    chunks = subflow_runs(state.state_details.flow_run_id)
    assert sorted(len(run.parameters["plans"]) for run in chunks) == [1, 3]  # 4 runs in chunks of at most 3
    assert sorted((len(run.parameters["plans"]), run.state.name) for run in chunks) == [(1, "Completed"), (3, "Failed")]
    runs = export_task_runs(state.state_details.flow_run_id)
    assert {run_id: run.state.name for run_id, run in runs.items()} == {
        RUN_IDS[0]: "Failed",
        RUN_IDS[1]: "Completed",
        RUN_IDS[2]: "Completed",
        RUN_IDS[3]: "Completed",
    }
    assert runs[RUN_IDS[0]].name == f"export {PROJECT}/{RUN_IDS[0]}" and "HTTP 400" in runs[RUN_IDS[0]].state.message
    assert "— fix: " in runs[RUN_IDS[0]].state.message
    artifacts = artifacts_by_key(state.state_details.flow_run_id)
    assert artifacts["export-progress"][0].data == 100.0
    table = artifacts["export-summary"][0].data
    table = json.loads(table) if isinstance(table, str) else table
    assert table[0]["project"] == PROJECT and (table[0]["runs_complete"], table[0]["runs_failed"]) == (3, 1)
    markdown = artifacts["export-report"][0].data
    assert "failed: **1**" in markdown and f"`{PROJECT}/{RUN_IDS[0]}`" in markdown
    assert runs[RUN_IDS[0]].state.message in markdown  # the error and its fix, in full
    assert artifacts["export-progress"][0].description.startswith("4/4 runs done, 1 failed · ")

    rows_before = {run_id: stored_rows(options, run_id) for run_id in RUN_IDS[1:]}
    fake.requests.clear()
    state, summary = run_flow(options)
    assert state.is_completed()
    assert (summary["runs_complete"], summary["runs_failed"], summary["runs_skipped"]) == (1, 0, 3)
    assert fake.requests.count("v3.float_series") == 1  # only the failed run's series were read again
    assert export_task_states(state.state_details.flow_run_id) == {"Completed": 1, "Cached": 3}
    assert {run_id: stored_rows(options, run_id) for run_id in RUN_IDS[1:]} == rows_before
    assert stored_rows(options, RUN_IDS[0]) == rows_before[RUN_IDS[1]]


def test_a_deleted_manifest_bypasses_the_cache_and_the_run_is_exported_again(prefect_harness, fake, options):
    state, summary = run_flow(options)
    assert summary["runs_complete"] == 4
    rows = stored_rows(options, RUN_IDS[2])
    manifest_path(Path(options.data_path), PROJECT, RUN_IDS[2]).unlink()
    fake.requests.clear()
    state, summary = run_flow(options)
    assert (summary["runs_complete"], summary["runs_skipped"]) == (1, 3)
    assert export_task_states(state.state_details.flow_run_id) == {"Completed": 1, "Cached": 3}
    assert fake.requests.count("v3.float_series") == 1
    assert stored_rows(options, RUN_IDS[2]) == rows


def test_transient_faults_are_survived_with_complete_output(prefect_harness, fake, options):
    fake.faults.update(
        endpoints="float_series|series|attribute_values|download", scripted=[503, "reset", 429, 500], retry_after_s=1
    )
    try:
        state, summary = run_flow(options)
    finally:
        fake.faults.update(endpoints=None, scripted=[])
    assert state.is_completed(), state.message
    assert (summary["runs_complete"], summary["runs_failed"]) == (4, 0)
    assert fake.requests.count(status=503) == fake.requests.count(status=429) == 1
    reference = stored_rows(options, RUN_IDS[1])
    assert all(stored_rows(options, run_id) == reference for run_id in RUN_IDS)


def export_task_runs(flow_run_id) -> dict[str, object]:
    """The per-run export task runs of the flow run's chunks, by run id."""
    chunk_ids = [run.id for run in subflow_runs(flow_run_id)]
    return {run.name.split("/")[-1]: run for run in task_runs(chunk_ids) if run.name.startswith("export ")}


def test_a_run_failing_transiently_is_retried_then_recorded_and_its_task_ends_failed(
    prefect_harness, fake, options, monkeypatch
):
    from tasks import export as export_tasks

    monkeypatch.setenv("NEPTUNE_EXPORTER_SOURCE_RETRY_TIMEOUT_S", "1")  # neptune-query gives up on a request after 1 s
    monkeypatch.setattr(export_tasks, "_sources", {})  # a source with that setting
    fake.faults.update(failing_runs={"SANDBOX-2": 503})  # run-00001's data requests keep answering 503
    try:
        state, summary = run_flow(options)
    finally:
        fake.faults.update(failing_runs={})
    assert state.is_failed() and state.message == "1 of 4 runs failed"
    assert [
        (f["run_id"], f["message"].startswith("the Neptune server did not answer successfully"))
        for f in summary["failures"]
    ] == [(RUN_IDS[1], True)]
    manifest = read_manifest(manifest_path(Path(options.data_path), PROJECT, RUN_IDS[1]))
    assert manifest.status == "failed" and manifest.errors[0]["error_type"] == "SourceUnavailableError"
    runs = export_task_runs(state.state_details.flow_run_id)
    assert {run_id: run.state.name for run_id, run in runs.items()} == {
        RUN_IDS[0]: "Completed",
        RUN_IDS[1]: "Failed",
        RUN_IDS[2]: "Completed",
        RUN_IDS[3]: "Completed",
    }
    assert runs[RUN_IDS[1]].run_count == 1  # export_one retried it under the one policy; Prefect never re-ran it
    assert fake.requests.count(status=503) >= Settings.from_env().retry.attempts  # every attempt reached the server
    assert runs[RUN_IDS[1]].state.message.startswith(
        "SourceUnavailableError: the Neptune server did not answer successfully"
    )
    assert "— fix: check the server and the network" in runs[RUN_IDS[1]].state.message
    flow_run_ids = [state.state_details.flow_run_id, *[run.id for run in subflow_runs(state.state_details.flow_run_id)]]
    errors = [log.message for log in flow_run_logs(flow_run_ids) if log.level >= 40]
    assert errors and not [message for message in errors if "Traceback" in message], errors
