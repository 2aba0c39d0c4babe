"""The real CLI as a subprocess against the fake Neptune server (a thread of this test): export, summary,
bad input, and resume after SIGKILL (same rows, no duplicates, completed runs not fetched again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from neptune_exporter.export import ExportOptions, run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import read_manifest
from neptune_exporter.storage.parquet import project_dir, read_run_batches
from tests.e2e.conftest import cli_command, cli_env, run_cli

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
DATA_ENDPOINTS = ("v3.attribute_definitions", "v3.attribute_values", "v3.float_series", "v3.series",
                  "v3.signed_url", "storage.download")


def run_id(index: int) -> str:
    return f"run-{index:05d}"


def sys_id(index: int) -> str:
    return f"SANDBOX-{index + 1}"


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=10, points=200, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture
def env(fake, tmp_path):
    fake.requests.clear()
    fake.faults.clear()
    return cli_env(fake.env(PROJECT), tmp_path / "prefect-home")


def data_requests(fake: FakeNeptune) -> int:
    return sum(fake.requests.count(endpoint) for endpoint in DATA_ENDPOINTS)


def complete_runs(data: Path) -> set[str]:
    """Run ids whose manifest on disk says complete."""
    folder = project_dir(data, PROJECT)
    manifests = [read_manifest(path) for path in folder.glob("*.manifest.json")] if folder.is_dir() else []
    return {m.run_id for m in manifests if m is not None and m.is_complete()}


def sorted_rows(data: Path, run: str) -> pa.Table:
    table = pa.Table.from_batches(list(read_run_batches(data, PROJECT, run)))
    order = pc.sort_indices(table, [("attribute_path", "ascending"), ("step", "ascending")])
    return table.take(order)


def test_export_then_summary_in_ephemeral_mode_and_a_failed_run_exits_1(env, fake, tmp_path):
    fake.faults.update(endpoints="float_series", scripted=[400])  # the first run's series read is refused
    args = ["export", "--runs", "^run-0000[0-2]$", "-d", "out/data", "-f", "out/files", "--workers", "1"]
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "runs: 2 exported, 0 unchanged, 1 failed" in result.stdout
    assert f"failed: {PROJECT} {run_id(0)}: unexpected answer from the Neptune server (HTTP 400)" in result.stderr
    assert "errors.jsonl" in result.stderr
    assert env["NEPTUNE_API_TOKEN"] not in result.stdout + result.stderr
    assert complete_runs(tmp_path / "out/data") == {run_id(1), run_id(2)}

    summary = run_cli(["summary", "-d", "out/data", "--json"], env, tmp_path)
    assert summary.returncode == 0, summary.stderr
    figures = json.loads(summary.stdout)
    assert [p["project_id"] for p in figures["projects"]] == [PROJECT]
    total = figures["total"]
    assert (total["runs"], total["runs_complete"], total["runs_failed"], total["files"]) == (3, 2, 1, 2)
    assert total["points"] == 2 * (5 * 200 + 100 + 10)  # 5 metrics, 1 string series, 1 histogram series per run
    table = run_cli(["summary", "-d", "out/data"], env, tmp_path)
    assert PROJECT in table.stdout and "float_series" in table.stdout and run_id(0) in table.stdout


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    return [
        (["--api-token", "definitely-not-a-token"], "token"),
        (["-p", "workspace/no-such-project"], "workspace/no-such-project"),
        (["--runs", "run-(0"], "--runs"),
        (["--where", "params/p000 >> 1"], "--where"),
        (["-d", str(blocker / "data")], "--data-path"),
    ]


def test_bad_input_is_one_line_and_exit_2_before_any_download(env, fake, tmp_path):
    for args, named in bad_inputs(tmp_path):
        result = run_cli(["export", "-d", "out/data", "-f", "out/files", *args], env, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0] and "fix:" in lines[0], lines
        assert env["NEPTUNE_API_TOKEN"] not in result.stderr and "definitely-not-a-token" not in result.stderr
    assert data_requests(fake) == 0
    assert not (tmp_path / "out/data" / project_dir(".", PROJECT).name).exists()


def kill_when(process: subprocess.Popen, condition, timeout: float = 300) -> None:
    """SIGKILL the process group as soon as `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the export ended before it could be killed"
        assert time.monotonic() < deadline, "the export made no progress"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_mid_export_then_rerun_completes_with_the_same_rows(env, fake, tmp_path, prefect_server):
    env = {**env, "PREFECT_API_URL": prefect_server.api_url}
    data = tmp_path / "out/data"
    fake.faults.update(latency_ms=100)
    args = ["export", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]
    process = subprocess.Popen(cli_command(*args), env=env, cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, lambda: len(complete_runs(data)) >= 3)
    done_before = complete_runs(data)
    assert 3 <= len(done_before) < 10, done_before

    fake.faults.clear()
    fake.requests.clear()
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert complete_runs(data) == {run_id(i) for i in range(10)}, result.stdout
    refetched = fake.requests.runs_fetched() & {sys_id(i) for i in range(10) if run_id(i) in done_before}
    assert refetched == set(), (done_before, result.stdout)
    assert f"{len(done_before)} unchanged" in result.stdout, (done_before, result.stdout)

    reference = tmp_path / "reference"
    options = ExportOptions(projects=(PROJECT,), data_path=str(reference / "data"), files_path=str(reference / "files"),
                            api_token=fake.api_token)
    assert all(r.status == "complete" for r in run_export(options, Settings.from_env()))
    for index in range(10):
        resumed, fresh = sorted_rows(data, run_id(index)), sorted_rows(reference / "data", run_id(index))
        assert resumed.num_rows == fresh.num_rows > 0
        assert resumed.equals(fresh), run_id(index)
