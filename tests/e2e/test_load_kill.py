"""SIGKILL of the real `load` command alone (`kill -9 PID`) mid-load, into a real MLflow server and into W&B offline:
no process of the command is left (its local Prefect server and W&B's service end by themselves), and the rerun
leaves the target equal to a fresh load of the same export (the killed run redone, nothing twice).

The deterministic point is a FIFO the loader opens and blocks on (no writer sends a byte), with --workers 1 so the
runs before it are loaded: for MLflow one run's exported file (the run is half-way: params and metrics logged, state
`loading`), for W&B an offline log of an earlier attempt at a run (its prior state is being read: the W&B service
runs, the run itself is not started). The test sees the reader open the FIFO, and kills the command."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.load import LoadOptions, run_load
from neptune_exporter.loaders.wandb import wandb_run_id
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import project_dir
from neptune_exporter.storage.wandb_log import find_offline_runs, iter_history, read_run_log, run_log_path
from tests.e2e.conftest import cli_command, run_cli
from tests.e2e.test_export_cli import PROJECT, env, fake, kill_alone_when, run_id, tail  # noqa: F401
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (one real server per session)

pytestmark = pytest.mark.e2e

RUNS = [run_id(index) for index in range(10)]
BLOCKED = run_id(3)  # loaded 4th with --workers 1: three runs complete before it
WRITER_FIELDS = ("_runtime", "_wandb")  # set by W&B as the run is written, not taken from the export


@pytest.fixture(scope="module")
def exported(fake, tmp_path_factory) -> Path:  # noqa: F811
    """The fake's 10 runs exported once (library, in-process)."""
    out = tmp_path_factory.mktemp("export")
    options = ExportOptions(
        projects=(PROJECT,), data_path=str(out / "data"), files_path=str(out / "files"), api_token=fake.api_token
    )
    assert all(result.status == "complete" for result in run_export(options, Settings.from_env()))
    return out


@contextmanager
def blocking_file(out: Path, run: str) -> Iterator[Path]:
    """The run's exported file replaced by a FIFO for the block, its content back afterwards."""
    entry = read_manifest(manifest_path(out / "data", PROJECT, run)).files[0]
    path = project_dir(out / "files", PROJECT) / entry["path"]
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    try:
        yield path
    finally:
        path.unlink()
        path.write_bytes(content)


@contextmanager
def blocking_prior_log(wandb_dir: Path, run: str) -> Iterator[Path]:
    """An offline W&B run of an earlier attempt at `run` whose log is a FIFO, for the block (removed afterwards)."""
    target_run_id = wandb_run_id(PROJECT, run)
    folder = wandb_dir / "wandb" / f"offline-run-20000101_000000-{target_run_id}"
    folder.mkdir(parents=True)
    os.mkfifo(folder / f"run-{target_run_id}.wandb")
    try:
        yield folder / f"run-{target_run_id}.wandb"
    finally:
        shutil.rmtree(folder)


def reader_waits(fifo: Path, writers: list[int]) -> bool:
    """True once a reader has opened the FIFO (a writer's open then succeeds; the writer stays open, silent)."""
    try:
        writers.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError as error:
        if error.errno != errno.ENXIO:  # ENXIO: no reader yet
            raise
        return False


def kill_mid_load(args: list[str], env: dict[str, str], tmp_path: Path, fifo: Path) -> list[str]:  # noqa: F811
    """Start `load`, SIGKILL it alone while it waits on the FIFO, check nothing of it is left; the command lines of
    the processes it had started."""
    log, writers = tmp_path / "killed-load.log", []
    with log.open("wb") as output:
        process = subprocess.Popen(
            cli_command(*args), env=env, cwd=tmp_path, start_new_session=True, stdout=output, stderr=output
        )
        try:
            started = kill_alone_when(process, lambda: reader_waits(fifo, writers), log)
        finally:
            for writer in writers:
                os.close(writer)
    assert process.returncode == -9, tail(log)
    return started


def rerun(args: list[str], env: dict[str, str], tmp_path: Path, loaded: int) -> None:  # noqa: F811
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"runs: {10 - loaded} loaded, {loaded} already complete, 0 failed" in result.stdout, result.stdout
    assert "10 run(s) checked, no differences" in result.stdout


def test_sigkill_mid_mlflow_load_leaves_no_process_and_the_rerun_equals_a_fresh_load(
    env,  # noqa: F811
    exported,
    mlflow_server,  # noqa: F811
    tmp_path,
):
    out, template = tmp_path / "out", f"{tmp_path.name}/{{project}}/{{experiment}}"
    shutil.copytree(exported, out)
    args = ["load", "--target", "mlflow", "--mlflow-tracking-uri", mlflow_server, "-d", "out/data", "-f", "out/files"]
    args += ["--experiment-name-template", template, "--workers", "1", "--no-progress"]
    with blocking_file(out, BLOCKED) as fifo:
        kill_mid_load(args, env, tmp_path, fifo)
    client = MlflowClient(mlflow_server)
    states = {run: [r.data.tags["neptune.load_state"] for r in mlflow_runs(client, tmp_path.name, run)] for run in RUNS}
    assert states == {run: ["complete"] if run < BLOCKED else ["loading"] if run == BLOCKED else [] for run in RUNS}

    rerun(args, env, tmp_path, loaded=3)
    fresh = LoadOptions(
        target="mlflow", data_path=str(out / "data"), files_path=str(out / "files"), mlflow_tracking_uri=mlflow_server
    )
    fresh = LoadOptions(**{**fresh.to_json(), "experiment_name_template": f"fresh-{template}"})
    assert {result.status for result in run_load(fresh, Settings.from_env())} == {"loaded"}
    for run in RUNS:
        (resumed,) = mlflow_runs(client, tmp_path.name, run)  # exactly one: the killed copy is deleted
        (reference,) = mlflow_runs(client, f"fresh-{tmp_path.name}", run)
        assert mlflow_content(client, resumed) == mlflow_content(client, reference), run


def mlflow_runs(client: MlflowClient, prefix: str, run: str) -> list:
    """Active MLflow runs of one exported run in the experiments named `prefix/...`."""
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith(prefix + "/")]
    if not experiments:
        return []
    return client.search_runs(experiments, f"tags.`neptune.run_id` = '{run}'")


def mlflow_content(client: MlflowClient, run) -> dict:
    """What a load put in an MLflow run: params, tags (not MLflow's own), every metric point, the artifact tree."""
    histories = {
        key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }
    tags = {key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")}
    return {
        "params": run.data.params,
        "tags": tags,
        "metrics": histories,
        "artifacts": artifact_tree(client, run.info.run_id),
    }


def artifact_tree(client: MlflowClient, run_id: str, path: str | None = None) -> list[tuple[str, int | None]]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_tree(client, run_id, item.path) if item.is_dir else [(item.path, item.file_size)]
    return found


def test_sigkill_mid_wandb_load_leaves_no_process_and_the_rerun_equals_a_fresh_load(
    env,  # noqa: F811
    exported,
    tmp_path,
):
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    args = ["load", "--target", "wandb", "--wandb-dir", "wb", "-d", "out/data", "-f", "out/files"]
    args += ["--workers", "1", "--no-progress"]
    with blocking_prior_log(tmp_path / "wb", BLOCKED) as fifo:
        started = kill_mid_load(args, env, tmp_path, fifo)
    assert any("wandb-core" in command for command in started), started  # W&B's service ended by itself too
    logs = {run: [read_run_log(log) for log in offline_logs(tmp_path / "wb", run)] for run in RUNS}
    assert {run: [log.summary.get("neptune.load_state") for log in found] for run, found in logs.items()} == {
        run: ["complete"] if run < BLOCKED else [] for run in RUNS
    }

    rerun(args, env, tmp_path, loaded=3)
    fresh = LoadOptions(
        target="wandb", data_path=str(out / "data"), files_path=str(out / "files"), wandb_dir=str(tmp_path / "fresh")
    )
    assert {result.status for result in run_load(fresh, Settings.from_env())} == {"loaded"}
    for run in RUNS:
        (resumed,) = offline_logs(tmp_path / "wb", run)  # exactly one: the killed offline run is gone
        (reference,) = offline_logs(tmp_path / "fresh", run)
        assert wandb_content(resumed) == wandb_content(reference), run


def offline_logs(wandb_dir: Path, run: str) -> list[Path]:
    folders = find_offline_runs(wandb_dir, wandb_run_id(PROJECT, run))
    return [log for folder in folders if (log := run_log_path(folder)) is not None]


def wandb_content(log_path: Path) -> dict:
    """What a load put in an offline W&B run: every history row, config, summary, artifacts (names and entries)."""
    log = read_run_log(log_path)
    return {
        "history": [without_run_fields(row) for row in iter_history(log_path)],
        "config": without_run_fields(log.config),
        "summary": without_run_fields(log.summary),
        "artifacts": sorted(
            (a.name, a.type, sorted((e.path, e.digest, e.size) for e in a.entries)) for a in log.artifacts
        ),
        "finished": log.exit_code,
    }


def without_run_fields(values: dict) -> dict:
    return {key: value for key, value in values.items() if key not in WRITER_FIELDS}
