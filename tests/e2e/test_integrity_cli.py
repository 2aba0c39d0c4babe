"""Integrity and locking through the real CLI, the fake Neptune server and a real MLflow server: damaged parts are
shown by `summary`, refused by `load`, reported by `validate` and redone by the next export; `load`/`validate` on
nothing fail naming the folder; three exports started on one data path leave one writer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.lock import EXPORT_LOCK
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import project_dir, run_part_paths
from tests.e2e.conftest import cli_command, cli_env, run_cli
from tests.e2e.test_export_cli import PROJECT, RunGate, complete_runs, run_id, sorted_rows, sys_id
from tests.integration.mlflow_server import start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.e2e

RUNS = 10
TRUNCATED, OVERWRITTEN = run_id(2), run_id(5)
DAMAGED = {TRUNCATED, OVERWRITTEN}


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=RUNS, points=200, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    url, process = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield url
    finally:
        stop_mlflow_server(process)


@pytest.fixture
def env(fake, tmp_path, prefect_server):
    fake.requests.clear()
    fake.faults.clear()
    return cli_env({**fake.env(PROJECT), "PREFECT_API_URL": prefect_server.api_url}, tmp_path / "prefect-home")


EXPORT = ["export", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]


def first_part(data: Path, run: str) -> Path:
    return data / read_manifest(manifest_path(data, PROJECT, run)).parts[0].path


def damage(data: Path) -> dict[str, str]:
    """Truncate one run's part, overwrite 16 bytes in the middle of another's; {run: damaged part (relative)}."""
    truncated, overwritten = first_part(data, TRUNCATED), first_part(data, OVERWRITTEN)
    os.truncate(truncated, truncated.stat().st_size // 2)
    with open(overwritten, "r+b") as handle:
        handle.seek(overwritten.stat().st_size // 2)
        handle.write(b"\xff" * 16)
    return {
        run: path.relative_to(data).as_posix() for run, path in ((TRUNCATED, truncated), (OVERWRITTEN, overwritten))
    }


def mlflow_runs_of(url: str, run: str) -> list:
    """Every MLflow run (deleted ones too) that carries this Neptune run id."""
    client = MlflowClient(tracking_uri=url)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, f"tags.`neptune.run_id` = '{run}'", run_view_type=ViewType.ALL)


def all_mlflow_runs(url: str) -> list[str]:
    """Ids of every MLflow run on the server (deleted ones too)."""
    client = MlflowClient(tracking_uri=url)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return sorted(run.info.run_id for run in client.search_runs(experiments, run_view_type=ViewType.ALL))


def fresh_export(fake: FakeNeptune, folder: Path) -> Path:
    """A fault-free export of the whole project into `folder` (the reference); its data folder."""
    options = ExportOptions(
        projects=(PROJECT,),
        data_path=str(folder / "data"),
        files_path=str(folder / "files"),
        api_token=fake.api_token,
    )
    assert all(r.status == "complete" for r in run_export(options, Settings.from_env()))
    return folder / "data"


def assert_equals_fresh_export(data: Path, reference: Path) -> None:
    """Same rows per run as a fresh export, only listed parts on disk, no tmp file, no lock file."""
    for index in range(RUNS):
        resumed, fresh = sorted_rows(data, run_id(index)), sorted_rows(reference, run_id(index))
        assert resumed.num_rows == fresh.num_rows > 0 and resumed.equals(fresh), run_id(index)
        on_disk = {p.name for p in run_part_paths(data, PROJECT, run_id(index), include_tmp=True)}
        listed = {Path(p.path).name for p in read_manifest(manifest_path(data, PROJECT, run_id(index))).parts}
        assert on_disk == listed, (run_id(index), on_disk, listed)
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".lock")]


def load_args(url: str, command: str = "load") -> list[str]:
    extra = ["--no-progress"] if command == "load" else []
    return [command, "--target", "mlflow", "--mlflow-tracking-uri", url, "-d", "out/data", "-f", "out/files", *extra]


def test_damaged_parts_are_shown_refused_reported_then_redone(env, fake, tmp_path, mlflow_url):
    data = tmp_path / "out/data"
    exported = run_cli(EXPORT, env, tmp_path)
    assert exported.returncode == 0 and "runs: 10 exported, 0 unchanged, 0 failed" in exported.stdout, exported.stderr
    damaged = damage(data)

    shown = run_cli(["summary", "-d", "out/data", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    (project,) = json.loads(shown.stdout)["projects"]
    assert (project["runs"], project["runs_complete"], project["runs_damaged"], project["runs_failed"]) == (10, 8, 2, 0)
    assert {d["run_id"]: len(d["parts"]) for d in project["damaged"]} == {TRUNCATED: 1, OVERWRITTEN: 1}
    parts_named = {d["run_id"]: d["parts"][0] for d in project["damaged"]}
    assert parts_named[TRUNCATED].startswith(f"{damaged[TRUNCATED]}: ") and "truncated" in parts_named[TRUNCATED]
    assert (
        parts_named[OVERWRITTEN]
        == f"{damaged[OVERWRITTEN]}: its sha256 differs from the manifest's (overwritten or corrupted)"
    )
    table = run_cli(["summary", "-d", "out/data"], env, tmp_path)
    assert "Damaged runs (parts differ from their manifests):" in table.stdout and damaged[TRUNCATED] in table.stdout

    loaded = run_cli(load_args(mlflow_url), env, tmp_path)
    assert loaded.returncode == 1, loaded.stderr
    assert "runs: 8 loaded, 0 already complete, 2 failed → mlflow" in loaded.stdout
    refused = {line.split()[2].rstrip(":"): line for line in loaded.stderr.splitlines() if line.startswith("failed: ")}
    assert set(refused) == DAMAGED, loaded.stderr
    for run, line in refused.items():
        assert (
            f"the export of run '{run}' ({PROJECT}) is damaged: 1 part(s) differ from the manifest: {damaged[run]}: "
            in line
        )
        assert line.endswith(
            "— fix: export the run again (rerun the same `neptune-exporter export`: it redoes damaged runs), then run this command again"
        )
    assert all(mlflow_runs_of(mlflow_url, run) == [] for run in DAMAGED)  # nothing written for them
    assert all(len(mlflow_runs_of(mlflow_url, run_id(i))) == 1 for i in range(RUNS) if run_id(i) not in DAMAGED)

    validated = run_cli(load_args(mlflow_url, "validate"), env, tmp_path)
    assert validated.returncode == 1, validated.stderr
    assert "10 run(s) checked, 0 difference(s) in 0 run(s), 2 run(s) not validated" in validated.stdout
    not_validated = [line for line in validated.stderr.splitlines() if line.startswith("not validated: ")]
    assert sorted(line.split()[3].rstrip(":") for line in not_validated) == sorted(DAMAGED), validated.stderr
    report = json.loads((tmp_path / "out/reports/validation_mlflow.json").read_text())
    errors = {run["run_id"]: run["error"]["error_type"] for run in report["runs"] if run["error"]}
    assert errors == {TRUNCATED: "DamagedExportError", OVERWRITTEN: "DamagedExportError"}
    assert all(run["ok"] for run in report["runs"] if run["run_id"] not in DAMAGED)

    fake.requests.clear()
    again = run_cli(EXPORT, env, tmp_path)
    assert again.returncode == 0 and "runs: 2 exported, 8 unchanged, 0 failed" in again.stdout, again.stderr
    assert fake.requests.runs_fetched() == {sys_id(2), sys_id(5)}  # exactly the damaged runs were redone
    for run in DAMAGED:  # each reported once, with what is wrong and what happens
        told = [line for line in again.stderr.splitlines() if f"run {PROJECT}/{run}: 1 part(s) differ" in line]
        assert len(told) == 1 and damaged[run] in told[0] and told[0].endswith("; exporting it again"), again.stderr
    assert_equals_fresh_export(data, fresh_export(fake, tmp_path / "reference"))

    reloaded = run_cli(load_args(mlflow_url), env, tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "runs: 2 loaded, 8 already complete, 0 failed → mlflow" in reloaded.stdout
    assert "10 run(s) checked, no differences" in reloaded.stdout


def test_load_and_validate_on_nothing_fail_naming_the_folder(env, tmp_path, mlflow_url):
    (tmp_path / "empty").mkdir()
    exported = run_cli(EXPORT, env, tmp_path)  # a real export in out/: out/data holds it, out/ is its root
    assert exported.returncode == 0, exported.stderr
    before = all_mlflow_runs(mlflow_url)
    for command in ("load", "validate"):
        for given, expected_fix in (
            (tmp_path / "empty", "pass the --data-path (-d) an export wrote to"),
            (tmp_path / "out", f"pass -d {tmp_path / 'out/data'} (the export's data folder"),
        ):
            args = [a if a != "out/data" else str(given) for a in load_args(mlflow_url, command)]
            result = run_cli(args, env, tmp_path)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (command, given, result.stdout, result.stderr)
            assert len(lines) == 1, lines
            assert lines[0].startswith(
                f"error: no exported run in {given}: expected {given}/<project-dir>/*_part_*.parquet"
            )
            assert f"— fix: {expected_fix}" in lines[0]
    assert all_mlflow_runs(mlflow_url) == before  # nothing loaded by any of them


def test_three_exports_on_one_data_path_leave_one_writer(env, fake, tmp_path, monkeypatch):
    data = tmp_path / "out/data"
    gate = RunGate(fake, admit=0)  # every run's series answer waits: the writer stays mid-export until released
    monkeypatch.setattr(fake.requests, "add", gate.add)
    processes = []
    try:
        for index in range(3):
            log = open(tmp_path / f"export-{index}.err", "wb")
            processes.append(
                subprocess.Popen(
                    cli_command(*EXPORT), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=False
                )
            )
            time.sleep(1)  # started one second apart
        deadline = time.monotonic() + 300
        while sum(p.poll() is not None for p in processes) < 2:
            assert time.monotonic() < deadline, [p.poll() for p in processes]
            time.sleep(0.2)
    finally:
        gate.release()
    (writer,) = [p for p in processes if p.poll() is None]
    writer_out, _ = writer.communicate(timeout=600)
    assert writer.returncode == 0 and b"runs: 10 exported, 0 unchanged, 0 failed" in writer_out

    host = socket.gethostname()
    for index, process in enumerate(processes):
        if process is writer:
            continue
        lines = (tmp_path / f"export-{index}.err").read_text().strip().splitlines()
        assert process.returncode == 3 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: {data} is in use: export (pid {writer.pid} on {host}, since ")
        assert lines[0].endswith(
            f"holds {data / EXPORT_LOCK} — fix: wait until it ends (or pass --if-locked wait to wait for it); "
            f"if that process no longer runs, delete {data / EXPORT_LOCK}"
        )
    assert complete_runs(data) == {run_id(i) for i in range(RUNS)}
    manifests = [read_manifest(p) for p in project_dir(data, PROJECT).glob("*.manifest.json")]
    assert len(manifests) == RUNS and all(m.is_complete() and not m.errors for m in manifests)
    assert_equals_fresh_export(data, fresh_export(fake, tmp_path / "reference"))
