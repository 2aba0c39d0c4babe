"""The validate-source flow under Prefect (in-process, test server), real clients against the fake Neptune server:
report files, the table artifact, Failed with the verdict on a difference, a refused input as one line."""

from __future__ import annotations

import json

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client

from deployments.serve import DEPLOYMENTS
from flows.runtime import result_of
from flows.validate_source import validate_source
from neptune_exporter.fake_neptune import FakeNeptune, datasets
from tests.integration.test_source_audit import PROJECT, RUN, SOURCES, export, workspace
from tests.prefect_reading import subflow_runs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("source", SOURCES)
def test_validate_source_flow_reports_and_fails_on_a_server_change(source, prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with FakeNeptune(workspace(), port=0) as fake:
        monkeypatch.setenv("NEPTUNE_API_TOKEN", fake.api_token)
        export(source, fake, tmp_path)
        options = {
            "against": source,
            "data_path": str(tmp_path / "data"),
            "files_path": str(tmp_path / "files"),
            "projects": [PROJECT],
        }
        clean = validate_source(options=options, return_state=True)
        assert clean.is_completed(), clean.message
        summary = result_of(clean)
        assert (summary["runs_checked"], summary["differences"], summary["verdict"]) == (3, 0, "no differences")
        table = json.loads(Artifact.get(f"validation-source-{source}").data)
        assert [(row["run"], row["ok"], row["differences"]) for row in table] == [
            (run, True, 0) for run in sorted(summary_runs(source))
        ]
        datasets.append_points(fake.workspace, PROJECT, RUN[source], "metrics/m000", [50.0], [7.0])
        changed = validate_source(options=options, return_state=True)
    # the server's derived system attributes follow the change: sys/ping_time (both), the datapoint count (3.x),
    # which the audit also holds against the export's points
    counted = [("sys/diagnostics/attributes/total_series_datapoints", "value")] if source == "neptune3" else []
    total = [("series points", "source has more series points")] if source == "neptune3" else []
    assert changed.is_failed() and changed.message == f"{3 + 2 * len(counted)} difference(s) in 1 run(s)"
    report = json.loads((tmp_path / "reports" / f"validation_source_{source}.json").read_text())
    (run,) = [run for run in report["runs"] if not run["ok"]]
    assert [(d["key"], d["problem"]) for d in run["differences"]] == [
        *counted,
        ("sys/modification_time", "newer on the server"),
        ("sys/ping_time", "value"),
        ("metrics/m000", "source has more"),
        *total,
    ]
    markdown = (tmp_path / "reports" / f"validation_source_{source}.md").read_text()
    assert "| workspace/sandbox | " + RUN[source] + " | series | metrics/m000 | source has more | 50.0 |" in markdown


def summary_runs(source: str) -> list[str]:
    return ["run-00000", "run-00001", "run-00002"] if source == "neptune3" else ["SANDBOX-1", "SANDBOX-2", "SANDBOX-3"]


def test_validate_source_flow_refuses_a_missing_export_in_one_line(prefect_harness, tmp_path):
    options = {
        "against": "neptune3",
        "data_path": str(tmp_path / "nothing"),
        "files_path": str(tmp_path),
        "projects": [PROJECT],
    }
    state = validate_source(options=options, return_state=True)
    assert state.is_failed()
    assert (
        state.message
        == f"OutputPathError: export folder {tmp_path / 'nothing'} does not exist — fix: pass the --data-path an export wrote to"
    )


def test_validate_source_flow_names_an_unknown_project_in_one_line(prefect_harness, tmp_path, monkeypatch):
    with FakeNeptune(workspace(), port=0) as fake:
        monkeypatch.setenv("NEPTUNE_API_TOKEN", fake.api_token)
        export("neptune3", fake, tmp_path)
        options = {"against": "neptune3", "data_path": str(tmp_path / "data"), "files_path": str(tmp_path / "files")}
        state = validate_source(options={**options, "projects": ["workspace/nope"]}, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("ProjectNotFoundError: ") and "workspace/nope" in state.message
    assert " — fix: " in state.message


def test_the_validate_neptune3_deployment_runs_the_source_audit_as_a_subflow(prefect_harness, tmp_path, monkeypatch):
    """`validate/neptune3` (the `validate` flow with the deployment's parameters, plus `deep`): the work is done by
    the `validate-source` subflow, whose final state and summary the deployment's run takes."""
    (spec,) = [s for s in DEPLOYMENTS if f"{s.load_flow().name}/{s.name}" == "validate/neptune3"]
    with FakeNeptune(workspace(), port=0) as fake:
        monkeypatch.setenv("NEPTUNE_API_TOKEN", fake.api_token)
        export("neptune3", fake, tmp_path)
        paths = {"data_path": str(tmp_path / "data"), "files_path": str(tmp_path / "files"), "projects": [PROJECT]}
        state = spec.load_flow()(options={**spec.parameters["options"], **paths, "deep": True}, return_state=True)
    assert state.is_completed(), state.message
    summary = result_of(state)
    assert (summary["target"], summary["runs_checked"], summary["verdict"]) == ("neptune3", 3, "no differences")
    assert summary["not_compared"] == [
        "file series, file sets and artifacts: not compared (neither the file names nor the content)"
    ]
    (subflow,) = subflow_runs(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        assert client.read_flow(subflow.flow_id).name == "validate-source"
    assert subflow.parent_task_run_id is not None and subflow.state.is_completed()
