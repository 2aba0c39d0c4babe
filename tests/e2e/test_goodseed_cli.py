"""`neptune-exporter load/validate --target goodseed` as a user runs it: a relative --goodseed-home made absolute,
runs loaded and validated; bad input (missing extra, unwritable home, bad template) is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from goodseed.storage import read_configs

from tests.e2e.conftest import cli_env, run_cli
from tests.load_exports import write_rich_export

pytestmark = pytest.mark.e2e
PROJECT = "ws/cli"


@pytest.fixture
def exported(tmp_path, prefect_server):
    for run in ("r1", "r2"):
        write_rich_export(tmp_path / "out/data", tmp_path / "out/files", PROJECT, run, points=50)
    env = cli_env({"PREFECT_API_URL": prefect_server.api_url}, tmp_path / "prefect-home")
    env.pop("GOODSEED_HOME", None)
    return env


def goodseed_args(command: str, *extra: str) -> list[str]:
    more = ["--no-progress"] if command == "load" else []
    return [command, "--target", "goodseed", "-d", "out/data", "-f", "out/files", *more, *extra]


def test_load_then_validate_into_a_relative_home(exported, tmp_path):
    loaded = run_cli(goodseed_args("load", "--goodseed-home", "gs"), exported, tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "runs: 2 loaded, 0 already complete, 0 failed → goodseed" in loaded.stdout
    assert "validation against goodseed: 2 run(s) checked, no differences" in loaded.stdout
    configs = read_configs(tmp_path / "gs/projects/ws/cli/runs/r1.sqlite")
    assert configs["neptune.load_state"] == "complete" and configs["params/epochs"] == 12
    exported["GOODSEED_HOME"] = str(tmp_path / "gs")  # the same home through GoodSeed's own variable
    again = run_cli(goodseed_args("load"), exported, tmp_path)
    assert again.returncode == 0 and "runs: 0 loaded, 2 already complete, 0 failed → goodseed" in again.stdout
    checked = run_cli(goodseed_args("validate"), exported, tmp_path)
    assert checked.returncode == 0 and "2 run(s) checked, no differences" in checked.stdout, checked.stdout


MISSING_CLIENT = (
    "import sys; sys.modules['goodseed'] = None; sys.argv = ['neptune-exporter', *sys.argv[1:]];"
    "from neptune_exporter.console import main; main()"
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--goodseed-home", "blocker/gs"], "GoodSeed home"),
        (["--goodseed-home", "gs", "--goodseed-project-template", "{nope}"], "--goodseed-project-template"),
        (["--goodseed-home", "gs", "--goodseed-project-template", "../{name}"], "--goodseed-project-template"),
        (["--goodseed-home", "gs", "missing client"], "pip install 'neptune-exporter[goodseed]'"),
    ],
    ids=["unwritable-home", "unknown-placeholder", "climbing-project", "missing-extra"],
)
def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, args, expected):
    (tmp_path / "blocker").write_text("a file where the home's parent should be")
    if args[-1] == "missing client":
        command = [sys.executable, "-c", MISSING_CLIENT, *goodseed_args("load", *args[:-1])]
        result = subprocess.run(command, env=exported, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    else:
        result = run_cli(goodseed_args("load", *args), exported, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0] and "fix:" in lines[0], result.stderr
    assert not (tmp_path / "gs/projects/ws").exists()  # nothing loaded
