"""The validate-source flow under Prefect (in-process, test server), real clients against the fake Neptune server:
report files, the table artifact, Failed with the verdict on a difference, a refused input as one line."""

from __future__ import annotations

import json

import pytest
from prefect.artifacts import Artifact

from flows.runtime import result_of
from flows.validate_source import validate_source
from neptune_exporter.fake_neptune import FakeNeptune, datasets
from tests.integration.test_source_audit import PROJECT, RUN, SOURCES, export, workspace

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
    # the server's derived system attributes follow the change: sys/ping_time (both), the datapoint count (3.x)
    counted = [("sys/diagnostics/attributes/total_series_datapoints", "value")] if source == "neptune3" else []
    assert changed.is_failed() and changed.message == f"{3 + len(counted)} difference(s) in 1 run(s)"
    report = json.loads((tmp_path / "reports" / f"validation_source_{source}.json").read_text())
    (run,) = [run for run in report["runs"] if not run["ok"]]
    assert [(d["key"], d["problem"]) for d in run["differences"]] == [
        *counted,
        ("sys/modification_time", "newer on the server"),
        ("sys/ping_time", "value"),
        ("metrics/m000", "source has more"),
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
