"""The README's work-pool path against a real Prefect server: `prefect work-pool create`, `prefect deploy --all` from a
directory that is not the checkout, `prefect worker start` holding the Neptune token, `prefect deployment run
export/neptune3`: the worker runs the export to Completed, every run exported in full, no token in any parameter."""

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

from deployments.serve import DEPLOYMENTS
from deployments.server import stop_process
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.api_v3 import visible_attributes
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import project_dir
from tests.e2e.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
RUN_IDS = ["run-00000", "run-00001"]
POOL = "neptune-exporter"
DEPLOYING_CHECKOUT = "/the/deploying/machine/checkout"  # NEPTUNE_EXPORTER_HOME where `prefect deploy` runs
WAIT_SECONDS = 300


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=len(RUN_IDS), points=50, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


def prefect(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`prefect --no-prompt ARGS` to completion, asserting it succeeded."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS + 100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def without_neptune(env: dict[str, str]) -> dict[str, str]:
    """The environment with no Neptune credentials or project and no checkout on PYTHONPATH."""
    return {k: v for k, v in env.items() if not k.startswith("NEPTUNE_") and k != "PYTHONPATH"}


def read_log_until(log: Path, text: str) -> str:
    """The log once it contains `text` (a child's output reaches the file a little after the API hears of it)."""
    deadline = time.monotonic() + 60
    while text not in (content := log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} not in {log}: {content[-3000:]}"
        time.sleep(0.5)
    return content


def expected_counts(fake: FakeNeptune, run_id: str) -> dict[str, int]:
    """Rows per attribute the fake server shows neptune-query for a run: one per single value, one per series point."""
    run = next(r for r in fake.workspace.project(PROJECT).runs if r.custom_run_id == run_id)
    return {attr.path: len(attr.series) if attr.series is not None else 1 for attr in visible_attributes(run)}


def test_a_worker_runs_what_prefect_deploy_created_with_the_token_only_in_its_environment(
    prefect_server, fake, tmp_path
):
    elsewhere, worker_dir = tmp_path / "elsewhere", tmp_path / "worker"  # neither is the checkout
    elsewhere.mkdir(), worker_dir.mkdir()
    client_env = without_neptune(prefect_server.client_env({"PYTHONWARNINGS": "ignore"}))
    prefect(
        ["work-pool", "create", POOL, "--type", "process", "--overwrite"], client_env, elsewhere
    )  # other modules' too
    prefect(
        ["deploy", "--all", "--prefect-file", str(REPO_ROOT / "deployments" / "prefect.yaml")],
        {**client_env, "NEPTUNE_EXPORTER_HOME": DEPLOYING_CHECKOUT},
        elsewhere,
    )
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
    served = {f"{spec.load_flow().name}/{spec.name}": spec for spec in DEPLOYMENTS}
    assert set(deployments) == set(served)  # prefect.yaml and deployments/serve.py declare the same deployments
    for name, deployment in deployments.items():
        stored = (deployment.entrypoint, deployment.parameters, deployment.work_pool_name, deployment.pull_steps)
        assert stored == (served[name].entrypoint, served[name].parameters, POOL, []), name
        assert DEPLOYING_CHECKOUT not in json.dumps(deployment.model_dump(mode="json")), name

    worker_log = tmp_path / "worker.log"
    # A user's worker: Prefect's INFO logs (not this session's quiet default), the token and the fake server's URL (in
    # the token) in its environment only; the project comes from the run's parameters.
    worker_env = {
        **without_neptune(client_env),
        **fake.env(PROJECT),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    del worker_env["NEPTUNE_PROJECT"]
    with open(worker_log, "ab") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
            env=worker_env,
            cwd=worker_dir,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        data, files = tmp_path / "data", tmp_path / "files"
        triggered = prefect(
            [
                "deployment",
                "run",
                "export/neptune3",
                "--param",
                f"projects={json.dumps([PROJECT])}",
                "--param",
                f"paths={json.dumps({'data_path': str(data), 'files_path': str(files)})}",
                "--watch",
                "--watch-interval",
                "2",
                "--watch-timeout",
                str(WAIT_SECONDS),
            ],
            client_env,
            elsewhere,
        )
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("export/neptune3")
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
        # the session's server may hold earlier runs of this deployment (served by other tests): ours writes to `data`
        (flow_run,) = [run for run in runs if (run.parameters.get("paths") or {}).get("data_path") == str(data)]
        logged = read_log_until(worker_log, f"Flow run '{flow_run.name}' - Finished in state")
    finally:
        stop_process(worker)

    assert flow_run.state.is_completed() and flow_run.state.name == "Completed", (flow_run.state, logged[-3000:])
    assert "Flow run finished successfully in 'Completed'" in triggered.stdout
    assert flow_run.work_pool_name == POOL and f"submitting flow run '{flow_run.id}'" in logged
    assert f"Flow run '{flow_run.name}' - export finished" in logged  # the export ran in this worker's process
    token = fake.api_token
    assert token not in json.dumps(flow_run.parameters) + json.dumps(flow_run.job_variables or {})
    assert token not in json.dumps(deployment.model_dump(mode="json")) + triggered.stdout + triggered.stderr
    assert flow_run.parameters == {
        "source": "neptune3",
        "projects": [PROJECT],
        "paths": {"data_path": str(data), "files_path": str(files)},
    }

    for run_id in RUN_IDS:
        manifest = read_manifest(manifest_path(data, PROJECT, run_id))
        assert manifest is not None and manifest.is_complete(), run_id
        expected = expected_counts(fake, run_id)
        assert {path: stats["count"] for path, stats in manifest.attributes.items()} == expected, run_id
        assert sum(part.rows for part in manifest.parts) == sum(expected.values())
        assert all((data / part.path).is_file() for part in manifest.parts)
        stored = [project_dir(files, PROJECT) / entry["path"] for entry in manifest.files]
        assert len(stored) == 1 and [path.stat().st_size for path in stored] == [manifest.files[0]["size"]]
