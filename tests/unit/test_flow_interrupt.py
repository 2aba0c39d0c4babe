"""A stop request (what Ctrl-C / SIGTERM make of it): no further run starts, an export in progress abandons its write
cleanly, the flow (export, load, validate) ends Cancelled with the one line; the rerun completes as a fresh one would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.export import export, flow_parameters
from flows.load import load
from flows.runtime import result_of
from flows.validate import validate
from neptune_exporter import interrupt
from neptune_exporter import load as load_library
from neptune_exporter.export import ExportOptions
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.load import LoadOptions
from neptune_exporter.rows import parameter_rows
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import read_run_batches, run_part_paths
from tests.load_exports import write_export
from tests.prefect_reading import subflow_runs, task_runs
from tests.unit.test_flow_export import PROJECT, RUN_IDS, fake  # noqa: F401  (the module's fake Neptune, 4 runs)


@pytest.fixture
def stop_request() -> Iterator[None]:
    interrupt.reset()
    yield
    interrupt.reset()


def stop_on_series_of(server: FakeNeptune, sys_id: str, monkeypatch) -> None:
    """Request a stop when the series of `sys_id` are asked for (their answer still goes out: the run then stops at
    the batch it makes of it)."""
    log_request, asked = server.requests.add, []

    def add(record) -> None:
        log_request(record)
        if record.endpoint == "v3.float_series" and sys_id in record.runs and not asked:
            asked.append(record)
            interrupt.request()

    monkeypatch.setattr(server.requests, "add", add)


def rows(data: Path, run_id: str) -> list[tuple]:
    table = [batch.to_pylist() for batch in read_run_batches(data, PROJECT, run_id)]
    return sorted((row["attribute_path"], str(row["step"]), repr(row)) for batch in table for row in batch)


def test_a_stop_request_ends_the_flow_cancelled_after_the_run_in_progress_then_the_rerun_completes(
    prefect_harness,
    fake,  # noqa: F811
    tmp_path,
    monkeypatch,
    stop_request,
):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEPTUNE_EXPORTER_PART_TARGET_BYTES", "4096")  # rows reach a part before the run ends
    options = ExportOptions(
        projects=(PROJECT,), data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"), workers=1
    )
    data = Path(options.data_path)
    stop_on_series_of(fake, "SANDBOX-2", monkeypatch)  # the second run, mid-way: its parameters are written
    state = export(**flow_parameters(options), return_state=True)
    summary = result_of(state)

    line = "interrupted: 1 runs complete, 3 to do — rerun the same command to continue"
    assert state.is_cancelled() and state.message == line and summary["interrupted"] == line
    assert read_manifest(manifest_path(data, PROJECT, RUN_IDS[0])).is_complete()
    for run_id in RUN_IDS[1:]:  # the stopped run left nothing behind, the others never started
        assert read_manifest(manifest_path(data, PROJECT, run_id)) is None
        assert run_part_paths(data, PROJECT, run_id, include_tmp=True) == []
    (chunk,) = subflow_runs(state.state_details.flow_run_id)
    assert chunk.state.name == "Cancelled" and chunk.state.message == "stopped on request: 2 of 4 runs not started"
    tasks = {run.name: run.state for run in task_runs([chunk.id]) if run.name.startswith("export ")}
    assert {name: task.name for name, task in tasks.items()} == {
        f"export {PROJECT}/{RUN_IDS[0]}": "Completed",
        f"export {PROJECT}/{RUN_IDS[1]}": "Cancelled",
    }
    assert "stopped on Ctrl-C / SIGTERM before it finished" in tasks[f"export {PROJECT}/{RUN_IDS[1]}"].message

    interrupt.reset()
    fresh = ExportOptions(projects=(PROJECT,), data_path=str(tmp_path / "fresh"), files_path=str(tmp_path / "ff"))
    rerun = export(**flow_parameters(options), return_state=True)
    assert rerun.is_completed() and result_of(rerun)["runs_complete"] == 3
    assert result_of(export(**flow_parameters(fresh), return_state=True))["runs_complete"] == 4
    for run_id in RUN_IDS:
        assert rows(data, run_id) == rows(tmp_path / "fresh", run_id) != []


def stop_after_the_first(monkeypatch, module, verb: str) -> None:
    """`module.verb` (a per-run library verb a task calls) requests a stop once its first run is done."""
    original, calls = getattr(module, verb), []

    def verb_then_stop(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            interrupt.request()
        return result

    monkeypatch.setattr(module, verb, verb_then_stop)


def test_a_stop_request_ends_load_and_validate_cancelled_after_the_run_in_progress(
    prefect_harness, tmp_path, monkeypatch, stop_request
):
    for run in ("r1", "r2", "r3"):
        write_export(
            tmp_path / "data", tmp_path / "files", "ws/p", run, [parameter_rows("ws/p", run, [("p", "int", 1)])]
        )
    options = LoadOptions(
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workers=1,
    ).to_json()
    line = "interrupted: 1 runs complete, 2 to do — rerun the same command to continue"

    stop_after_the_first(monkeypatch, load_library, "load_one")
    state = load(options=options, return_state=True)
    assert state.is_cancelled() and state.message == line and result_of(state)["loaded"] == 1
    assert "validation" not in result_of(state)  # a partial load is not validated

    interrupt.reset()
    monkeypatch.undo()
    rerun = result_of(load(options=options, run_validation=False, return_state=True))
    assert (rerun["loaded"], rerun["skipped"], rerun["failed"]) == (2, 1, 0)

    stop_after_the_first(monkeypatch, load_library, "validate_one")
    state = validate(options=options, return_state=True)
    assert state.is_cancelled() and state.message == line and result_of(state)["runs_checked"] == 1
