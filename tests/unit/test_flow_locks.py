"""The flows take the library's locks: an export flow whose data path another export holds, and a load flow whose
export another load into the same target holds, end Skipped naming the holder, with nothing read or written."""

from __future__ import annotations

import logging
import os

import pytest

from flows.export import export, flow_parameters
from flows.load import load
from flows.runtime import result_of
from neptune_exporter.export import ExportOptions, export_lock
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.load import LoadOptions, load_lock
from neptune_exporter.storage.lock import EXPORT_LOCK
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from tests.prefect_reading import flow_run_logs

PROJECT = "workspace/sandbox"


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=2, points=20, files=0)) as server:
        yield server
    assert not server.server_errors


def test_an_export_flow_skips_a_locked_data_path_then_exports_and_says_why_it_redoes_a_run(
    prefect_harness, fake, tmp_path, monkeypatch
):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    options = ExportOptions(projects=(PROJECT,), data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"))
    fake.requests.clear()
    with export_lock(options):  # another export (here: this process) writes to the data path
        state = export(**flow_parameters(options), return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    message = result_of(state)["locked"]
    assert state.message == message
    assert message.startswith(f"{tmp_path / 'data'} is in use: export (pid {os.getpid()} on ")
    assert f"holds {tmp_path / 'data' / EXPORT_LOCK}" in message
    assert fake.requests.runs_fetched() == set()

    state = export(**flow_parameters(options), return_state=True)  # released: the export runs
    assert state.is_completed() and state.name == "Completed" and result_of(state)["runs_complete"] == 2
    assert not (tmp_path / "data" / EXPORT_LOCK).exists()

    listed = read_manifest(manifest_path(tmp_path / "data", PROJECT, "run-00001")).parts[0]
    os.truncate(tmp_path / "data" / listed.path, 100)
    flow_logger = logging.getLogger("prefect.flow_runs")  # the flow logs its plan at INFO (the CLI shows WARNING up)
    level = flow_logger.level
    flow_logger.setLevel(logging.INFO)
    try:
        state = export(**flow_parameters(options), return_state=True)  # the damaged run is redone, and says why
    finally:
        flow_logger.setLevel(level)
    summary = result_of(state)
    assert (summary["runs_complete"], summary["runs_skipped"]) == (1, 1)
    logs = [log.message for log in flow_run_logs([state.state_details.flow_run_id])]
    assert [m for m in logs if m.startswith("to redo: ")] == [
        f"to redo: {PROJECT}/run-00001: 1 part(s) differ from the manifest: {listed.path}: 100 bytes, the manifest "
        f"records {listed.bytes:,} (truncated or replaced)"
    ]


def test_a_load_flow_waits_for_no_other_target_but_skips_while_its_target_is_loaded(prefect_harness, tmp_path):
    (tmp_path / "data").mkdir()
    options = LoadOptions(data_path=str(tmp_path / "data"), mlflow_tracking_uri=f"sqlite:///{tmp_path / 'a.db'}")
    other = LoadOptions(data_path=str(tmp_path / "data"), mlflow_tracking_uri=f"sqlite:///{tmp_path / 'b.db'}")
    with load_lock(options):
        with load_lock(other):  # another target: its own lock
            state = load(options=options.to_json(), return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    message = result_of(state)["locked"]
    assert message.startswith(f"{tmp_path / 'data'} is in use: load into mlflow sqlite:///{tmp_path / 'a.db'} (pid ")
    assert not list((tmp_path / "data").iterdir())  # both lock files gone, nothing written
