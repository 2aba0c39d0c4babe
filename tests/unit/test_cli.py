"""CLI parsing and bad input: options reach the export as given; bad input is one line, exit 2, no download."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from neptune_exporter.cli import app, export_command
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.model import AttributeKind

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """The ExportOptions the command would run (the flow itself is tested in test_flow_export.py)."""
    seen = {}

    def fake_run(options, *, no_progress=False, if_locked="stop", distribute=None):
        seen["options"], seen["no_progress"], seen["if_locked"] = options, no_progress, if_locked
        seen["distribute"] = distribute
        return 0

    monkeypatch.setattr(export_command, "run_export_command", fake_run)
    return seen


def test_every_export_option_reaches_the_export_options(captured, tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            "--source",
            "neptune2",
            "-p",
            "ws/a",
            "--project",
            "ws/b",
            "-d",
            str(tmp_path / "d"),
            "-f",
            str(tmp_path / "f"),
            "--api-token",
            "secret-token",
            "--runs",
            "^run-1",
            "--experiments",
            "exp",
            "--where",
            "params/lr > 0.1",
            "--query",
            '`sys/id`:string = "A-1"',
            "--modified-after",
            "2024-05-01",
            "--include-archived",
            "--attributes",
            "^metrics/",
            "--attribute",
            "params/lr",
            "--attribute",
            "params/bs",
            "--include",
            "parameters,metrics",
            "--exclude",
            "metrics",
            "--include-previews",
            "--workers",
            "7",
            "--if-locked",
            "wait",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    options = captured["options"]
    assert options.source == "neptune2" and options.projects == ("ws/a", "ws/b")
    assert options.data_path == str(tmp_path / "d") and options.files_path == str(tmp_path / "f")
    assert (
        options.api_token == "secret-token"
        and "secret-token" not in repr(options)
        and "secret-token" not in str(options.to_json())
    )
    assert options.runs.runs_regex == "^run-1" and options.runs.experiments_regex == "exp"
    assert options.runs.where == "params/lr > 0.1" and options.runs.query == '`sys/id`:string = "A-1"'
    assert options.runs.modified_after == datetime(2024, 5, 1, tzinfo=UTC)
    assert options.runs.include_archived
    assert options.attributes.regex == "^metrics/" and options.attributes.names == ("params/lr", "params/bs")
    assert options.attributes.kinds() == {AttributeKind.PARAMETERS}
    assert options.attributes.include_previews
    assert options.workers == 7 and captured["no_progress"] and captured["if_locked"] == "wait"


def test_defaults_come_from_the_environment_and_peer_tool_paths(captured, monkeypatch):
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/env-project")
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "env-token")
    assert runner.invoke(app, ["export"]).exit_code == 0
    options = captured["options"]
    assert options.projects == ("ws/env-project",) and options.api_token == "env-token"
    assert (options.data_path, options.files_path) == ("exports/data", "exports/files")
    assert options.source == "neptune3" and options.workers == 4 and captured["if_locked"] == "stop"
    assert options.attributes.kinds() == set(AttributeKind)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--runs", "run-(1"], "--runs 'run-(1' is not a valid regular expression"),
        (["--attributes", "[a-"], "--attributes '[a-' is not a valid regular expression"),
        (["--include", "metrics,bogus"], "unknown attribute kind 'bogus'"),
        (["--modified-after", "last tuesday"], "--modified-after 'last tuesday' is not a date/time"),
        (["--source", "neptune1"], "--source 'neptune1' is not supported"),
        (["--query", "x = 1"], "--query (NQL) works with --source neptune2 only"),
        (["--if-locked", "queue"], "--if-locked 'queue' is not one of stop, wait"),
    ],
)
def test_bad_options_fail_with_one_line_naming_problem_and_fix(captured, args, expected):
    result = runner.invoke(app, ["export", "-p", "ws/p", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0] and "fix:" in lines[0]
    assert "options" not in captured


def test_distribute_options_become_the_flows_distribute_parameter(captured, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect-server:4200/api")
    args = [
        "export",
        "-p",
        "ws/p",
        "--distribute",
        "--work-pool",
        "pool-a",
        "--chunk-runs",
        "25",
        "--max-parallel",
        "3",
    ]
    assert runner.invoke(app, args).exit_code == 0
    assert captured["distribute"] == {"work_pool": "pool-a", "chunk_runs": 25, "max_parallel": 3}
    assert runner.invoke(app, ["export", "-p", "ws/p"]).exit_code == 0 and captured["distribute"] is None


@pytest.mark.parametrize(
    ("args", "api_url", "expected"),
    [
        (["--work-pool", "pool-a"], "http://x/api", "--work-pool works with --distribute only"),
        (["--distribute"], "http://x/api", "--distribute needs the work pool its chunks run on"),
        (["--distribute", "--work-pool", "pool-a"], None, "--distribute needs the Prefect server your workers poll"),
    ],
)
def test_distribute_options_that_do_not_go_together_are_one_line(captured, monkeypatch, args, api_url, expected):
    if api_url:
        monkeypatch.setenv("PREFECT_API_URL", api_url)
    else:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["export", "-p", "ws/p", *args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0] and "fix:" in lines[0]
    assert "options" not in captured


def test_no_project_is_a_clear_error(captured, monkeypatch):
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 2
    assert "no project given" in result.stderr and "NEPTUNE_PROJECT" in result.stderr


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=2, points=10)) as server:
        yield server


@pytest.fixture
def fake_env(fake, monkeypatch):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    fake.requests.clear()
    return fake


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-p", "workspace/no-such-project"], "workspace/no-such-project"),
        (["--where", "params/lr >> 3"], "--where"),
    ],
)
def test_preflight_rejects_bad_input_before_any_download(fake_env, tmp_path, args, expected):
    result = runner.invoke(app, ["export", "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0]
    assert not any(
        endpoint.endswith(("series", "download", "signed_url")) for endpoint in fake_env.requests.by_endpoint()
    )
    assert not (tmp_path / "d").exists() and not (tmp_path / "f").exists()  # no folder before a bad-input stop


def test_bad_token_is_one_line_and_never_printed(fake_env, tmp_path):
    bad = "not-a-real-token"
    result = runner.invoke(app, ["export", "--api-token", bad, "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0].lower() and bad not in result.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "f").exists()


def test_unwritable_output_path_is_rejected(fake_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = runner.invoke(app, ["export", "-d", str(blocker / "data"), "-f", str(tmp_path / "f")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data-path" in lines[0] and "fix:" in lines[0]
    assert not os.path.exists(tmp_path / "f" / "workspace")


def test_an_unusable_prefect_home_is_one_line_before_anything_starts(fake_env, tmp_path, monkeypatch):
    home = tmp_path / "not-a-folder"
    home.write_text("x")
    monkeypatch.setenv("PREFECT_HOME", str(home / "prefect"))
    result = runner.invoke(app, ["export", "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the Prefect home {home / 'prefect'} cannot be used" in lines[0], lines
    assert "fix: set PREFECT_HOME to a folder you can write to" in lines[0]
    assert fake_env.requests.by_endpoint() == {} and not (tmp_path / "d").exists()  # before anything started


def test_fake_servers_are_mounted_as_subcommands():
    for command in ("fake-neptune", "fake-wandb"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "serve" in result.output


def test_a_cli_start_imports_neither_fake_server():
    """The fake servers load only when their sub-command runs: `--help` and every product command start without them."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from neptune_exporter.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('neptune_exporter.fake_neptune', 'neptune_exporter.fake_wandb'))))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert quiet.stdout.strip() == "[]"
    loaded = subprocess.run(
        [sys.executable, "-c", script.replace("['--help']", "['fake-neptune', '--help']")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "neptune_exporter.fake_neptune.cli" in loaded.stdout


def test_failed_runs_are_printed_with_their_error_type_message_and_fix(capsys, tmp_path):
    """Export and load print `failed: PROJECT RUN: ErrorType: message — fix: remedy`, the format of a failed Prefect
    task's state message (one function: errors.failure_message)."""
    from dataclasses import asdict

    from flows.load import load_summary
    from neptune_exporter.cli.app import print_failures
    from neptune_exporter.errors import CorruptPartError, TerminalError
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_results import RunExportResult, error_record, export_summary
    from neptune_exporter.loaders.base import LoadResult

    corrupt = TerminalError("attribute is corrupt", "re-log it", attribute="metrics/loss")
    exported = [
        RunExportResult("ws/p", "run-a", "failed", None, errors=[error_record("ws/p", "run-a", corrupt)]),
        RunExportResult("ws/p", "run-b", "complete", str(tmp_path / "run-b.manifest.json")),
    ]
    export_command.print_export_summary(
        export_summary(exported, ExportOptions(data_path=str(tmp_path), files_path=str(tmp_path)))
    )
    failed_export = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed:")]
    assert failed_export == [
        "failed: ws/p run-a: TerminalError: attribute is corrupt (attribute metrics/loss) — fix: re-log it"
    ]

    part = CorruptPartError("part 0 of run-c does not match its checksum", "export the run again")
    loaded = [
        asdict(LoadResult("ws/p", "run-c", "failed", error=part.to_record())),
        asdict(LoadResult("ws/p", "run-d", "loaded")),
    ]
    print_failures(load_summary("mlflow", loaded)["failures"])
    assert capsys.readouterr().err.splitlines() == [
        "failed: ws/p run-c: CorruptPartError: part 0 of run-c does not match its checksum — fix: export the run again"
    ]


def test_validate_against_takes_exports_run_selection_and_deep(monkeypatch, tmp_path):
    """`validate --against` selects runs with export's own options (same option objects) and passes --deep on."""
    from neptune_exporter.cli import source_validate

    seen = {}
    monkeypatch.setattr(
        source_validate, "run_source_validation", lambda options: seen.setdefault("options", options) and 0
    )
    (tmp_path / "d").mkdir()
    args = ["validate", "--against", "neptune2", "-p", "ws/a", "-d", str(tmp_path / "d"), "--runs", "^A-"]
    args += ["--where", "params/lr > 0.1", "--query", '`sys/id`:string = "A-1"', "--include-archived", "--deep"]
    args += ["--modified-after", "2024-01-02T03:04:05Z", "--api-token", "t"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.against, options.projects, options.deep) == ("neptune2", ("ws/a",), True)
    selection = options.runs
    assert (selection.runs_regex, selection.where, selection.query, selection.include_archived) == (
        "^A-",
        "params/lr > 0.1",
        '`sys/id`:string = "A-1"',
        True,
    )
    assert selection.modified_after == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--deep"], "error: --deep: with --against only — fix: add --against neptune3|neptune2"),
        (["--where", "x > 1", "--include-archived"], "error: --where, --include-archived: with --against only"),
        (["--against", "neptune3", "-p", "ws/a", "--query", "x"], "error: --query (NQL) works with --against neptune2"),
    ],
)
def test_validate_source_options_are_checked_in_one_line(args, expected, tmp_path):
    (tmp_path / "d").mkdir()
    result = runner.invoke(app, ["validate", "-d", str(tmp_path / "d"), *args])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(expected)
