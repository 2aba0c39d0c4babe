"""The load and validate flows under Prefect, loading into a real MLflow server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from prefect.artifacts import Artifact

from flows.load import load
from flows.runtime import result_of, run_in_process
from flows.validate import validate
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (session fixture)
from tests.integration.test_load_mlflow import active_runs, options
from tests.load_exports import T0_MS, write_rich_export
from tests.prefect_reading import flow_run_logs

pytestmark = pytest.mark.integration


def test_load_flow_loads_validates_and_publishes_reports(prefect_harness, mlflow_server, tmp_path):  # noqa: F811
    project = "ws/flow"
    write_rich_export(tmp_path / "data", tmp_path / "files", project, "r", points=40)
    parameters = options(tmp_path, mlflow_server).to_json()
    summary = run_in_process(load, options=parameters)
    assert (summary["loaded"], summary["skipped"], summary["failed"]) == (1, 0, 0)
    assert (
        summary["validation"]["differences"] == 0
        and Path(summary["validation"]["report_json"]).parent == tmp_path / "reports"
    )
    table = json.loads(Artifact.get("validation-mlflow").data)
    assert [(row["run"], row["ok"], row["points"]) for row in table] == [("r", True, 43)]
    again = run_in_process(load, options=parameters, run_validation=False)
    assert (again["loaded"], again["skipped"], "validation" in again) == (0, 1, False)
    client = MlflowClient(mlflow_server)
    client.log_batch(active_runs(client, project, "r")[0].info.run_id, metrics=[Metric("metrics/extra", 1.0, T0_MS, 0)])
    state = validate(options=parameters, return_state=True)
    assert state.is_failed() and result_of(state)["differences"] == 1
    assert state.message == "1 difference(s) in 1 run(s)"
    report = json.loads((tmp_path / "reports" / "validation_mlflow.json").read_text())
    assert [(d["kind"], d["key"], d["problem"]) for d in report["runs"][0]["differences"]] == [
        ("metric", "metrics/extra", "unexpected")
    ]


@pytest.mark.parametrize("flow", [load, validate], ids=["load", "validate"])
def test_an_export_folder_with_no_runs_fails_the_flow_with_its_fix_and_no_traceback(
    prefect_harness,
    mlflow_server,  # noqa: F811
    tmp_path,
    flow,
):
    (tmp_path / "data").mkdir()  # an empty folder, as `-d` pointing at the wrong place gives
    state = flow(options=options(tmp_path, mlflow_server).to_json(), return_state=True)
    assert state.is_failed() and state.message.startswith("NoRunsSelectedError: "), state.message
    assert " — fix: " in state.message and result_of(state) == {"rejected": state.message}
    errors = [log.message for log in flow_run_logs([state.state_details.flow_run_id]) if log.level >= 40]
    assert not [message for message in errors if "Traceback" in message or "Encountered exception" in message]
    assert list((tmp_path / "data").iterdir()) == []  # no lock file, nothing written
