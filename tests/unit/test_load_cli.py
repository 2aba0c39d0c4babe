"""`neptune-exporter load/validate`: bad input ends with one line naming problem and fix, exit 2, before any work."""

from __future__ import annotations

import socket
import sys

import pytest
from typer.testing import CliRunner

from neptune_exporter.cli import app
from neptune_exporter.rows import parameter_rows
from tests.load_exports import write_export


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def export_root(tmp_path):
    write_export(tmp_path / "data", tmp_path / "files", "ws/p", "r", [parameter_rows("ws/p", "r", [("p", "int", 1)])])
    return tmp_path


@pytest.mark.parametrize("command", ["load", "validate"])
def test_bad_input_is_one_line_and_exit_2(command, export_root, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = str(export_root / "data")
    cases = [
        (["-d", data, "--mlflow-tracking-uri", f"http://127.0.0.1:{closed_port()}"], "is not reachable"),
        (
            ["-d", str(export_root / "missing"), "--mlflow-tracking-uri", f"sqlite:///{export_root}/m.db"],
            "export folder",
        ),
        (["-d", data], "no MLflow tracking URI given"),
        (
            ["-d", data, "--mlflow-tracking-uri", f"sqlite:///{export_root}/m.db", "--runs", "("],
            "--runs '(' is not a valid",
        ),
        (
            ["-d", data, "--mlflow-tracking-uri", f"sqlite:///{export_root}/m.db", "--experiment-name-template", "{x}"],
            "template",
        ),
        (["-d", data, "--target", "nosuch"], "unknown target 'nosuch'"),
        (["-d", data, "--mlflow-tracking-uri", str(export_root / "mlruns")], "file store"),
        (
            ["-d", data, "--mlflow-tracking-uri", f"sqlite:///{export_root}/m.db", "--report-path", f"{data}/r/x"],
            f"--report-path {data}/r/x is not writable",
        ),
    ]
    (export_root / "data" / "r").write_text("a file where the reports' parent folder should be")
    for arguments, expected in cases:
        result = CliRunner().invoke(app, [command, *arguments])
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, (arguments, result.output)
        assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0], (arguments, result.output)
    assert not (export_root / "m.db").exists()  # nothing was created for a bad command


@pytest.mark.parametrize("command", ["load", "validate"])
def test_an_unusable_prefect_home_is_one_line_before_anything_starts(command, export_root, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(export_root / "missing" / "prefect"))
    arguments = ["-d", str(export_root / "data"), "--mlflow-tracking-uri", f"sqlite:///{export_root}/m.db"]
    result = CliRunner().invoke(app, [command, *arguments])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: the Prefect home {export_root / 'missing' / 'prefect'} cannot be used: No such file or directory "
        "— fix: set PREFECT_HOME to a folder you can write to (Prefect keeps its database and task results there), "
        "or HOME to your home folder"
    ]
    assert not (export_root / "m.db").exists() and not (export_root / "missing").exists()


@pytest.mark.parametrize("command", ["load", "validate"])
def test_comet_bad_input_is_one_line_and_exit_2(command, export_root, monkeypatch):
    data, blocked = str(export_root / "data"), export_root / "a-file"
    blocked.write_text("not a folder")
    comet = ["-d", data, "--target", "comet", "--comet-dir"]
    cases = [
        ([*comet, str(export_root / "c"), "--comet-project-template", "{nope}"], "--comet-project-template '{nope}'"),
        ([*comet, str(blocked / "c")], f"the Comet folder {blocked / 'c'} is not writable"),
    ]
    for arguments, expected in cases:
        result = CliRunner().invoke(app, [command, *arguments])
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(lines) == 1, (arguments, result.output)
        assert expected in lines[0] and "fix:" in lines[0], (arguments, result.output)
    monkeypatch.setitem(sys.modules, "comet_ml", None)  # as without the extra installed
    result = CliRunner().invoke(app, [command, *comet, str(export_root / "c")])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "pip install 'neptune-exporter[comet]'" in lines[0]
    assert not (export_root / "c").exists()  # nothing was created for a bad command


def test_tracking_uri_comes_from_the_environment(export_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    result = CliRunner().invoke(app, ["load", "-d", str(export_root / "data")])
    assert result.exit_code == 2 and "MLflow tracking server http://127.0.0.1:" in result.output


@pytest.mark.parametrize("command", ["load", "validate"])
def test_no_report_folder_is_created_before_a_bad_input_stop(command, export_root):
    reports = export_root / "new" / "reports"
    arguments = ["-d", str(export_root / "data"), "--mlflow-tracking-uri", str(export_root / "mlruns")]
    result = CliRunner().invoke(app, [command, *arguments, "--report-path", str(reports)])
    assert result.exit_code == 2 and "file store" in result.output, result.output
    assert not (export_root / "new").exists()
