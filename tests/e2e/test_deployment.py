"""A real Prefect server serves the deployments; `prefect deployment run export/neptune3 --watch` exports the
fake server's project to Parquet, and the run carries its progress and summary artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import serve_deployments, stop_process
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.storage.manifest import read_manifest
from neptune_exporter.storage.parquet import project_dir
from tests.prefect_reading import artifacts_by_key, export_task_states

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=3, points=100, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def served(prefect_server, fake, tmp_path_factory):
    """`python -m deployments.serve` against the server until the module ends."""
    env = prefect_server.client_env({**fake.env(PROJECT), "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = serve_deployments(env, log)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            wait_for_deployments(["export/neptune3", "export/neptune2"], process, log)
            yield env
    finally:
        stop_process(process)


def wait_for_deployments(names: list[str], process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            registered = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
            if set(names) <= registered:
                return
            assert process.poll() is None, f"serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"deployments not registered: {log.read_text()[-2000:]}"
            time.sleep(1)


def test_deployment_run_exports_and_shows_progress_and_summary(served, prefect_server, tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    command = [
        sys.executable,
        "-m",
        "prefect",
        "deployment",
        "run",
        "export/neptune3",
        "--param",
        f"projects={json.dumps([PROJECT])}",
        "--param",
        f"paths={json.dumps({'data_path': str(data), 'files_path': str(files)})}",
        "--param",
        "workers=2",
        "--watch",
        "--watch-interval",
        "2",
        "--watch-timeout",
        "300",
    ]
    result = subprocess.run(command, env=served, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed" in result.stdout

    manifests = [read_manifest(p) for p in project_dir(data, PROJECT).glob("*.manifest.json")]
    assert sorted(m.run_id for m in manifests if m.is_complete()) == ["run-00000", "run-00001", "run-00002"]
    assert all(m.parts and (data / m.parts[0].path).stat().st_size > 0 for m in manifests)
    assert len([p for p in files.rglob("*") if p.is_file()]) == 3

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("export/neptune3")
        # no deployment-wide limit: flows/guard.py keeps exports of one data path apart (tests/e2e/test_schedule.py)
        assert deployment.global_concurrency_limit is None and deployment.parameters == {"source": "neptune3"}
        assert deployment.entrypoint == "flows.export.export"  # a module of the package: no checkout path
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
        # the session's server may hold other tests' runs of this deployment: ours writes to `data`
        (flow_run,) = [run for run in runs if (run.parameters.get("paths") or {}).get("data_path") == str(data)]
        assert flow_run.state.is_completed()
        assert flow_run.parameters["projects"] == [PROJECT]
        artifacts = artifacts_by_key(flow_run.id)
        assert export_task_states(flow_run.id) == {"Completed": 3}
    assert artifacts["export-progress"][0].data == 100.0
    table = artifacts["export-summary"][0].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows[0]["project"] == PROJECT and (rows[0]["runs_complete"], rows[0]["runs_failed"]) == (3, 0)
    assert "runs exported: **3**" in artifacts["export-report"][0].data


def run_deployment(name: str, env: dict, params: dict) -> subprocess.CompletedProcess:
    """`prefect deployment run NAME --param k=json ... --watch`, asserting it ends Completed."""
    command = [sys.executable, "-m", "prefect", "deployment", "run", name]
    for key, value in params.items():
        command += ["--param", f"{key}={json.dumps(value)}"]
    command += ["--watch", "--watch-interval", "2", "--watch-timeout", "300"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0 and "Completed" in result.stdout, result.stdout + result.stderr
    return result


def test_neptune2_deployment_exports_with_the_legacy_client(served, tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    run_deployment(
        "export/neptune2",
        served,
        {
            "projects": [PROJECT],
            "paths": {"data_path": str(data), "files_path": str(files)},
            "workers": 2,
        },
    )
    manifests = [read_manifest(p) for p in project_dir(data, PROJECT).glob("*.manifest.json")]
    assert len(manifests) == 3 and all(m.is_complete() for m in manifests)
    assert {m.source["kind"] for m in manifests} == {"neptune2"}
    # 2.x runs are exported under sys/id (peer-tool compatible); the custom id is kept in the manifest
    assert sorted(m.source["custom_run_id"] for m in manifests) == ["run-00000", "run-00001", "run-00002"]
    assert all(m.run_id == m.source["sys_id"] for m in manifests)
    assert len([p for p in files.rglob("*") if p.is_file()]) == 3


def test_load_deployments_fill_mlflow_and_wandb_and_validate(served, fake, tmp_path):
    from mlflow.tracking import MlflowClient

    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.settings import Settings

    data, files = tmp_path / "data", tmp_path / "files"
    options = ExportOptions(projects=(PROJECT,), data_path=str(data), files_path=str(files), api_token=fake.api_token)
    assert {r.status for r in run_export(options, Settings())} == {"complete"}

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    paths = {"data_path": str(data), "files_path": str(files), "report_path": str(tmp_path / "reports")}
    run_deployment(
        "load/mlflow", served, {"options": {"target": "mlflow", "mlflow_tracking_uri": tracking_uri, **paths}}
    )
    runs = MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()],
        filter_string="tags.`neptune.load_state` = 'complete'",
    )
    assert sorted(r.data.tags["neptune.run_id"] for r in runs) == ["run-00000", "run-00001", "run-00002"]
    from neptune_exporter.storage.parquet import read_run_batches

    for run in runs:  # every exported float series became a metric (values are checked by validate/mlflow below)
        series = {
            path
            for batch in read_run_batches(data, PROJECT, run.data.tags["neptune.run_id"])
            for path, kind in zip(batch["attribute_path"].to_pylist(), batch["attribute_type"].to_pylist(), strict=True)
            if kind == "float_series"
        }
        assert series and set(run.data.metrics) == series
    run_deployment(
        "validate/mlflow", served, {"options": {"target": "mlflow", "mlflow_tracking_uri": tracking_uri, **paths}}
    )

    wandb_dir = tmp_path / "wandb"
    run_deployment("load/wandb", served, {"options": {"target": "wandb", "wandb_dir": str(wandb_dir), **paths}})
    assert len(list(wandb_dir.rglob("offline-run-*/run-*.wandb"))) == 3
    reports = {p.name: json.loads(p.read_text()) for p in (tmp_path / "reports").rglob("validation_*.json")}
    assert set(reports) == {"validation_mlflow.json", "validation_wandb.json"}, sorted(reports)
    for report in reports.values():
        assert (report["ok"], report["runs_checked"], report["differences"]) == (True, 3, 0), report
