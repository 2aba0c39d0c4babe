"""`schedule` and `summary -f` parsing: a schedule's options become the export flow's parameters (absolute paths)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from deployments import schedules
from neptune_exporter.cli import app

runner = CliRunner()


@pytest.fixture
def upserted(monkeypatch):
    """What `schedule NAME ...` would store on the server (the server side is tested in tests/e2e/test_schedule.py)."""
    seen = {}

    def fake_upsert(name, source, parameters, schedule):
        seen.update(name=name, source=source, parameters=parameters, schedule=schedule)
        return schedules.ScheduledExport(f"export/{source}", name, True, schedules.when_text(schedule), parameters, [])

    monkeypatch.setattr(schedules, "upsert", fake_upsert)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    return seen


def test_schedule_options_become_flow_parameters_with_absolute_paths(upserted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "schedule",
            "nightly",
            "--source",
            "neptune2",
            "-p",
            "ws/a",
            "-d",
            "rel/data",
            "-f",
            "rel/files",
            "--runs",
            "^run-",
            "--where",
            "params/lr > 0.1",
            "--include",
            "parameters,metrics",
            "--workers",
            "3",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "Europe/Berlin",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (upserted["name"], upserted["source"]) == ("nightly", "neptune2")
    parameters = upserted["parameters"]
    assert parameters["paths"] == {
        "data_path": str(tmp_path / "rel" / "data"),
        "files_path": str(tmp_path / "rel" / "files"),
    }
    assert parameters["projects"] == ["ws/a"] and parameters["source"] == "neptune2" and parameters["workers"] == 3
    assert parameters["selection"]["runs"]["runs_regex"] == "^run-"
    assert parameters["selection"]["runs"]["where"] == "params/lr > 0.1"
    assert sorted(parameters["selection"]["attributes"]["include_kinds"]) == ["metrics", "parameters"]
    assert json.loads(json.dumps(parameters)) == parameters and "token" not in json.dumps(parameters)
    assert (upserted["schedule"].cron, upserted["schedule"].timezone) == ("0 2 * * *", "Europe/Berlin")
    assert "export/neptune2 · schedule 'nightly' · cron '0 2 * * *' (Europe/Berlin)" in result.output
    assert f"paths: {json.dumps(parameters['paths'])}" in result.output


def test_interval_schedule_and_project_from_the_environment(upserted, tmp_path, monkeypatch):
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/env")
    result = runner.invoke(
        app, ["schedule", "hourly", "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f"), "--interval", "90"]
    )
    assert result.exit_code == 0, result.output
    assert upserted["schedule"].interval == timedelta(seconds=90) and upserted["schedule"].timezone == "UTC"
    assert upserted["parameters"]["projects"] == ["ws/env"] and upserted["source"] == "neptune3"


@pytest.mark.parametrize(
    "args, message",
    [
        (["nightly", "-p", "ws/a"], "give exactly one of --cron and --interval"),
        (
            ["nightly", "-p", "ws/a", "--cron", "0 2 * * *", "--interval", "60"],
            "give exactly one of --cron and --interval",
        ),
        (
            ["nightly", "-p", "ws/a", "--interval", "60", "--timezone", "Mars/Olympus"],
            "--timezone 'Mars/Olympus' is not a time zone",
        ),
        (["nightly", "-p", "ws/a", "--cron", "every day"], "--cron 'every day' is not a cron expression"),
        (["nightly", "-p", "ws/a", "--interval", "0"], "--interval 0 is not positive"),
        (["night ly", "-p", "ws/a", "--interval", "60"], "schedule name 'night ly' is not usable"),
        (["nightly", "--interval", "60"], "no project given — fix: pass -p WORKSPACE/PROJECT"),
        (["nightly", "-p", "ws/a", "--interval", "60", "--runs", "(unclosed"], "--runs"),
        ([], "no schedule name given"),
    ],
)
def test_bad_schedule_input_is_one_line_and_exit_2(upserted, args, message):
    result = runner.invoke(app, ["schedule", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "name" not in upserted


def test_schedule_needs_a_prefect_server(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["schedule", "nightly", "-p", "ws/a", "--interval", "60"])
    assert result.exit_code == 2
    assert "PREFECT_API_URL is not set" in result.output and "neptune-exporter serve" in result.output


def test_summary_accepts_files_path_and_reports_files_on_disk(tmp_path):
    from neptune_exporter.storage.parquet import project_dir
    from tests.unit.test_storage_summary import write_run

    data, files = tmp_path / "data", tmp_path / "files"
    write_run(data, "ws/a", "r1", 10)  # its manifest lists one file of 1000 bytes
    write_run(data, "ws/a", "r2", 10)
    (project_dir(files, "ws/a") / "p").mkdir(parents=True)
    (project_dir(files, "ws/a") / "p" / "ckpt").write_bytes(b"x" * 1000)  # one of the two is on disk
    result = runner.invoke(app, ["summary", "-d", str(data), "-f", str(files), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["files_path"] == str(files)
    project = figures["projects"][0]
    assert (project["files"], project["files_on_disk"], project["file_bytes_on_disk"]) == (2, 1, 1000)
    shown = runner.invoke(app, ["summary", "--data-path", str(data), "--files-path", str(files)])
    assert shown.exit_code == 0 and f"Files on disk in {files}: 1 of 2 exported (1,000 B)" in " ".join(
        shown.output.split()
    )
