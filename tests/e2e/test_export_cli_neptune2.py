"""The real CLI with `--source neptune2` against the fake server: SIGKILL mid-export, then a rerun completes with the
rows of a fresh export, no stray parts, and completed runs not fetched again (2.x runs are named by sys id)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import run_files_dir
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import run_part_paths
from tests.e2e.conftest import cli_command, cli_env, run_cli
from tests.e2e.test_export_cli import (
    PROJECT,
    RunGate,
    complete_runs,
    kill_when,
    mid_export,
    sorted_rows,
    tail,
    tree,
)

pytestmark = pytest.mark.e2e

RUNS = 10
SYS_IDS = {f"SANDBOX-{index + 1}" for index in range(RUNS)}  # a 2.x run's id in the export is its sys id


class SeriesGate2(RunGate):
    """RunGate on the 2.x series endpoints (their requests name the run by sys id or uuid; both count per sys id)."""

    HELD_ENDPOINTS = ("v2.float_series_values", "v2.string_series_values", "v2.image_series_values")


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=RUNS, points=200, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture
def env(fake, tmp_path, prefect_server, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the in-process reference export's client over http
    fake.requests.clear()
    fake.faults.clear()
    extra = {**fake.env(PROJECT), "PREFECT_API_URL": prefect_server.api_url}
    assert extra["OAUTHLIB_INSECURE_TRANSPORT"] == "1"  # the 2.x client's OAuth refuses the fake's plain http without
    return cli_env(extra, tmp_path / "prefect-home")


def kill_after_three_runs(args: list[str], env: dict[str, str], tmp_path: Path, gate: RunGate) -> Path:
    """Start the export, SIGKILL it once 3 runs are complete and both workers wait inside another run with rows on disk."""
    data, killed_log = tmp_path / "out/data", tmp_path / "killed-export.log"
    with killed_log.open("wb") as log:
        small_parts = {**env, "NEPTUNE_EXPORTER_PART_TARGET_BYTES": "4096"}  # rows hit the disk before a run ends
        process = subprocess.Popen(
            cli_command(*args),
            env=small_parts,
            cwd=tmp_path,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            kill_when(process, lambda: mid_export(data, gate), killed_log)
        finally:
            gate.release()
    return killed_log


def assert_only_listed_parts(data: Path) -> None:
    """No leftover of the killed attempt: every part on disk is one the run's manifest lists."""
    for run in SYS_IDS:
        on_disk = {p.name for p in run_part_paths(data, PROJECT, run, include_tmp=True)}
        listed = {Path(part.path).name for part in read_manifest(manifest_path(data, PROJECT, run)).parts}
        assert on_disk == listed, (run, on_disk, listed)


def assert_same_rows_as_a_fresh_export(fake: FakeNeptune, data: Path, reference: Path) -> None:
    options = ExportOptions(
        source="neptune2",
        projects=(PROJECT,),
        data_path=str(reference / "data"),
        files_path=str(reference / "files"),
        api_token=fake.api_token,
    )
    assert all(r.status == "complete" for r in run_export(options, Settings.from_env()))
    for run in sorted(SYS_IDS):
        resumed, fresh = sorted_rows(data, run), sorted_rows(reference / "data", run)
        assert resumed.num_rows == fresh.num_rows > 0, run
        assert resumed.equals(fresh), run


def test_sigkill_mid_export_then_rerun_completes_with_the_same_rows(env, fake, tmp_path, monkeypatch):
    data = tmp_path / "out/data"
    gate = SeriesGate2(fake, admit=3)
    monkeypatch.setattr(fake.requests, "add", gate.add)
    args = ["export", "--source", "neptune2", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]
    killed_log = kill_after_three_runs(args, env, tmp_path, gate)
    done_before, mid_run = complete_runs(data), set(gate.held)
    assert done_before == gate.admitted and len(done_before) == 3, (done_before, tail(killed_log))
    assert len(mid_run) == 2 and not mid_run & done_before, mid_run
    assert all(run_part_paths(data, PROJECT, run, include_tmp=True) for run in mid_run)  # partial output on disk

    fake.requests.clear()
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert complete_runs(data) == SYS_IDS, result.stdout
    # the client's pool fits the workers: no "Connection pool is full"; the one line is the killed export's lock
    (line,) = result.stderr.splitlines()
    assert "taking over" in line and "/.neptune-exporter.lock: its holder export (pid" in line and "is gone" in line
    for run in SYS_IDS - done_before:  # 2.x series reads (by uuid or sys id) are attributed to their run
        assert fake.requests.count("v2.float_series_values", run=run) > 0, run
    assert fake.requests.runs_fetched() == SYS_IDS - done_before, (done_before, result.stdout)
    assert f"{len(done_before)} unchanged" in result.stdout, (done_before, result.stdout)
    assert_only_listed_parts(data)
    assert_same_rows_as_a_fresh_export(fake, data, tmp_path / "reference")


class DownloadGate2(RunGate):
    """RunGate on the 2.x file download: a held run waits with its `.staging-<uuid>` folder made."""

    HELD_ENDPOINTS = ("v2.download_file",)


def staged(files: Path, runs: set[str]) -> bool:
    """Every run in `runs` has a `.staging-*` folder in its files folder now."""
    return all(any(run_files_dir(files, PROJECT, run).glob(".staging-*")) for run in runs)


def test_sigkill_mid_download_then_rerun_leaves_the_files_of_a_fresh_export(env, fake, tmp_path, monkeypatch):
    data, files, killed_log = tmp_path / "out/data", tmp_path / "out/files", tmp_path / "killed-export.log"
    gate = DownloadGate2(fake, admit=3)
    monkeypatch.setattr(fake.requests, "add", gate.add)
    args = ["export", "--source", "neptune2", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]
    with killed_log.open("wb") as log:
        process = subprocess.Popen(
            cli_command(*args), env=env, cwd=tmp_path, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        try:  # killed once 3 runs are complete and both workers wait inside a download, its staging folder made
            kill_when(
                process,
                lambda: (
                    len(complete_runs(data)) >= 3 and len(gate.runs_held()) == 2 and staged(files, gate.runs_held())
                ),
                killed_log,
            )
        finally:
            gate.release()
    mid_run = set(gate.held)
    assert len(mid_run) == 2 and staged(files, mid_run), tail(killed_log)  # the killed attempt's leftovers

    fake.requests.clear()
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert complete_runs(data) == SYS_IDS, result.stdout
    assert not [p for p in files.rglob(".staging-*")] and not [p for p in data.rglob("*.tmp")]
    assert_only_listed_parts(data)
    assert_same_rows_as_a_fresh_export(fake, data, tmp_path / "reference")
    assert tree(files) == tree(tmp_path / "reference/files")
